//! One baidu_std packet: the 12-byte header, the `RpcMeta`, the message and the
//! attachment (reference §16.2).
//!
//! Decoding checks every length a peer sent against the frame limit and against the
//! lengths around it before anything is allocated for it, and hands the message and the
//! attachment up as slices of the receive buffer. Encoding produces the header and meta
//! as one small buffer; the message and the attachment stay the caller's buffers, so a
//! write's data reaches the socket through a vectored write without being copied.

use bytes::{BufMut, Bytes, BytesMut};
use curve_proto::brpc::RpcMeta;
use prost::Message;

/// `PRPC`, the first four bytes of every packet.
pub const MAGIC: [u8; 4] = *b"PRPC";
/// magic, body_size, meta_size.
pub const HEADER_LEN: usize = 12;
/// brpc's default `max_body_size`: 64 MiB.
pub const DEFAULT_MAX_BODY: u32 = 64 << 20;

/// Why a byte stream is not baidu_std. Each closes the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {0:02x?}: the peer does not speak baidu_std")]
    BadMagic([u8; 4]),
    #[error("frame body of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: u32, limit: u32 },
    #[error("meta size {meta} exceeds body size {body}")]
    MetaPastBody { meta: u32, body: u32 },
    #[error("attachment size {attachment} does not fit in {room} bytes after the meta")]
    AttachmentPastBody { attachment: i64, room: u32 },
    #[error("undecodable RpcMeta: {0}")]
    BadMeta(String),
    #[error("connection closed inside a frame ({0} bytes of it received)")]
    Truncated(usize),
}

/// A decoded packet. `payload` and `attachment` share the receive buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub meta: RpcMeta,
    pub payload: Bytes,
    pub attachment: Bytes,
}

/// The header of a frame whose meta and message follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    body_size: u32,
    meta_size: u32,
}

fn parse_header(h: &[u8; HEADER_LEN], max_body: u32) -> Result<Header, FrameError> {
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let body_size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let meta_size = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if body_size > max_body {
        return Err(FrameError::TooLarge {
            size: body_size,
            limit: max_body,
        });
    }
    if meta_size > body_size {
        return Err(FrameError::MetaPastBody {
            meta: meta_size,
            body: body_size,
        });
    }
    Ok(Header {
        body_size,
        meta_size,
    })
}

/// Cuts frames off the front of a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_body: u32,
}

impl Decoder {
    pub fn new(max_body: u32) -> Self {
        Self { max_body }
    }

    /// How many bytes the buffer must hold before [`Decoder::decode`] can return the next
    /// frame; validated, so a caller may reserve that much. Errors as `decode`.
    pub fn needed(&self, buf: &[u8]) -> Result<usize, FrameError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            // A wrong magic is reported as soon as its bytes are here.
            let n = buf.len().min(MAGIC.len());
            if buf[..n] != MAGIC[..n] {
                let mut magic = [0u8; 4];
                magic[..n].copy_from_slice(&buf[..n]);
                return Err(FrameError::BadMagic(magic));
            }
            return Ok(HEADER_LEN);
        };
        let h = parse_header(head, self.max_body)?;
        Ok(HEADER_LEN + h.body_size as usize)
    }

    /// The next whole frame, or `None` if more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let total = self.needed(buf)?;
        if buf.len() < total {
            return Ok(None);
        }
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let h = parse_header(head, self.max_body)?;
        let frame = buf.split_to(total).freeze();
        let meta_end = HEADER_LEN + h.meta_size as usize;
        let meta = RpcMeta::decode(&frame[HEADER_LEN..meta_end])
            .map_err(|e| FrameError::BadMeta(e.to_string()))?;
        let room = h.body_size - h.meta_size;
        let attachment = i64::from(meta.attachment_size.unwrap_or(0));
        if attachment < 0 || attachment > i64::from(room) {
            return Err(FrameError::AttachmentPastBody { attachment, room });
        }
        // Checked just above: 0 ≤ attachment ≤ room.
        let payload_end = total - attachment as usize;
        Ok(Some(Frame {
            meta,
            payload: frame.slice(meta_end..payload_end),
            attachment: frame.slice(payload_end..),
        }))
    }
}

/// An encoded frame as the buffers to write in order: header and meta, the message, the
/// attachment (the last two are the caller's, not copied).
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub parts: [Bytes; 3],
}

impl OutFrame {
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer (tests and golden bytes; the writers never do this).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out
    }
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("frame body of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: u64, limit: u32 },
}

