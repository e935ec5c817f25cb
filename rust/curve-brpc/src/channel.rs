//! A client's connection to one brpc server: many calls in flight on one TCP stream,
//! replies matched to callers by correlation id in whatever order they come back.
//!
//! When the connection fails, every call waiting on it fails at once with the reason,
//! and the channel stays failed: the owner connects a new one. A call that times out or
//! is dropped removes its pending entry, so a reply that arrives later is discarded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use curve_proto::brpc::{RpcMeta, RpcRequestMeta};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::frame::{EncodeError, encode};
use crate::wire::{FrameReader, FrameSender, ReadError, StillWanted};

/// A successful reply: the encoded response message and its attachment.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub payload: Bytes,
    pub attachment: Bytes,
}

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// The connection failed before the reply came (reset, closed, a bad frame).
    #[error("connection to {addr} failed: {message}")]
    Broken { addr: String, message: String },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server answered with a brpc error code instead of a response.
    #[error("brpc error {code}: {text}")]
    Remote { code: i32, text: String },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

type Waiter = oneshot::Sender<Result<Reply, CallError>>;

struct Pending {
    waiters: HashMap<i64, Waiter>,
    /// Set once the connection failed; no call may wait after that.
    failed: Option<String>,
}

struct Shared {
    addr: String,
    pending: Mutex<Pending>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail_all(&self, why: &str) {
        let waiters = {
            let mut p = self.lock();
            p.failed.get_or_insert_with(|| why.to_string());
            std::mem::take(&mut p.waiters)
        };
        for (_, w) in waiters {
            let _ = w.send(Err(CallError::Broken {
                addr: self.addr.clone(),
                message: why.to_string(),
            }));
        }
    }
}

/// Removes a call's entry however the call ends (reply, timeout, or its future dropped).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.id);
    }
}

/// One connection. Dropping it closes the connection.
pub struct Channel {
    shared: Arc<Shared>,
    sender: FrameSender<OwnedWriteHalf>,
    next_id: AtomicI64,
    max_body: u32,
    /// Calls leave their frames to the writer task instead of writing them themselves
    /// (see `over`).
    queued: bool,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
        self.shared.fail_all("channel dropped");
    }
}

