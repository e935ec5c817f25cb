//! The two halves of a baidu_std connection, shared by the client channel and the server:
//! a sender whose frames the calling thread writes itself while the socket is free (a
//! writer task takes over what does not fit, and every frame queued behind it), and a
//! reader that cuts frames off a growing receive buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};

use crate::frame::{Decoder, Frame, FrameError, OutFrame};

/// Frames gathered into one `writev`: enough to batch pipelined small calls, few enough
/// to stay far below IOV_MAX (1024) with three buffers each.
const FRAMES_PER_WRITE: usize = 64;
/// Bytes gathered into one `writev` before it is issued.
const BYTES_PER_WRITE: usize = 4 << 20;
/// The receive buffer's growth step while no frame length is known yet.
const READ_CHUNK: usize = 64 * 1024;

/// A socket that can be written without waiting: some bytes now, or `WouldBlock`.
pub(crate) trait TryWrite {
    fn try_write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl TryWrite for OwnedWriteHalf {
    fn try_write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_write_vectored(bufs)
    }
}

/// The socket and the unwritten rest of a frame a caller began.
struct WriteSide<W> {
    out: W,
    rest: VecDeque<Bytes>,
}

/// Asked by the writer task of a call's queued frame, by its correlation id, before it
/// writes it: a call that timed out or was dropped while its frame waited is not sent.
/// A request sent after its caller gave up could reach a peer that thaws (SIGSTOP) long
/// after, and a replicated write applied then could overwrite newer data.
pub(crate) type StillWanted = Arc<dyn Fn(i64) -> bool + Send + Sync>;

/// A queued frame and, for a call, its correlation id.
type Queued = (OutFrame, Option<i64>);

/// The sending side of a connection, cheap to clone. Dropping every clone ends the writer
/// task, which then shuts the socket's write side.
pub(crate) struct FrameSender<W> {
    side: Arc<Mutex<WriteSide<W>>>,
    queue: mpsc::UnboundedSender<Queued>,
}

