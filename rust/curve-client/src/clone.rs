//! Lazy clones of a volume, from the client's side (upstream's `CloneSourceInfo`,
//! `Splitor::CalcRequestSourceInfo` and `SourceReader`).
//!
//! A file made by CreateCloneFile with `cloneSource` = another volume's path, and moved to
//! CloneMetaInstalled, owns no data until it is written or flattened: each of its chunks
//! whose source segment is allocated reads, where it was never written, from the source
//! at `chunkIndex × chunkSize`. The client tells the chunkservers so on every ReadChunk and
//! WriteChunk (`cloneFileSource`, `cloneFileOffset`) and reads the source itself for a
//! chunk of an unallocated destination segment. Once the file is Cloned (flattened) none
//! of this applies any more.
//!
//! curvefs's deviation, on purpose: a state it cannot serve right fails the IO with a
//! message naming the volume and its source instead of reading zeros (upstream logs a
//! warning and reads zeros): an unknown status, Cloning (not yet readable), and
//! CloneMetaInstalled with a source volume but no list of its allocated segments.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use curve_proto::mds::{CloneSourceSegment, FileInfo, FileStatus};

use crate::auth::UserInfo;
use crate::chunk::RequestSource;
use crate::context::Context;
use crate::error::{Error, ErrorCode, Result};
use crate::lock;
use crate::readonly::ReadOnlyFile;

/// What OpenFile said of a lazy clone's source (upstream's `CloneSourceInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneSourceInfo {
    /// The source volume's path.
    pub name: String,
    /// `FileInfo.cloneLength`: the source's length when the clone was made.
    pub length: u64,
    pub segment_size: u64,
    /// Offsets of the source's allocated segments.
    pub allocated_segment_offsets: HashSet<u64>,
}

impl CloneSourceInfo {
    /// From OpenFile's answer: `None` unless the file names a source volume and the MDS
    /// listed its segments (what upstream's `ProtoCloneSourceInfo2Local` keeps).
    pub fn from_open(info: &FileInfo, segments: Option<&CloneSourceSegment>) -> Option<Self> {
        let name = info
            .clone_source
            .as_deref()
            .filter(|s| s.starts_with('/'))?;
        let segments = segments?;
        Some(Self {
            name: name.to_string(),
            length: info.clone_length.unwrap_or(0),
            segment_size: segments.segment_size,
            allocated_segment_offsets: segments.allocated_segment_offset.iter().copied().collect(),
        })
    }

    /// Whether the source segment holding `offset` is allocated (upstream's
    /// `IsSegmentAllocated`: nothing is, for a zero length).
    pub fn is_segment_allocated(&self, offset: u64) -> bool {
        if self.length == 0 || self.segment_size == 0 {
            return false;
        }
        let segment = offset / self.segment_size * self.segment_size;
        self.allocated_segment_offsets.contains(&segment)
    }
}

/// A file's clone state as one IO sees it: the status last heard from the MDS, and the
/// source named at open.
#[derive(Debug, Clone, Copy)]
pub struct CloneView<'a> {
    pub path: &'a str,
    /// A `curve.mds.FileStatus` value.
    pub status: i32,
    /// `FileInfo.cloneSource` as the MDS sent it (absent or "" for none).
    pub clone_source: Option<&'a str>,
    /// What OpenFile listed of the source; `None` if it did not.
    pub source: Option<&'a CloneSourceInfo>,
}

