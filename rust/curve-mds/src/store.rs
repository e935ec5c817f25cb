//! The MDS's durable state in one redb file: inodes, dentries, segments and cluster meta.
//! Callers open one write transaction per mutating RPC and commit it before answering, so
//! an acknowledged change survives SIGKILL; the commit is fsynced too unless the MDS was
//! told not to (`MdsOptions::store_fsync`), and then a power cut may lose it.
//! Nothing read from the file is trusted: undecodable content becomes kStorageError.

use std::path::{Path, PathBuf};

use curve_proto::mds::{FileInfo, FileStatus, FileType, PageFileSegment, StatusCode};
use prost::Message as _;
use redb::backends::FileBackend;
use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableTable, StorageBackend, Table,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::{Error, TopologyConfig};

/// inode id → encoded `FileInfo`.
const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
/// (parent inode id, name) → inode id.
const DENTRIES: TableDefinition<(u64, &str), u64> = TableDefinition::new("dentries");
/// (file inode id, segment start offset) → encoded `PageFileSegment`.
const SEGMENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("segments");
/// (file inode id, snapshot seq) → encoded `FileInfo` of the snapshot inode
/// (INODE_SNAPSHOT_PAGEFILE), as upstream keeps snapshots apart from the namespace.
const SNAPSHOTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("snapshots");
/// Cluster-wide values: id, counters, the topology of the first start.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const META_CLUSTER_ID: &str = "cluster_id";
const META_NEXT_INODE: &str = "next_inode_id";
const META_NEXT_CHUNK: &str = "next_chunk_id";
const META_TOPOLOGY: &str = "topology";

pub(crate) const ROOT_ID: u64 = 0;
pub(crate) const RECYCLEBIN_ID: u64 = 1;
pub(crate) const RECYCLEBIN_NAME: &str = "RecycleBin";
/// Inode ids 0 and 1 are the root and the recycle bin.
const FIRST_INODE_ID: u64 = 2;
/// Chunk id 0 is the client's "not allocated" marker, so real ids start at 1.
const FIRST_CHUNK_ID: u64 = 1;

/// A refusal with the Curve status code the RPC answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal(pub StatusCode);

impl From<StatusCode> for Refusal {
    fn from(code: StatusCode) -> Self {
        Refusal(code)
    }
}

fn storage_error(e: impl std::fmt::Display) -> Refusal {
    tracing::error!("mds store: {e}");
    Refusal(StatusCode::KStorageError)
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Refusal {
            fn from(e: $t) -> Self {
                storage_error(e)
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    prost::DecodeError
);

/// The topology as persisted at first start (kept for inspection; the config is authoritative
/// afterwards because the local cluster's layout never changes).
#[derive(Serialize, Deserialize)]
struct PersistedTopology {
    poolset: String,
    logical_pool_id: u32,
    pool_capacity: u64,
    chunkservers: Vec<(u32, String, u16)>,
    copysets: Vec<(u32, Vec<u32>)>,
}

pub(crate) struct Store {
    db: Database,
}

/// What a fresh or reopened store tells the MDS at start.
pub(crate) struct Opened {
    pub store: Store,
    pub cluster_id: String,
}

impl Store {
    /// Opens (creating on first start) the store file `path` in the data folder `dir` and
    /// makes sure "/", "/RecycleBin", the cluster id and the counters exist.
    pub(crate) fn open(
        dir: &Path,
        path: &Path,
        fsync: bool,
        root_user: &str,
        topology: &TopologyConfig,
        now_us: u64,
    ) -> Result<Opened, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = path.to_owned();
        let fail = |e: redb::Error| Error::Store {
            path: path.clone(),
            source: Box::new(e),
        };
        let db = open_db(&path, fsync).map_err(|e| fail(e.into()))?;
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        let cluster_id = init(&txn, root_user, topology, now_us).map_err(|e| match e {
            InitError::Redb(e) => fail(*e),
            InitError::Corrupt(what) => Error::Corrupt {
                path: path.clone(),
                what,
            },
        })?;
        txn.commit().map_err(|e| fail(e.into()))?;
        Ok(Opened {
            store: Store { db },
            cluster_id,
        })
    }

    pub(crate) fn read(&self) -> Result<ReadTables, Refusal> {
        ReadTables::new(self.db.begin_read()?)
    }

    pub(crate) fn write(&self) -> Result<WriteTransaction, Refusal> {
        Ok(self.db.begin_write()?)
    }

    /// The snapshots of the file `file_id`, by seq.
    pub(crate) fn snapshots(&self, file_id: u64) -> Result<Vec<FileInfo>, Refusal> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        snapshots_in(&table, file_id)
    }

    /// (file id, seq) of every snapshot whose status is kFileDeleting: cleans to resume.
    pub(crate) fn deleting_snapshots(&self) -> Result<Vec<(u64, u64)>, Refusal> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, bytes) = entry?;
            let info = FileInfo::decode(bytes.value())?;
            if info.file_status == Some(FileStatus::KFileDeleting as i32) {
                out.push(key.value());
            }
        }
        Ok(out)
    }
}

