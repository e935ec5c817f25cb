//! Open files: the fd table, each file's session and lease refresher, and the read/write
//! orchestration that resolves segments and fans sub-requests out under the per-file
//! in-flight limit.
//!
//! Lease handling follows §10 with one deliberate deviation: where upstream blocks IO
//! forever (file deleted, renamed away or replaced by another inode), IO on that fd fails
//! with DISABLEIO from then on. A lease that lapsed because the MDS is unreachable (or
//! answered kOwnerAuthFail) makes IO wait for a successful refresh, within the IO's
//! deadline (`chunkserver.maxRetryTimeMS` after it began), then fail with DISABLEIO.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use curve_proto::mds::{CloneSourceSegment, FileInfo, FileStatus, ProtoSession};
use tokio::sync::{Notify, RwLock, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::auth::UserInfo;
use crate::blocks::BlockLocks;
use crate::chunk::{self, ChunkOp, ChunkTarget, RequestSource};
use crate::clone::{CloneSourceInfo, CloneView, SourceReader};
use crate::context::Context;
use crate::error::{Cause, Error, ErrorCode, Result};
use crate::events::warn_limited;
use crate::fanout::Running;
use crate::io::{self, ChunkPiece, Geometry};
use crate::lock;
use crate::mds::RefreshOutcome;
use crate::metacache::{ChunkAddr, SegmentCache, SegmentInfo, SegmentSlot, locate_pieces};
use crate::metrics::{IoMetrics, Sink, UserOp};

/// `buf` as memory that may be uninitialised, for the `*_uninit` reads below.
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the size and alignment of `u8`, so the slice spans
    // exactly `buf`. Writing an uninitialised value through it would leave `buf` invalid
    // as `[u8]`; its only users, `read_uninit` and `pread_uninit`, write nothing but
    // initialised bytes into it (received data through `copy_into`, and zeros).
    unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) }
}

/// Copies `src` into `dst`, which may be uninitialised. The read path passes equal
/// lengths (a reply's data is checked against its piece); anything else is refused
/// without writing.
fn copy_into(dst: &mut [MaybeUninit<u8>], src: &[u8]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(Error::failed(format!(
            "{} bytes of data for {} bytes of buffer",
            src.len(),
            dst.len()
        )));
    }
    // SAFETY: both spans are `src.len()` bytes long (checked above), `src` readable and
    // `dst` writable for as long as their borrows live, and a shared and an exclusive
    // borrow cannot overlap; `MaybeUninit<u8>` has the layout of `u8`.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len());
    }
    Ok(())
}

/// The file's values that RefreshSession/GetFileInfo may update while it is open.
#[derive(Debug, Clone, Copy)]
struct Dynamic {
    seq_num: u64,
    epoch: u64,
    length: u64,
    /// The `curve.mds.FileStatus` last heard of (a flatten turns CloneMetaInstalled into
    /// Cloned while the file is open).
    status: i32,
}

/// Whether IO may proceed.
#[derive(Debug, Clone)]
enum Lease {
    /// Renewed (or granted) at this instant; valid for the lease time after it.
    Valid(Instant),
    /// The MDS refused our credentials on refresh; IO waits for a later success.
    Blocked,
    /// For good: the file is gone or replaced, or the fd is closing.
    Disabled(String),
}

pub struct OpenFile {
    ctx: Arc<Context>,
    pub path: String,
    pub user: UserInfo,
    pub session_id: String,
    /// Inode id seen at open; a refresh reporting another id means the file was replaced.
    pub file_id: u64,
    pub geometry: Geometry,
    pub blocksize: u64,
    lease_time: Duration,
    dynamic: Mutex<Dynamic>,
    lease: watch::Sender<Lease>,
    pub segments: SegmentCache,
    /// `FileInfo.cloneSource` at open (absent or "" for a file that is no lazy clone).
    clone_source: Option<String>,
    /// The source's allocated segments, when OpenFile listed them (a lazy clone opened
    /// while CloneMetaInstalled).
    source: Option<CloneSourceInfo>,
    /// Where reads of a clone's unallocated chunks go; shared by the client's files.
    sources: Arc<SourceReader>,
    /// `global.fileMaxInFlightRPCNum` permits.
    inflight: Semaphore,
    max_in_flight: usize,
    /// Read-held by each IO; Close write-locks it to wait for IO in flight. `true` = closed.
    gate: RwLock<bool>,
    /// Orders read-modify-writes of partial blocks against other writes to them.
    blocks: BlockLocks,
    /// Set by the first `close`.
    closing: std::sync::atomic::AtomicBool,
    refresher: Mutex<Option<Refresher>>,
    /// This file's IO metrics (its client's are in the context).
    pub metrics: IoMetrics,
}