impl<W> Clone for FrameSender<W> {
    fn clone(&self) -> Self {
        Self {
            side: self.side.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// The frame sent by a caller to have the writer task finish a frame it began.
fn nudge() -> OutFrame {
    OutFrame {
        parts: [Bytes::new(), Bytes::new(), Bytes::new()],
    }
}

impl<W: AsyncWrite + TryWrite + Unpin + Send + 'static> FrameSender<W> {
    /// The sender and the writer task to spawn beside it; `wanted` (clients) filters
    /// queued call frames.
    pub fn new(
        out: W,
        wanted: Option<StillWanted>,
    ) -> (
        Self,
        impl std::future::Future<Output = io::Result<()>> + Send,
    ) {
        let side = Arc::new(Mutex::new(WriteSide {
            out,
            rest: VecDeque::new(),
        }));
        let (queue, frames) = mpsc::unbounded_channel();
        let writer = write_frames(side.clone(), frames, wanted);
        (Self { side, queue }, writer)
    }

    /// Sends a frame. While no write is under way, the calling thread writes it itself with
    /// one `writev`: on a multi-threaded runtime that saves waking the writer task's thread
    /// for every call, the largest cost of a small call on our VMs (README, Performance).
    /// What the socket does not take at once is left to the writer task, so a caller that
    /// goes away mid-frame never leaves a torn frame on the wire. Err: the writer is gone.
    pub fn send(&self, frame: OutFrame, id: i64) -> Result<(), ()> {
        let Ok(mut side) = self.side.try_lock() else {
            return self.queue.send((frame, Some(id))).map_err(|_| ());
        };
        if !side.rest.is_empty() {
            drop(side);
            return self.queue.send((frame, Some(id))).map_err(|_| ());
        }
        let [a, b, c] = &frame.parts;
        let slices = [IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)];
        // An error other than WouldBlock is met again by the writer task, which then
        // fails the connection.
        let mut written = side.out.try_write_now(&slices).unwrap_or(0);
        if written == frame.len() {
            return Ok(());
        }
        for part in frame.parts {
            if written >= part.len() {
                written -= part.len();
                continue;
            }
            let mut part = part;
            part.advance(written);
            written = 0;
            side.rest.push_back(part);
        }
        drop(side);
        self.enqueue(nudge())
    }

    /// Hands a call's frame to the writer task, which sends it unless the call no longer
    /// wants it (`StillWanted`) by then, batched with the frames queued beside it into one
    /// `writev`. Err: the writer is gone.
    pub fn queue(&self, frame: OutFrame, id: i64) -> Result<(), ()> {
        self.queue.send((frame, Some(id))).map_err(|_| ())
    }

    /// Hands a frame to the writer task (batched with others into one `writev`).
    pub fn enqueue(&self, frame: OutFrame) -> Result<(), ()> {
        self.queue.send((frame, None)).map_err(|_| ())
    }
}

/// Writes queued frames until the queue closes or a write fails; then shuts the socket's
/// write side. Buffers go to the socket as they are: nothing is copied into a frame.
async fn write_frames<W: AsyncWrite + Unpin>(
    side: Arc<Mutex<WriteSide<W>>>,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    wanted: Option<StillWanted>,
) -> io::Result<()> {
    while let Some(first) = queue.recv().await {
        let mut guard = side.lock().await;
        let side = &mut *guard;
        // A frame a caller began goes out first: it is already partly on the wire.
        let mut bytes = side.rest.iter().map(Bytes::len).sum::<usize>();
        let mut frames = 0;
        let mut next = Some(first);
        while let Some((frame, id)) = next.take() {
            let abandoned = id.is_some_and(|id| wanted.as_ref().is_some_and(|w| !w(id)));
            if abandoned {
                next = queue.try_recv().ok();
                continue;
            }
            bytes += frame.len();
            frames += 1;
            side.rest
                .extend(frame.parts.into_iter().filter(|b| !b.is_empty()));
            if frames < FRAMES_PER_WRITE && bytes < BYTES_PER_WRITE {
                next = queue.try_recv().ok();
            }
        }
        write_all_vectored(&mut side.out, &mut side.rest).await?;
    }
    side.lock().await.out.shutdown().await
}
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    out: &mut W,
    pending: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    while !pending.is_empty() {
        let slices: Vec<IoSlice<'_>> = pending.iter().map(|b| IoSlice::new(b)).collect();
        let mut written = out.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "socket accepted no bytes",
            ));
        }
        while written > 0 {
            let Some(front) = pending.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                pending.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    out.flush().await
}

/// Why a connection's reading side stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed by the peer")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// The largest frame size remembered as the size of the next one (see `FrameReader`).
const MAX_SIZE_HINT: usize = 4 << 20;

/// Reads frames off one socket.
///
/// Frames are slices of the receive buffer, handed out without a copy; so a buffer that
/// is too small for the frame it holds part of must be reallocated, copying that part.
/// With chunk data split into 64 KiB pieces every data frame is just over 64 KiB, and a
/// fixed 64 KiB read size copied nearly every frame once more (it showed in the profile
/// of 1 MiB writes at the chunkservers). Instead, a read into an empty buffer makes room
/// for a frame as large as the last large one, and the rest of a large frame is read up
/// to its end and no further, so the next frame starts in a buffer of its own.
pub(crate) struct FrameReader<R> {
    input: R,
    buf: BytesMut,
    decoder: Decoder,
    /// The size of the last frame larger than `READ_CHUNK` (at most `MAX_SIZE_HINT`).
    size_hint: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(input: R, max_body: u32) -> Self {
        Self {
            input,
            buf: BytesMut::new(),
            decoder: Decoder::new(max_body),
            size_hint: READ_CHUNK,
        }
    }

