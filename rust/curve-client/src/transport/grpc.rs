//! gRPC over tonic. Chunk data rides in protobuf field 1000
//! ([`curve_proto::ATTACHMENT_FIELD`]) of the chunk messages: appending an encoded field
//! to an encoded message is the same as setting it, and splitting it out of a response
//! hands the data on without copying it. Only curvefs's local chunkservers know that
//! field; [`super::route`] keeps chunk calls to anything else off this transport.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::{RpcMethod, RpcReply, Transport, TransportError};

// ---------------------------------------------------------------------------------------
// Field 1000 on the wire.

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Key and length prefix that turn `len` raw bytes into field 1000 of a message.
fn attachment_header_len(len: usize) -> usize {
    let key = (u64::from(curve_proto::ATTACHMENT_FIELD) << 3) | WIRE_LEN;
    varint_len(key) + varint_len(len as u64)
}

fn put_attachment(dst: &mut impl BufMut, attachment: &[u8]) {
    let key = (u64::from(curve_proto::ATTACHMENT_FIELD) << 3) | WIRE_LEN;
    put_varint(dst, key);
    put_varint(dst, attachment.len() as u64);
    dst.put_slice(attachment);
}

/// `payload` with `attachment` set as field 1000 (nothing appended for an empty one).
pub fn join_attachment(payload: &[u8], attachment: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(
        payload.len() + attachment.len() + attachment_header_len(attachment.len()),
    );
    out.put_slice(payload);
    if !attachment.is_empty() {
        put_attachment(&mut out, attachment);
    }
    out.freeze()
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, TransportError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(TransportError::Malformed("truncated varint".into()));
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(TransportError::Malformed(
        "varint longer than 10 bytes".into(),
    ))
}

fn skip(buf: &[u8], pos: &mut usize, n: u64) -> Result<(), TransportError> {
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| pos.checked_add(n))
        .filter(|end| *end <= buf.len())
        .ok_or_else(|| TransportError::Malformed("field runs past the message end".into()))?;
    *pos = end;
    Ok(())
}

/// Splits field 1000 out of an encoded message: returns the message without it and the
/// field's bytes (the last occurrence wins, as protobuf merges scalars). Scans top-level
/// fields only; malformed input is an error, never a panic.
pub fn split_attachment(payload: Bytes) -> Result<(Bytes, Bytes), TransportError> {
    let buf = &payload[..];
    let mut pos = 0;
    // (field start, data start, field end) of each field 1000.
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos)?;
        let field = key >> 3;
        if field == 0 || field > 0x1fff_ffff {
            return Err(TransportError::Malformed(format!(
                "bad field number {field}"
            )));
        }
        match key & 7 {
            WIRE_VARINT => {
                read_varint(buf, &mut pos)?;
            }
            WIRE_FIXED64 => skip(buf, &mut pos, 8)?,
            WIRE_FIXED32 => skip(buf, &mut pos, 4)?,
            WIRE_LEN => {
                let len = read_varint(buf, &mut pos)?;
                let data = pos;
                skip(buf, &mut pos, len)?;
                if field == u64::from(curve_proto::ATTACHMENT_FIELD) {
                    found.push((start, data, pos));
                }
            }
            wt => {
                return Err(TransportError::Malformed(format!(
                    "unsupported wire type {wt} in field {field}"
                )));
            }
        }
        if field == u64::from(curve_proto::ATTACHMENT_FIELD) && key & 7 != WIRE_LEN {
            return Err(TransportError::Malformed(
                "attachment field is not length-delimited".into(),
            ));
        }
    }
    let Some(&(_, data, end)) = found.last() else {
        return Ok((payload, Bytes::new()));
    };
    let attachment = payload.slice(data..end);
    let message = if found.len() == 1 && found[0].2 == buf.len() {
        // The usual case: encoders write fields in number order, so 1000 comes last.
        payload.slice(..found[0].0)
    } else {
        let mut out = BytesMut::with_capacity(buf.len());
        let mut from = 0;
        for &(s, _, e) in &found {
            out.put_slice(&buf[from..s]);
            from = e;
        }
        out.put_slice(&buf[from..]);
        out.freeze()
    };
    Ok((message, attachment))
}

// ---------------------------------------------------------------------------------------
// gRPC implementation.

/// Largest response the client accepts: a chunk read of one whole 16 MiB chunk plus
/// headroom, and ListDir of large directories.
const MAX_MESSAGE_SIZE: usize = 128 << 20;