impl CloneView<'_> {
    /// Fails an IO the client cannot serve right (see the module docs). Statuses whose
    /// files read and write as plain volumes pass: Created, Deleting, Cloned, BeingCloned,
    /// and CloneMetaInstalled without a source volume (a clone from a snapshot, whose
    /// clone chunks exist before the status is set; the chunkservers fill them).
    pub fn check_serviceable(&self) -> Result<()> {
        let named = self.clone_source.filter(|s| !s.is_empty());
        match FileStatus::try_from(self.status) {
            Ok(
                FileStatus::KFileCreated
                | FileStatus::KFileDeleting
                | FileStatus::KFileCloned
                | FileStatus::KFileBeingCloned,
            ) => Ok(()),
            Ok(FileStatus::KFileCloneMetaInstalled) => match (named, self.source) {
                (None, _) | (Some(_), Some(_)) => Ok(()),
                (Some(src), None) => Err(Error::new(
                    ErrorCode::StatusNotMatch,
                    format!(
                        "{} is a lazy clone of {src} (CloneMetaInstalled) but was opened \
                         without the list of {src}'s allocated segments (it was not \
                         CloneMetaInstalled when opened, or the MDS did not send it): \
                         reopen it",
                        self.path
                    ),
                )),
            },
            Ok(FileStatus::KFileCloning) => Err(Error::new(
                ErrorCode::StatusNotMatch,
                format!(
                    "{} is still being cloned{} (status Cloning): its metadata is not \
                     installed yet",
                    self.path,
                    named.map(|s| format!(" from {s}")).unwrap_or_default()
                ),
            )),
            Err(_) => Err(Error::new(
                ErrorCode::StatusNotMatch,
                format!(
                    "{} has file status {}, which this client does not know{}",
                    self.path,
                    self.status,
                    named
                        .map(|s| format!(" (clone source {s})"))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    /// Upstream's `CalcRequestSourceInfo` for a read or a write of chunk `chunk_index`:
    /// the source and its offset while the file is CloneMetaInstalled and the source
    /// segment holding `chunk_index × chunk_size` is allocated; otherwise none.
    pub fn request_source(&self, chunk_index: u64, chunk_size: u64) -> Option<RequestSource> {
        if self.status != FileStatus::KFileCloneMetaInstalled as i32 {
            return None;
        }
        let source = self.source?;
        let offset = chunk_index.checked_mul(chunk_size)?;
        source.is_segment_allocated(offset).then(|| RequestSource {
            file: source.name.clone(),
            offset,
        })
    }

    /// Whether some chunk of the segment at `segment_offset` (`segment_size` long) has a
    /// source: such a segment, unallocated in the clone, does not read as zeros.
    pub fn segment_has_source(&self, segment_offset: u64, segment_size: u64) -> bool {
        if self.status != FileStatus::KFileCloneMetaInstalled as i32 {
            return false;
        }
        let Some(source) = self.source else {
            return false;
        };
        let step = source.segment_size.max(1);
        let mut at = segment_offset - segment_offset % step;
        while at < segment_offset.saturating_add(segment_size) {
            if source.is_segment_allocated(at) {
                return true;
            }
            at = at.saturating_add(step);
        }
        false
    }
}

/// The clone sources a client reads, one read-only handle per source name (upstream's
/// SourceReader): opened at first use with striping off (the clone addresses its source
/// in chunk order), dropped once unused for `closefd.timeout` seconds. Upstream sweeps
/// every `closefd.timeInterval` seconds from a thread; here the sweep runs at that
/// interval from the reads themselves: a read-only handle holds nothing on the MDS, so
/// an idle one left until the next read costs only memory.
pub struct SourceReader {
    ctx: Arc<Context>,
    handles: Mutex<Handles>,
    timeout: Duration,
    interval: Duration,
}

struct Handles {
    open: HashMap<String, (Arc<ReadOnlyFile>, Instant)>,
    last_sweep: Instant,
}

impl SourceReader {
    /// Idle handles are dropped per the context's `closefd.timeout` and
    /// `closefd.timeInterval`.
    pub fn new(ctx: Arc<Context>) -> Self {
        let timeout = Duration::from_secs(ctx.conf.closefd_timeout_s);
        let interval = Duration::from_secs(ctx.conf.closefd_time_interval_s);
        Self {
            ctx,
            handles: Mutex::new(Handles {
                open: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            timeout,
            interval,
        }
    }

    /// Reads `buf.len()` bytes of `source` at `offset` (the clone's `cloneFileOffset` plus
    /// the offset in the chunk), by `deadline`. `clone` names the volume being read, for
    /// errors.
    pub async fn read(
        &self,
        user: &UserInfo,
        clone: &str,
        source: &str,
        offset: u64,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<()> {
        let file = self.handle(user, clone, source, deadline).await?;
        file.read_by(offset, buf, deadline).await.map_err(|e| {
            Error::new(
                e.code,
                format!(
                    "reading {clone}'s clone source {source} at {offset}: {}",
                    e.message
                ),
            )
            .because(e.cause)
        })
    }

    async fn handle(
        &self,
        user: &UserInfo,
        clone: &str,
        source: &str,
        deadline: Instant,
    ) -> Result<Arc<ReadOnlyFile>> {
        let now = Instant::now();
        {
            let mut h = lock(&self.handles);
            let Handles { open, last_sweep } = &mut *h;
            sweep(open, last_sweep, now, self.timeout, self.interval);
            if let Some((file, used)) = open.get_mut(source) {
                *used = now;
                return Ok(file.clone());
            }
        }
        let opened = tokio::time::timeout_at(
            deadline.into(),
            ReadOnlyFile::open(self.ctx.clone(), source, user, true),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::failed("no answer from the MDS in time")
                .because(crate::error::Cause::TimedOut))
        })
        .map_err(|e| {
            Error::new(
                e.code,
                format!("cannot open {clone}'s clone source {source}: {}", e.message),
            )
            .because(e.cause)
        })?;
        let mut h = lock(&self.handles);
        // Two reads may open the same source at once; the first one kept wins.
        let (file, _) = h
            .open
            .entry(source.to_string())
            .or_insert((opened, Instant::now()));
        Ok(file.clone())
    }
}

/// Drops the handles unused for longer than `timeout`, at most once per `interval`.
fn sweep<T>(
    open: &mut HashMap<String, (T, Instant)>,
    last_sweep: &mut Instant,
    now: Instant,
    timeout: Duration,
    interval: Duration,
) {
    if now.saturating_duration_since(*last_sweep) < interval {
        return;
    }
    *last_sweep = now;
    open.retain(|_, (_, used)| now.saturating_duration_since(*used) <= timeout);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHUNK: u64 = 16 << 20;
    const SEG: u64 = 1 << 30;

    fn source(allocated: &[u64]) -> CloneSourceInfo {
        CloneSourceInfo {
            name: "/src".into(),
            length: 10 * SEG,
            segment_size: SEG,
            allocated_segment_offsets: allocated.iter().copied().collect(),
        }
    }

    fn view(status: FileStatus, source: Option<&CloneSourceInfo>) -> CloneView<'_> {
        CloneView {
            path: "/dst",
            status: status as i32,
            clone_source: Some("/src"),
            source,
        }
    }

    #[test]
    fn source_info_only_while_clone_meta_installed_and_source_segment_allocated() {
        let s = source(&[0, 2 * SEG]);
        let v = view(FileStatus::KFileCloneMetaInstalled, Some(&s));
        // Chunk 0 and the last chunk of segment 0: allocated in the source.
        assert_eq!(
            v.request_source(0, CHUNK),
            Some(RequestSource {
                file: "/src".into(),
                offset: 0
            })
        );
        let last = SEG / CHUNK - 1;
        assert_eq!(
            v.request_source(last, CHUNK).map(|r| r.offset),
            Some(last * CHUNK)
        );
        // Segment 1 is not allocated in the source: no source, the chunk is the clone's.
        assert_eq!(v.request_source(SEG / CHUNK, CHUNK), None);
        assert_eq!(
            v.request_source(2 * SEG / CHUNK + 3, CHUNK)
                .map(|r| r.offset),
            Some(2 * SEG + 3 * CHUNK)
        );
        // Any other status: none, whatever the segments.
        for st in [
            FileStatus::KFileCreated,
            FileStatus::KFileCloned,
            FileStatus::KFileBeingCloned,
            FileStatus::KFileCloning,
            FileStatus::KFileDeleting,
        ] {
            assert_eq!(view(st, Some(&s)).request_source(0, CHUNK), None, "{st:?}");
        }
        // No list of source segments: none.
        assert_eq!(
            view(FileStatus::KFileCloneMetaInstalled, None).request_source(0, CHUNK),
            None
        );
        // A source of length 0 has nothing allocated (upstream's IsSegmentAllocated).
        let empty = CloneSourceInfo {
            length: 0,
            ..source(&[0])
        };
        assert_eq!(
            view(FileStatus::KFileCloneMetaInstalled, Some(&empty)).request_source(0, CHUNK),
            None
        );
    }

    #[test]
    fn segment_has_source_looks_at_every_source_segment_it_covers() {
        let s = source(&[SEG]);
        let v = view(FileStatus::KFileCloneMetaInstalled, Some(&s));
        assert!(!v.segment_has_source(0, SEG));
        assert!(v.segment_has_source(SEG, SEG));
        // A clone segment twice the source's covers two source segments.
        assert!(v.segment_has_source(0, 2 * SEG));
        assert!(!view(FileStatus::KFileCloned, Some(&s)).segment_has_source(SEG, SEG));
    }

    #[test]
    fn statuses_the_client_cannot_serve_fail_naming_volume_and_source() {
        let s = source(&[0]);
        for ok in [
            FileStatus::KFileCreated,
            FileStatus::KFileDeleting,
            FileStatus::KFileCloned,
            FileStatus::KFileBeingCloned,
            FileStatus::KFileCloneMetaInstalled,
        ] {
            assert!(view(ok, Some(&s)).check_serviceable().is_ok(), "{ok:?}");
        }
        let cases = [
            view(FileStatus::KFileCloning, Some(&s)),
            view(FileStatus::KFileCloneMetaInstalled, None),
            CloneView {
                status: 42,
                ..view(FileStatus::KFileCreated, Some(&s))
            },
        ];
        for v in cases {
            let e = v.check_serviceable().unwrap_err();
            assert_eq!(e.code, ErrorCode::StatusNotMatch);
            assert!(
                e.message.contains("/dst") && e.message.contains("/src"),
                "{e}"
            );
        }
        // A clone from a snapshot (no source volume) is served by its clone chunks.
        let snapshot_clone = CloneView {
            clone_source: Some(""),
            ..view(FileStatus::KFileCloneMetaInstalled, None)
        };
        assert!(snapshot_clone.check_serviceable().is_ok());
        assert_eq!(snapshot_clone.request_source(0, CHUNK), None);
    }

    #[test]
    fn idle_sources_are_dropped_after_the_timeout_at_the_sweep_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut open: HashMap<String, ((), Instant)> = HashMap::new();
        open.insert("/old".into(), ((), t0));
        open.insert("/busy".into(), ((), t0 + s(250)));
        let mut last = t0;
        // Before the interval: nothing is looked at, however idle.
        sweep(&mut open, &mut last, t0 + s(599), s(300), s(600));
        assert_eq!(open.len(), 2);
        // At the interval: /old (idle 600 s) and /busy (idle 350 s) go; /fresh stays.
        open.insert("/fresh".into(), ((), t0 + s(500)));
        sweep(&mut open, &mut last, t0 + s(600), s(300), s(600));
        let mut left: Vec<_> = open.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["/fresh"]);
        assert_eq!(last, t0 + s(600));
        // The next sweep waits for another interval.
        sweep(&mut open, &mut last, t0 + s(1100), s(300), s(600));
        assert_eq!(open.len(), 1);
        sweep(&mut open, &mut last, t0 + s(1200), s(300), s(600));
        assert!(open.is_empty());
    }

    #[test]
    fn from_open_keeps_only_a_named_source_with_its_segments() {
        let info = FileInfo {
            clone_source: Some("/src".into()),
            clone_length: Some(3 * SEG),
            ..FileInfo::default()
        };
        let segs = CloneSourceSegment {
            segment_size: SEG,
            allocated_segment_offset: vec![0, 2 * SEG],
        };
        let s = CloneSourceInfo::from_open(&info, Some(&segs)).unwrap();
        assert_eq!(s.name, "/src");
        assert_eq!(s.length, 3 * SEG);
        assert!(s.is_segment_allocated(2 * SEG + 5) && !s.is_segment_allocated(SEG));
        assert_eq!(CloneSourceInfo::from_open(&info, None), None);
        let unnamed = FileInfo {
            clone_source: Some(String::new()),
            ..info
        };
        assert_eq!(CloneSourceInfo::from_open(&unnamed, Some(&segs)), None);
    }
}
