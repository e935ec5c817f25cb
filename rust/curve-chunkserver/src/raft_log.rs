//! A copyset's Raft log on disk (openraft's `RaftLogStorage`), as braft's segment log:
//! `<data_dir>/raft/<pool>-<copyset>/` holds `log_<first index, 20 digits>` segment files
//! of records `[len u32 LE][CRC-32 u32 LE][bincode entry]`, `vote` (the term and vote,
//! replaced whole) and `purged` (the last purged log id). Each write's data is in its
//! entry, so a follower catches up from the log, as upstream's do.
//!
//! Appends are fsynced (fdatasync) when the cluster's durability is `Sync`
//! (`chunk_fsync`), as braft's `raft_sync`; with `Cache` they reach the page cache, which
//! survives a killed process. A torn record at the end of the last segment (a crash
//! mid-append) is cut off at start; it was never acknowledged.
//!
//! The newest entries also stay in memory (up to [`CACHE_BYTES`] of write data), so
//! replication to followers that keep up reads no file.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, RaftLogReader};

use crate::raft::{Cmd, Entry, LogId, TypeConfig, Vote};
use crate::store::{Durability, replace_file};

/// A segment is closed and a new one started past this size. Purging deletes whole
/// segments, so this bounds what a copyset keeps past its last snapshot: small, since a
/// local cluster holds hundreds of copysets per chunkserver.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Write data of the newest entries kept in memory per copyset.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// A record longer than this is corruption, not an entry (a whole chunk plus headroom).
const MAX_RECORD: u32 = 96 * 1024 * 1024;

/// Where one entry lives.
#[derive(Clone)]
struct Slot {
    log_id: LogId,
    /// First index of its segment (the segment's name).
    segment: u64,
    pos: u64,
    len: u32,
    cached: Option<Entry>,
}

struct Inner {
    dir: PathBuf,
    durability: Durability,
    vote: Option<Vote>,
    purged: Option<LogId>,
    slots: BTreeMap<u64, Slot>,
    /// Segment first index -> file; the last one is appended to.
    segments: BTreeMap<u64, Arc<File>>,
    tail_len: u64,
    /// Indexes whose entry is cached, oldest first, and their bytes.
    cache_order: VecDeque<u64>,
    cached_bytes: usize,
}

/// The log of one copyset; clones share it (the reader openraft's replication uses).
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("log_{first:020}"))
}