/// One piece of an IO, where it goes (`None`: in a segment not allocated) and the clone
/// source it carries.
struct Located {
    piece: ChunkPiece,
    addr: Option<ChunkAddr>,
    source: Option<RequestSource>,
}

/// What write_zeroes and discard write: 1 MiB of zeros, shared by every piece.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// The lease refresher task and the signal that ends it between two refreshes.
struct Refresher {
    task: JoinHandle<()>,
    stop: Arc<Notify>,
}

impl OpenFile {
    fn new(
        ctx: Arc<Context>,
        path: &str,
        user: &UserInfo,
        session: &ProtoSession,
        info: &FileInfo,
        source_segments: Option<&CloneSourceSegment>,
        sources: Arc<SourceReader>,
    ) -> Result<Self> {
        let max_in_flight = ctx.conf.file_max_in_flight_rpc_num as usize;
        let geometry = Geometry::from_file_info(info)?;
        let blocksize = match info.blocksize {
            Some(b) if b > 0 => u64::from(b),
            _ => 4096,
        };
        let (lease, _) = watch::channel(Lease::Valid(Instant::now()));
        Ok(Self {
            ctx,
            path: path.to_string(),
            user: user.clone(),
            session_id: session.session_id.clone(),
            file_id: info.id.unwrap_or(0),
            geometry,
            blocksize,
            lease_time: Duration::from_micros(u64::from(session.lease_time)),
            dynamic: Mutex::new(Dynamic {
                seq_num: info.seq_num.unwrap_or(1),
                epoch: info.epoch.unwrap_or(0),
                length: info.length.unwrap_or(0),
                status: info.file_status.unwrap_or(0),
            }),
            lease,
            segments: SegmentCache::default(),
            clone_source: info.clone_source.clone(),
            source: CloneSourceInfo::from_open(info, source_segments),
            sources,
            inflight: Semaphore::new(max_in_flight.max(1)),
            max_in_flight: max_in_flight.max(1),
            gate: RwLock::new(false),
            blocks: BlockLocks::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            refresher: Mutex::new(None),
            metrics: IoMetrics::default(),
        })
    }

    /// OpenFile on the MDS, then the lease refresher: every leaseTime /
    /// `mds.refreshTimesPerLease`. The client registers with the MDS (a first refresh)
    /// before this returns (upstream waits one refresh interval): from then on the file is
    /// FILE_OCCUPIED for every other client, with no window in which another one may delete
    /// or rename it. Should the file vanish in between, the refresh disables IO on it and
    /// says why.
    ///
    /// The open is exclusive in upstream's sense (`OpenFlags.exclusive = true`, what the
    /// SDK's Open uses): a segment the MDS called unallocated is cached as such until this
    /// client writes it, also in a lazy clone, whose reads then go to the source.
    pub async fn open(
        ctx: Arc<Context>,
        path: &str,
        user: &UserInfo,
        sources: Arc<SourceReader>,
    ) -> Result<Arc<OpenFile>> {
        let (session, info, source_segments) = ctx.mds.open_file(path, user).await?;
        let file = Arc::new(OpenFile::new(
            ctx,
            path,
            user,
            &session,
            &info,
            source_segments.as_ref(),
            sources,
        )?);
        file.refresh_once().await;
        file.start_refresher();
        Ok(file)
    }

    /// Stops the refresher, sends CloseFile, waits for IO in flight; IO after it fails with
    /// BAD_FD. Only the first call does anything; later ones succeed at once.
    pub async fn close(&self) -> Result<()> {
        if self.closing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_refresher().await;
        let closed = self.ctx.mds.close_file(&self.path, &self.user).await;
        self.shut("the file was closed").await;
        closed
    }

    fn closed_error(&self) -> Error {
        Error::new(ErrorCode::BadFd, format!("{} is closed", self.path))
    }

    /// What the MDS says of the file now (the open file's length follows it).
    pub async fn stat(&self) -> Result<crate::stat::FileStat> {
        let info = self.ctx.mds.get_file_info(&self.path, &self.user).await?;
        if self.replaced_by(&info) {
            let why = "the file was replaced by another inode";
            self.disable(why);
            return Err(self.disabled_error(why));
        }
        self.adopt(&info);
        Ok(crate::stat::FileStat::from(&info))
    }

    /// The file's length as last seen (at open, or by a refresh since).
    pub fn known_length(&self) -> u64 {
        lock(&self.dynamic).length
    }

    /// The `sn` and `epoch` a WriteChunk carries now.
    pub fn write_sn_and_epoch(&self) -> (u64, u64) {
        let d = lock(&self.dynamic);
        (d.seq_num, d.epoch)
    }