impl Channel {
    /// Connects within `connect_timeout`, with TCP_NODELAY. Must run in a tokio runtime.
    pub async fn connect(
        addr: &str,
        connect_timeout: Duration,
        max_body: u32,
    ) -> Result<Channel, CallError> {
        let connect_err = |message: String| CallError::Connect {
            addr: addr.to_string(),
            message,
        };
        let target: SocketAddr = addr
            .parse()
            .map_err(|e| connect_err(format!("not an ip:port address: {e}")))?;
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(target))
            .await
            .map_err(|_| connect_err(format!("timed out after {connect_timeout:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
        // Small RPCs must not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| connect_err(format!("TCP_NODELAY: {e}")))?;
        crate::tcp::prefer_unpaced_on_loopback(&stream, target);
        Ok(Self::over(stream, addr, max_body))
    }

    fn over(stream: TcpStream, addr: &str, max_body: u32) -> Channel {
        let shared = Arc::new(Shared {
            addr: addr.to_string(),
            pending: Mutex::new(Pending {
                waiters: HashMap::new(),
                failed: None,
            }),
        });
        let (read_half, write_half) = stream.into_split();
        let wanted = {
            let shared = shared.clone();
            Arc::new(move |id: i64| shared.lock().waiters.contains_key(&id)) as StillWanted
        };
        let (sender, write_frames) = FrameSender::new(write_half, Some(wanted));
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let why = match write_frames.await {
                    Ok(()) => "channel closed".to_string(),
                    Err(e) => format!("write failed: {e}"),
                };
                shared.fail_all(&why);
            })
        };
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut reader = FrameReader::new(read_half, max_body);
                let why = loop {
                    match reader.next().await {
                        Ok(frame) => deliver(&shared, frame),
                        Err(e @ ReadError::Frame(_)) => {
                            tracing::warn!(addr = %shared.addr, "closing baidu_std connection: {e}");
                            break e.to_string();
                        }
                        Err(e) => break e.to_string(),
                    }
                };
                shared.fail_all(&why);
            })
        };
        // On a current-thread runtime (the local cluster's servers) the writer task runs
        // on the caller's own thread, so queueing a frame costs no wakeup, and the calls
        // a server makes in one turn of its loop (a leader replicating the writes that
        // arrived together) share one `writev`, which also wakes the peer once. On a
        // multi-threaded runtime (the client) waking the writer's thread would cost more
        // than the caller writing its frame itself (`FrameSender::send`).
        let queued = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        Channel {
            shared,
            sender,
            next_id: AtomicI64::new(1),
            max_body,
            queued,
            reader,
            writer,
        }
    }

    /// False once the connection failed; calls then fail at once.
    pub fn is_usable(&self) -> bool {
        self.shared.lock().failed.is_none()
    }

    /// Calls `service.method` with an encoded request and its attachment; gives up after
    /// `timeout`, which is also sent to the server (newer brpc reads it).
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let meta = RpcMeta {
            request: Some(RpcRequestMeta {
                service_name: service.to_string(),
                method_name: method.to_string(),
                log_id: Some(id),
                timeout_ms: Some(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)),
                ..Default::default()
            }),
            correlation_id: Some(id),
            ..Default::default()
        };
        let frame = encode(meta, request, attachment, self.max_body)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.shared.lock();
            if let Some(why) = &p.failed {
                return Err(CallError::Broken {
                    addr: self.shared.addr.clone(),
                    message: why.clone(),
                });
            }
            p.waiters.insert(id, tx);
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        let sent = if self.queued {
            self.sender.queue(frame, id)
        } else {
            self.sender.send(frame, id)
        };
        if sent.is_err() {
            return Err(CallError::Broken {
                addr: self.shared.addr.clone(),
                message: "writer stopped".into(),
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Broken {
                addr: self.shared.addr.clone(),
                message: "connection closed".into(),
            }),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }
}