/// How long a store another process holds is waited for: an MDS restarted on the same
/// store file (one served without a lease) may find the previous process's files still
/// closing one by one as it exits. MDSes under a lease each open a store file of their own
/// term (`curve_lease`), so they never wait here for one another.
const STORE_HANDOVER: std::time::Duration = std::time::Duration::from_secs(5);

fn open_db(path: &Path, fsync: bool) -> Result<Database, redb::DatabaseError> {
    let deadline = std::time::Instant::now() + STORE_HANDOVER;
    loop {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(redb::DatabaseError::from)
            .and_then(FileBackend::new)
            .and_then(|file| Database::builder().create_with_backend(StoreFile { file, fsync }));
        match opened {
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// redb's file backend (its lock included), with its syncs left out unless `fsync`:
/// every commit is still written to the file before the answer, in redb's order, so the
/// page cache holds it if the MDS is killed; only a power cut can lose it.
#[derive(Debug)]
struct StoreFile {
    file: FileBackend,
    fsync: bool,
}

impl StorageBackend for StoreFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        if self.fsync {
            self.file.sync_data(eventual)
        } else {
            Ok(())
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write(offset, data)
    }
}

enum InitError {
    Redb(Box<redb::Error>),
    Corrupt(String),
}

impl<E: Into<redb::Error>> From<E> for InitError {
    fn from(e: E) -> Self {
        InitError::Redb(Box::new(e.into()))
    }
}

fn init(
    txn: &WriteTransaction,
    root_user: &str,
    topology: &TopologyConfig,
    now_us: u64,
) -> Result<String, InitError> {
    let mut meta = txn.open_table(META)?;
    let mut inodes = txn.open_table(INODES)?;
    let mut dentries = txn.open_table(DENTRIES)?;
    txn.open_table(SEGMENTS)?;
    txn.open_table(SNAPSHOTS)?;

    let existing_id = meta.get(META_CLUSTER_ID)?.map(|v| v.value().to_vec());
    let cluster_id = match existing_id {
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|_| InitError::Corrupt("cluster id is not UTF-8".into()))?,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            meta.insert(META_CLUSTER_ID, id.as_bytes())?;
            id
        }
    };
    for (key, first) in [
        (META_NEXT_INODE, FIRST_INODE_ID),
        (META_NEXT_CHUNK, FIRST_CHUNK_ID),
    ] {
        if meta.get(key)?.is_none() {
            meta.insert(key, first.to_le_bytes().as_slice())?;
        }
    }
    if meta.get(META_TOPOLOGY)?.is_none() {
        let persisted = PersistedTopology {
            poolset: topology.poolset.clone(),
            logical_pool_id: topology.logical_pool_id,
            pool_capacity: topology.pool_capacity,
            chunkservers: topology
                .chunkservers
                .iter()
                .map(|c| (c.id, c.host.clone(), c.port))
                .collect(),
            copysets: topology
                .copysets
                .iter()
                .map(|c| (c.id, c.members.clone()))
                .collect(),
        };
        let json = serde_json::to_vec(&persisted)
            .map_err(|e| InitError::Corrupt(format!("topology encoding: {e}")))?;
        meta.insert(META_TOPOLOGY, json.as_slice())?;
    }
    if inodes.get(ROOT_ID)?.is_none() {
        let root = directory(ROOT_ID, "/", ROOT_ID, root_user, now_us);
        inodes.insert(ROOT_ID, root.encode_to_vec().as_slice())?;
    }
    if inodes.get(RECYCLEBIN_ID)?.is_none() {
        let bin = directory(RECYCLEBIN_ID, RECYCLEBIN_NAME, ROOT_ID, root_user, now_us);
        inodes.insert(RECYCLEBIN_ID, bin.encode_to_vec().as_slice())?;
        dentries.insert((ROOT_ID, RECYCLEBIN_NAME), RECYCLEBIN_ID)?;
    }
    Ok(cluster_id)
}

