//! Read-only opens (upstream's `Open4ReadOnly`): a file read through GetFileInfo alone, with
//! no OpenFile, no session, no lease and no CloseFile, so that opening it leaves no trace on
//! the MDS and never makes it FILE_OCCUPIED. The chunkservers read the origin of clone
//! chunks through it, and the client reads a lazy clone's source through it.
//!
//! Such a file is non-exclusive (upstream's `DefaultReadonlyOpenFlags`): another client may
//! write it meanwhile, so a segment the MDS called unallocated is asked for again on every
//! read instead of being cached as a hole. Its length and layout are those of the
//! GetFileInfo at open; nothing refreshes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use curve_proto::mds::FileInfo;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::auth::UserInfo;
use crate::chunk::{self, ChunkOp, ChunkTarget};
use crate::context::Context;
use crate::error::{Cause, Error, ErrorCode, Result};
use crate::fanout::Running;
use crate::io::{self, ChunkPiece, Geometry};
use crate::metacache::{ChunkAddr, SegmentCache, SegmentInfo, SegmentSlot, locate_pieces};

/// A file opened for reading only; see the module docs.
pub struct ReadOnlyFile {
    ctx: Arc<Context>,
    path: String,
    user: UserInfo,
    info: FileInfo,
    geometry: Geometry,
    blocksize: u64,
    length: u64,
    /// Allocated segments only: holes are asked for again (non-exclusive).
    segments: SegmentCache,
    inflight: Semaphore,
    max_in_flight: usize,
}

impl ReadOnlyFile {
    /// GetFileInfo, nothing else. With `disable_stripe` the file is read as if it were not
    /// striped, file offset = chunk index × chunk size + offset in chunk, which is how a
    /// lazy clone addresses its source (upstream's SourceReader opens it so).
    pub async fn open(
        ctx: Arc<Context>,
        path: &str,
        user: &UserInfo,
        disable_stripe: bool,
    ) -> Result<Arc<ReadOnlyFile>> {
        let info = ctx.mds.get_file_info(path, user).await?;
        let mut geometry = Geometry::from_file_info(&info)
            .map_err(|e| Error::new(e.code, format!("{path}: {}", e.message)))?;
        if disable_stripe {
            geometry.stripe_unit = 0;
            geometry.stripe_count = 0;
        }
        let blocksize = match info.blocksize {
            Some(b) if b > 0 => u64::from(b),
            _ => 4096,
        };
        let max_in_flight = (ctx.conf.file_max_in_flight_rpc_num as usize).max(1);
        Ok(Arc::new(ReadOnlyFile {
            path: path.to_string(),
            user: user.clone(),
            length: info.length.unwrap_or(0),
            geometry,
            blocksize,
            info,
            segments: SegmentCache::default(),
            inflight: Semaphore::new(max_in_flight),
            max_in_flight,
            ctx,
        }))
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's length at open.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The FileInfo GetFileInfo returned at open.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// Fills `buf` from `offset`: any offset and length inside the file, within
    /// `chunkserver.maxRetryTimeMS` like any other IO. Never-written chunks and unallocated
    /// segments read as zeros.
    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let deadline = crate::deadline_after(self.ctx.io_budget());
        self.read_by(offset, buf, deadline).await
    }

