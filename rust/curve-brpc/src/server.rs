//! The server side: a connection loop that runs each request that must wait as a task of
//! its own (so pipelined calls are answered as they finish, in any order), and an accept
//! loop that lets baidu_std and gRPC share one port, as brpc servers do, by the first
//! bytes a client sends: `PRPC` for baidu_std, anything else (the HTTP/2 preface) for
//! gRPC.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use curve_proto::brpc::{RpcMeta, RpcResponseMeta};
use futures::future::BoxFuture;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::errors;
use crate::frame::{DEFAULT_MAX_BODY, MAGIC, encode};
use crate::wire::{FrameReader, FrameSender, ReadError};

/// A call as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub service: String,
    pub method: String,
    pub payload: Bytes,
    pub attachment: Bytes,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// A successful answer: the encoded response and an attachment (empty for none).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub payload: Bytes,
    pub attachment: Bytes,
}

/// A failed call: brpc's error code and text go back in `RpcResponseMeta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i32,
    pub text: String,
}

impl RpcError {
    pub fn new(code: i32, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }

    pub fn no_service(service: &str) -> Self {
        Self::new(errors::ENOSERVICE, format!("no service {service}"))
    }

    pub fn no_method(service: &str, method: &str) -> Self {
        Self::new(
            errors::ENOMETHOD,
            format!("no method {method} in {service}"),
        )
    }
}

/// What a server runs for each call. Implementations route by service and method.
pub trait Dispatch: Send + Sync + 'static {
    fn call(&self, request: Request) -> BoxFuture<'static, Result<Response, RpcError>>;
}

/// Decodes a request message, runs `handler`, encodes its answer: the common shape of a
/// unary method without attachments. An undecodable request is EREQUEST, as brpc's.
pub async fn unary<Req, Resp, Fut>(
    payload: Bytes,
    handler: impl FnOnce(Req) -> Fut,
) -> Result<Response, RpcError>
where
    Req: Message + Default,
    Resp: Message,
    Fut: std::future::Future<Output = Result<Resp, RpcError>>,
{
    let req = Req::decode(payload)
        .map_err(|e| RpcError::new(errors::EREQUEST, format!("cannot parse request: {e}")))?;
    let resp = handler(req).await?;
    Ok(Response {
        payload: Bytes::from(resp.encode_to_vec()),
        attachment: Bytes::new(),
    })
}

/// Serves one baidu_std connection until the peer closes it or sends something that is
/// not baidu_std (then the connection is closed and its calls are dropped).
pub async fn serve_connection(stream: TcpStream, dispatch: Arc<dyn Dispatch>, max_body: u32) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let (read_half, write_half) = stream.into_split();
    // Answers are queued, not written by the call's task: a server runs on one thread, so
    // the writer task costs no wakeup there, and answers that finish together share a
    // `writev`.
    let (queue, write_frames) = FrameSender::new(write_half, None);
    let writer = tokio::spawn(write_frames);
    let mut calls = JoinSet::new();
    let mut reader = FrameReader::new(read_half, max_body);
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            // Reap finished calls so the set does not grow with the connection's age.
            Some(_) = calls.join_next(), if !calls.is_empty() => continue,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(ReadError::Closed) => break,
            Err(e) => {
                tracing::warn!(%peer, "closing baidu_std connection: {e}");
                break;
            }
        };
        let correlation_id = frame.meta.correlation_id;
        let Some(request_meta) = frame.meta.request else {
            tracing::warn!(%peer, "closing baidu_std connection: a frame without request meta");
            break;
        };
        let request = Request {
            service: request_meta.service_name,
            method: request_meta.method_name,
            payload: frame.payload,
            attachment: frame.attachment,
            peer,
            local,
        };
        let call = dispatch.call(request);
        let queue = queue.clone();
        let mut answer = Box::pin(async move {
            let (error, resp) = match call.await {
                Ok(r) => (None, r),
                Err(e) => (Some(e), Response::default()),
            };
            let meta = RpcMeta {
                response: Some(RpcResponseMeta {
                    error_code: error.as_ref().map(|e| e.code),
                    error_text: error.map(|e| e.text),
                }),
                correlation_id,
                ..Default::default()
            };
            match encode(meta, resp.payload, resp.attachment, max_body) {
                Ok(out) => {
                    let _ = queue.enqueue(out);
                }
                Err(e) => {
                    let meta = RpcMeta {
                        response: Some(RpcResponseMeta {
                            error_code: Some(errors::ERESPONSE),
                            error_text: Some(e.to_string()),
                        }),
                        correlation_id,
                        ..Default::default()
                    };
                    if let Ok(out) = encode(meta, Bytes::new(), Bytes::new(), max_body) {
                        let _ = queue.enqueue(out);
                    }
                }
            }
        });
        // Polled here once first: a call that needs no waiting (a follower's replicated
        // write, a read, both done inline on page cache) answers without a task of its
        // own, whose spawn, scheduling and reaping cost more than the call itself. One
        // that waits goes on as a task (its first poll's wakeup, if any, only nudges this
        // loop); the next frame is read once this one's inline work is done.
        if futures::poll!(answer.as_mut()).is_pending() {
            calls.spawn(answer);
        }
    }
    // Calls still running answer into a queue nobody writes any more.
    calls.abort_all();
    drop(queue);
    let _ = writer.await;
}

/// How long a new connection may stay silent before its protocol is known.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC side of a shared port: the connections whose first bytes were not `PRPC`,
/// as the stream of sockets tonic's `serve_with_incoming` takes.
pub struct GrpcIncoming {
    rx: mpsc::Receiver<TcpStream>,
}