/// The FileInfo of a new directory.
pub(crate) fn directory(id: u64, name: &str, parent: u64, owner: &str, now_us: u64) -> FileInfo {
    FileInfo {
        id: Some(id),
        file_name: Some(name.to_owned()),
        parent_id: Some(parent),
        file_type: Some(FileType::InodeDirectory as i32),
        owner: Some(owner.to_owned()),
        length: Some(0),
        ctime: Some(now_us),
        seq_num: Some(1),
        file_status: Some(FileStatus::KFileCreated as i32),
        ..Default::default()
    }
}

/// The tables of one transaction, read-only or writable.
pub(crate) struct Tables<I, D, S> {
    inodes: I,
    dentries: D,
    segments: S,
}

pub(crate) type ReadTables = Tables<
    ReadOnlyTable<u64, &'static [u8]>,
    ReadOnlyTable<(u64, &'static str), u64>,
    ReadOnlyTable<(u64, u64), &'static [u8]>,
>;

pub(crate) type WriteTables<'t> = Tables<
    Table<'t, u64, &'static [u8]>,
    Table<'t, (u64, &'static str), u64>,
    Table<'t, (u64, u64), &'static [u8]>,
>;

impl ReadTables {
    fn new(txn: ReadTransaction) -> Result<Self, Refusal> {
        Ok(Tables {
            inodes: txn.open_table(INODES)?,
            dentries: txn.open_table(DENTRIES)?,
            segments: txn.open_table(SEGMENTS)?,
        })
    }
}

/// Whether an inode is a page file (unknown types are not).
pub(crate) fn is_page_file(info: &FileInfo) -> bool {
    info.file_type == Some(FileType::InodePagefile as i32)
}

pub(crate) fn is_directory(info: &FileInfo) -> bool {
    info.file_type == Some(FileType::InodeDirectory as i32)
}