/// CRC-32 of the record (braft's segments checksum theirs too): tells a torn or garbled
/// tail from an entry. crc32fast's SIMD form costs ~0.1 ms per MiB; the byte-at-a-time
/// FNV-1a it replaced cost ~1 ms per MiB on each of the three replicas.
fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn data_len(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(cmd) => cmd.data_len() + 64,
        _ => 64,
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl LogStore {
    /// Opens (creating) the log in `dir`, reading back every segment.
    pub fn open(dir: &Path, durability: Durability) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let vote = match std::fs::read(dir.join("vote")) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(invalid)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let purged: Option<LogId> = match std::fs::read(dir.join("purged")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(invalid)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_prefix("log_"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut inner = Inner {
            dir: dir.to_path_buf(),
            durability,
            vote,
            purged,
            slots: BTreeMap::new(),
            segments: BTreeMap::new(),
            tail_len: 0,
            cache_order: VecDeque::new(),
            cached_bytes: 0,
        };
        let purged_index = inner.purged.as_ref().map(|l| l.index);
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let bytes = std::fs::read(&path)?;
            let mut pos = 0usize;
            while let Some(header) = bytes.get(pos..pos + 8) {
                let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let sum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                let Some(body) = bytes.get(pos + 8..pos + 8 + len as usize) else {
                    break;
                };
                if len > MAX_RECORD || checksum(body) != sum {
                    break;
                }
                let entry: Entry = bincode::deserialize(body).map_err(invalid)?;
                let index = entry.log_id.index;
                // A conflicting suffix that was overwritten in a later segment wins there.
                inner.slots.split_off(&index);
                if purged_index.is_none_or(|p| index > p) {
                    inner.slots.insert(
                        index,
                        Slot {
                            log_id: entry.log_id,
                            segment: first,
                            pos: pos as u64,
                            len,
                            cached: None,
                        },
                    );
                }
                pos += 8 + len as usize;
            }
            if pos < bytes.len() {
                if n + 1 == count {
                    tracing::warn!(path = %path.display(), at = pos, "cutting a torn log tail");
                    file.set_len(pos as u64)?;
                } else {
                    return Err(invalid(format!(
                        "{}: bad record at {pos} in a closed segment",
                        path.display()
                    )));
                }
            }
            inner.tail_len = pos as u64;
            inner.segments.insert(first, Arc::new(file));
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn read_slot(inner: &Inner, slot: &Slot) -> io::Result<Entry> {
        if let Some(entry) = &slot.cached {
            return Ok(entry.clone());
        }
        let file = inner
            .segments
            .get(&slot.segment)
            .ok_or_else(|| invalid(format!("segment {} is gone", slot.segment)))?;
        let mut buf = vec![0u8; 8 + slot.len as usize];
        file.read_exact_at(&mut buf, slot.pos)?;
        bincode::deserialize(&buf[8..]).map_err(invalid)
    }
}

impl Inner {
    fn last_log_id(&self) -> Option<LogId> {
        self.slots
            .values()
            .next_back()
            .map(|s| s.log_id)
            .or(self.purged)
    }

    fn tail(&mut self, next_index: u64) -> io::Result<(u64, Arc<File>)> {
        let rotate = match self.segments.last_key_value() {
            None => true,
            Some(_) => self.tail_len >= SEGMENT_BYTES,
        };
        if rotate {
            let path = segment_path(&self.dir, next_index);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            self.segments.insert(next_index, Arc::new(file));
            self.tail_len = 0;
        }
        self.segments
            .last_key_value()
            .map(|(k, f)| (*k, f.clone()))
            .ok_or_else(|| invalid("no log segment"))
    }

    fn evict(&mut self) {
        while self.cached_bytes > CACHE_BYTES {
            let Some(index) = self.cache_order.pop_front() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&index)
                && let Some(entry) = slot.cached.take()
            {
                self.cached_bytes = self.cached_bytes.saturating_sub(data_len(&entry));
            }
        }
    }

    fn uncache_from(&mut self, index: u64) {
        for slot in self.slots.range_mut(index..) {
            if let Some(entry) = slot.1.cached.take() {
                self.cached_bytes = self.cached_bytes.saturating_sub(data_len(&entry));
            }
        }
        self.cache_order.retain(|i| *i < index);
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = lock(&self.inner);
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        inner
            .slots
            .range((start, end))
            .map(|(_, slot)| Self::read_slot(&inner, slot))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.inner).vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = lock(&self.inner);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut inner = lock(&self.inner);
        let bytes = serde_json::to_vec(vote).map_err(invalid)?;
        // Always synced: a vote forgotten in a power cut could be given twice in a term.
        replace_file(&inner.dir.join("vote"), &bytes, Durability::Sync)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut entries = entries.into_iter().peekable();
        let Some(first) = entries.peek() else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let first_index = first.log_id.index;
        let (sync, file) = {
            let mut inner = lock(&self.inner);
            let (segment, file) = inner.tail(first_index)?;
            let mut buf = Vec::new();
            let mut placed = Vec::new();
            let base = inner.tail_len;
            for entry in entries {
                let body = bincode::serialize(&entry).map_err(invalid)?;
                let len = u32::try_from(body.len()).map_err(invalid)?;
                let pos = base + buf.len() as u64;
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&checksum(&body).to_le_bytes());
                buf.extend_from_slice(&body);
                placed.push((entry, pos, len));
            }
            file.write_all_at(&buf, base)?;
            inner.tail_len = base + buf.len() as u64;
            for (entry, pos, len) in placed {
                let index = entry.log_id.index;
                inner.cached_bytes += data_len(&entry);
                inner.cache_order.push_back(index);
                inner.slots.insert(
                    index,
                    Slot {
                        log_id: entry.log_id,
                        segment,
                        pos,
                        len,
                        cached: Some(entry),
                    },
                );
            }
            inner.evict();
            (inner.durability == Durability::Sync, file)
        };
        if sync {
            let synced = tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            callback.io_completed(
                synced
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
            return synced;
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let mut inner = lock(&self.inner);
        let from = last_log_id.map_or(0, |l| l.index + 1);
        let Some(slot) = inner.slots.get(&from).cloned() else {
            return Ok(());
        };
        inner.uncache_from(from);
        inner.slots.split_off(&from);
        // Later segments go whole; the one holding `from` is cut there.
        let later: Vec<u64> = inner
            .segments
            .range(slot.segment + 1..)
            .map(|(k, _)| *k)
            .collect();
        for first in later {
            inner.segments.remove(&first);
            std::fs::remove_file(segment_path(&inner.dir, first))?;
        }
        if let Some(file) = inner.segments.get(&slot.segment) {
            file.set_len(slot.pos)?;
            if inner.durability == Durability::Sync {
                file.sync_data()?;
            }
        }
        inner.tail_len = slot.pos;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = lock(&self.inner);
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(invalid)?;
        replace_file(&inner.dir.join("purged"), &bytes, inner.durability)?;
        inner.purged = Some(log_id);
        let kept = inner.slots.split_off(&(log_id.index + 1));
        for (_, slot) in std::mem::replace(&mut inner.slots, kept) {
            if let Some(entry) = slot.cached {
                inner.cached_bytes = inner.cached_bytes.saturating_sub(data_len(&entry));
            }
        }
        inner.cache_order.retain(|i| *i > log_id.index);
        // A segment goes once the next one starts at or below the first kept index.
        let firsts: Vec<u64> = inner.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            if pair[1] <= log_id.index + 1 {
                inner.segments.remove(&pair[0]);
                std::fs::remove_file(segment_path(&inner.dir, pair[0]))?;
            }
        }
        Ok(())
    }
}

/// Entries carry [`Cmd`]s; their data length decides what the cache holds.
impl Cmd {
    pub fn data_len(&self) -> usize {
        match self {
            Cmd::Write { data, .. } | Cmd::Paste { data, .. } => data.len(),
            Cmd::CreateClone { .. } | Cmd::DeleteSnapshot { .. } => 0,
        }
    }
}
