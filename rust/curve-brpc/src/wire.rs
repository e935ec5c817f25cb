//! The two halves of a baidu_std connection, shared by the client channel and the server:
//! a writer task that drains queued frames with vectored writes, and a reader that cuts
//! frames off a growing receive buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{Decoder, Frame, FrameError, OutFrame};

/// Frames gathered into one `writev`: enough to batch pipelined small calls, few enough
/// to stay far below IOV_MAX (1024) with three buffers each.
const FRAMES_PER_WRITE: usize = 64;
/// Bytes gathered into one `writev` before it is issued.
const BYTES_PER_WRITE: usize = 4 << 20;
/// The receive buffer's growth step while no frame length is known yet.
const READ_CHUNK: usize = 64 * 1024;

/// Writes queued frames until the queue closes or a write fails; then shuts the socket's
/// write side. Buffers go to the socket as they are: nothing is copied into a frame.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    mut out: W,
    mut queue: mpsc::UnboundedReceiver<OutFrame>,
) -> io::Result<()> {
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    while let Some(first) = queue.recv().await {
        let mut bytes = 0;
        let mut frames = 0;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            bytes += frame.len();
            frames += 1;
            pending.extend(frame.parts.into_iter().filter(|b| !b.is_empty()));
            if frames < FRAMES_PER_WRITE && bytes < BYTES_PER_WRITE {
                next = queue.try_recv().ok();
            }
        }
        write_all_vectored(&mut out, &mut pending).await?;
    }
    out.shutdown().await
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

/// Reads frames off one socket.
pub(crate) struct FrameReader<R> {
    input: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(input: R, max_body: u32) -> Self {
        Self {
            input,
            buf: BytesMut::new(),
            decoder: Decoder::new(max_body),
        }
    }

    /// The next frame. A clean close between frames is `Closed`; inside one, `Truncated`.
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(frame);
            }
            // Validated against the frame limit by `needed`, so reserving it is safe.
            let needed = self.decoder.needed(&self.buf)?;
            let want = needed.saturating_sub(self.buf.len()).max(READ_CHUNK);
            self.buf.reserve(want);
            if self.input.read_buf(&mut self.buf).await? == 0 {
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

    #[tokio::test]
    async fn a_large_attachment_goes_out_whole_through_a_small_pipe() {
        let (a, b) = tokio::io::duplex(4096);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_frames(a, rx));
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
            tx.send(f).unwrap();
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
}