/// Frames `meta` (whose `attachment_size` is set here from `attachment`), `payload` and
/// `attachment`.
pub fn encode(
    mut meta: RpcMeta,
    payload: Bytes,
    attachment: Bytes,
    max_body: u32,
) -> Result<OutFrame, EncodeError> {
    let too_large = |size: u64| EncodeError::TooLarge {
        size,
        limit: max_body,
    };
    meta.attachment_size = if attachment.is_empty() {
        None
    } else {
        Some(i32::try_from(attachment.len()).map_err(|_| too_large(attachment.len() as u64))?)
    };
    let meta_len = meta.encoded_len();
    let body = meta_len as u64 + payload.len() as u64 + attachment.len() as u64;
    let body_size = u32::try_from(body)
        .ok()
        .filter(|b| *b <= max_body)
        .ok_or_else(|| too_large(body))?;
    let mut head = BytesMut::with_capacity(HEADER_LEN + meta_len);
    head.put_slice(&MAGIC);
    head.put_u32(body_size);
    // meta_len ≤ body_size, which fits in u32.
    head.put_u32(meta_len as u32);
    meta.encode_raw(&mut head);
    Ok(OutFrame {
        parts: [head.freeze(), payload, attachment],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use curve_proto::brpc::{RpcRequestMeta, RpcResponseMeta};
    use proptest::prelude::*;

    /// A WriteChunk request framed by hand from the documented layout (§16.2), not by
    /// our encoder: correlation id 7, service `curve.chunkserver.ChunkService`, method
    /// `WriteChunk`, message bytes `08 02` (opType = WRITE), attachment "DATA".
    fn golden_request() -> Vec<u8> {
        let service = b"curve.chunkserver.ChunkService";
        let method = b"WriteChunk";
        // RpcRequestMeta: 0a len service, 12 len method.
        let mut req_meta = vec![0x0a, service.len() as u8];
        req_meta.extend_from_slice(service);
        req_meta.push(0x12);
        req_meta.push(method.len() as u8);
        req_meta.extend_from_slice(method);
        // RpcMeta: 0a len request, 20 07 (correlation_id = 7), 28 04 (attachment_size = 4).
        let mut meta = vec![0x0a, req_meta.len() as u8];
        meta.extend_from_slice(&req_meta);
        meta.extend_from_slice(&[0x20, 0x07, 0x28, 0x04]);
        let message = [0x08, 0x02];
        let attachment = b"DATA";
        let body = meta.len() + message.len() + attachment.len();
        let mut out = b"PRPC".to_vec();
        out.extend_from_slice(&(body as u32).to_be_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&message);
        out.extend_from_slice(attachment);
        out
    }

    /// A successful ReadChunk response framed by hand: RpcMeta with an empty response
    /// meta (12 00), correlation id 300 (20 ac 02), attachment_size 3 (28 03); message
    /// `08 00` (status = SUCCESS); attachment "xyz".
    fn golden_response() -> Vec<u8> {
        let meta = [0x12, 0x00, 0x20, 0xac, 0x02, 0x28, 0x03];
        let mut out = b"PRPC".to_vec();
        out.extend_from_slice(&(meta.len() as u32 + 2 + 3).to_be_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&[0x08, 0x00]);
        out.extend_from_slice(b"xyz");
        out
    }

    fn request_meta(id: i64) -> RpcMeta {
        RpcMeta {
            request: Some(RpcRequestMeta {
                service_name: "curve.chunkserver.ChunkService".into(),
                method_name: "WriteChunk".into(),
                ..Default::default()
            }),
            correlation_id: Some(id),
            ..Default::default()
        }
    }

    #[test]
    fn golden_request_both_ways() {
        let golden = golden_request();
        let ours = encode(
            request_meta(7),
            Bytes::from_static(&[0x08, 0x02]),
            Bytes::from_static(b"DATA"),
            DEFAULT_MAX_BODY,
        )
        .unwrap();
        assert_eq!(ours.to_vec(), golden);
        let mut buf = BytesMut::from(&golden[..]);
        let f = Decoder::new(DEFAULT_MAX_BODY)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        let req = f.meta.request.unwrap();
        assert_eq!(req.service_name, "curve.chunkserver.ChunkService");
        assert_eq!(req.method_name, "WriteChunk");
        assert_eq!(f.meta.correlation_id, Some(7));
        assert_eq!(&f.payload[..], &[0x08, 0x02]);
        assert_eq!(&f.attachment[..], b"DATA");
        assert!(buf.is_empty());
    }

    #[test]
    fn golden_response_both_ways() {
        let golden = golden_response();
        let meta = RpcMeta {
            response: Some(RpcResponseMeta::default()),
            correlation_id: Some(300),
            ..Default::default()
        };
        let ours = encode(
            meta,
            Bytes::from_static(&[0x08, 0x00]),
            Bytes::from_static(b"xyz"),
            DEFAULT_MAX_BODY,
        )
        .unwrap();
        assert_eq!(ours.to_vec(), golden);
        let mut buf = BytesMut::from(&golden[..]);
        let f = Decoder::new(DEFAULT_MAX_BODY)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(f.meta.correlation_id, Some(300));
        assert_eq!(f.meta.response.unwrap().error_code, None);
        assert_eq!(&f.payload[..], &[0x08, 0x00]);
        assert_eq!(&f.attachment[..], b"xyz");
    }

    #[test]
    fn attachment_is_a_slice_of_the_receive_buffer() {
        let golden = golden_request();
        let mut buf = BytesMut::from(&golden[..]);
        let start = buf.as_ptr() as usize;
        let f = Decoder::new(DEFAULT_MAX_BODY)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(f.attachment.as_ptr() as usize, start + golden.len() - 4);
    }

    fn header(magic: &[u8; 4], body: u32, meta: u32) -> Vec<u8> {
        let mut h = magic.to_vec();
        h.extend_from_slice(&body.to_be_bytes());
        h.extend_from_slice(&meta.to_be_bytes());
        h
    }

    #[test]
    fn hostile_headers_are_refused_before_any_allocation() {
        let d = Decoder::new(1 << 20);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"GET / HTTP/1.1\r\n".to_vec(), "magic"),
            (b"PRI ".to_vec(), "magic"),
            (b"PX".to_vec(), "magic"),
            (header(b"PRPC", u32::MAX, 0), "large"),
            (header(b"PRPC", (1 << 20) + 1, 0), "large"),
            (header(b"PRPC", 10, 11), "meta"),
        ];
        for (bytes, what) in cases {
            let mut buf = BytesMut::from(&bytes[..]);
            let cap = buf.capacity();
            let err = d.decode(&mut buf).unwrap_err();
            match what {
                "magic" => assert!(matches!(err, FrameError::BadMagic(_)), "{err}"),
                "large" => assert!(matches!(err, FrameError::TooLarge { .. }), "{err}"),
                _ => assert!(matches!(err, FrameError::MetaPastBody { .. }), "{err}"),
            }
            assert_eq!(buf.capacity(), cap, "nothing allocated for {what}");
        }
    }

    #[test]
    fn attachment_past_the_body_and_bad_meta_are_errors() {
        let d = Decoder::new(DEFAULT_MAX_BODY);
        // meta says attachment_size = 100 in a 3-byte body.
        let meta = [0x28, 0x64];
        let mut bytes = header(b"PRPC", 3, 2);
        bytes.extend_from_slice(&meta);
        bytes.push(0);
        let err = d.decode(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert!(
            matches!(err, FrameError::AttachmentPastBody { .. }),
            "{err}"
        );
        // attachment_size = -1.
        let meta = [0x28, 0xff, 0xff, 0xff, 0xff, 0x0f];
        let mut bytes = header(b"PRPC", 6, 6);
        bytes.extend_from_slice(&meta);
        let err = d.decode(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert!(
            matches!(err, FrameError::AttachmentPastBody { .. }),
            "{err}"
        );
        // A meta that is not protobuf (truncated varint).
        let mut bytes = header(b"PRPC", 1, 1);
        bytes.push(0x80);
        let err = d.decode(&mut BytesMut::from(&bytes[..])).unwrap_err();
        assert!(matches!(err, FrameError::BadMeta(_)), "{err}");
    }

    #[test]
    fn encode_refuses_a_body_over_the_limit() {
        let r = encode(
            request_meta(1),
            Bytes::new(),
            Bytes::from(vec![0u8; 2048]),
            1024,
        );
        assert!(matches!(r, Err(EncodeError::TooLarge { .. })));
    }

    proptest! {
        /// Frames written back to back and delivered in arbitrary pieces decode to the
        /// same frames, in order.
        #[test]
        fn frames_split_anywhere_decode_the_same(
            frames in proptest::collection::vec(
                (any::<i64>(), proptest::collection::vec(any::<u8>(), 0..64),
                 proptest::collection::vec(any::<u8>(), 0..300)),
                1..8),
            cuts in proptest::collection::vec(1usize..97, 0..40),
        ) {
            let mut stream = Vec::new();
            for (id, payload, attachment) in &frames {
                let f = encode(request_meta(*id), Bytes::from(payload.clone()),
                    Bytes::from(attachment.clone()), DEFAULT_MAX_BODY).unwrap();
                stream.extend_from_slice(&f.to_vec());
            }
            let d = Decoder::new(DEFAULT_MAX_BODY);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < stream.len() {
                let n = (*cut.next().unwrap_or(&stream.len())).min(stream.len() - pos);
                buf.extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                while let Some(f) = d.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got.len(), frames.len());
            for (f, (id, payload, attachment)) in got.iter().zip(&frames) {
                prop_assert_eq!(f.meta.correlation_id, Some(*id));
                prop_assert_eq!(&f.payload[..], &payload[..]);
                prop_assert_eq!(&f.attachment[..], &attachment[..]);
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let d = Decoder::new(1 << 16);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
            let mut prefixed = BytesMut::from(&b"PRPC"[..]);
            prefixed.extend_from_slice(&bytes);
            while let Ok(Some(_)) = d.decode(&mut prefixed) {}
        }
    }
}
