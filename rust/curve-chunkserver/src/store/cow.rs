//! Snapshots of chunks: copy-on-write by sequence number, as upstream's `CSChunkFile`
//! (`src/chunkserver/datastore/chunkserver_chunkfile.cpp`).
//!
//! When the MDS snapshots a volume it bumps the volume's `seqNum`; clients then write
//! with the new `sn`. The first such write to a chunk keeps the chunk's bytes as they
//! were at the old `sn` in a snapshot file beside it, `chunk_<id>.snap`, and copies each
//! page there before the first write that changes it. The snapshot/clone service reads
//! the old bytes back with ReadChunkSnapshot and, once it has them, removes the snapshot
//! with DeleteChunkSnapshotOrCorrectSn, which also raises the chunk's `correctedSn` so a
//! later write at that `sn` does not start another snapshot.
//!
//! The rules, each upstream's:
//! - `chunkSn = max(sn, correctedSn)`; a write below `sn` or `correctedSn` is BACKWARD.
//! - A write above `chunkSn` creates the snapshot (with the chunk's old `sn`) unless one
//!   whose `sn` is at least the chunk's already exists (a replay); an older snapshot not
//!   yet deleted refuses the write, and so does a clone chunk (clones take no snapshot).
//! - A write copies the range's uncopied pages first when a snapshot exists, its `sn`
//!   is the chunk's, differs from `correctedSn`, and is above the snapshot's.
//!
//! On disk, a record `chunk_<id>.cow` holds `correctedSn` and, while a snapshot exists,
//! its `sn` and the bitmap of pages copied into it; the record exists only while one of
//! them does. The record is replaced whole through a rename (store.rs), and written
//! before the snapshot file is created and after it is emptied of meaning: a snapshot
//! file the record does not name is a leftover and is removed when the chunk is opened.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ChunkFile, ChunkKey, ChunkStore, Create, Durability, WriteError, lock, remove_file};
use crate::clone::Bitmap;

/// First bytes of a copy-on-write record, and its version.
const MAGIC: &[u8; 8] = b"CVFSCOW1";

/// A chunk's snapshot file: the chunk's bytes as they were at `sn`, for the pages
/// `copied` says; the others are still the chunk's own.
pub(super) struct SnapshotFile {
    pub sn: u64,
    pub file: File,
    pub copied: Bitmap,
}

/// A chunk's copy-on-write state (the lock in [`ChunkFile`] orders its updates).
#[derive(Default)]
pub(super) struct CowState {
    pub corrected_sn: u64,
    pub snapshot: Option<SnapshotFile>,
    /// The record and the snapshot file; `None` for a handle built by a test.
    paths: Option<(PathBuf, PathBuf)>,
}

/// What a chunk holds about its versions, as GetChunkInfo answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkVersions {
    pub sn: u64,
    pub corrected_sn: u64,
    /// The snapshot's sn, if the chunk has one.
    pub snapshot_sn: Option<u64>,
}

/// Why a snapshot read or a DeleteChunkSnapshotOrCorrectSn was refused.
#[derive(Debug)]
pub(crate) enum SnapshotError {
    /// No chunk, or no version of it at that sn (Curve's CHUNK_NOTEXIST).
    NotExist,
    /// correctedSn below the chunk's sn or correctedSn (Curve's BACKWARD).
    Backward,
    /// A clone chunk has no snapshots (upstream's StatusConflictError).
    CloneChunk,
    Io(io::Error),
}

impl From<io::Error> for SnapshotError {
    fn from(e: io::Error) -> Self {
        SnapshotError::Io(e)
    }
}

fn encode(corrected_sn: u64, snapshot: Option<(u64, &Bitmap)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&corrected_sn.to_le_bytes());
    if let Some((sn, copied)) = snapshot {
        out.extend_from_slice(&sn.to_le_bytes());
        out.extend_from_slice(copied.as_bytes());
    }
    out
}

