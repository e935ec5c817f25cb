//! Chunk files on disk: one sparse file per chunk under
//! `<data_dir>/copysets/<logicalPoolId>-<copysetId>/chunk_<chunkId>`, with the chunk's
//! highest written `sn` in a sidecar file `chunk_<chunkId>.sn` so the data file holds
//! nothing but data at its real offsets.
//!
//! Durability is a choice ([`Durability`]). `Cache` (the default, and the tests'): data
//! and records go to the page cache, which survives the death of the process (SIGKILL)
//! but not a power cut or a kernel crash. `Sync`: chunk files are opened `O_DSYNC`, as
//! upstream's chunkservers open theirs, so each write is on stable storage before it is
//! applied; sidecar and record files are fsynced before their rename and their folder
//! after it, and a new chunk file's folder is fsynced once.
//!
//! This module knows nothing of RPCs, leaders or replication.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

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
    /// The request's sn is lower than the chunk's (Curve's BACKWARD).
    Backward,
    Io(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// An open chunk file and its sequence number.
struct ChunkFile {
    file: File,
    /// Highest sn written so far; the lock also orders sidecar updates.
    sn: Mutex<u64>,
    sn_path: PathBuf,
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
}

/// A poisoned lock only means another request panicked mid-update of a map that is a
/// cache; its contents are still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChunkStore {
    pub fn new(data_dir: &Path, durability: Durability) -> Self {
        Self::with_max_open(data_dir, durability, MAX_OPEN_CHUNKS)
    }

    fn with_max_open(data_dir: &Path, durability: Durability, max_open: usize) -> Self {
        ChunkStore {
            copysets_dir: data_dir.join("copysets"),
            durability,
            open: Mutex::new(HashMap::new()),
            max_open,
        }
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

    /// The chunk's open file, opening (and with `create`, creating) it on a cache miss.
    /// `Ok(None)`: the chunk was never written.
    fn chunk(&self, key: ChunkKey, create: bool) -> io::Result<Option<Arc<ChunkFile>>> {
        if let Some(c) = lock(&self.open).get(&key) {
            return Ok(Some(c.clone()));
        }
        let path = self.chunk_path(key);
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(create)
            .truncate(false);
        if self.durability == Durability::Sync {
            options.custom_flags(libc::O_DSYNC);
        }
        let existed = create && path.exists();
        let file = match options.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) => return Err(e),
        };
        if create && !existed && self.durability == Durability::Sync {
            sync_dir_of(&path)?;
        }
        let sn_path = path.with_file_name(format!("chunk_{}.sn", key.chunk_id));
        let sn = read_sn(&sn_path)?;
        let chunk = Arc::new(ChunkFile {
            file,
            sn: Mutex::new(sn),
            sn_path,
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

    /// Checks `sn` against the chunk's and records it if higher; creates the chunk.
    /// Split from [`ChunkStore::write`] so a leader can refuse a BACKWARD write before
    /// replicating it.
    pub fn admit_sn(&self, key: ChunkKey, sn: Option<u64>) -> Result<(), WriteError> {
        let Some(chunk) = self.chunk(key, true)? else {
            return Err(WriteError::Io(io::Error::other("chunk file vanished")));
        };
        let Some(sn) = sn else { return Ok(()) };
        let mut current = lock(&chunk.sn);
        if sn < *current {
            return Err(WriteError::Backward);
        }
        if sn > *current {
            write_sn(&chunk.sn_path, sn, self.durability)?;
            *current = sn;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (the caller has validated the range).
    pub fn write(&self, key: ChunkKey, offset: u64, data: &[u8]) -> io::Result<()> {
        let Some(chunk) = self.chunk(key, true)? else {
            return Err(io::Error::other("chunk file vanished"));
        };
        chunk.file.write_all_at(data, offset)
    }

    /// Reads `len` bytes at `offset`; bytes past the file's end read as zeros (chunk
    /// files are sparse and only as long as their furthest write). `Ok(None)`: the chunk
    /// was never written.
    pub fn read(&self, key: ChunkKey, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let Some(chunk) = self.chunk(key, false)? else {
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

    /// The chunk's sn, or `None` if it was never written.
    pub fn sn(&self, key: ChunkKey) -> io::Result<Option<u64>> {
        Ok(self.chunk(key, false)?.map(|c| *lock(&c.sn)))
    }
}

impl ChunkStore {
    /// The chunk file's length (its furthest written byte), or `None` if never written.
    pub fn chunk_len(&self, key: ChunkKey) -> io::Result<Option<u64>> {
        match self.chunk(key, false)? {
            Some(c) => Ok(Some(c.file.metadata()?.len())),
            None => Ok(None),
        }
    }

    /// Ids of the chunks stored for a copyset; with `since`, only those whose data
    /// file was modified at or after it.
    pub fn chunk_ids(
        &self,
        logical_pool_id: u32,
        copyset_id: u32,
        since: Option<SystemTime>,
    ) -> io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.copyset_dir(logical_pool_id, copyset_id))? {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chunk_"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(since) = since {
                // An unreadable mtime counts as recent: copying too much is safe.
                let modified = entry.metadata().and_then(|m| m.modified());
                if modified.is_ok_and(|m| m < since) {
                    continue;
                }
            }
            ids.push(id);
        }
        Ok(ids)
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
    let tmp = path.with_extension("tmp");
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

/// fsyncs the folder holding `path`, so a new or renamed entry survives a power cut.
fn sync_dir_of(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let store = ChunkStore::new(dir.path(), Durability::Cache);
        store.create_copyset_dir(1, 2)?;
        assert!(store.read(key(7), 0, 4096)?.is_none());
        assert!(store.sn(key(7))?.is_none());
        assert!(store.admit_sn(key(7), Some(3)).is_ok());
        store.write(key(7), 4096, &[5u8; 4096])?;
        let got = store.read(key(7), 0, 12288)?.unwrap_or_default();
        assert_eq!(got.len(), 12288);
        assert!(got[..4096].iter().all(|&b| b == 0));
        assert!(got[4096..8192].iter().all(|&b| b == 5));
        assert!(got[8192..].iter().all(|&b| b == 0));
        assert!(matches!(
            store.admit_sn(key(7), Some(2)),
            Err(WriteError::Backward)
        ));
        drop(store);
        let store = ChunkStore::new(dir.path(), Durability::Cache);
        assert_eq!(store.sn(key(7))?, Some(3));
        let got = store.read(key(7), 4096, 4096)?.unwrap_or_default();
        assert_eq!(got, vec![5u8; 4096]);
        Ok(())
    }

    #[test]
    fn a_chunk_in_use_keeps_its_one_handle_when_the_cache_is_full() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ChunkStore::with_max_open(dir.path(), Durability::Cache, 1);
        store.create_copyset_dir(1, 2)?;
        let Some(in_use) = store.chunk(key(7), true)? else {
            panic!("chunk 7 not created");
        };
        // Opening another chunk must not evict 7 while a request holds it...
        store
            .admit_sn(key(8), Some(1))
            .map_err(|_| io::Error::other("admit 8"))?;
        let Some(again) = store.chunk(key(7), false)? else {
            panic!("chunk 7 vanished");
        };
        assert!(Arc::ptr_eq(&in_use, &again), "two handles of one chunk");
        // ...so its sn check sees what the holder recorded.
        *lock(&in_use.sn) = 5;
        assert!(matches!(
            store.admit_sn(key(7), Some(4)),
            Err(WriteError::Backward)
        ));
        drop((in_use, again));
        // Unused handles are still dropped to make room.
        store
            .admit_sn(key(9), Some(1))
            .map_err(|_| io::Error::other("admit 9"))?;
        assert!(lock(&store.open).len() <= 2);
        Ok(())
    }
}