    /// [`ReadOnlyFile::read`] against the caller's deadline (a clone's read of its source
    /// counts against the deadline of the clone's IO).
    pub async fn read_by(&self, offset: u64, buf: &mut [u8], deadline: Instant) -> Result<()> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::failed("offset + length overflows"))?;
        if end > self.length {
            return Err(Error::failed(format!(
                "read [{offset}, {end}) of {} is past its end ({} bytes)",
                self.path, self.length
            )));
        }
        let bs = self.blocksize;
        if offset.is_multiple_of(bs) && len.is_multiple_of(bs) {
            return self.read_aligned(offset, buf, deadline).await;
        }
        // Chunkservers take whole blocks: read the blocks around the range and copy out.
        let start = offset - offset % bs;
        let stop = end
            .checked_next_multiple_of(bs)
            .ok_or_else(|| Error::failed("offset + length overflows"))?;
        let span_len =
            usize::try_from(stop - start).map_err(|_| Error::failed("read too large"))?;
        let mut span = vec![0u8; span_len];
        self.read_aligned(start, &mut span, deadline).await?;
        let from = (offset - start) as usize;
        buf.copy_from_slice(&span[from..from + buf.len()]);
        Ok(())
    }

    async fn read_aligned(&self, offset: u64, buf: &mut [u8], deadline: Instant) -> Result<()> {
        let pieces = io::split(
            &self.geometry,
            offset,
            buf.len() as u64,
            self.ctx.split_size(),
        );
        if pieces.iter().map(|p| p.len).sum::<u64>() != buf.len() as u64 {
            return Err(Error::failed(
                "the pieces of a read do not cover its buffer",
            ));
        }
        let addrs = self.locate(&pieces, deadline).await?;
        let mut rest: &mut [u8] = buf;
        let jobs = pieces.iter().zip(addrs).map(|(piece, addr)| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(piece.len as usize);
            rest = tail;
            Ok(async move {
                let data = match addr {
                    Some(a) => self.send_piece(a, piece, deadline).await?,
                    None => None,
                };
                match data {
                    Some(d) if d.len() == head.len() => head.copy_from_slice(&d),
                    Some(d) => {
                        return Err(Error::failed(format!(
                            "{} bytes of data for {} bytes of buffer",
                            d.len(),
                            head.len()
                        )));
                    }
                    None => head.fill(0),
                }
                Ok::<(), Error>(())
            })
        });
        Running::new(pieces.len(), self.max_in_flight)
            .drive(jobs)
            .await
    }

    async fn send_piece(
        &self,
        addr: ChunkAddr,
        piece: &ChunkPiece,
        deadline: Instant,
    ) -> Result<Option<bytes::Bytes>> {
        let _permit = self
            .inflight
            .acquire()
            .await
            .map_err(|_| Error::failed("read-only file is shut"))?;
        let offset = u32::try_from(piece.offset_in_chunk)
            .map_err(|_| Error::failed("offset inside a chunk exceeds 4 GiB"))?;
        let size =
            u32::try_from(piece.len).map_err(|_| Error::failed("sub-request exceeds 4 GiB"))?;
        chunk::send(
            &self.ctx,
            self,
            addr,
            offset,
            size,
            ChunkOp::Read,
            None,
            deadline,
        )
        .await
    }

    /// Where each piece goes; `None` inside a segment the MDS says is not allocated.
    async fn locate(
        &self,
        pieces: &[ChunkPiece],
        deadline: Instant,
    ) -> Result<Vec<Option<ChunkAddr>>> {
        locate_pieces(&self.geometry, pieces, &self.path, |seg| {
            self.segment(seg, deadline)
        })
        .await
    }

    async fn segment(&self, segment_index: u64, deadline: Instant) -> Result<SegmentSlot> {
        if let Some(s) = self.segments.get(segment_index) {
            return Ok(s);
        }
        let budget = Duration::from_millis(self.ctx.conf.mds_max_retry_ms_in_io_path);
        let deadline = deadline.min(crate::deadline_after(budget));
        tokio::time::timeout_at(deadline.into(), self.look_up_segment(segment_index))
            .await
            .unwrap_or_else(|_| {
                Err(Error::failed(format!(
                    "segment {segment_index} of {}: no answer from the MDS in time",
                    self.path
                ))
                .because(Cause::TimedOut))
            })
    }

    async fn look_up_segment(&self, segment_index: u64) -> Result<SegmentSlot> {
        let _one_lookup = self.segments.fetch_lock().lock().await;
        if let Some(s) = self.segments.get(segment_index) {
            return Ok(s);
        }
        let offset = self.geometry.segment_offset(segment_index);
        match self
            .ctx
            .mds
            .get_or_allocate_segment(&self.path, &self.user, offset, false, 0)
            .await?
        {
            Some(seg) => {
                let info = SegmentInfo::from_proto(&seg);
                let mut ids: Vec<u32> = info.chunks.iter().map(|c| c.1).collect();
                ids.sort_unstable();
                ids.dedup();
                self.ctx.copysets.ensure(info.logical_pool_id, &ids).await?;
                let slot = SegmentSlot::Allocated(Arc::new(info));
                self.segments.put(segment_index, slot.clone());
                Ok(slot)
            }
            None => Ok(SegmentSlot::Hole),
        }
    }
}

impl ChunkTarget for ReadOnlyFile {
    fn file_id(&self) -> u64 {
        self.info.id.unwrap_or(0)
    }

    /// Never sent: a read-only file does not write.
    fn write_sn_and_epoch(&self) -> (u64, u64) {
        (0, 0)
    }

    fn check_not_disabled(&self) -> Result<()> {
        Ok(())
    }

    fn refresh_info(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(Err(Error::new(
            ErrorCode::NotSupport,
            "a read-only file is not refreshed",
        ))))
    }
}