/// `(correctedSn, Some((snapshot sn, copied)))`; anything but a whole record this
/// chunkserver wrote is an error, never "no snapshot": that would lose the old bytes.
fn decode(bytes: &[u8], pages: u32) -> io::Result<(u64, Option<(u64, Bitmap)>)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("cow record: {why}"));
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad("short"))
    };
    if bytes.get(..8) != Some(MAGIC.as_slice()) {
        return Err(bad("unknown format"));
    }
    let corrected = u64_at(8)?;
    if bytes.len() == 16 {
        return Ok((corrected, None));
    }
    let sn = u64_at(16)?;
    let copied = bytes
        .get(24..)
        .and_then(|b| Bitmap::from_bytes(pages, b))
        .ok_or_else(|| bad("bitmap of another length"))?;
    Ok((corrected, Some((sn, copied))))
}

fn open_snapshot_file(path: &Path, durability: Durability) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    if durability == Durability::Sync {
        options.custom_flags(libc::O_DSYNC);
    }
    options.open(path)
}

impl CowState {
    /// The state of the chunk whose data file is `chunk_path`, from its record.
    pub fn open(chunk_path: &Path, pages: u32, durability: Durability) -> io::Result<Self> {
        let with = |suffix: &str| {
            let mut p = chunk_path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let (record_path, snap_path) = (with(".cow"), with(".snap"));
        let (corrected_sn, snapshot) = match std::fs::read(&record_path) {
            Ok(bytes) => decode(&bytes, pages)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", record_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, None),
            Err(e) => return Err(e),
        };
        let snapshot = match snapshot {
            Some((sn, copied)) => Some(SnapshotFile {
                sn,
                file: open_snapshot_file(&snap_path, durability)?,
                copied,
            }),
            None => {
                remove_file(&snap_path, durability)?;
                None
            }
        };
        Ok(CowState {
            corrected_sn,
            snapshot,
            paths: Some((record_path, snap_path)),
        })
    }

    fn save(&self, durability: Durability) -> io::Result<()> {
        let Some((record, _)) = &self.paths else {
            return Ok(());
        };
        let snapshot = self.snapshot.as_ref().map(|s| (s.sn, &s.copied));
        if self.corrected_sn == 0 && snapshot.is_none() {
            return remove_file(record, durability);
        }
        super::replace_file(record, &encode(self.corrected_sn, snapshot), durability)
    }
}

/// Reads `buf.len()` bytes at `at`; what lies past the file's end reads as zeros.
fn read_padded(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

impl ChunkStore {
    /// A write's sn check, under the chunk's sn lock (`current` is its sn): refuses a
    /// write below the chunk's sn or correctedSn, and creates the snapshot a write above
    /// both starts. A chunk never written with an sn (`current == 0`) has nothing to keep.
    pub(super) fn admit_cow(
        &self,
        chunk: &ChunkFile,
        current: u64,
        sn: u64,
        clone_corrected_sn: u64,
        is_clone: bool,
    ) -> Result<(), WriteError> {
        let mut cow = lock(&chunk.cow);
        let corrected = cow.corrected_sn.max(clone_corrected_sn);
        if sn < current || sn < corrected {
            return Err(WriteError::Backward);
        }
        if current == 0 || sn <= current.max(corrected) {
            return Ok(());
        }
        if let Some(snapshot) = &cow.snapshot {
            // A snapshot at or above the chunk's sn: this write was applied before
            // (a replay) and made it.
            if current <= snapshot.sn {
                return Ok(());
            }
            return Err(WriteError::Conflict(
                "an older snapshot of the chunk is not deleted",
            ));
        }
        if is_clone {
            return Err(WriteError::Conflict("a clone chunk takes no snapshot"));
        }
        let Some((record_path, snap_path)) = cow.paths.clone() else {
            return Ok(());
        };
        let copied = Bitmap::new(self.pages);
        // The record first: a snapshot file it does not name is a leftover.
        super::replace_file(
            &record_path,
            &encode(cow.corrected_sn, Some((current, &copied))),
            self.durability,
        )?;
        match open_snapshot_file(&snap_path, self.durability) {
            Ok(file) => {
                cow.snapshot = Some(SnapshotFile {
                    sn: current,
                    file,
                    copied,
                });
                Ok(())
            }
            Err(e) => {
                // Back to the record as it was; if that fails too, the next open finds
                // an empty snapshot, which reads as the chunk's own pages.
                let _ = cow.save(self.durability);
                Err(e.into())
            }
        }
    }

    /// Before a write at `sn` of `len` bytes at `offset`: copies the range's pages not
    /// yet in the chunk's snapshot there, when the rules say this write is the one that
    /// changes them.
    pub(super) fn copy_to_snapshot(
        &self,
        chunk: &ChunkFile,
        sn: u64,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let current = *lock(&chunk.sn);
        let mut cow = lock(&chunk.cow);
        let corrected = cow.corrected_sn;
        let Some(snapshot) = cow.snapshot.as_mut() else {
            return Ok(());
        };
        if sn != current || sn == corrected || current <= snapshot.sn {
            return Ok(());
        }
        let (first, last) = self.pages_of(offset, len);
        let block = u64::from(self.block_size);
        let mut copied_any = false;
        for (from, to, copied) in snapshot.copied.runs(first, last.min(self.pages - 1)) {
            if copied {
                continue;
            }
            let at = u64::from(from) * block;
            let mut buf = vec![0u8; (u64::from(to - from + 1) * block) as usize];
            read_padded(&chunk.file, &mut buf, at)?;
            snapshot.file.write_all_at(&buf, at)?;
            snapshot.copied.set_range(from, to);
            copied_any = true;
        }
        if copied_any {
            cow.save(self.durability)?;
        }
        Ok(())
    }

    /// Upstream's ReadSnapshotChunk: the chunk's bytes as they were at `sn` — the chunk
    /// itself if `sn` is its sn, else its snapshot's copied pages over its own.
    pub fn read_snapshot(
        &self,
        key: ChunkKey,
        sn: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, SnapshotError> {
        let Some(chunk) = self.chunk(key, Create::No)? else {
            return Err(SnapshotError::NotExist);
        };
        let mut out = vec![0u8; len];
        if len == 0 {
            return Ok(out);
        }
        if sn == *lock(&chunk.sn) {
            read_padded(&chunk.file, &mut out, offset)?;
            return Ok(out);
        }
        // Held while reading, so no page is copied (and then overwritten in the chunk)
        // between choosing where to read it and reading it.
        let cow = lock(&chunk.cow);
        let Some(snapshot) = cow.snapshot.as_ref().filter(|s| s.sn == sn) else {
            return Err(SnapshotError::NotExist);
        };
        let (first, last) = self.pages_of(offset, len as u64);
        let block = u64::from(self.block_size);
        let end = offset + len as u64;
        for (from, to, copied) in snapshot.copied.runs(first, last.min(self.pages - 1)) {
            let start = (u64::from(from) * block).max(offset);
            let stop = (u64::from(to + 1) * block).min(end);
            let piece = &mut out[(start - offset) as usize..(stop - offset) as usize];
            let file = if copied { &snapshot.file } else { &chunk.file };
            read_padded(file, piece, start)?;
        }
        Ok(out)
    }

    /// Upstream's DeleteChunkSnapshotOrCorrectSn: removes the chunk's snapshot unless it
    /// is newer than the chunk's data (a replayed request after a later snapshot), and
    /// raises correctedSn to `corrected_sn` if that is above both sn and correctedSn. A
    /// chunk that does not exist has nothing to delete.
    pub fn delete_snapshot_or_correct_sn(
        &self,
        key: ChunkKey,
        corrected_sn: u64,
    ) -> Result<(), SnapshotError> {
        let Some(chunk) = self.chunk(key, Create::No)? else {
            return Ok(());
        };
        if lock(&chunk.clone).is_some() {
            return Err(SnapshotError::CloneChunk);
        }
        let current = *lock(&chunk.sn);
        let mut cow = lock(&chunk.cow);
        if corrected_sn < current || corrected_sn < cow.corrected_sn {
            return Err(SnapshotError::Backward);
        }
        let mut changed = false;
        let mut removed = None;
        if cow.snapshot.as_ref().is_some_and(|s| current > s.sn) {
            removed = cow.snapshot.take();
            changed = true;
        }
        if corrected_sn > current.max(cow.corrected_sn) {
            cow.corrected_sn = corrected_sn;
            changed = true;
        }
        if changed {
            // The record first: once it names no snapshot, the file is a leftover.
            cow.save(self.durability)?;
        }
        if removed.is_some()
            && let Some((_, snap_path)) = &cow.paths
        {
            drop(removed);
            remove_file(snap_path, self.durability)?;
        }
        Ok(())
    }

    /// Keeps a clone chunk's correctedSn in the chunk's own record when the chunk
    /// becomes plain: upstream keeps it in the chunk's meta page for good, so a write at
    /// that sn (a recovered volume's seqNum) still starts no snapshot afterwards.
    pub(super) fn keep_corrected_sn(&self, chunk: &ChunkFile, corrected_sn: u64) -> io::Result<()> {
        let mut cow = lock(&chunk.cow);
        if corrected_sn <= cow.corrected_sn {
            return Ok(());
        }
        let before = cow.corrected_sn;
        cow.corrected_sn = corrected_sn;
        if let Err(e) = cow.save(self.durability) {
            cow.corrected_sn = before;
            return Err(e);
        }
        Ok(())
    }

    /// The chunk's sn, correctedSn and snapshot sn (GetChunkInfo); `None`: no chunk.
    pub fn versions(&self, key: ChunkKey) -> io::Result<Option<ChunkVersions>> {
        let Some(chunk) = self.chunk(key, Create::No)? else {
            return Ok(None);
        };
        let sn = *lock(&chunk.sn);
        let clone_corrected = lock(&chunk.clone).as_ref().map_or(0, |m| m.corrected_sn);
        let cow = lock(&chunk.cow);
        Ok(Some(ChunkVersions {
            sn,
            corrected_sn: cow.corrected_sn.max(clone_corrected),
            snapshot_sn: cow.snapshot.as_ref().map(|s| s.sn),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u32 = 64 * 1024;
    const BLOCK: u32 = 4096;

    fn key(chunk_id: u64) -> ChunkKey {
        ChunkKey {
            logical_pool_id: 1,
            copyset_id: 2,
            chunk_id,
        }
    }

    fn store(dir: &Path) -> io::Result<ChunkStore> {
        let store = ChunkStore::new(dir, Durability::Sync, CHUNK, BLOCK);
        store.create_copyset_dir(1, 2)?;
        Ok(store)
    }

    /// A write as the service applies it: the sn check, then the data.
    fn write(
        store: &ChunkStore,
        k: ChunkKey,
        sn: u64,
        offset: u64,
        byte: u8,
        len: usize,
    ) -> Result<(), WriteError> {
        store.admit_sn(k, Some(sn), None)?;
        store.write(k, offset, &vec![byte; len], Some(sn))?;
        Ok(())
    }

    fn snap(store: &ChunkStore, k: ChunkKey, sn: u64) -> io::Result<Vec<u8>> {
        store
            .read_snapshot(k, sn, 0, CHUNK as usize)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    fn expect(parts: &[(u8, usize)]) -> Vec<u8> {
        let mut v: Vec<u8> = parts.iter().flat_map(|&(b, n)| vec![b; n]).collect();
        v.resize(CHUNK as usize, 0);
        v
    }

    fn files(dir: &Path, chunk_id: u64) -> io::Result<Vec<String>> {
        let prefix = format!("chunk_{chunk_id}.");
        let mut names: Vec<String> = std::fs::read_dir(dir.join("copysets/1-2"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    #[test]
    fn the_first_write_at_a_new_sn_keeps_each_page_once() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let store = store(dir.path())?;
        let k = key(1);
        write(&store, k, 1, 0, 0xA, 4 * BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            store.versions(k)?,
            Some(ChunkVersions {
                sn: 1,
                corrected_sn: 0,
                snapshot_sn: None
            })
        );
        // A write at the same sn copies nothing.
        write(&store, k, 1, 0, 0xB, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert_eq!(store.versions(k)?.and_then(|v| v.snapshot_sn), None);

        // The volume was snapshotted: writes now carry sn 2.
        write(&store, k, 2, u64::from(BLOCK), 0xC, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            store.versions(k)?,
            Some(ChunkVersions {
                sn: 2,
                corrected_sn: 0,
                snapshot_sn: Some(1)
            })
        );
        // Page 1 again, and pages 1..=2 (page 2 is copied, page 1 is not copied twice).
        write(&store, k, 2, u64::from(BLOCK), 0xD, 2 * BLOCK as usize)
            .map_err(|e| format!("{e:?}"))?;
        let old = expect(&[(0xB, BLOCK as usize), (0xA, 3 * BLOCK as usize)]);
        assert_eq!(snap(&store, k, 1)?, old);
        let now = expect(&[
            (0xB, BLOCK as usize),
            (0xD, 2 * BLOCK as usize),
            (0xA, BLOCK as usize),
        ]);
        assert_eq!(snap(&store, k, 2)?, now);
        assert_eq!(store.read(k, 0, CHUNK as usize)?, Some(now.clone()));
        // An unaligned piece of the old version mixes copied and uncopied pages.
        let piece = store
            .read_snapshot(k, 1, u64::from(BLOCK) - 100, 200)
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(piece, [vec![0xB; 100], vec![0xA; 100]].concat());
        // A client still on the old sn is told to come back with the new one.
        assert!(matches!(
            store.admit_sn(k, Some(1), None),
            Err(WriteError::Backward)
        ));
        assert!(matches!(
            store.read_snapshot(k, 3, 0, 4096),
            Err(SnapshotError::NotExist)
        ));
        assert!(matches!(
            store.read_snapshot(key(9), 1, 0, 4096),
            Err(SnapshotError::NotExist)
        ));

        // Both versions survive a restart.
        drop(store);
        let store = self::store(dir.path())?;
        assert_eq!(snap(&store, k, 1)?, old);
        assert_eq!(snap(&store, k, 2)?, now);
        Ok(())
    }

    #[test]
    fn deleting_the_snapshot_and_correcting_the_sn() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = store(dir.path())?;
        let k = key(2);
        write(&store, k, 1, 0, 1, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        write(&store, k, 2, 0, 2, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            files(dir.path(), 2)?,
            ["chunk_2.cow", "chunk_2.sn", "chunk_2.snap"]
        );
        // The snapshot/clone service dumped snapshot 1 and deletes it (correctedSn = 1 + 1).
        store
            .delete_snapshot_or_correct_sn(k, 2)
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            store.versions(k)?,
            Some(ChunkVersions {
                sn: 2,
                corrected_sn: 0,
                snapshot_sn: None
            })
        );
        assert_eq!(files(dir.path(), 2)?, ["chunk_2.sn"]);
        // Repeating it is harmless; an older one is BACKWARD.
        store
            .delete_snapshot_or_correct_sn(k, 2)
            .map_err(|e| format!("{e:?}"))?;
        assert!(matches!(
            store.delete_snapshot_or_correct_sn(k, 1),
            Err(SnapshotError::Backward)
        ));

        // Snapshot 2 is taken and deleted before this chunk is written again: the chunk's
        // correctedSn moves to 3, so a write at sn 3 keeps nothing...
        store
            .delete_snapshot_or_correct_sn(k, 3)
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            store.versions(k)?,
            Some(ChunkVersions {
                sn: 2,
                corrected_sn: 3,
                snapshot_sn: None
            })
        );
        assert!(matches!(
            store.admit_sn(k, Some(2), None),
            Err(WriteError::Backward)
        ));
        write(&store, k, 3, 0, 3, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert_eq!(store.versions(k)?.and_then(|v| v.snapshot_sn), None);
        // ...and survives a restart.
        drop(store);
        let store = self::store(dir.path())?;
        assert_eq!(
            store.versions(k)?,
            Some(ChunkVersions {
                sn: 3,
                corrected_sn: 3,
                snapshot_sn: None
            })
        );
        // A chunk that does not exist has nothing to delete.
        store
            .delete_snapshot_or_correct_sn(key(9), 5)
            .map_err(|e| format!("{e:?}"))?;
        Ok(())
    }

    #[test]
    fn refusals() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = store(dir.path())?;
        assert!(matches!(
            store.admit_sn(key(3), Some(0), None),
            Err(WriteError::Conflict(_))
        ));
        // An older snapshot not yet deleted: no second one.
        write(&store, key(3), 1, 0, 1, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        write(&store, key(3), 2, 0, 2, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert!(matches!(
            store.admit_sn(key(3), Some(3), None),
            Err(WriteError::Conflict(_))
        ));
        assert_eq!(store.versions(key(3))?.map(|v| v.sn), Some(2));
        // Clone chunks take no snapshot and have none to delete.
        store
            .create_clone(key(4), 1, 0, "/src:0@cs")
            .map_err(|e| format!("{e:?}"))?;
        assert!(matches!(
            store.admit_sn(key(4), Some(2), None),
            Err(WriteError::Conflict(_))
        ));
        assert!(matches!(
            store.delete_snapshot_or_correct_sn(key(4), 2),
            Err(SnapshotError::CloneChunk)
        ));
        Ok(())
    }

    #[test]
    fn a_clone_chunk_keeps_its_corrected_sn_once_plain() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = store(dir.path())?;
        // As a recover lays a chunk: the snapshot's sn, the volume's new seqNum corrected.
        store
            .create_clone(key(6), 1, 3, "key@s3")
            .map_err(|e| format!("{e:?}"))?;
        // A flatten pastes every page: the chunk becomes plain with its sn still 1.
        assert!(store.paste(key(6), 0, &vec![9; CHUNK as usize])?);
        assert_eq!(files(dir.path(), 6)?, ["chunk_6.cow", "chunk_6.sn"]);
        let reopened = self::store(dir.path())?;
        for s in [&store, &reopened] {
            let v = s.versions(key(6))?.ok_or("no chunk")?;
            assert_eq!((v.corrected_sn, v.snapshot_sn), (3, None));
        }
        // Below the corrected sn is BACKWARD; a write at it keeps nothing aside.
        assert!(matches!(
            write(&reopened, key(6), 2, 0, 7, BLOCK as usize),
            Err(WriteError::Backward)
        ));
        write(&reopened, key(6), 3, 0, 8, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        assert_eq!(reopened.versions(key(6))?.and_then(|v| v.snapshot_sn), None);
        assert_eq!(files(dir.path(), 6)?, ["chunk_6.cow", "chunk_6.sn"]);
        Ok(())
    }

    #[test]
    fn a_snapshot_file_its_record_does_not_name_is_removed()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = store(dir.path())?;
        write(&store, key(5), 1, 0, 1, BLOCK as usize).map_err(|e| format!("{e:?}"))?;
        drop(store);
        // As a crash between a deletion's record update and its file removal leaves it.
        std::fs::write(dir.path().join("copysets/1-2/chunk_5.snap"), [7u8; 4096])?;
        let store = self::store(dir.path())?;
        assert_eq!(store.versions(key(5))?.and_then(|v| v.snapshot_sn), None);
        assert_eq!(files(dir.path(), 5)?, ["chunk_5.sn"]);
        Ok(())
    }
}