impl<I, D, S> Tables<I, D, S>
where
    I: ReadableTable<u64, &'static [u8]>,
    D: ReadableTable<(u64, &'static str), u64>,
    S: ReadableTable<(u64, u64), &'static [u8]>,
{
    pub(crate) fn inode(&self, id: u64) -> Result<Option<FileInfo>, Refusal> {
        match self.inodes.get(id)? {
            Some(bytes) => Ok(Some(FileInfo::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// The inode a dentry points to; a dentry without inode is store corruption.
    pub(crate) fn child(&self, parent: u64, name: &str) -> Result<Option<FileInfo>, Refusal> {
        let Some(id) = self.dentries.get((parent, name))?.map(|g| g.value()) else {
            return Ok(None);
        };
        match self.inode(id)? {
            Some(info) => Ok(Some(info)),
            None => Err(storage_error(format_args!(
                "dentry ({parent}, {name:?}) points to missing inode {id}"
            ))),
        }
    }

    /// Children of a directory in name (byte) order.
    pub(crate) fn children(&self, parent: u64) -> Result<Vec<FileInfo>, Refusal> {
        let mut ids = Vec::new();
        for entry in self.dentries.range((parent, "")..)? {
            let (key, id) = entry?;
            if key.value().0 != parent {
                break;
            }
            ids.push(id.value());
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.inode(id)? {
                Some(info) => out.push(info),
                None => return Err(storage_error(format_args!("missing inode {id}"))),
            }
        }
        Ok(out)
    }

    pub(crate) fn has_children(&self, parent: u64) -> Result<bool, Refusal> {
        match self.dentries.range((parent, "")..)?.next() {
            Some(entry) => Ok(entry?.0.value().0 == parent),
            None => Ok(false),
        }
    }

    pub(crate) fn segment(
        &self,
        file_id: u64,
        offset: u64,
    ) -> Result<Option<PageFileSegment>, Refusal> {
        match self.segments.get((file_id, offset))? {
            Some(bytes) => Ok(Some(PageFileSegment::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Start offsets of a file's allocated segments, in order.
    pub(crate) fn segment_offsets(&self, file_id: u64) -> Result<Vec<u64>, Refusal> {
        let mut out = Vec::new();
        for entry in self.segments.range((file_id, 0)..=(file_id, u64::MAX))? {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    /// Page files, recycled ones included, that are lazy clones of `source` still reading
    /// from it: a clone source set and a status before Cloned.
    pub(crate) fn clones_reading_from(&self, source: &str) -> Result<Vec<FileInfo>, Refusal> {
        let mut out = Vec::new();
        for entry in self.inodes.iter()? {
            let (_, bytes) = entry?;
            let info = FileInfo::decode(bytes.value())?;
            let reading = matches!(
                info.file_status.map(FileStatus::try_from),
                Some(Ok(
                    FileStatus::KFileCloning | FileStatus::KFileCloneMetaInstalled
                ))
            );
            if is_page_file(&info) && reading && info.clone_source.as_deref() == Some(source) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Bytes promised to page files, recycled ones included: what the pool must be able to hold.
    pub(crate) fn pool_used(&self) -> Result<u64, Refusal> {
        let mut used: u64 = 0;
        for entry in self.inodes.iter()? {
            let (_, bytes) = entry?;
            let info = FileInfo::decode(bytes.value())?;
            if is_page_file(&info) {
                used = used.saturating_add(info.length.unwrap_or(0));
            }
        }
        Ok(used)
    }
}

impl WriteTables<'_> {
    pub(crate) fn put_inode(&mut self, info: &FileInfo) -> Result<(), Refusal> {
        let id = info.id.ok_or(Refusal(StatusCode::KInternalError))?;
        self.inodes.insert(id, info.encode_to_vec().as_slice())?;
        Ok(())
    }

    pub(crate) fn remove_inode(&mut self, id: u64) -> Result<(), Refusal> {
        self.inodes.remove(id)?;
        Ok(())
    }

    pub(crate) fn link(&mut self, parent: u64, name: &str, id: u64) -> Result<(), Refusal> {
        self.dentries.insert((parent, name), id)?;
        Ok(())
    }

    pub(crate) fn unlink(&mut self, parent: u64, name: &str) -> Result<(), Refusal> {
        self.dentries.remove((parent, name))?;
        Ok(())
    }

    pub(crate) fn put_segment(
        &mut self,
        file_id: u64,
        segment: &PageFileSegment,
    ) -> Result<(), Refusal> {
        self.segments.insert(
            (file_id, segment.start_offset),
            segment.encode_to_vec().as_slice(),
        )?;
        Ok(())
    }

    pub(crate) fn remove_segment(&mut self, file_id: u64, offset: u64) -> Result<bool, Refusal> {
        Ok(self.segments.remove((file_id, offset))?.is_some())
    }

    pub(crate) fn remove_segments(&mut self, file_id: u64) -> Result<(), Refusal> {
        self.segments
            .retain_in((file_id, 0)..=(file_id, u64::MAX), |_, _| false)?;
        Ok(())
    }
}

fn snapshots_in(
    table: &impl ReadableTable<(u64, u64), &'static [u8]>,
    file_id: u64,
) -> Result<Vec<FileInfo>, Refusal> {
    let mut out = Vec::new();
    for entry in table.range((file_id, 0)..=(file_id, u64::MAX))? {
        out.push(FileInfo::decode(entry?.1.value())?);
    }
    Ok(out)
}

/// The snapshot table of a write transaction.
pub(crate) struct SnapshotTable<'t>(Table<'t, (u64, u64), &'static [u8]>);

impl SnapshotTable<'_> {
    pub(crate) fn of_file(&self, file_id: u64) -> Result<Vec<FileInfo>, Refusal> {
        snapshots_in(&self.0, file_id)
    }

    /// Stores a snapshot inode under (its parent file, its seq).
    pub(crate) fn put(&mut self, info: &FileInfo) -> Result<(), Refusal> {
        let file = info.parent_id.ok_or(Refusal(StatusCode::KInternalError))?;
        let seq = info.seq_num.ok_or(Refusal(StatusCode::KInternalError))?;
        self.0
            .insert((file, seq), info.encode_to_vec().as_slice())?;
        Ok(())
    }

    pub(crate) fn remove(&mut self, file_id: u64, seq: u64) -> Result<(), Refusal> {
        self.0.remove((file_id, seq))?;
        Ok(())
    }
}

pub(crate) fn snapshot_table(txn: &WriteTransaction) -> Result<SnapshotTable<'_>, Refusal> {
    Ok(SnapshotTable(txn.open_table(SNAPSHOTS)?))
}

/// Opens the tables of a write transaction; drop them before committing.
pub(crate) fn write_tables(txn: &WriteTransaction) -> Result<WriteTables<'_>, Refusal> {
    Ok(Tables {
        inodes: txn.open_table(INODES)?,
        dentries: txn.open_table(DENTRIES)?,
        segments: txn.open_table(SEGMENTS)?,
    })
}

/// Takes `count` consecutive ids from a persisted counter, returning the first.
fn take_ids(txn: &WriteTransaction, key: &str, count: u64) -> Result<u64, Refusal> {
    let mut meta = txn.open_table(META)?;
    let current = match meta.get(key)? {
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .value()
                .try_into()
                .map_err(|_| storage_error(format_args!("counter {key} is corrupt")))?;
            u64::from_le_bytes(raw)
        }
        None => return Err(storage_error(format_args!("counter {key} is missing"))),
    };
    let next = current
        .checked_add(count)
        .ok_or_else(|| storage_error(format_args!("counter {key} overflowed")))?;
    meta.insert(key, next.to_le_bytes().as_slice())?;
    Ok(current)
}

pub(crate) fn take_inode_id(txn: &WriteTransaction) -> Result<u64, Refusal> {
    take_ids(txn, META_NEXT_INODE, 1)
}

pub(crate) fn take_chunk_ids(txn: &WriteTransaction, count: u64) -> Result<u64, Refusal> {
    take_ids(txn, META_NEXT_CHUNK, count)
}

/// The MDS's store files: `mds.redb` of one MDS alone and of the first term, a copy per
/// later term that another MDS took over.
pub const STORE_FILES: curve_lease::StoreFiles = curve_lease::StoreFiles {
    first: "mds.redb",
    prefix: "mds-",
    suffix: ".redb",
};

/// The path of the store inside a data dir.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_FILES.first)
}