impl futures::Stream for GrpcIncoming {
    type Item = std::io::Result<TcpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}

/// Keeps the accept loop and the baidu_std connections alive; dropping it stops them.
pub struct SharedPort {
    tasks: JoinSet<()>,
}

impl SharedPort {
    pub fn shutdown(mut self) {
        self.tasks.abort_all();
    }
}

/// Accepts on `listener`, serves baidu_std connections with `dispatch` and passes the
/// rest to gRPC through the returned stream. Every accepted socket gets TCP_NODELAY, and
/// one from loopback an unpaced congestion control (tcp.rs).
pub fn share_port(
    listener: TcpListener,
    dispatch: Arc<dyn Dispatch>,
) -> (GrpcIncoming, SharedPort) {
    share_port_with_limit(listener, dispatch, DEFAULT_MAX_BODY)
}

pub fn share_port_with_limit(
    listener: TcpListener,
    dispatch: Arc<dyn Dispatch>,
    max_body: u32,
) -> (GrpcIncoming, SharedPort) {
    let (tx, rx) = mpsc::channel(64);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        crate::tcp::prefer_unpaced_on_loopback(&stream, peer);
                        stream
                    }
                    Err(e) => {
                        // EMFILE and friends pass; the server must outlive them.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
            let tx = tx.clone();
            let dispatch = dispatch.clone();
            connections.spawn(async move {
                match sniff(&stream).await {
                    Some(true) => serve_connection(stream, dispatch, max_body).await,
                    Some(false) => {
                        let _ = tx.send(stream).await;
                    }
                    None => {}
                }
            });
        }
    });
    (GrpcIncoming { rx }, SharedPort { tasks })
}

/// `Some(true)` for baidu_std, `Some(false)` for anything else, `None` if the peer
/// closed or stayed silent.
async fn sniff(stream: &TcpStream) -> Option<bool> {
    let mut head = [0u8; 4];
    let peek = async {
        loop {
            let n = stream.peek(&mut head).await.ok()?;
            if n == 0 {
                return None;
            }
            // A prefix that already differs from PRPC is not baidu_std.
            if head[..n] != MAGIC[..n] {
                return Some(false);
            }
            if n == MAGIC.len() {
                return Some(true);
            }
            // Fewer than four bytes so far: wait for more before peeking again.
            stream.readable().await.ok()?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(SNIFF_TIMEOUT, peek)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::channel::{CallError, Channel};

    struct Echo;

    impl Dispatch for Echo {
        fn call(&self, r: Request) -> BoxFuture<'static, Result<Response, RpcError>> {
            Box::pin(async move {
                match (r.service.as_str(), r.method.as_str()) {
                    ("test.Echo", "Echo") => {
                        // Later requests finish first, to test reordering.
                        let delay = 50u64.saturating_sub(u64::from(r.payload[0]) * 5);
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Ok(Response {
                            payload: r.payload,
                            attachment: r.attachment,
                        })
                    }
                    ("test.Echo", m) => Err(RpcError::no_method("test.Echo", m)),
                    (s, _) => Err(RpcError::no_service(s)),
                }
            })
        }
    }

    #[tokio::test]
    async fn a_shared_port_serves_baidu_std_and_hands_other_protocols_on() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (mut grpc, port) = share_port(l, Arc::new(Echo));
        let ch = Arc::new(
            Channel::connect(&addr, Duration::from_secs(1), DEFAULT_MAX_BODY)
                .await
                .unwrap(),
        );
        let calls = (0..10u8).map(|i| {
            let ch = ch.clone();
            async move {
                let r = ch
                    .call(
                        "test.Echo",
                        "Echo",
                        Bytes::from(vec![i]),
                        Bytes::from(vec![i; 5000]),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                assert_eq!(&r.payload[..], &[i]);
                assert_eq!(r.attachment.len(), 5000);
            }
        });
        futures::future::join_all(calls).await;
        let r = ch
            .call(
                "test.Echo",
                "Nope",
                Bytes::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(
            r,
            Err(CallError::Remote {
                code: errors::ENOMETHOD,
                ..
            })
        ));
        let r = ch
            .call(
                "test.Other",
                "X",
                Bytes::new(),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(
            r,
            Err(CallError::Remote {
                code: errors::ENOSERVICE,
                ..
            })
        ));

        // An HTTP/2 client's preface goes to the gRPC side, bytes untouched.
        let mut h2 = TcpStream::connect(&addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut h2, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let handed = futures::StreamExt::next(&mut grpc).await.unwrap().unwrap();
        let mut head = [0u8; 4];
        handed.peek(&mut head).await.unwrap();
        assert_eq!(&head, b"PRI ");
        port.shutdown();
    }

    #[tokio::test]
    async fn a_bad_frame_closes_only_its_own_connection() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (_grpc, _port) = share_port(l, Arc::new(Echo));
        let good = Channel::connect(&addr, Duration::from_secs(1), DEFAULT_MAX_BODY)
            .await
            .unwrap();
        let mut bad = TcpStream::connect(&addr).await.unwrap();
        // PRPC, then a body size over the limit.
        let frame = [&b"PRPC"[..], &u32::MAX.to_be_bytes(), &0u32.to_be_bytes()].concat();
        tokio::io::AsyncWriteExt::write_all(&mut bad, &frame)
            .await
            .unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut bad, &mut rest),
        )
        .await
        .unwrap();
        assert!(
            n.is_ok_and(|n| n == 0) || rest.is_empty(),
            "server closed it"
        );
        let r = good
            .call(
                "test.Echo",
                "Echo",
                Bytes::from_static(&[1]),
                Bytes::new(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(&r.payload[..], &[1]);
    }
}