/// What the raw codec sends: an encoded message and the attachment to append as field 1000.
struct Frame {
    payload: Bytes,
    attachment: Bytes,
}

#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Frame;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Frame;
    type Error = tonic::Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        let att = item.attachment.len();
        dst.reserve(item.payload.len() + att + attachment_header_len(att));
        dst.put_slice(&item.payload);
        if att > 0 {
            put_attachment(dst, &item.attachment);
        }
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        // DecodeBuf over BytesMut: this splits the buffer, it does not copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Channels to one endpoint, used round-robin.
struct EndpointChannels {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

struct GrpcInner {
    endpoints: Mutex<HashMap<String, Arc<EndpointChannels>>>,
    connect_timeout: Duration,
    channels_per_endpoint: usize,
}

/// gRPC over tonic: lazily connected channels cached per endpoint ("ip:port").
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<GrpcInner>,
}

impl GrpcTransport {
    pub fn new(connect_timeout: Duration, channels_per_endpoint: usize) -> Self {
        Self {
            inner: Arc::new(GrpcInner {
                endpoints: Mutex::new(HashMap::new()),
                connect_timeout,
                channels_per_endpoint: channels_per_endpoint.max(1),
            }),
        }
    }
}

impl GrpcInner {
    /// Must run inside the tokio runtime: a tonic channel spawns its worker when created.
    fn channel(&self, endpoint: &str) -> Result<Channel, TransportError> {
        let mut map = self
            .endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = match map.get(endpoint) {
            Some(e) => e.clone(),
            None => {
                let ep = Endpoint::from_shared(format!("http://{endpoint}"))
                    .map_err(|e| TransportError::Other(format!("bad endpoint {endpoint}: {e}")))?
                    .connect_timeout(self.connect_timeout)
                    .tcp_nodelay(true);
                let channels = (0..self.channels_per_endpoint)
                    .map(|_| ep.connect_lazy())
                    .collect();
                let e = Arc::new(EndpointChannels {
                    channels,
                    next: AtomicUsize::new(0),
                });
                map.insert(endpoint.to_string(), e.clone());
                e
            }
        };
        drop(map);
        let i = entry.next.fetch_add(1, Ordering::Relaxed) % entry.channels.len();
        Ok(entry.channels[i].clone())
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        let inner = self.inner.clone();
        let endpoint = endpoint.to_string();
        let method = *method;
        Box::pin(async move {
            let call = async {
                let channel = inner.channel(&endpoint)?;
                let mut grpc = tonic::client::Grpc::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE);
                grpc.ready()
                    .await
                    .map_err(|e| classify_error(&endpoint, &e))?;
                let path = http::uri::PathAndQuery::try_from(format!(
                    "/{}/{}",
                    method.service, method.method
                ))
                .map_err(|e| TransportError::Other(format!("bad method path: {e}")))?;
                // No grpc-timeout header: the deadline below is ours, and tonic would
                // arm a second timer for the same instant.
                let req = tonic::Request::new(Frame {
                    payload: request,
                    attachment,
                });
                let resp = grpc
                    .unary(req, path, RawCodec)
                    .await
                    .map_err(|s| classify_status(&endpoint, &s))?;
                let (payload, attachment) = split_attachment(resp.into_inner())?;
                Ok(RpcReply {
                    payload,
                    attachment,
                })
            };
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or(Err(TransportError::Timeout(timeout)))
        })
    }
}

/// True if an error or one of its sources says the connection could not be made or broke.
fn is_connection_error(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
            )
        {
            return true;
        }
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("tcp connect error")
            || text.contains("connection refused")
            || text.contains("connection reset")
            || text.contains("broken pipe")
            || text.contains("connection closed")
        {
            return true;
        }
        cur = e.source();
    }
    false
}

