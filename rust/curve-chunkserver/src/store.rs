//! Chunk files on disk: one sparse file per chunk under
//! `<data_dir>/copysets/<logicalPoolId>-<copysetId>/chunk_<chunkId>`, with the chunk's
//! highest written `sn` in a sidecar file `chunk_<chunkId>.sn` so the data file holds
//! nothing but data at its real offsets.
//!
//! A clone chunk (one cloned lazily from another volume, see clone.rs) also has a record
//! `chunk_<chunkId>.clone`: its origin location, `correctedSn` and page bitmap. The record
//! is written before the data file is created and removed once every page is written, so
//! a chunk file without a record is a plain chunk whatever a crash interrupted; writes
//! and pastes to a clone chunk hold its record's lock from the data write to the record
//! update, so a paste never covers a page a write just wrote.
//!
//! Durability is a choice ([`Durability`]). `Cache` (the default, and the tests'): data
//! and records go to the page cache, which survives the death of the process (SIGKILL)
//! but not a power cut or a kernel crash. `Sync`: chunk files are opened `O_DSYNC`, as
//! upstream's chunkservers open theirs, so each write is on stable storage before it is
//! applied; sidecar and record files are fsynced before their rename and their folder
//! after it, and a new chunk file's folder is fsynced once.
//!
//! A chunk with a snapshot also has `chunk_<chunkId>.cow` and `chunk_<chunkId>.snap`:
//! copy-on-write by sn, in store/cow.rs.
//!
//! This module knows nothing of RPCs, leaders or replication.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::clone::{Bitmap, CloneMeta};

mod cow;
pub(crate) use cow::SnapshotError;

/// At most this many chunk files stay open; beyond it a handle no request holds is
/// dropped. One in use is never dropped: a second handle opened beside it would have its
/// own sn lock and sn read from the sidecar, so two writes could both pass the sn check
/// and the sidecar could go backwards.
const MAX_OPEN_CHUNKS: usize = 4096;

/// Identifies a chunk inside this chunkserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ChunkKey {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    pub chunk_id: u64,
}

/// Why a write was not applied.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The request's sn is lower than the chunk's sn or correctedSn (Curve's BACKWARD).
    Backward,
    /// sn 0, or a snapshot the chunk cannot take (upstream's InvalidArg, StatusConflict
    /// and SnapshotConflict, which its chunkservers answer FAILURE_UNKNOWN).
    Conflict(&'static str),
    Io(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Why CreateCloneChunk did not create the chunk asked for.
#[derive(Debug)]
pub(crate) enum CreateCloneError {
    /// The chunk exists with another location, sn or correctedSn, or as a plain chunk
    /// (Curve's CHUNK_EXIST).
    Conflict,
    Io(io::Error),
}

impl From<io::Error> for CreateCloneError {
    fn from(e: io::Error) -> Self {
        CreateCloneError::Io(e)
    }
}

/// What a chunk is, as a read or a RecoverChunk needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkView {
    Missing,
    Plain,
    Clone(CloneMeta),
}

/// How [`ChunkStore::chunk`] treats a chunk that does not exist yet.
#[derive(Clone, Copy)]
enum Create<'a> {
    No,
    Plain,
    Clone(&'a CloneMeta),
}

/// An open chunk file and its sequence number.
struct ChunkFile {
    file: File,
    /// Highest sn written so far; the lock also orders sidecar updates.
    sn: Mutex<u64>,
    sn_path: PathBuf,
    /// `Some` while this is a clone chunk; the lock orders record updates, and a write or
    /// paste to a clone chunk holds it from its data write to its record update.
    clone: Mutex<Option<CloneMeta>>,
    clone_path: PathBuf,
    /// correctedSn and the chunk's snapshot; taken after `sn` when both are held.
    cow: Mutex<cow::CowState>,
}

/// Whether writes reach stable storage before they count as applied (see the module
/// documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Cache,
    Sync,
}