    /// The next frame. A clean close between frames is `Closed`; inside one, `Truncated`.
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            let before = self.buf.len();
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                let size = before - self.buf.len();
                if size > READ_CHUNK {
                    self.size_hint = size.min(MAX_SIZE_HINT);
                }
                return Ok(frame);
            }
            // Validated against the frame limit by `needed`, so reserving it is safe.
            let needed = self.decoder.needed(&self.buf)?;
            let missing = needed.saturating_sub(self.buf.len());
            let read = if self.buf.is_empty() {
                self.buf.reserve(self.size_hint.max(READ_CHUNK));
                self.input.read_buf(&mut self.buf).await?
            } else if missing >= READ_CHUNK / 4 {
                self.buf.reserve(missing);
                (&mut self.input)
                    .take(missing as u64)
                    .read_buf(&mut self.buf)
                    .await?
            } else {
                // Little is missing: room for it, and whatever spare room there is.
                self.buf.reserve(missing);
                self.input.read_buf(&mut self.buf).await?
            };
            if read == 0 {
                return Err(if self.buf.is_empty() {
                    ReadError::Closed
                } else {
                    FrameError::Truncated(self.buf.len()).into()
                });
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::{DEFAULT_MAX_BODY, encode};
    use curve_proto::brpc::RpcMeta;

    /// A pipe no caller can write to directly: each frame is left to the writer task whole.
    struct SmallPipe {
        inner: tokio::io::DuplexStream,
    }

    impl TryWrite for SmallPipe {
        fn try_write_now(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl AsyncWrite for SmallPipe {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_large_attachment_goes_out_whole_through_a_small_pipe() {
        let (a, b) = tokio::io::duplex(4096);
        let (tx, writer) = FrameSender::new(SmallPipe { inner: a }, None);
        let writer = tokio::spawn(writer);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for id in 0..3 {
            let meta = RpcMeta {
                correlation_id: Some(id),
                ..Default::default()
            };
            let f = encode(
                meta,
                Bytes::from_static(b"m"),
                Bytes::from(data.clone()),
                DEFAULT_MAX_BODY,
            )
            .unwrap();
            tx.send(f, id).unwrap();
        }
        drop(tx);
        let mut reader = FrameReader::new(b, DEFAULT_MAX_BODY);
        for id in 0..3 {
            let f = reader.next().await.unwrap();
            assert_eq!(f.meta.correlation_id, Some(id));
            assert_eq!(&f.payload[..], b"m");
            assert!(f.attachment == data);
        }
        assert!(matches!(reader.next().await, Err(ReadError::Closed)));
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn close_inside_a_frame_is_truncated() {
        let (mut a, b) = tokio::io::duplex(4096);
        let f = encode(
            RpcMeta::default(),
            Bytes::new(),
            Bytes::from(vec![1u8; 100]),
            DEFAULT_MAX_BODY,
        )
        .unwrap()
        .to_vec();
        a.write_all(&f[..50]).await.unwrap();
        drop(a);
        let mut reader = FrameReader::new(b, DEFAULT_MAX_BODY);
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(err, ReadError::Frame(FrameError::Truncated(50))),
            "{err}"
        );
    }

    /// Callers on several threads writing large frames at once over real TCP: the socket
    /// takes part of a frame, the writer task the rest, and every frame arrives whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_direct_writes_never_tear_a_frame() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_keep, write_half) = client.into_split();
        let (tx, writer) = FrameSender::new(write_half, None);
        let writer = tokio::spawn(writer);
        const SENDERS: i64 = 6;
        const EACH: i64 = 20;
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    for i in 0..EACH {
                        let id = t * EACH + i;
                        let meta = RpcMeta {
                            correlation_id: Some(id),
                            ..Default::default()
                        };
                        let body = vec![(id % 251) as u8; 300_000 + id as usize];
                        let f = encode(
                            meta,
                            Bytes::from_static(b"m"),
                            Bytes::from(body),
                            DEFAULT_MAX_BODY,
                        )
                        .unwrap();
                        tx.send(f, id).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let mut reader = FrameReader::new(server, DEFAULT_MAX_BODY);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..SENDERS * EACH {
            let f = reader.next().await.unwrap();
            let id = f.meta.correlation_id.unwrap();
            assert_eq!(f.attachment.len(), 300_000 + id as usize);
            assert!(
                f.attachment.iter().all(|&b| b == (id % 251) as u8),
                "frame {id} torn"
            );
            assert!(seen.insert(id));
        }
        for s in senders {
            s.await.unwrap();
        }
        assert!(matches!(reader.next().await, Err(ReadError::Closed)));
        writer.await.unwrap().unwrap();
    }
}