// No timeout error is classified here: the only deadline is the `tokio::time::timeout`
// in `call` (no grpc-timeout header, no `Endpoint::timeout`), and hyper reports a connect
// timeout as a connect error.
fn classify_error(endpoint: &str, err: &(dyn std::error::Error + 'static)) -> TransportError {
    if is_connection_error(err) {
        TransportError::Connect {
            endpoint: endpoint.to_string(),
            message: err.to_string(),
        }
    } else {
        TransportError::Other(format!("{endpoint}: {err}"))
    }
}

fn classify_status(endpoint: &str, status: &tonic::Status) -> TransportError {
    // A status with a source was made on this side from a transport failure; one without
    // a source came from the server.
    match std::error::Error::source(status) {
        Some(src) if is_connection_error(src) => TransportError::Connect {
            endpoint: endpoint.to_string(),
            message: status.message().to_string(),
        },
        Some(src) => TransportError::Other(format!("{endpoint}: {}: {src}", status.message())),
        None if matches!(
            status.code(),
            tonic::Code::Unimplemented | tonic::Code::InvalidArgument
        ) =>
        {
            TransportError::Rejected(format!("{endpoint}: {}", status.message()))
        }
        None => TransportError::Remote {
            code: status.code() as i32,
            message: status.message().to_string(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::transport::methods;
    use curve_proto::chunkserver::{ChunkOpStatus, ChunkRequest, ChunkResponse};
    use prost::Message;

    #[test]
    fn joined_attachment_equals_setting_the_field() {
        let req = ChunkRequest {
            op_type: 2,
            logic_pool_id: 1,
            copyset_id: 2,
            chunk_id: 3,
            offset: Some(4096),
            size: Some(5),
            ..Default::default()
        };
        let joined = join_attachment(&req.encode_to_vec(), b"hello");
        let mut with = req.clone();
        with.attachment = Some(Bytes::from_static(b"hello"));
        assert_eq!(&joined[..], &with.encode_to_vec()[..]);
        let decoded = ChunkRequest::decode(joined).expect("decodes");
        assert_eq!(decoded.attachment.as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn splits_attachment_off_a_response() {
        let resp = ChunkResponse {
            status: ChunkOpStatus::Success as i32,
            applied_index: Some(9),
            attachment: Some(vec![7u8; 70_000].into()),
            ..Default::default()
        };
        let (msg, att) = split_attachment(Bytes::from(resp.encode_to_vec())).expect("splits");
        assert_eq!(att.len(), 70_000);
        assert!(att.iter().all(|b| *b == 7));
        let rest = ChunkResponse::decode(msg).expect("decodes");
        assert_eq!(rest.applied_index, Some(9));
        assert_eq!(rest.attachment, None);
    }

    #[test]
    fn message_without_attachment_is_unchanged() {
        let resp = ChunkResponse {
            status: ChunkOpStatus::Redirected as i32,
            redirect: Some("127.0.0.1:8200:0".into()),
            ..Default::default()
        };
        let enc = Bytes::from(resp.encode_to_vec());
        let (msg, att) = split_attachment(enc.clone()).expect("splits");
        assert_eq!(msg, enc);
        assert!(att.is_empty());
        let (msg, att) = split_attachment(Bytes::new()).expect("empty is a valid message");
        assert!(msg.is_empty() && att.is_empty());
    }

    #[test]
    fn attachment_in_the_middle_and_repeated_last_wins() {
        let mut raw = BytesMut::new();
        put_attachment(&mut raw, b"first");
        raw.put_slice(&[0x08, 0x00]); // status = 0
        put_attachment(&mut raw, b"second");
        raw.put_slice(&[0x18, 0x05]); // appliedIndex = 5
        let (msg, att) = split_attachment(raw.freeze()).expect("splits");
        assert_eq!(&att[..], b"second");
        assert_eq!(&msg[..], &[0x08, 0x00, 0x18, 0x05]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x80],             // truncated varint key
            vec![0x08],             // key without value
            vec![0x12, 0x05, b'a'], // length past the end
            vec![0x0b],             // start group
            vec![0x00, 0x00],       // field 0
            vec![
                0xc2, 0x3e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            vec![0xc0, 0x3e, 0x01], // field 1000 as a varint
            vec![0x09, 1, 2, 3],    // fixed64 truncated
            vec![0xff; 12],         // overlong varint
        ];
        for c in cases {
            assert!(split_attachment(Bytes::from(c.clone())).is_err(), "{c:?}");
        }
    }

    #[tokio::test]
    async fn refused_connection_is_classified_as_connect() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let t = GrpcTransport::new(Duration::from_millis(500), 1);
        let r = t
            .call(
                &format!("127.0.0.1:{port}"),
                &methods::GET_FILE_INFO,
                Bytes::new(),
                Bytes::new(),
                Duration::from_secs(2),
            )
            .await;
        assert!(matches!(r, Err(TransportError::Connect { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        // Accept and hold connections without ever speaking HTTP/2.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t = GrpcTransport::new(Duration::from_millis(500), 1);
        let r = t
            .call(
                &addr.to_string(),
                &methods::GET_FILE_INFO,
                Bytes::new(),
                Bytes::new(),
                Duration::from_millis(200),
            )
            .await;
        assert!(matches!(r, Err(TransportError::Timeout(_))), "{r:?}");
        holder.abort();
    }
}