/// Hands a response to its caller; one nobody waits for any more is dropped.
fn deliver(shared: &Shared, frame: crate::frame::Frame) {
    let Some(id) = frame.meta.correlation_id else {
        tracing::debug!(addr = %shared.addr, "baidu_std response without correlation id");
        return;
    };
    let Some(waiter) = shared.lock().waiters.remove(&id) else {
        return;
    };
    let error = frame
        .meta
        .response
        .as_ref()
        .and_then(|r| r.error_code.filter(|c| *c != 0).map(|c| (c, r)));
    let result = match error {
        Some((code, r)) => Err(CallError::Remote {
            code,
            text: r.error_text.clone().unwrap_or_default(),
        }),
        None => Ok(Reply {
            payload: frame.payload,
            attachment: frame.attachment,
        }),
    };
    let _ = waiter.send(result);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_BODY, Decoder};
    use bytes::BytesMut;
    use curve_proto::brpc::RpcResponseMeta;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads `n` requests, then answers them in reverse order, echoing each request's
    /// message as the response and its attachment doubled.
    async fn reversing_server(listener: TcpListener, n: usize) {
        let (mut s, _) = listener.accept().await.unwrap();
        let d = Decoder::new(DEFAULT_MAX_BODY);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < n {
            if let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
                continue;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        }
        for f in got.into_iter().rev() {
            let mut att = f.attachment.to_vec();
            att.extend_from_slice(&f.attachment);
            let meta = RpcMeta {
                response: Some(RpcResponseMeta::default()),
                correlation_id: f.meta.correlation_id,
                ..Default::default()
            };
            let out = encode(meta, f.payload, Bytes::from(att), DEFAULT_MAX_BODY).unwrap();
            s.write_all(&out.to_vec()).await.unwrap();
        }
        // Keep the connection open until the client is done.
        let _ = s.read(&mut [0u8; 1]).await;
    }

    #[tokio::test]
    async fn pipelined_calls_answered_out_of_order_reach_their_callers() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(reversing_server(l, 16));
        let ch = Arc::new(
            Channel::connect(&addr, Duration::from_secs(1), DEFAULT_MAX_BODY)
                .await
                .unwrap(),
        );
        let calls = (0..16u8).map(|i| {
            let ch = ch.clone();
            async move {
                let r = ch
                    .call(
                        "S",
                        "M",
                        Bytes::from(vec![i]),
                        Bytes::from(vec![i; usize::from(i) * 100]),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                assert_eq!(&r.payload[..], &[i]);
                assert_eq!(r.attachment.len(), usize::from(i) * 200);
                assert!(r.attachment.iter().all(|b| *b == i));
            }
        });
        futures::future::join_all(calls).await;
        drop(ch);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_sends_garbage_fails_every_waiting_call_promptly() {
        for garbage in [
            b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            // An announced body of 4 GiB - 1: refused, never allocated.
            [&b"PRPC"[..], &u32::MAX.to_be_bytes(), &0u32.to_be_bytes()].concat(),
            // attachment_size past the body.
            [
                &b"PRPC"[..],
                &3u32.to_be_bytes(),
                &2u32.to_be_bytes(),
                &[0x28, 0x64, 0],
            ]
            .concat(),
            // Half a frame, then close.
            [
                &b"PRPC"[..],
                &100u32.to_be_bytes(),
                &0u32.to_be_bytes(),
                &[0; 10],
            ]
            .concat(),
        ] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await.unwrap();
                s.write_all(&garbage).await.unwrap();
                // Close (the truncated case) after the bytes are out.
            });
            let ch = Channel::connect(&addr, Duration::from_secs(1), DEFAULT_MAX_BODY)
                .await
                .unwrap();
            let started = std::time::Instant::now();
            let r = ch
                .call(
                    "S",
                    "M",
                    Bytes::new(),
                    Bytes::new(),
                    Duration::from_secs(10),
                )
                .await;
            assert!(matches!(r, Err(CallError::Broken { .. })), "{r:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
            assert!(!ch.is_usable());
            // Later calls fail at once, too.
            let r = ch
                .call(
                    "S",
                    "M",
                    Bytes::new(),
                    Bytes::new(),
                    Duration::from_secs(10),
                )
                .await;
            assert!(matches!(r, Err(CallError::Broken { .. })), "{r:?}");
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_the_entry_is_dropped() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(s);
        });
        let ch = Channel::connect(&addr, Duration::from_secs(1), DEFAULT_MAX_BODY)
            .await
            .unwrap();
        let r = ch
            .call(
                "S",
                "M",
                Bytes::new(),
                Bytes::new(),
                Duration::from_millis(100),
            )
            .await;
        assert!(matches!(r, Err(CallError::Timeout(_))), "{r:?}");
        assert!(ch.shared.lock().waiters.is_empty());
        server.abort();
    }

    #[tokio::test]
    async fn remote_errors_carry_the_brpc_code() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let d = Decoder::new(DEFAULT_MAX_BODY);
            let mut buf = BytesMut::new();
            let f = loop {
                if let Some(f) = d.decode(&mut buf).unwrap() {
                    break f;
                }
                s.read_buf(&mut buf).await.unwrap();
            };
            let meta = RpcMeta {
                response: Some(RpcResponseMeta {
                    error_code: Some(1002),
                    error_text: Some("no method".into()),
                }),
                correlation_id: f.meta.correlation_id,
                ..Default::default()
            };
            let out = encode(meta, Bytes::new(), Bytes::new(), DEFAULT_MAX_BODY).unwrap();
            s.write_all(&out.to_vec()).await.unwrap();
            let _ = s.read(&mut [0u8; 1]).await;
        });
        let ch = Channel::connect(&addr, Duration::from_secs(1), DEFAULT_MAX_BODY)
            .await
            .unwrap();
        let r = ch
            .call("S", "M", Bytes::new(), Bytes::new(), Duration::from_secs(5))
            .await;
        assert_eq!(
            r.unwrap_err(),
            CallError::Remote {
                code: 1002,
                text: "no method".into()
            }
        );
        drop(ch);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = Channel::connect(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(1),
            DEFAULT_MAX_BODY,
        )
        .await;
        assert!(matches!(r, Err(CallError::Connect { .. })));
    }
}