pub(crate) struct ChunkStore {
    copysets_dir: PathBuf,
    durability: Durability,
    open: Mutex<HashMap<ChunkKey, Arc<ChunkFile>>>,
    max_open: usize,
    /// Pages (blocks) per chunk: a clone chunk's bitmap has one bit each.
    block_size: u32,
    pages: u32,
    /// Held while a chunk file is created, so a plain and a clone creation of one chunk
    /// cannot interleave their record and data files.
    creating: Mutex<()>,
}

/// A poisoned lock only means another request panicked mid-update of a map that is a
/// cache; its contents are still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChunkStore {
    /// `chunk_size` is a positive multiple of `block_size` (checked by the caller).
    pub fn new(data_dir: &Path, durability: Durability, chunk_size: u32, block_size: u32) -> Self {
        Self::with_max_open(
            data_dir,
            durability,
            chunk_size,
            block_size,
            MAX_OPEN_CHUNKS,
        )
    }

    fn with_max_open(
        data_dir: &Path,
        durability: Durability,
        chunk_size: u32,
        block_size: u32,
        max_open: usize,
    ) -> Self {
        let block_size = block_size.max(1);
        ChunkStore {
            copysets_dir: data_dir.join("copysets"),
            durability,
            open: Mutex::new(HashMap::new()),
            max_open,
            block_size,
            pages: chunk_size / block_size,
            creating: Mutex::new(()),
        }
    }

    /// The bitmap of a new clone chunk: every page unwritten.
    pub fn new_clone_meta(&self, location: String, corrected_sn: u64) -> CloneMeta {
        CloneMeta {
            location,
            corrected_sn,
            bitmap: Bitmap::new(self.pages),
        }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Pages `[first, last]` of the byte range `offset..offset + len` (`len > 0`).
    pub fn pages_of(&self, offset: u64, len: u64) -> (u32, u32) {
        let block = u64::from(self.block_size);
        let first = offset / block;
        let last = (offset + len.max(1) - 1) / block;
        (
            u32::try_from(first).unwrap_or(u32::MAX),
            u32::try_from(last).unwrap_or(u32::MAX),
        )
    }

    /// The folder of one copyset's chunks.
    pub fn copyset_dir(&self, logical_pool_id: u32, copyset_id: u32) -> PathBuf {
        self.copysets_dir
            .join(format!("{logical_pool_id}-{copyset_id}"))
    }

    pub fn create_copyset_dir(&self, logical_pool_id: u32, copyset_id: u32) -> io::Result<()> {
        std::fs::create_dir_all(self.copyset_dir(logical_pool_id, copyset_id))
    }

    fn chunk_path(&self, key: ChunkKey) -> PathBuf {
        self.copyset_dir(key.logical_pool_id, key.copyset_id)
            .join(format!("chunk_{}", key.chunk_id))
    }

    /// The chunk's open file, opening (and unless `Create::No`, creating) it on a cache
    /// miss. `Ok(None)`: the chunk was never written.
    fn chunk(&self, key: ChunkKey, create: Create<'_>) -> io::Result<Option<Arc<ChunkFile>>> {
        if let Some(c) = lock(&self.open).get(&key) {
            return Ok(Some(c.clone()));
        }
        let creating = !matches!(create, Create::No);
        let _creating = creating.then(|| lock(&self.creating));
        if creating && let Some(c) = lock(&self.open).get(&key) {
            return Ok(Some(c.clone()));
        }
        let path = self.chunk_path(key);
        let clone_path = path.with_file_name(format!("chunk_{}.clone", key.chunk_id));
        let existed = creating && path.exists();
        if !existed {
            match create {
                // The record first: a data file without one is a plain chunk.
                Create::Clone(meta) => replace_file(&clone_path, &meta.encode(), self.durability)?,
                // A record left by a clone creation that crashed before its data file.
                Create::Plain => match std::fs::remove_file(&clone_path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
                Create::No => {}
            }
        }
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(creating)
            .truncate(false);
        if self.durability == Durability::Sync {
            options.custom_flags(libc::O_DSYNC);
        }
        let file = match options.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !creating => return Ok(None),
            Err(e) => return Err(e),
        };
        if creating && !existed && self.durability == Durability::Sync {
            sync_dir_of(&path)?;
        }
        let sn_path = path.with_file_name(format!("chunk_{}.sn", key.chunk_id));
        let sn = read_sn(&sn_path)?;
        let clone =
            match std::fs::read(&clone_path) {
                Ok(bytes) => Some(CloneMeta::decode(&bytes, self.pages).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", clone_path.display()))
                })?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
        let cow = cow::CowState::open(&path, self.pages, self.durability)?;
        let chunk = Arc::new(ChunkFile {
            file,
            sn: Mutex::new(sn),
            sn_path,
            clone: Mutex::new(clone),
            clone_path,
            cow: Mutex::new(cow),
        });
        let mut open = lock(&self.open);
        // Handles are only cloned under this lock, so a count of 1 cannot grow meanwhile.
        if open.len() >= self.max_open
            && !open.contains_key(&key)
            && let Some(victim) = open
                .iter()
                .find(|(_, c)| Arc::strong_count(c) == 1)
                .map(|(k, _)| *k)
        {
            open.remove(&victim);
        }
        // Another request may have opened it meanwhile; keep one handle so both see
        // the same sn.
        Ok(Some(open.entry(key).or_insert(chunk).clone()))
    }

    /// Checks `sn` against the chunk's, starts the chunk's snapshot if this write is the
    /// first above a snapshot (store/cow.rs), and records `sn` if higher; creates the
    /// chunk, as a clone chunk of `location` if given and the chunk does not exist yet.
    /// Split from [`ChunkStore::write`] so a leader can refuse a write before
    /// replicating it.
    pub fn admit_sn(
        &self,
        key: ChunkKey,
        sn: Option<u64>,
        location: Option<&str>,
    ) -> Result<(), WriteError> {
        // sn 0 means "no snapshot" in a GetChunkInfo answer; no write carries it.
        if sn == Some(0) {
            return Err(WriteError::Conflict("a write with sn 0"));
        }
        let meta = location.map(|l| self.new_clone_meta(l.to_string(), 0));
        let create = meta.as_ref().map_or(Create::Plain, Create::Clone);
        let Some(chunk) = self.chunk(key, create)? else {
            return Err(WriteError::Io(io::Error::other("chunk file vanished")));
        };
        let Some(sn) = sn else { return Ok(()) };
        let (clone_corrected, is_clone) = match lock(&chunk.clone).as_ref() {
            Some(m) => (m.corrected_sn, true),
            None => (0, false),
        };
        let mut current = lock(&chunk.sn);
        self.admit_cow(&chunk, *current, sn, clone_corrected, is_clone)?;
        if sn > *current {
            write_sn(&chunk.sn_path, sn, self.durability)?;
            *current = sn;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (the caller has validated the range and admitted `sn`),
    /// first copying the pages it changes into the chunk's snapshot if the write at `sn`
    /// is the one that must (store/cow.rs); on a clone chunk, marks its pages written,
    /// and makes it a plain chunk once every page is.
    pub fn write(
        &self,
        key: ChunkKey,
        offset: u64,
        data: &[u8],
        sn: Option<u64>,
    ) -> io::Result<()> {
        let Some(chunk) = self.chunk(key, Create::Plain)? else {
            return Err(io::Error::other("chunk file vanished"));
        };
        if let Some(sn) = sn {
            self.copy_to_snapshot(&chunk, sn, offset, data.len() as u64)?;
        }
        let mut clone = lock(&chunk.clone);
        if clone.is_none() {
            drop(clone);
            return chunk.file.write_all_at(data, offset);
        }
        chunk.file.write_all_at(data, offset)?;
        let (first, last) = self.pages_of(offset, data.len() as u64);
        self.mark_written(&chunk, &mut clone, first, last)
    }

    /// Writes `data` leaving the bitmap alone: the tests' way to leave bytes in pages
    /// no bit covers, as a write cut short between its data and its record does.
    #[cfg(test)]
    pub fn write_raw(&self, key: ChunkKey, offset: u64, data: &[u8]) -> io::Result<()> {
        let Some(chunk) = self.chunk(key, Create::Plain)? else {
            return Err(io::Error::other("chunk file vanished"));
        };
        chunk.file.write_all_at(data, offset)
    }

    /// Upstream's PasteChunk: writes the pages of `data` (at `offset`) that the clone
    /// chunk has not written yet and marks them written. A plain chunk is left as it is.
    /// `Ok(false)`: no such chunk.
    pub fn paste(&self, key: ChunkKey, offset: u64, data: &[u8]) -> io::Result<bool> {
        let Some(chunk) = self.chunk(key, Create::No)? else {
            return Ok(false);
        };
        let mut clone = lock(&chunk.clone);
        let Some(meta) = clone.as_ref() else {
            return Ok(true);
        };
        let (first, last) = self.pages_of(offset, data.len() as u64);
        let block = u64::from(self.block_size);
        for (from, to, written) in meta.bitmap.runs(first, last) {
            if written {
                continue;
            }
            let at = u64::from(from) * block;
            let start = usize::try_from(at - offset).map_err(io::Error::other)?;
            let end = usize::try_from(u64::from(to + 1) * block - offset)
                .map_err(io::Error::other)?
                .min(data.len());
            if let Some(piece) = data.get(start..end) {
                write_or_punch(&chunk.file, piece, at)?;
            }
        }
        self.mark_written(&chunk, &mut clone, first, last)?;
        Ok(true)
    }

    /// Sets pages `[first, last]` in the record of a clone chunk (`clone` is its locked
    /// state); a full bitmap makes it a plain chunk, as upstream's `flush`.
    fn mark_written(
        &self,
        chunk: &ChunkFile,
        clone: &mut Option<CloneMeta>,
        first: u32,
        last: u32,
    ) -> io::Result<()> {
        let Some(meta) = clone.as_ref() else {
            return Ok(());
        };
        let mut next = meta.clone();
        if !next.bitmap.set_range(first, last) {
            return Ok(());
        }
        if next.bitmap.full() {
            // correctedSn first: with both records on disk the higher floor holds.
            self.keep_corrected_sn(chunk, meta.corrected_sn)?;
            remove_file(&chunk.clone_path, self.durability)?;
            *clone = None;
        } else {
            replace_file(&chunk.clone_path, &next.encode(), self.durability)?;
            *clone = Some(next);
        }
        Ok(())
    }

    /// Upstream's CreateCloneChunk: creates a clone chunk of `location` with every page
    /// unwritten; succeeds again for the same location, sn and correctedSn, and refuses a
    /// chunk that exists otherwise (a plain one included) with `Conflict`.
    pub fn create_clone(
        &self,
        key: ChunkKey,
        sn: u64,
        corrected_sn: u64,
        location: &str,
    ) -> Result<(), CreateCloneError> {
        let meta = self.new_clone_meta(location.to_string(), corrected_sn);
        let Some(chunk) = self.chunk(key, Create::Clone(&meta))? else {
            return Err(CreateCloneError::Io(io::Error::other(
                "chunk file vanished",
            )));
        };
        let mut current = lock(&chunk.sn);
        let same = lock(&chunk.clone)
            .as_ref()
            .is_some_and(|m| m.location == location && m.corrected_sn == corrected_sn);
        if !same {
            return Err(CreateCloneError::Conflict);
        }
        // 0: just created (its sn record comes after its files).
        if *current == 0 {
            write_sn(&chunk.sn_path, sn, self.durability)?;
            *current = sn;
        }
        if *current != sn {
            return Err(CreateCloneError::Conflict);
        }
        Ok(())
    }

    /// What the chunk is: missing, plain, or a clone chunk with its record as it is now.
    pub fn view(&self, key: ChunkKey) -> io::Result<ChunkView> {
        Ok(match self.chunk(key, Create::No)? {
            None => ChunkView::Missing,
            Some(chunk) => match lock(&chunk.clone).as_ref() {
                None => ChunkView::Plain,
                Some(meta) => ChunkView::Clone(meta.clone()),
            },
        })
    }

    /// Reads `len` bytes at `offset`; bytes past the file's end read as zeros (chunk
    /// files are sparse and only as long as their furthest write). `Ok(None)`: the chunk
    /// was never written.
    pub fn read(&self, key: ChunkKey, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let Some(chunk) = self.chunk(key, Create::No)? else {
            return Ok(None);
        };
        // Not zeroed first: pread fills it (a memset of every read buffer showed in the
        // profile of 1 MiB reads); only what lies past the file's end is zeroed.
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let mut done = 0;
        while done < len {
            let at = offset + done as u64;
            let at = libc::off_t::try_from(at)
                .map_err(|_| io::Error::other("read offset exceeds off_t"))?;
            // SAFETY: `done < len ≤ capacity`, so the `len - done` bytes from
            // `as_mut_ptr() + done` lie inside the allocation; pread only writes them, and
            // they are counted as initialized (`done`) only as far as it reports writing.
            let n = unsafe {
                libc::pread(
                    chunk.file.as_raw_fd(),
                    buf.as_mut_ptr().add(done).cast(),
                    len - done,
                    at,
                )
            };
            match n {
                0 => break,
                n if n > 0 => done += n as usize,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // SAFETY: pread initialized the first `done` bytes (`done ≤ len ≤ capacity`).
        unsafe { buf.set_len(done) };
        buf.resize(len, 0);
        Ok(Some(buf))
    }

    /// Drops the open handles of a copyset's chunks: its folder is about to be replaced
    /// (a Raft snapshot install), and later requests must open the new files.
    pub fn forget_copyset(&self, logical_pool_id: u32, copyset_id: u32) {
        lock(&self.open)
            .retain(|k, _| k.logical_pool_id != logical_pool_id || k.copyset_id != copyset_id);
    }

    /// The chunk's sn, or `None` if it was never written.
    pub fn sn(&self, key: ChunkKey) -> io::Result<Option<u64>> {
        Ok(self.chunk(key, Create::No)?.map(|c| *lock(&c.sn)))
    }
}

/// A missing or short sidecar means no sn was ever recorded (a chunk written without
/// one, or a crash between creating the chunk and its first sidecar write).
pub(crate) fn read_sn(path: &Path) -> io::Result<u64> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Write-then-rename, so a crash leaves either the old or the new sn, never a torn one.
pub(crate) fn write_sn(path: &Path, sn: u64, durability: Durability) -> io::Result<()> {
    replace_file(path, &sn.to_le_bytes(), durability)
}

/// Replaces `path`'s contents with `bytes` through a temporary file and a rename: a
/// crash leaves the old contents or the new, never a mix. With `Sync`, both the data
/// and the rename are on stable storage when this returns.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    // `<name>.tmp`, never `with_extension`: `chunk_7.sn` and `chunk_7.clone` are written
    // under different locks and must not share a temporary file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    io::Write::write_all(&mut file, bytes)?;
    if durability == Durability::Sync {
        file.sync_data()?;
    }
    drop(file);
    std::fs::rename(&tmp, path)?;
    if durability == Durability::Sync {
        sync_dir_of(path)?;
    }
    Ok(())
}

/// Removes `path` if it exists; with `Sync`, the removal is on stable storage when this
/// returns.
fn remove_file(path: &Path, durability: Durability) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if durability == Durability::Sync {
        sync_dir_of(path)?;
    }
    Ok(())
}

/// fsyncs the folder holding `path`, so a new or renamed entry survives a power cut.
fn sync_dir_of(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes `data` at `at`, or, when it is all zeros, punches a hole there instead: a
/// flatten pastes every page of a source's allocated segments, most of them never written
/// in the source, and zeros stored as holes read the same without taking the space (a
/// 1 GiB segment of zeros would otherwise take 1 GiB on every replica). A file system
/// that cannot punch holes gets the zeros written.
fn write_or_punch(file: &File, data: &[u8], at: u64) -> io::Result<()> {
    if data.iter().all(|&b| b == 0) {
        let punched = rustix::fs::fallocate(
            file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            at,
            data.len() as u64,
        );
        if punched.is_ok() {
            return Ok(());
        }
    }
    file.write_all_at(data, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clone::curve_location;

    const CHUNK: u32 = 64 * 1024;
    const BLOCK: u32 = 4096;
    const PAGES: u32 = CHUNK / BLOCK;

    fn key(chunk_id: u64) -> ChunkKey {
        ChunkKey {
            logical_pool_id: 1,
            copyset_id: 2,
            chunk_id,
        }
    }

    #[test]
    fn write_read_sn_and_reopen() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ChunkStore::new(dir.path(), Durability::Cache, CHUNK, BLOCK);
        store.create_copyset_dir(1, 2)?;
        assert!(store.read(key(7), 0, 4096)?.is_none());
        assert!(store.sn(key(7))?.is_none());
        assert!(store.admit_sn(key(7), Some(3), None).is_ok());
        store.write(key(7), 4096, &[5u8; 4096], None)?;
        let got = store.read(key(7), 0, 12288)?.unwrap_or_default();
        assert_eq!(got.len(), 12288);
        assert!(got[..4096].iter().all(|&b| b == 0));
        assert!(got[4096..8192].iter().all(|&b| b == 5));
        assert!(got[8192..].iter().all(|&b| b == 0));
        assert!(matches!(
            store.admit_sn(key(7), Some(2), None),
            Err(WriteError::Backward)
        ));
        drop(store);
        let store = ChunkStore::new(dir.path(), Durability::Cache, CHUNK, BLOCK);
        assert_eq!(store.sn(key(7))?, Some(3));
        let got = store.read(key(7), 4096, 4096)?.unwrap_or_default();
        assert_eq!(got, vec![5u8; 4096]);
        Ok(())
    }

    #[test]
    fn a_chunk_in_use_keeps_its_one_handle_when_the_cache_is_full() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ChunkStore::with_max_open(dir.path(), Durability::Cache, CHUNK, BLOCK, 1);
        store.create_copyset_dir(1, 2)?;
        let Some(in_use) = store.chunk(key(7), Create::Plain)? else {
            panic!("chunk 7 not created");
        };
        // Opening another chunk must not evict 7 while a request holds it...
        store
            .admit_sn(key(8), Some(1), None)
            .map_err(|_| io::Error::other("admit 8"))?;
        let Some(again) = store.chunk(key(7), Create::No)? else {
            panic!("chunk 7 vanished");
        };
        assert!(Arc::ptr_eq(&in_use, &again), "two handles of one chunk");
        // ...so its sn check sees what the holder recorded.
        *lock(&in_use.sn) = 5;
        assert!(matches!(
            store.admit_sn(key(7), Some(4), None),
            Err(WriteError::Backward)
        ));
        drop((in_use, again));
        // Unused handles are still dropped to make room.
        store
            .admit_sn(key(9), Some(1), None)
            .map_err(|_| io::Error::other("admit 9"))?;
        assert!(lock(&store.open).len() <= 2);
        Ok(())
    }

    fn clone_store(dir: &Path) -> io::Result<ChunkStore> {
        let store = ChunkStore::new(dir, Durability::Sync, CHUNK, BLOCK);
        store.create_copyset_dir(1, 2)?;
        Ok(store)
    }

    fn written_pages(store: &ChunkStore, k: ChunkKey) -> io::Result<Vec<u32>> {
        match store.view(k)? {
            ChunkView::Clone(meta) => Ok((0..PAGES).filter(|&i| meta.bitmap.get(i)).collect()),
            other => Err(io::Error::other(format!("not a clone chunk: {other:?}"))),
        }
    }

    #[test]
    fn a_write_to_a_clone_chunk_sets_its_pages_and_survives_a_reopen() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = clone_store(dir.path())?;
        let loc = curve_location("/src", 1 << 20);
        store
            .admit_sn(key(1), Some(1), Some(&loc))
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        assert_eq!(written_pages(&store, key(1))?, Vec::<u32>::new());
        // Two pages at 8 KiB, then one unaligned to pages but inside page 5.
        store.write(key(1), 8192, &[1u8; 8192], None)?;
        assert_eq!(written_pages(&store, key(1))?, vec![2, 3]);
        // A later write with other clone fields does not change the chunk's location.
        store
            .admit_sn(key(1), Some(1), Some("/other:0@cs"))
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        drop(store);
        let store = clone_store(dir.path())?;
        let ChunkView::Clone(meta) = store.view(key(1))? else {
            panic!("not a clone chunk after reopen");
        };
        assert_eq!(meta.location, loc);
        assert_eq!(written_pages(&store, key(1))?, vec![2, 3]);
        assert_eq!(store.read(key(1), 8192, 8192)?, Some(vec![1u8; 8192]));
        Ok(())
    }

    #[test]
    fn a_fully_written_clone_chunk_becomes_plain_for_good() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = clone_store(dir.path())?;
        store
            .create_clone(key(2), 1, 0, "/src:0@cs")
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        let record = dir.path().join("copysets/1-2/chunk_2.clone");
        assert!(record.exists());
        store.write(key(2), 0, &vec![3u8; (CHUNK - BLOCK) as usize], None)?;
        assert!(matches!(store.view(key(2))?, ChunkView::Clone(_)));
        // The last page by paste: pastes count as written pages too.
        assert!(store.paste(key(2), u64::from(CHUNK - BLOCK), &[4u8; BLOCK as usize])?);
        assert_eq!(store.view(key(2))?, ChunkView::Plain);
        assert!(!record.exists(), "the record outlived the clone");
        drop(store);
        let store = clone_store(dir.path())?;
        assert_eq!(store.view(key(2))?, ChunkView::Plain);
        // Pasting on a plain chunk changes nothing.
        assert!(store.paste(key(2), 0, &[9u8; BLOCK as usize])?);
        assert_eq!(store.read(key(2), 0, 4)?, Some(vec![3u8; 4]));
        // Neither does CreateCloneChunk: CHUNK_EXIST.
        assert!(matches!(
            store.create_clone(key(2), 1, 0, "/src:0@cs"),
            Err(CreateCloneError::Conflict)
        ));
        Ok(())
    }

    #[test]
    fn paste_fills_only_unwritten_pages() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = clone_store(dir.path())?;
        store
            .admit_sn(key(3), Some(1), Some("/src:0@cs"))
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        store.write(key(3), 4096, &[1u8; 4096], None)?;
        store.write(key(3), 12288, &[1u8; 4096], None)?;
        assert!(store.paste(key(3), 0, &[7u8; 5 * 4096])?);
        let got = store.read(key(3), 0, 5 * 4096)?.unwrap_or_default();
        let expected: Vec<u8> = [7u8, 1, 7, 1, 7].iter().flat_map(|&b| [b; 4096]).collect();
        assert_eq!(got, expected);
        assert_eq!(written_pages(&store, key(3))?, vec![0, 1, 2, 3, 4]);
        assert!(
            !store.paste(key(4), 0, &[7u8; 4096])?,
            "pasted into no chunk"
        );
        Ok(())
    }

    #[test]
    fn pasted_zeros_are_holes_and_read_as_zeros() -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir()?;
        let store = clone_store(dir.path())?;
        store
            .admit_sn(key(6), Some(1), Some("/src:0@cs"))
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        store.write(key(6), 0, &[1u8; 4096], None)?;
        // Bytes in unwritten pages that no bitmap bit covers (a write cut short between
        // its data and its record): a paste of zeros must leave zeros, not them.
        store.write_raw(key(6), 4096, &[9u8; 2 * 4096])?;
        let path = store.copyset_dir(1, 2).join("chunk_6");
        let before = std::fs::metadata(&path)?.blocks();
        assert!(store.paste(key(6), 0, &vec![0u8; CHUNK as usize])?);
        let got = store.read(key(6), 0, 3 * 4096)?.unwrap_or_default();
        let mut want = vec![1u8; 4096];
        want.extend_from_slice(&[0u8; 2 * 4096]);
        assert_eq!(got, want);
        let after = std::fs::metadata(&path)?.blocks();
        assert!(
            after < before,
            "a chunk of pasted zeros took space: {before} -> {after} blocks"
        );
        Ok(())
    }

    #[test]
    fn create_clone_is_idempotent_and_refuses_conflicts() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = clone_store(dir.path())?;
        let conflict =
            |r: Result<(), CreateCloneError>| matches!(r, Err(CreateCloneError::Conflict));
        let ok = |r: Result<(), CreateCloneError>| r.is_ok();
        assert!(ok(store.create_clone(key(5), 2, 1, "/src:0@cs")));
        store.write(key(5), 0, &[1u8; 4096], None)?;
        assert!(
            ok(store.create_clone(key(5), 2, 1, "/src:0@cs")),
            "not idempotent"
        );
        assert_eq!(
            written_pages(&store, key(5))?,
            vec![0],
            "a repeat reset the bitmap"
        );
        assert!(conflict(store.create_clone(key(5), 3, 1, "/src:0@cs")));
        assert!(conflict(store.create_clone(key(5), 2, 0, "/src:0@cs")));
        assert!(conflict(store.create_clone(key(5), 2, 1, "/src:4096@cs")));
        // A plain chunk is a conflict too.
        store
            .admit_sn(key(6), Some(2), None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        assert!(conflict(store.create_clone(key(6), 2, 1, "/src:0@cs")));
        assert_eq!(store.view(key(6))?, ChunkView::Plain);
        // correctedSn is a floor for writes, as upstream's.
        assert!(matches!(store.admit_sn(key(5), Some(2), None), Ok(())));
        assert!(ok(store.create_clone(key(7), 1, 3, "/src:0@cs")));
        assert!(matches!(
            store.admit_sn(key(7), Some(2), None),
            Err(WriteError::Backward)
        ));
        drop(store);
        let store = clone_store(dir.path())?;
        assert_eq!(store.sn(key(5))?, Some(2));
        assert!(ok(store.create_clone(key(5), 2, 1, "/src:0@cs")));
        Ok(())
    }

    #[test]
    fn a_record_without_its_data_file_is_dropped_and_a_bad_record_is_an_error() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = clone_store(dir.path())?;
        let folder = dir.path().join("copysets/1-2");
        // A clone creation that crashed between its record and its data file.
        std::fs::write(folder.join("chunk_8.clone"), b"whatever")?;
        assert_eq!(store.view(key(8))?, ChunkView::Missing);
        store
            .admit_sn(key(8), Some(1), None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        assert_eq!(store.view(key(8))?, ChunkView::Plain);
        assert!(!folder.join("chunk_8.clone").exists());
        // A damaged record never turns the chunk plain (its pages would read as zeros).
        store
            .create_clone(key(9), 1, 0, "/src:0@cs")
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        drop(store);
        std::fs::write(folder.join("chunk_9.clone"), b"CVFSCLN1")?;
        let store = clone_store(dir.path())?;
        assert!(store.view(key(9)).is_err());
        assert!(store.read(key(9), 0, 4096).is_err());
        Ok(())
    }
}