    fn adopt(&self, info: &FileInfo) {
        let mut d = lock(&self.dynamic);
        let before = *d;
        self.adopt_locked(&mut d, info);
        let after = *d;
        drop(d);
        if after.seq_num != before.seq_num {
            tracing::info!(
                volume = %self.path,
                from = before.seq_num,
                to = after.seq_num,
                "{}: sn {} -> {} (a snapshot was taken)",
                self.path,
                before.seq_num,
                after.seq_num
            );
        }
        if after.status != before.status {
            let name = |s: i32| {
                FileStatus::try_from(s)
                    .map(|f| f.as_str_name())
                    .unwrap_or("unknown")
            };
            tracing::info!(
                volume = %self.path,
                from = name(before.status),
                to = name(after.status),
                "{}: file status {} -> {}{}",
                self.path,
                name(before.status),
                name(after.status),
                if after.status == FileStatus::KFileCloned as i32 {
                    " (the clone was flattened)"
                } else {
                    ""
                }
            );
        }
        if after.length != before.length {
            tracing::info!(
                volume = %self.path,
                from = before.length,
                to = after.length,
                "{}: length {} -> {}",
                self.path,
                before.length,
                after.length
            );
        }
    }

    fn adopt_locked(&self, d: &mut Dynamic, info: &FileInfo) {
        if let Some(sn) = info.seq_num {
            d.seq_num = d.seq_num.max(sn);
        }
        if let Some(e) = info.epoch {
            d.epoch = e;
        }
        if let Some(l) = info.length {
            d.length = l;
        }
        if let Some(st) = info.file_status {
            let installed = FileStatus::KFileCloneMetaInstalled as i32;
            if d.status == installed && st != installed {
                // A flatten allocated the segments this clone read from its source; a hole
                // cached before it would now read zeros, and the source may be deleted.
                self.segments.forget_holes();
            }
            d.status = st;
        }
    }

    /// The `curve.mds.FileStatus` last heard of (at open, or by a refresh since).
    pub fn status(&self) -> i32 {
        lock(&self.dynamic).status
    }

    /// The lazy clone's source as OpenFile described it, if any.
    pub fn clone_source(&self) -> Option<&CloneSourceInfo> {
        self.source.as_ref()
    }

    /// The clone state an IO works with: the latest status, read once per IO.
    fn clone_view(&self) -> CloneView<'_> {
        CloneView {
            path: &self.path,
            status: self.status(),
            clone_source: self.clone_source.as_deref(),
            source: self.source.as_ref(),
        }
    }

    /// Re-reads the file's info from the MDS (BACKWARD, or IO past the known length).
    pub async fn refresh_info(&self) -> Result<()> {
        self.stat().await.map(|_| ())
    }

    /// True if `info` names another inode than the one opened (an absent id says nothing).
    fn replaced_by(&self, info: &FileInfo) -> bool {
        info.id.is_some_and(|id| id != self.file_id)
    }

    /// Fails IO on this fd from now on.
    pub fn disable(&self, why: &str) {
        self.lease.send_replace(Lease::Disabled(why.to_string()));
    }

    fn disabled_error(&self, why: &str) -> Error {
        Error::new(
            ErrorCode::DisableIo,
            format!("IO on {} is disabled: {why}", self.path),
        )
    }

    /// Fails with DISABLEIO once the fd is disabled for good; cheap, checked per attempt.
    pub fn check_not_disabled(&self) -> Result<()> {
        match &*self.lease.borrow() {
            Lease::Disabled(why) => Err(self.disabled_error(why)),
            _ => Ok(()),
        }
    }

    /// Waits until the lease is valid, at most until `deadline`.
    async fn wait_for_lease(&self, deadline: Instant) -> Result<()> {
        let mut rx = self.lease.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Lease::Valid(at) if at.elapsed() < self.lease_time => return Ok(()),
                Lease::Disabled(why) => return Err(self.disabled_error(why)),
                _ => {}
            }
            match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err(self
                        .disabled_error("the lease was not renewed in time (MDS unreachable?)")
                        .because(Cause::TimedOut));
                }
            }
        }
    }

    fn check_aligned(&self, offset: u64, len: u64) -> Result<()> {
        if !offset.is_multiple_of(self.blocksize) || !len.is_multiple_of(self.blocksize) {
            return Err(Error::new(
                ErrorCode::NotAligned,
                format!(
                    "offset {offset} and length {len} must be multiples of the block size {}",
                    self.blocksize
                ),
            ));
        }
        Ok(())
    }

    /// IO past the end fails; the length is re-read once first, because another client
    /// (or this one) may have extended the file since the last refresh.
    async fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::failed("offset + length overflows"))?;
        if end <= self.known_length() {
            return Ok(());
        }
        self.refresh_info().await?;
        let length = self.known_length();
        if end <= length {
            return Ok(());
        }
        Err(Error::failed(format!(
            "IO [{offset}, {end}) is past the end of the file ({length} bytes)"
        )))
    }

    /// A cached slot that serves this IO: a hole does not serve a write.
    fn cached_segment(&self, segment_index: u64, allocate: bool) -> Option<SegmentSlot> {
        self.segments
            .get(segment_index)
            .filter(|s| !(allocate && matches!(s, SegmentSlot::Hole)))
    }

    /// The slot of a segment, asking the MDS on a miss (or on a cached hole when writing),
    /// by `deadline`: lookups run one at a time, and an IO queued behind others that each
    /// spend a whole budget on an unreachable MDS must not wait for all of them.
    async fn segment(
        &self,
        segment_index: u64,
        allocate: bool,
        deadline: Instant,
    ) -> Result<SegmentSlot> {
        if let Some(s) = self.cached_segment(segment_index, allocate) {
            return Ok(s);
        }
        tokio::time::timeout_at(
            deadline.into(),
            self.look_up_segment(segment_index, allocate),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::failed(format!(
                "segment {segment_index}: no answer from the MDS within mds.maxRetryMsInIOPath"
            ))
            .because(Cause::TimedOut))
        })
    }

    async fn look_up_segment(&self, segment_index: u64, allocate: bool) -> Result<SegmentSlot> {
        let _one_lookup = self.segments.fetch_lock().lock().await;
        if let Some(s) = self.cached_segment(segment_index, allocate) {
            return Ok(s);
        }
        let (_, epoch) = self.write_sn_and_epoch();
        let offset = self.geometry.segment_offset(segment_index);
        let slot = match self
            .ctx
            .mds
            .get_or_allocate_segment(&self.path, &self.user, offset, allocate, epoch)
            .await?
        {
            Some(seg) => {
                let info = SegmentInfo::from_proto(&seg);
                let mut ids: Vec<u32> = info.chunks.iter().map(|c| c.1).collect();
                ids.sort_unstable();
                ids.dedup();
                self.ctx.copysets.ensure(info.logical_pool_id, &ids).await?;
                SegmentSlot::Allocated(Arc::new(info))
            }
            None => SegmentSlot::Hole,
        };
        self.segments.put(segment_index, slot.clone());
        Ok(slot)
    }

    /// Where each piece goes: `None` for pieces inside a hole (reads only).
    async fn locate(
        &self,
        pieces: &[ChunkPiece],
        allocate: bool,
    ) -> Result<Vec<Option<ChunkAddr>>> {
        let deadline = crate::deadline_after(Duration::from_millis(
            self.ctx.conf.mds_max_retry_ms_in_io_path,
        ));
        locate_pieces(&self.geometry, pieces, &self.path, |seg| {
            self.segment(seg, allocate, deadline)
        })
        .await
    }

    /// Fails if [offset, offset + len) reaches past the file's end (its length re-read once
    /// first): lets a caller refuse a read before allocating its buffer.
    pub async fn check_end(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range(offset, len).await
    }

    /// Whether an IO of `len` bytes at `offset` is aligned and ends inside the length known
    /// now, so that [`OpenFile::check_bounds`] would pass without asking the MDS.
    pub fn within_known_bounds(&self, offset: u64, len: u64) -> bool {
        self.check_aligned(offset, len).is_ok()
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= self.known_length())
    }

    /// What an IO of `len` bytes at `offset` is checked against before it is split:
    /// alignment and the file's end (re-read once, so a fresh Extend counts).
    pub async fn check_bounds(&self, offset: u64, len: u64) -> Result<()> {
        self.check_aligned(offset, len)?;
        self.check_range(offset, len).await
    }

    /// Common entry of read and write: alignment, lease, range, the file's clone state,
    /// splitting, lookup; each piece with its address (`None` in a hole) and its clone
    /// source (upstream's CalcRequestSourceInfo).
    async fn prepare(
        &self,
        offset: u64,
        len: u64,
        allocate: bool,
        deadline: Instant,
    ) -> Result<Vec<Located>> {
        self.check_aligned(offset, len)?;
        self.wait_for_lease(deadline).await?;
        self.check_range(offset, len).await?;
        let view = self.clone_view();
        view.check_serviceable()?;
        let pieces = io::split(&self.geometry, offset, len, self.ctx.split_size());
        let addrs = self.locate(&pieces, allocate).await?;
        let chunk_size = self.geometry.chunk_size;
        Ok(pieces
            .into_iter()
            .zip(addrs)
            .map(|(piece, addr)| Located {
                source: view.request_source(piece.chunk_index, chunk_size),
                piece,
                addr,
            })
            .collect())
    }

    async fn send_piece(
        &self,
        addr: ChunkAddr,
        piece: &ChunkPiece,
        op: ChunkOp,
        source: Option<&RequestSource>,
        deadline: Instant,
    ) -> Result<Option<Bytes>> {
        let _permit = self
            .inflight
            .acquire()
            .await
            .map_err(|_| self.closed_error())?;
        let offset = u32::try_from(piece.offset_in_chunk)
            .map_err(|_| Error::failed("offset inside a chunk exceeds 4 GiB"))?;
        let size =
            u32::try_from(piece.len).map_err(|_| Error::failed("sub-request exceeds 4 GiB"))?;
        chunk::send(&self.ctx, self, addr, offset, size, op, source, deadline).await
    }

    /// One piece of a lazy clone read from its source, under the in-flight limit and the
    /// IO's deadline like a chunk request.
    async fn read_source(
        &self,
        piece: &ChunkPiece,
        src: &RequestSource,
        deadline: Instant,
    ) -> Result<Bytes> {
        let _permit = self
            .inflight
            .acquire()
            .await
            .map_err(|_| self.closed_error())?;
        let at = src
            .offset
            .checked_add(piece.offset_in_chunk)
            .ok_or_else(|| Error::failed("clone source offset overflows"))?;
        let len = usize::try_from(piece.len).map_err(|_| Error::failed("piece too large"))?;
        let mut data = vec![0u8; len];
        self.sources
            .read(&self.user, &self.path, &src.file, at, &mut data, deadline)
            .await?;
        Ok(Bytes::from(data))
    }

    pub async fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_uninit(offset, as_uninit(buf)).await
    }

    /// [`OpenFile::read`] into memory that need not be initialised (a Python `bytes`
    /// being made, so it is not zeroed first). `Ok` means every byte of `buf` was
    /// written; after an error its bytes are unspecified.
    pub async fn read_uninit(&self, offset: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        let len = buf.len() as u64;
        self.measured(UserOp::Read, offset, len, self.read_uninit_raw(offset, buf))
            .await
    }

    /// Counts one user IO (upstream's `_read`, `_write`, `_discard`) in this file's and
    /// its client's metrics, as a slow request past `chunkserver.slowRequestThresholdMS`,
    /// and logs its failure: ERROR when the cluster failed it (retries exhausted, IO
    /// disabled), DEBUG when it was refused for what the caller asked.
    async fn measured(
        &self,
        op: UserOp,
        offset: u64,
        len: u64,
        io: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        let started = Instant::now();
        let r = io.await;
        let took = started.elapsed();
        let sink = Sink {
            file: Some(&self.metrics),
            client: &self.ctx.metrics,
        };
        match &r {
            Ok(()) => sink.each(|m| m.user(op).ok(len, took)),
            Err(e) => {
                sink.each(|m| m.user(op).error());
                let caller_error = matches!(
                    e.code,
                    ErrorCode::ParamError
                        | ErrorCode::NotAligned
                        | ErrorCode::BadFd
                        | ErrorCode::LengthNotSupport
                );
                if caller_error {
                    tracing::debug!(volume = %self.path, op = ?op, offset, len, "{}", e.message);
                } else {
                    tracing::error!(
                        volume = %self.path,
                        op = ?op,
                        offset,
                        len,
                        code = ?e.code,
                        cause = ?e.cause,
                        "{op:?} of {len} bytes at {offset} of {} failed: {}",
                        self.path,
                        e.message
                    );
                }
            }
        }
        let slow = Duration::from_millis(self.ctx.conf.chunkserver_slow_request_threshold_ms);
        if took >= slow {
            sink.each(IoMetrics::slow_request);
            warn_limited!(
                volume = %self.path,
                op = ?op,
                offset,
                len,
                took_ms = took.as_millis() as u64,
                "slow {op:?} of {len} bytes at {offset} of {}: {took:?}",
                self.path
            );
        }
        r
    }

    async fn read_uninit_raw(&self, offset: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        let gate = self.gate.read().await;
        if *gate {
            return Err(self.closed_error());
        }
        let deadline = crate::deadline_after(self.ctx.io_budget());
        let pieces = self
            .prepare(offset, buf.len() as u64, false, deadline)
            .await?;
        // Every byte is some piece's: what `Ok` promises of `buf`.
        if pieces.iter().map(|p| p.piece.len).sum::<u64>() != buf.len() as u64 {
            return Err(Error::failed(
                "the pieces of a read do not cover its buffer",
            ));
        }
        // Hand each piece its own disjoint slice of the caller's buffer.
        let mut rest: &mut [MaybeUninit<u8>] = buf;
        let jobs = pieces.iter().map(|p| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(p.piece.len as usize);
            rest = tail;
            Ok(async move {
                let source = p.source.as_ref();
                let data = match (p.addr, source) {
                    (Some(a), _) => {
                        self.send_piece(a, &p.piece, ChunkOp::Read, source, deadline)
                            .await?
                    }
                    // A chunk of a segment the clone has not allocated: its bytes are the
                    // source's (upstream's IOTracker::DoRead → SourceReader). Boxed: the
                    // source's own read is a whole IO, too big to sit in every piece's
                    // future (a stack overflow in debug builds).
                    (None, Some(src)) => {
                        Some(Box::pin(self.read_source(&p.piece, src, deadline)).await?)
                    }
                    (None, None) => None,
                };
                match data {
                    Some(d) => copy_into(head, &d)?,
                    None => head.fill(MaybeUninit::new(0)),
                }
                Ok::<(), Error>(())
            })
        });
        Running::new(pieces.len(), self.max_in_flight)
            .drive(jobs)
            .await
    }

    /// Writes `data` (aligned) at `offset`. Each chunk sub-request carries a slice of
    /// `data`: nothing is copied on the way to the transport.
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.measured(UserOp::Write, offset, len, self.write_raw(offset, data))
            .await
    }

    async fn write_raw(&self, offset: u64, data: Bytes) -> Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        let _blocks = self.blocks.lock(offset, end, false).await;
        self.write_aligned(offset, data).await
    }

    async fn write_aligned(&self, offset: u64, data: Bytes) -> Result<()> {
        let gate = self.gate.read().await;
        if *gate {
            return Err(self.closed_error());
        }
        let deadline = crate::deadline_after(self.ctx.io_budget());
        let pieces = self
            .prepare(offset, data.len() as u64, true, deadline)
            .await?;
        let jobs = pieces.iter().map(|p| {
            let start = p.piece.buf_offset as usize;
            let stop = start + p.piece.len as usize;
            if stop > data.len() {
                return Err(Error::failed("piece outside the write buffer"));
            }
            let body = data.slice(start..stop);
            Ok(async move {
                let addr = p.addr.ok_or_else(|| {
                    Error::failed("write landed in a segment the MDS did not allocate")
                })?;
                // With a source, the chunkserver makes a missing chunk a clone chunk of
                // it, so the rest of the chunk keeps reading the source's bytes.
                self.send_piece(
                    addr,
                    &p.piece,
                    ChunkOp::Write(body),
                    p.source.as_ref(),
                    deadline,
                )
                .await
                .map(|_| ())
            })
        });
        Running::new(pieces.len(), self.max_in_flight)
            .drive(jobs)
            .await
    }

    /// The blocks an unaligned IO of `len` bytes at `offset` touches: [start, stop).
    fn block_span(&self, offset: u64, len: u64) -> Result<(u64, u64)> {
        let bs = self.blocksize;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::failed("offset + length overflows"))?;
        let stop = end
            .checked_next_multiple_of(bs)
            .ok_or_else(|| Error::failed("offset + length overflows"))?;
        Ok((offset - offset % bs, stop))
    }

    /// Writes `data` at any offset and of any length. Aligned IO goes straight through;
    /// otherwise the partial first and last blocks are read, patched and written back
    /// while no other write may touch them, and the aligned middle is sent as is.
    pub async fn pwrite(&self, offset: u64, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        self.measured(UserOp::Write, offset, len, self.pwrite_raw(offset, data))
            .await
    }

    async fn pwrite_raw(&self, offset: u64, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        let bs = self.blocksize;
        if len == 0 {
            return Ok(());
        }
        if offset.is_multiple_of(bs) && len.is_multiple_of(bs) {
            return self.write_raw(offset, data).await;
        }
        // The whole span first: the pieces below are written at once, and one refused for
        // reaching past the end must not leave the others landed (a torn write).
        self.check_range(offset, len).await?;
        let (start, stop) = self.block_span(offset, len)?;
        let _blocks = self.blocks.lock(start, stop, true).await;
        let end = offset + len;
        // The partial blocks to patch: the first, and the last if it is another one.
        let mut edges = Vec::with_capacity(2);
        if !offset.is_multiple_of(bs) || stop - start == bs {
            edges.push(start);
        }
        if !end.is_multiple_of(bs) && stop - bs != start {
            edges.push(stop - bs);
        }
        let mut writes: Vec<(u64, Bytes)> = Vec::with_capacity(3);
        for block in edges {
            let mut buf = vec![0u8; bs as usize];
            self.read_uninit_raw(block, as_uninit(&mut buf)).await?;
            // The part of `data` that falls in this block.
            let from = offset.max(block);
            let to = end.min(block + bs);
            let src = &data[(from - offset) as usize..(to - offset) as usize];
            buf[(from - block) as usize..(to - block) as usize].copy_from_slice(src);
            writes.push((block, Bytes::from(buf)));
        }
        let mid_start = offset.next_multiple_of(bs);
        let mid_end = end - end % bs;
        if mid_start < mid_end {
            let s = (mid_start - offset) as usize;
            let e = (mid_end - offset) as usize;
            writes.push((mid_start, data.slice(s..e)));
        }
        futures::future::try_join_all(writes.into_iter().map(|(at, d)| self.write_aligned(at, d)))
            .await
            .map(|_| ())
    }

    /// Zeroes [offset, offset + len), at any alignment: partial blocks by read-modify-write,
    /// the rest by writing zeros, skipping segments never allocated (they read as zeros),
    /// unless a lazy clone reads them from its source.
    pub async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.measured(
            UserOp::Write,
            offset,
            len,
            self.zero_range(offset, len, false),
        )
        .await
    }

    /// libcurve's discard: afterwards the range reads as zeros. With `discard.enable`, each
    /// segment the range covers whole is released through the MDS (`DeAllocateSegment`:
    /// the space goes back to the pool, and the next write allocates fresh chunks); the
    /// rest, and everything when discard is off, is zeroed as [`OpenFile::write_zeroes`]
    /// does. Upstream delays the release by `discard.taskDelayMs` so in-flight IO cannot
    /// race it; here writes to the segment are locked out while it is released instead.
    pub async fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let release = self.ctx.conf.discard_enable;
        self.measured(
            UserOp::Discard,
            offset,
            len,
            self.zero_range(offset, len, release),
        )
        .await
    }

    async fn zero_range(&self, offset: u64, len: u64, release: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_not_disabled()?;
        self.check_range(offset, len).await?;
        let end = offset + len;
        let g = &self.geometry;
        if g.is_striped() {
            // A striped file's bytes do not map onto one segment each: zero it all.
            return self.write_zero_bytes(offset, end).await;
        }
        let seg = g.segment_size;
        let mut at = offset;
        while at < end {
            let index = at / seg;
            let seg_start = index * seg;
            let seg_end = (seg_start + seg).min(end);
            let whole = at == seg_start && seg_end == seg_start + seg;
            // A lazy clone's segment whose source has data does not read as zeros when
            // released or unallocated: it reads the source. Zeros must be written there.
            let has_source = self.clone_view().segment_has_source(seg_start, seg);
            if release && whole && !has_source {
                let _blocks = self.blocks.lock(seg_start, seg_start + seg, true).await;
                self.ctx
                    .mds
                    .deallocate_segment(&self.path, &self.user, seg_start)
                    .await?;
                self.segments.put(index, SegmentSlot::Hole);
            } else {
                let deadline = crate::deadline_after(Duration::from_millis(
                    self.ctx.conf.mds_max_retry_ms_in_io_path,
                ));
                if has_source
                    || !matches!(
                        self.segment(index, false, deadline).await?,
                        SegmentSlot::Hole
                    )
                {
                    self.write_zero_bytes(at, seg_end).await?;
                }
            }
            at = seg_end;
        }
        Ok(())
    }

    /// Writes zeros over [from, to) in pieces of one shared zero buffer (never copied).
    async fn write_zero_bytes(&self, from: u64, to: u64) -> Result<()> {
        let mut at = from;
        while at < to {
            // Pieces end on 1 MiB boundaries, so only the first and last can be partial
            // blocks (1 MiB is a multiple of every block size).
            let step = ZEROS.len() as u64;
            let n = (to - at).min(step - at % step);
            self.pwrite_raw(at, Bytes::from_static(&ZEROS[..n as usize]))
                .await?;
            at += n;
        }
        Ok(())
    }

    /// Reads into `buf` from any offset, of any length: the partial first and last blocks
    /// go through a block-sized buffer, the aligned middle straight into `buf`.
    pub async fn pread(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.pread_uninit(offset, as_uninit(buf)).await
    }

    /// [`OpenFile::pread`] into memory that need not be initialised; `Ok` means every
    /// byte of `buf` was written (see [`OpenFile::read_uninit`]).
    pub async fn pread_uninit(&self, offset: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        let len = buf.len() as u64;
        self.measured(
            UserOp::Read,
            offset,
            len,
            self.pread_uninit_raw(offset, buf),
        )
        .await
    }

    async fn pread_uninit_raw(&self, offset: u64, buf: &mut [MaybeUninit<u8>]) -> Result<()> {
        let len = buf.len() as u64;
        let bs = self.blocksize;
        if len == 0 {
            return Ok(());
        }
        if offset.is_multiple_of(bs) && len.is_multiple_of(bs) {
            return self.read_uninit_raw(offset, buf).await;
        }
        let (start, stop) = self.block_span(offset, len)?;
        let end = offset + len;
        let mid_start = offset.next_multiple_of(bs).min(end);
        let mid_end = (end - end % bs).max(mid_start);
        let (head, rest) = buf.split_at_mut((mid_start - offset) as usize);
        let (middle, tail) = rest.split_at_mut((mid_end - mid_start) as usize);
        let head_io = async {
            if head.is_empty() {
                return Ok(());
            }
            let mut block = vec![0u8; bs as usize];
            self.read_uninit_raw(start, as_uninit(&mut block)).await?;
            let from = (offset - start) as usize;
            copy_into(head, &block[from..from + head.len()])
        };
        let middle_io = async {
            if middle.is_empty() {
                return Ok(());
            }
            self.read_uninit_raw(mid_start, middle).await
        };
        let tail_io = async {
            if tail.is_empty() {
                return Ok(());
            }
            let mut block = vec![0u8; bs as usize];
            self.read_uninit_raw(stop - bs, as_uninit(&mut block))
                .await?;
            copy_into(tail, &block[..tail.len()])
        };
        futures::try_join!(head_io, middle_io, tail_io).map(|_| ())
    }

    /// Runs sub-requests concurrently within the in-flight limit; the first error wins and
    /// drops (cancels) the rest.
    /// Close's teardown: fail waiting IO, stop the refresher, wait for IO in flight.
    pub async fn shut(&self, why: &str) {
        self.disable(why);
        self.stop_refresher().await;
        let mut gate = self.gate.write().await;
        *gate = true;
    }

    /// Ends the refresher between two refreshes and waits for it. A refresh already on
    /// the wire is let finish: cut short, it could still reach the MDS after CloseFile
    /// and register this client again, leaving the file FILE_OCCUPIED for a lease.
    pub async fn stop_refresher(&self) {
        let refresher = lock(&self.refresher).take();
        if let Some(Refresher { task, stop }) = refresher {
            stop.notify_one();
            // A panic or abort inside the task leaves nothing to wait for.
            let _ = task.await;
        }
    }

    /// Drops the refresher at once, for UnInit and failed opens: no CloseFile follows,
    /// so a late refresh only keeps a record the MDS expires by itself.
    pub fn abort_refresher(&self) {
        if let Some(Refresher { task, .. }) = lock(&self.refresher).take() {
            task.abort();
        }
    }

    /// Starts the lease refresher: every leaseTime / `mds.refreshTimesPerLease`.
    fn start_refresher(self: &Arc<Self>) {
        let refresh_times = self.ctx.conf.mds_refresh_times_per_lease;
        // A floor, so a bogus tiny lease from the MDS cannot turn this into a busy loop.
        let interval = (self.lease_time / refresh_times.max(1)).max(Duration::from_millis(10));
        let file = Arc::downgrade(self);
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = stopped.notified() => return,
                }
                let Some(file) = file.upgrade() else {
                    return;
                };
                if !file.refresh_once().await {
                    return;
                }
            }
        });
        *lock(&self.refresher) = Some(Refresher { task, stop });
    }

    /// One refresh; false when refreshing must stop.
    pub(crate) async fn refresh_once(&self) -> bool {
        let sent_at = Instant::now();
        match self
            .ctx
            .mds
            .refresh_session(&self.path, &self.user, &self.session_id)
            .await
        {
            RefreshOutcome::Ok(info) => {
                if self.replaced_by(&info) {
                    tracing::error!(
                        volume = %self.path,
                        "{}: replaced by another inode; IO on it is disabled",
                        self.path
                    );
                    self.disable("the file was replaced by another inode");
                    return false;
                }
                self.adopt(&info);
                let mut was_blocked = false;
                self.lease.send_if_modified(|l| match l {
                    Lease::Disabled(_) => false,
                    _ => {
                        was_blocked = matches!(l, Lease::Blocked);
                        *l = Lease::Valid(sent_at);
                        true
                    }
                });
                if was_blocked {
                    tracing::info!(volume = %self.path, "{}: lease renewed; IO resumes", self.path);
                }
                true
            }
            RefreshOutcome::Gone => {
                tracing::error!(
                    volume = %self.path,
                    "{}: the MDS has no session for it (deleted or renamed away); IO on it is disabled",
                    self.path
                );
                self.disable("the file was deleted or renamed away");
                false
            }
            RefreshOutcome::AuthFail => {
                warn_limited!(
                    volume = %self.path,
                    "{}: lease refresh refused (owner authentication failed); IO waits",
                    self.path
                );
                self.lease.send_if_modified(|l| match l {
                    Lease::Disabled(_) => false,
                    _ => {
                        *l = Lease::Blocked;
                        true
                    }
                });
                true
            }
            RefreshOutcome::Failed => {
                warn_limited!(
                    volume = %self.path,
                    lease_ms = self.lease_time.as_millis() as u64,
                    "{}: lease refresh failed; the lease runs out {:?} after the last renewal",
                    self.path,
                    self.lease_time
                );
                true
            }
        }
    }
}

impl ChunkTarget for OpenFile {
    fn file_id(&self) -> u64 {
        self.file_id
    }

    fn write_sn_and_epoch(&self) -> (u64, u64) {
        OpenFile::write_sn_and_epoch(self)
    }

    fn check_not_disabled(&self) -> Result<()> {
        OpenFile::check_not_disabled(self)
    }

    fn refresh_info(&self) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(OpenFile::refresh_info(self))
    }

    fn metrics(&self) -> Option<&IoMetrics> {
        Some(&self.metrics)
    }

    fn volume(&self) -> &str {
        &self.path
    }
}
