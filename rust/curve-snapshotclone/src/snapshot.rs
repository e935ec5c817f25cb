//! Snapshots of volumes: upstream's snapshot core and its task manager
//! (`src/snapshotcloneserver/snapshot/snapshot_core.cpp`, `snapshot_service_manager.cpp`,
//! `snapshot_task_manager.cpp`), apart from the HTTP layer (service.rs).
//!
//! A snapshot is taken in the MDS (CreateSnapShot: the volume's seqNum moves on, so the
//! chunkservers copy a chunk's old pages aside at its first write with the new seqNum),
//! then dumped to the [`DataStore`]: every chunk that held data at the snapshot is read at
//! its snapshot version (ReadChunkSnapshot) and stored as `<file>-<chunkIndex>-<sn>`, and
//! the snapshot's chunk index as `<file>-<seq>`. A chunk unchanged since an earlier
//! snapshot of the volume keeps its sn, so its object is the earlier snapshot's and is not
//! read again. Last, the MDS snapshot is deleted (the MDS corrects every chunk's sn and
//! drops its copied pages) and the snapshot is done.
//!
//! Tasks of one volume run one at a time, in the order they were asked for (upstream's
//! task manager keeps one working task per file and the rest waiting); tasks of different
//! volumes run side by side. Records are kept in a [`SnapshotStore`], so a restarted
//! service resumes what was pending, deleting or canceling.
//!
//! As upstream: a task that fails is left in status error with whatever it made (the MDS
//! snapshot included); DeleteSnapshot removes it, and so does the next CreateSnapshot of
//! the volume before it starts. A canceled task removes what it made, newest first.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use curve_client::chunk::ChunkOp;
use curve_client::metacache::{ChunkAddr, SegmentInfo};
use curve_client::{Client, ErrorCode, UserInfo};
use curve_proto::mds::{FileInfo, FileStatus};
use futures::{StreamExt, TryStreamExt};

use crate::codes::ServiceCode;
use crate::datastore::{ChunkDataName, ChunkIndex, DataStore};
use crate::snapshots::{
    NO_SEQ, PROGRESS_CREATED_ON_CURVE, PROGRESS_DONE, PROGRESS_INDEX_STORED, PROGRESS_MAP_BUILT,
    PROGRESS_TRANSFERRED, Snapshot, SnapshotStatus, SnapshotStore,
};
use crate::tasks::{FENCED, Fence, StoreError};

/// Upstream's `server.*` settings of snapshots (`conf/snapshot_clone_server.conf`).
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// `server.mdsSessionTimeUs`: the lease of the volumes' clients. After CreateSnapShot
    /// the task waits twice this long, so every client of the volume has picked up the
    /// new seqNum (and its writes copy old pages aside) before chunks are read.
    pub mds_session_time: Duration,
    /// `server.chunkSplitSize`: the part of a chunk one ReadChunkSnapshot reads.
    pub chunk_split_size: u64,
    /// `server.maxSnapshotLimit`: snapshots per volume (failed ones not counted).
    pub max_snapshots: usize,
    /// Chunks dumped at once by one task (upstream's `server.snapshotCoreThreadNum`, 64,
    /// sizes a pool shared by all tasks; each chunk in flight holds a chunk in memory).
    pub chunk_concurrency: usize,
    /// `server.readChunkSnapshotConcurrency`: parts of one chunk read at once.
    pub read_concurrency: usize,
    /// `server.checkSnapshotStatusIntervalMs`: how often the end of an MDS snapshot's
    /// delete is polled.
    pub check_status_interval: Duration,
    /// How long the delete of an MDS snapshot may take before the task fails.
    pub mds_delete_timeout: Duration,
    /// The deadline of each chunk call, its retries included
    /// (`server.clientAsyncMethodRetryTimeSec`).
    pub chunk_op_timeout: Duration,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            mds_session_time: Duration::from_secs(5),
            chunk_split_size: 8 << 20,
            max_snapshots: 1024,
            chunk_concurrency: 8,
            read_concurrency: 16,
            check_status_interval: Duration::from_millis(1000),
            mds_delete_timeout: Duration::from_secs(300),
            chunk_op_timeout: Duration::from_secs(300),
        }
    }
}

/// Progress of a snapshot's delete (upstream's `kDelProgress*`).
const DEL_PROGRESS_MAP_BUILT: u32 = 10;
const DEL_PROGRESS_CHUNKS_DELETED: u32 = 80;
const DEL_PROGRESS_INDEX_DELETED: u32 = 90;

/// Why a task stopped short; logged, the snapshot goes to status error.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error("{step}: {source}")]
    Call {
        step: &'static str,
        #[source]
        source: curve_client::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::datastore::DataStoreError),
    #[error("the snapshot's record: {0}")]
    Record(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    /// The snapshot's record is gone (removed under the task).
    #[error("the snapshot's record is gone")]
    Gone,
}

fn call(step: &'static str) -> impl FnOnce(curve_client::Error) -> TaskError {
    move |source| TaskError::Call { step, source }
}

type TaskResult<T> = Result<T, TaskError>;

/// What a queued task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Delete,
}

/// A task the manager knows: waiting or working.
struct Task {
    file: String,
    kind: Kind,
    progress: AtomicU32,
    state: Mutex<TaskState>,
}

#[derive(Default)]
struct TaskState {
    canceled: bool,
    finished: bool,
}

impl Task {
    fn state(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn canceled(&self) -> bool {
        self.state().canceled
    }

    fn set_progress(&self, progress: u32) {
        self.progress.store(progress, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Queue {
    /// Every task not finished, by snapshot UUID.
    tasks: HashMap<String, Arc<Task>>,
    /// UUIDs in the order they were pushed.
    waiting: VecDeque<String>,
    /// Files with a working task.
    working: HashSet<String>,
}

/// The snapshot side of the service: records, tasks, and the data store.
pub struct Snapshots {
    client: Client,
    root: UserInfo,
    store: DataStore,
    options: SnapshotOptions,
    /// Checked before each chunk is dumped or deleted (records check it themselves).
    fence: Fence,
    records: Mutex<SnapshotStore>,
    queue: Mutex<Queue>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn file_status(info: &FileInfo) -> FileStatus {
    info.file_status
        .and_then(|s| FileStatus::try_from(s).ok())
        .unwrap_or(FileStatus::KFileCreated)
}

/// Which snapshots `GetFileSnapshotList` answers (filters combined with AND). `Status` is
/// compared as a number; one that is not a number matches nothing, as upstream's.
#[derive(Debug, Default, Clone)]
pub struct SnapshotFilter<'a> {
    pub user: Option<&'a str>,
    pub file: Option<&'a str>,
    pub uuid: Option<&'a str>,
    pub status: Option<&'a str>,
}

impl SnapshotFilter<'_> {
    fn matches(&self, s: &Snapshot) -> bool {
        self.user.is_none_or(|u| u == s.user)
            && self.file.is_none_or(|f| f == s.file)
            && self.uuid.is_none_or(|u| u == s.uuid)
            && self
                .status
                .is_none_or(|st| st.parse::<i64>().ok() == Some(s.status as i64))
    }
}

/// The sn of the object holding chunk `index`'s bytes at snapshot `seq`, from the
/// chunk's GetChunkInfo `sns` (upstream's BuildChunkIndexData): two sns are the chunk's
/// and its copied-aside snapshot's, the smaller is the snapshot's; one sn no greater than
/// `seq` is data unchanged since the snapshot; a greater one is a chunk first written
/// after it, and none a chunk never written: neither has data in the snapshot.
fn snapshot_sn(sns: &[u64], seq: u64) -> Result<Option<u64>, String> {
    match *sns {
        [a, b] => Ok(Some(a.min(b))),
        [sn] if sn <= seq => Ok(Some(sn)),
        [_] | [] => Ok(None),
        _ => Err(format!("GetChunkInfo answered {} sns", sns.len())),
    }
}

/// Progress while dumping: 10 to 99 in proportion to the chunks done.
fn transfer_progress(done: usize, total: usize) -> u32 {
    let span = u64::from(PROGRESS_TRANSFERRED - PROGRESS_MAP_BUILT);
    let part = (span * done as u64)
        .checked_div(total as u64)
        .unwrap_or(span);
    PROGRESS_MAP_BUILT + u32::try_from(part).unwrap_or(0)
}

impl Snapshots {
    /// The snapshots whose records are in `data_dir`, dumped to `store`; calls the
    /// cluster as `root`. Call [`Self::resume`] to pick up tasks a previous process left.
    pub fn open(
        client: Client,
        root: UserInfo,
        store: DataStore,
        options: SnapshotOptions,
        data_dir: &std::path::Path,
        fence: Fence,
    ) -> Result<Arc<Self>, StoreError> {
        let records = SnapshotStore::open(data_dir)?.fenced(fence.clone());
        Ok(Arc::new(Self {
            client,
            root,
            store,
            options,
            fence,
            records: Mutex::new(records),
            queue: Mutex::new(Queue::default()),
        }))
    }

    /// Whether this instance may take a task's next step (see [`Fence`]).
    fn act(&self) -> TaskResult<()> {
        if self.fence.is_open() {
            Ok(())
        } else {
            Err(TaskError::Invalid(FENCED.into()))
        }
    }

    pub fn data_store(&self) -> &DataStore {
        &self.store
    }

    fn records(&self) -> MutexGuard<'_, SnapshotStore> {
        // A panic while holding the lock leaves the records as the file has them.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One snapshot's record.
    pub fn get(&self, uuid: &str) -> Option<Snapshot> {
        self.records().get(uuid).cloned()
    }

    fn of_file(&self, file: &str) -> Vec<Snapshot> {
        self.records()
            .all()
            .into_iter()
            .filter(|s| s.file == file)
            .cloned()
            .collect()
    }

    /// Changes a record and writes it; the record as written.
    fn update(&self, uuid: &str, change: impl FnOnce(&mut Snapshot)) -> TaskResult<Snapshot> {
        let mut records = self.records();
        let mut snap = records.get(uuid).cloned().ok_or(TaskError::Gone)?;
        change(&mut snap);
        records.put(snap.clone())?;
        Ok(snap)
    }

    /// Picks up the tasks of records a previous process left unfinished: a pending
    /// snapshot goes on; one deleting or canceling is deleted (a restart turns a cancel
    /// into a delete, as upstream's).
    pub fn resume(self: &Arc<Self>) {
        let mut records: Vec<Snapshot> = self.records().all().into_iter().cloned().collect();
        // Those that took their MDS snapshot before the ones still waiting behind them: a
        // waiting one started first would find the volume under snapshot. (A record's
        // time is its MDS snapshot's once taken, so time alone does not order them.)
        records.sort_by_key(|s| (s.seq_num == NO_SEQ, s.time_us));
        let unfinished: Vec<(String, String, Kind)> = records
            .iter()
            .filter_map(|s| {
                let kind = match s.status {
                    SnapshotStatus::Pending => Kind::Create,
                    SnapshotStatus::Canceling
                    | SnapshotStatus::Deleting
                    | SnapshotStatus::ErrorDeleting => Kind::Delete,
                    SnapshotStatus::Done | SnapshotStatus::Error => return None,
                };
                Some((s.uuid.clone(), s.file.clone(), kind))
            })
            .collect();
        for (uuid, file, kind) in unfinished {
            tracing::info!(uuid, file, "resuming the snapshot task ({kind:?})");
            self.push(&uuid, &file, kind);
        }
    }

    fn push(self: &Arc<Self>, uuid: &str, file: &str, kind: Kind) {
        {
            let mut queue = self.queue();
            let task = Arc::new(Task {
                file: file.to_string(),
                kind,
                progress: AtomicU32::new(0),
                state: Mutex::new(TaskState::default()),
            });
            queue.tasks.insert(uuid.to_string(), task);
            queue.waiting.push_back(uuid.to_string());
        }
        self.schedule();
    }

    /// Starts every waiting task whose file has no working task.
    fn schedule(self: &Arc<Self>) {
        let mut queue = self.queue();
        let mut still = VecDeque::new();
        while let Some(uuid) = queue.waiting.pop_front() {
            let Some(task) = queue.tasks.get(&uuid).cloned() else {
                continue;
            };
            if queue.working.contains(&task.file) {
                still.push_back(uuid);
                continue;
            }
            queue.working.insert(task.file.clone());
            let me = Arc::clone(self);
            tokio::spawn(async move { me.run(uuid, task).await });
        }
        queue.waiting = still;
    }

    async fn run(self: Arc<Self>, uuid: String, task: Arc<Task>) {
        match task.kind {
            Kind::Create => self.run_create(&uuid, &task).await,
            Kind::Delete => self.run_delete(&uuid, &task).await,
        }
        task.state().finished = true;
        {
            let mut queue = self.queue();
            queue.tasks.remove(&uuid);
            queue.working.remove(&task.file);
        }
        self.schedule();
    }

    // ---- the HTTP actions ------------------------------------------------------------

    /// CreateSnapshot (upstream's CreateSnapshotPre, then the task): the UUID of the new
    /// snapshot, or of the pending one with the same user and name (a retry).
    pub async fn create(
        self: &Arc<Self>,
        file: &str,
        user: &str,
        name: &str,
    ) -> Result<String, ServiceCode> {
        let retry = |snaps: &[Snapshot]| {
            snaps
                .iter()
                .find(|s| s.status == SnapshotStatus::Pending && s.user == user && s.name == name)
                .map(|s| s.uuid.clone())
        };
        if let Some(uuid) = retry(&self.of_file(file)) {
            return Ok(uuid);
        }
        let info = match self.client.mds().get_file_info(file, &self.root).await {
            Ok(info) => info,
            Err(e) if matches!(e.code, ErrorCode::NotExist | ErrorCode::ParamError) => {
                return Err(ServiceCode::FILE_NOT_EXIST);
            }
            Err(e) => {
                tracing::warn!(file, "GetFileInfo for a snapshot: {e}");
                return Err(ServiceCode::INTERNAL_ERROR);
            }
        };
        // The service calls as root; the snapshot is its owner's (or root's) to take.
        if info.owner.as_deref() != Some(user) && user != self.root.owner {
            return Err(ServiceCode::INVALID_USER);
        }
        if !matches!(
            file_status(&info),
            FileStatus::KFileCreated | FileStatus::KFileCloned
        ) {
            return Err(ServiceCode::FILE_STATUS_INVALID);
        }
        let uuid = {
            let mut records = self.records();
            let snaps: Vec<Snapshot> = records
                .all()
                .into_iter()
                .filter(|s| s.file == file)
                .cloned()
                .collect();
            if let Some(uuid) = retry(&snaps) {
                return Ok(uuid);
            }
            let counted = snaps
                .iter()
                .filter(|s| s.status != SnapshotStatus::Error)
                .count();
            if counted >= self.options.max_snapshots {
                return Err(ServiceCode::SNAPSHOT_COUNT_REACH_LIMIT);
            }
            let snap = Snapshot {
                uuid: uuid::Uuid::new_v4().to_string(),
                user: user.to_string(),
                file: file.to_string(),
                name: name.to_string(),
                seq_num: NO_SEQ,
                chunk_size: 0,
                segment_size: 0,
                file_length: 0,
                stripe_unit: 0,
                stripe_count: 0,
                poolset: info.poolset.clone().unwrap_or_default(),
                time_us: now_us(),
                status: SnapshotStatus::Pending,
                progress: 0,
            };
            let uuid = snap.uuid.clone();
            records.put(snap).map_err(|e| {
                tracing::error!(file, "cannot record the snapshot: {e}");
                ServiceCode::INTERNAL_ERROR
            })?;
            uuid
        };
        self.push(&uuid, file, Kind::Create);
        Ok(uuid)
    }

    /// CancelSnapshot: a waiting task is dropped with its record; a working one is told to
    /// stop and remove what it made. A task no longer running cannot be canceled (-14).
    pub fn cancel(self: &Arc<Self>, uuid: &str, user: &str, file: &str) -> Result<(), ServiceCode> {
        let task = self.queue().tasks.get(uuid).cloned();
        let Some(task) = task.filter(|t| t.kind == Kind::Create) else {
            return Err(ServiceCode::CANNOT_CANCEL_FINISHED);
        };
        let snap = self.get(uuid).ok_or(ServiceCode::CANNOT_CANCEL_FINISHED)?;
        if snap.user != user {
            return Err(ServiceCode::INVALID_USER);
        }
        if !file.is_empty() && file != snap.file {
            return Err(ServiceCode::FILE_NAME_NOT_MATCH);
        }
        {
            let mut queue = self.queue();
            if let Some(at) = queue.waiting.iter().position(|u| u == uuid) {
                // Not started: nothing was made but the record.
                self.records().remove(uuid).map_err(|e| {
                    tracing::error!(uuid, "cannot remove the snapshot's record: {e}");
                    ServiceCode::INTERNAL_ERROR
                })?;
                queue.waiting.remove(at);
                queue.tasks.remove(uuid);
                return Ok(());
            }
        }
        let mut state = task.state();
        if state.finished {
            return Err(ServiceCode::CANNOT_CANCEL_FINISHED);
        }
        match self.update(uuid, |s| s.status = SnapshotStatus::Canceling) {
            Ok(_) => {
                state.canceled = true;
                Ok(())
            }
            Err(TaskError::Gone) => Err(ServiceCode::CANNOT_CANCEL_FINISHED),
            Err(e) => {
                tracing::error!(uuid, "cannot record the cancel: {e}");
                Err(ServiceCode::INTERNAL_ERROR)
            }
        }
    }

    /// DeleteSnapshot (upstream's DeleteSnapshotPre, then the task). Idempotent: an
    /// unknown UUID, or a snapshot being deleted already, answers success. A pending
    /// snapshot is canceled instead. `in_use` says whether a clone task still reads the
    /// snapshot (-16).
    pub fn delete(
        self: &Arc<Self>,
        uuid: &str,
        user: &str,
        file: Option<&str>,
        in_use: impl Fn(&str) -> bool,
    ) -> Result<(), ServiceCode> {
        match self.delete_pre(uuid, user, file, &in_use) {
            Err(code) if code == ServiceCode::SNAPSHOT_CANNOT_DELETE_UNFINISHED => {
                match self.cancel(uuid, user, file.unwrap_or("")) {
                    // It finished meanwhile: delete it as done.
                    Err(code) if code == ServiceCode::CANNOT_CANCEL_FINISHED => {
                        self.delete_pre(uuid, user, file, &in_use)?
                    }
                    other => return other,
                }
            }
            Err(code) if code == ServiceCode::TASK_EXIST => return Ok(()),
            other => other?,
        }
        // Gone already (an unknown UUID): nothing to do, as upstream's idempotent delete.
        if let Some(snap) = self.get(uuid) {
            self.push(uuid, &snap.file, Kind::Delete);
        }
        Ok(())
    }

    fn delete_pre(
        &self,
        uuid: &str,
        user: &str,
        file: Option<&str>,
        in_use: &dyn Fn(&str) -> bool,
    ) -> Result<(), ServiceCode> {
        let mut records = self.records();
        let Some(mut snap) = records.get(uuid).cloned() else {
            return Ok(());
        };
        if snap.user != user {
            return Err(ServiceCode::INVALID_USER);
        }
        if file.is_some_and(|f| !f.is_empty() && f != snap.file) {
            return Err(ServiceCode::FILE_NAME_NOT_MATCH);
        }
        snap.status = match snap.status {
            SnapshotStatus::Done => SnapshotStatus::Deleting,
            SnapshotStatus::Error => SnapshotStatus::ErrorDeleting,
            SnapshotStatus::Canceling
            | SnapshotStatus::Deleting
            | SnapshotStatus::ErrorDeleting => {
                return Err(ServiceCode::TASK_EXIST);
            }
            SnapshotStatus::Pending => return Err(ServiceCode::SNAPSHOT_CANNOT_DELETE_UNFINISHED),
        };
        if in_use(uuid) {
            return Err(ServiceCode::SNAPSHOT_CANNOT_DELETE_CLONING);
        }
        records.put(snap).map_err(|e| {
            tracing::error!(uuid, "cannot record the delete: {e}");
            ServiceCode::INTERNAL_ERROR
        })
    }

    /// A snapshot as listed: its record, with the progress of its running task.
    fn listed(&self, snap: &Snapshot) -> Snapshot {
        let mut snap = snap.clone();
        snap.progress = match snap.status {
            SnapshotStatus::Done => PROGRESS_DONE,
            SnapshotStatus::Error | SnapshotStatus::Canceling => 0,
            SnapshotStatus::Pending | SnapshotStatus::Deleting | SnapshotStatus::ErrorDeleting => {
                match self.queue().tasks.get(&snap.uuid) {
                    Some(task) => task.progress.load(Ordering::Relaxed),
                    None => snap.progress,
                }
            }
        };
        snap
    }

    /// GetFileSnapshotInfo: `user`'s snapshots of `file`, or the one snapshot `uuid`
    /// (which must be `user`'s, and `file`'s if a file is given).
    pub fn file_snapshot_info(
        &self,
        file: &str,
        user: &str,
        uuid: Option<&str>,
    ) -> Result<Vec<Snapshot>, ServiceCode> {
        let chosen: Vec<Snapshot> = match uuid {
            Some(uuid) => {
                let snap = self.get(uuid).ok_or(ServiceCode::FILE_NOT_EXIST)?;
                if snap.user != user {
                    return Err(ServiceCode::INVALID_USER);
                }
                if !file.is_empty() && snap.file != file {
                    return Err(ServiceCode::FILE_NAME_NOT_MATCH);
                }
                vec![snap]
            }
            None => self
                .of_file(file)
                .into_iter()
                .filter(|s| s.user == user)
                .collect(),
        };
        Ok(chosen.iter().map(|s| self.listed(s)).collect())
    }

    /// GetFileSnapshotList: every snapshot `filter` matches.
    pub fn list(&self, filter: &SnapshotFilter<'_>) -> Vec<Snapshot> {
        let all: Vec<Snapshot> = self
            .records()
            .all()
            .into_iter()
            .filter(|s| filter.matches(s))
            .cloned()
            .collect();
        all.iter().map(|s| self.listed(s)).collect()
    }

    // ---- the create task -------------------------------------------------------------

    async fn run_create(&self, uuid: &str, task: &Task) {
        match self.create_task(uuid, task).await {
            Ok(()) => {}
            Err(TaskError::Gone) => {
                tracing::warn!(uuid, "the snapshot's record went away under its task");
            }
            Err(e) => {
                tracing::warn!(uuid, file = task.file, "snapshot failed: {e}");
                if let Err(e) = self.update(uuid, |s| s.status = SnapshotStatus::Error) {
                    tracing::error!(uuid, "cannot record the snapshot's failure: {e}");
                }
            }
        }
    }

    async fn create_task(&self, uuid: &str, task: &Task) -> TaskResult<()> {
        // A failed snapshot of the file would make this one fail too: delete those first.
        self.clear_error_snapshots(&task.file).await?;
        let mut snap = self.get(uuid).ok_or(TaskError::Gone)?;
        let mut index_stored = false;
        if snap.seq_num == NO_SEQ {
            snap = self.create_on_mds(&snap).await?;
        } else {
            // Resumed after a restart: the MDS snapshot was taken (and may be gone: then
            // the dump was complete).
            let on_mds = self
                .client
                .list_snapshots(&snap.file, &self.root, &[snap.seq_num])
                .await
                .map_err(call("ListSnapShot"))?;
            if on_mds.is_empty() {
                return self.finish_done(uuid, task);
            }
            index_stored = self
                .store
                .chunk_index(&snap.file, snap.seq_num)
                .await?
                .is_some();
        }
        // Clients pick the new seqNum up within a session; until then their writes do not
        // copy old pages aside. (A task resumed in that window waits out the rest of it.)
        let settled = snap
            .time_us
            .saturating_add(duration_us(self.options.mds_session_time) * 2);
        let wait = settled.saturating_sub(now_us());
        tokio::time::sleep(Duration::from_micros(wait)).await;
        self.progress(uuid, task, PROGRESS_CREATED_ON_CURVE);
        if task.canceled() {
            return self.cancel_after_mds(uuid, &snap).await;
        }

        let (index, segments) = if index_stored {
            let index = self
                .store
                .chunk_index(&snap.file, snap.seq_num)
                .await?
                .ok_or_else(|| TaskError::Invalid("the chunk index vanished".into()))?;
            let segments = self.segments(&snap, None).await?;
            (index, segments)
        } else {
            let mut index = ChunkIndex::new(&snap.file);
            let segments = self.segments(&snap, Some((&mut index, task))).await?;
            if task.canceled() {
                return self.cancel_after_index(uuid, &snap).await;
            }
            self.act()?;
            self.store.put_chunk_index(snap.seq_num, &index).await?;
            (index, segments)
        };
        self.progress(uuid, task, PROGRESS_INDEX_STORED);
        if task.canceled() {
            return self.cancel_after_index(uuid, &snap).await;
        }

        let others = self.other_indexes(&snap.file, snap.seq_num).await;
        self.progress(uuid, task, PROGRESS_MAP_BUILT);
        // A resumed dump skips what it stored before; a new one what earlier snapshots did.
        let dumped = self
            .transfer(&snap, &index, &segments, task, |name| {
                let by_others = others.iter().any(|o| o.refers_to(name));
                let resumed = index_stored;
                let store = self.store.clone();
                let name = name.clone();
                async move {
                    if resumed {
                        store.chunk_data_exists(&name).await
                    } else {
                        Ok(by_others)
                    }
                }
            })
            .await;
        dumped?;
        self.progress(uuid, task, PROGRESS_TRANSFERRED);
        if task.canceled() {
            return self
                .cancel_after_transfer(uuid, &snap, &index, &others)
                .await;
        }

        self.delete_on_mds(&snap).await?;
        // Decided under the task's lock: a cancel either came first, or finds it finished.
        let canceled = {
            let mut state = task.state();
            if !state.canceled {
                state.finished = true;
            }
            state.canceled
        };
        if canceled {
            return self
                .cancel_after_transfer(uuid, &snap, &index, &others)
                .await;
        }
        self.finish_done(uuid, task)
    }

    fn progress(&self, uuid: &str, task: &Task, progress: u32) {
        task.set_progress(progress);
        if let Err(e) = self.update(uuid, |s| s.progress = progress) {
            tracing::warn!(uuid, "cannot record the snapshot's progress: {e}");
        }
    }

    fn finish_done(&self, uuid: &str, task: &Task) -> TaskResult<()> {
        task.set_progress(PROGRESS_DONE);
        self.update(uuid, |s| {
            s.status = SnapshotStatus::Done;
            s.progress = PROGRESS_DONE;
        })?;
        tracing::info!(uuid, file = task.file, "snapshot done");
        Ok(())
    }

    /// Deletes the file's failed snapshots (upstream's ClearErrorSnapBeforeCreateSnapshot).
    async fn clear_error_snapshots(&self, file: &str) -> TaskResult<()> {
        let failed: Vec<Snapshot> = self
            .of_file(file)
            .into_iter()
            .filter(|s| s.status == SnapshotStatus::Error)
            .collect();
        for snap in failed {
            self.update(&snap.uuid, |s| s.status = SnapshotStatus::ErrorDeleting)?;
            let progress = AtomicU32::new(0);
            if let Err(e) = self.delete_task(&snap.uuid, &progress).await {
                let _ = self.update(&snap.uuid, |s| s.status = SnapshotStatus::Error);
                return Err(TaskError::Invalid(format!(
                    "the failed snapshot {} of {file} cannot be deleted: {e}",
                    snap.uuid
                )));
            }
        }
        Ok(())
    }

    /// CreateSnapShot in the MDS; records the snapshot's seq and shape. An MDS snapshot
    /// already there is this task's, taken before a restart lost its record's seq (the
    /// file's tasks run one at a time, and a failed one is deleted before the next).
    async fn create_on_mds(&self, snap: &Snapshot) -> TaskResult<Snapshot> {
        self.act()?;
        let info = match self.client.create_snapshot(&snap.file, &self.root).await {
            Ok(info) => info,
            Err(e) if e.code == ErrorCode::UnderSnapshot => {
                // Taken by this task before a restart, unless another record holds it.
                let file = self
                    .client
                    .mds()
                    .get_file_info(&snap.file, &self.root)
                    .await
                    .map_err(call("GetFileInfo"))?;
                let seq = file.seq_num.unwrap_or(1).saturating_sub(1);
                if self
                    .of_file(&snap.file)
                    .iter()
                    .any(|s| s.uuid != snap.uuid && s.seq_num == seq)
                {
                    return Err(call("CreateSnapShot")(e));
                }
                self.client
                    .list_snapshots(&snap.file, &self.root, &[seq])
                    .await
                    .map_err(call("ListSnapShot"))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| call("CreateSnapShot")(e))?
            }
            Err(e) => return Err(call("CreateSnapShot")(e)),
        };
        let seq = info.seq_num.unwrap_or(NO_SEQ);
        if seq == NO_SEQ {
            return Err(TaskError::Invalid(
                "CreateSnapShot answered a snapshot without a seqNum".into(),
            ));
        }
        tracing::info!(
            uuid = snap.uuid,
            file = snap.file,
            seq,
            "MDS snapshot taken"
        );
        // Only the snapshot's own fields: a cancel may have changed its status meanwhile.
        self.update(&snap.uuid, |s| {
            s.seq_num = seq;
            s.chunk_size = info.chunk_size.unwrap_or(0);
            s.segment_size = u64::from(info.segment_size.unwrap_or(0));
            s.file_length = info.length.unwrap_or(0);
            s.stripe_unit = info.stripe_unit.unwrap_or(0);
            s.stripe_count = info.stripe_count.unwrap_or(0);
            s.poolset = info.poolset.clone().unwrap_or_default();
            s.time_us = info.ctime.unwrap_or(s.time_us);
        })
    }

    /// The snapshot's segments (GetSnapShotFileSegment), by segment index; with an index
    /// to fill, each chunk's object too (GetChunkInfo per chunk). Stops early, with what
    /// it has, once the task is canceled.
    async fn segments(
        &self,
        snap: &Snapshot,
        mut fill: Option<(&mut ChunkIndex, &Task)>,
    ) -> TaskResult<BTreeMap<u64, SegmentInfo>> {
        let segment_size = snap.segment_size;
        let chunk_size = u64::from(snap.chunk_size);
        if segment_size == 0 || chunk_size == 0 || !segment_size.is_multiple_of(chunk_size) {
            return Err(TaskError::Invalid(format!(
                "segment size {segment_size} and chunk size {chunk_size} of {}",
                snap.file
            )));
        }
        let per_segment = segment_size / chunk_size;
        let mut segments = BTreeMap::new();
        for i in 0..snap.file_length / segment_size {
            let seg = self
                .client
                .get_snapshot_segment(&snap.file, &self.root, snap.seq_num, i * segment_size)
                .await
                .map_err(call("GetSnapShotFileSegment"))?;
            let Some(seg) = seg else { continue };
            let seg = SegmentInfo::from_proto(&seg);
            if let Some((index, task)) = fill.as_mut() {
                let timeout = self.options.chunk_op_timeout;
                let addrs: Vec<ChunkAddr> = (0..seg.chunks.len() as u64)
                    .filter_map(|j| seg.chunk(j))
                    .collect();
                let infos: Vec<Vec<u64>> = futures::stream::iter(addrs)
                    .map(|addr| async move {
                        self.client
                            .chunk_info(addr, Instant::now() + timeout)
                            .await
                            .map_err(call("GetChunkInfo"))
                    })
                    .buffered(self.options.read_concurrency.max(1))
                    .try_collect()
                    .await?;
                for (j, sns) in infos.iter().enumerate() {
                    let Some(sn) = snapshot_sn(sns, snap.seq_num).map_err(TaskError::Invalid)?
                    else {
                        continue;
                    };
                    let chunk = u32::try_from(i * per_segment + j as u64)
                        .map_err(|_| TaskError::Invalid("chunk index over 2^32".into()))?;
                    index.chunks.insert(chunk, sn);
                }
                if task.canceled() {
                    return Ok(segments);
                }
            }
            segments.insert(i, seg);
        }
        Ok(segments)
    }

    /// The chunk indexes of the file's other snapshots (upstream's BuildSnapshotMap): the
    /// objects they hold must not be dumped again, nor deleted with this one. An index
    /// that cannot be read is left out, so one broken snapshot does not block the rest.
    async fn other_indexes(&self, file: &str, seq: u64) -> Vec<ChunkIndex> {
        let seqs: Vec<u64> = self
            .of_file(file)
            .iter()
            .map(|s| s.seq_num)
            .filter(|&q| q != seq && q != NO_SEQ)
            .collect();
        let mut indexes = Vec::new();
        for q in seqs {
            match self.store.chunk_index(file, q).await {
                Ok(Some(index)) => indexes.push(index),
                Ok(None) => {}
                Err(e) => tracing::warn!(file, seq = q, "chunk index unreadable: {e}"),
            }
        }
        indexes
    }

    /// Dumps every chunk of `index` that `skip` does not rule out, `chunk_concurrency` at
    /// a time; stops starting chunks once the task is canceled (those started finish, so
    /// a cancel's clean-up finds every object written).
    async fn transfer<F, Fut>(
        &self,
        snap: &Snapshot,
        index: &ChunkIndex,
        segments: &BTreeMap<u64, SegmentInfo>,
        task: &Task,
        skip: F,
    ) -> TaskResult<()>
    where
        F: Fn(&ChunkDataName) -> Fut,
        Fut: std::future::Future<Output = crate::datastore::Result<bool>>,
    {
        let chunk_size = u64::from(snap.chunk_size);
        let split = self.options.chunk_split_size;
        if split == 0 || !chunk_size.is_multiple_of(split) {
            return Err(TaskError::Invalid(format!(
                "chunk size {chunk_size} is not a multiple of chunkSplitSize {split}"
            )));
        }
        let per_segment = snap.segment_size / chunk_size;
        // Every chunk's place first, so a mismatch fails before anything is written.
        let mut jobs = Vec::new();
        for &chunk in index.chunks.keys() {
            let at = u64::from(chunk);
            let addr = segments
                .get(&(at / per_segment))
                .and_then(|seg| seg.chunk(at % per_segment))
                .ok_or_else(|| {
                    TaskError::Invalid(format!(
                        "chunk {chunk} of the index has no segment of {}",
                        snap.file
                    ))
                })?;
            if let Some(name) = index.chunk(chunk) {
                jobs.push((addr, name));
            }
        }
        let total = jobs.len();
        let skip = &skip;
        let mut running = futures::stream::iter(jobs)
            .map(|(addr, name)| async move {
                if task.canceled() || skip(&name).await? {
                    return Ok(());
                }
                self.act()?;
                self.dump_chunk(addr, &name, chunk_size).await
            })
            .buffer_unordered(self.options.chunk_concurrency.max(1));
        let mut done = 0;
        let mut failed = None;
        while let Some(result) = running.next().await {
            done += 1;
            match result {
                Ok(()) => task.set_progress(transfer_progress(done, total)),
                // The first failure is the task's; the chunks in flight still finish.
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Reads chunk `name` at its sn, part by part, and stores it.
    async fn dump_chunk(
        &self,
        addr: ChunkAddr,
        name: &ChunkDataName,
        chunk_size: u64,
    ) -> TaskResult<()> {
        let split = self.options.chunk_split_size;
        let sn = name.seq;
        let timeout = self.options.chunk_op_timeout;
        let parts: Vec<Bytes> = futures::stream::iter(0..chunk_size / split)
            .map(|i| async move {
                let (offset, len) = (
                    u32::try_from(i * split).map_err(|_| TaskError::Invalid("offset".into()))?,
                    u32::try_from(split).map_err(|_| TaskError::Invalid("split".into()))?,
                );
                let op = ChunkOp::ReadSnapshot { sn };
                let data = self
                    .client
                    .send_chunk_op(addr, offset, len, op, Instant::now() + timeout)
                    .await
                    .map_err(call("ReadChunkSnapshot"))?
                    .ok_or_else(|| {
                        TaskError::Invalid(format!(
                            "chunk {} of copyset ({}, {}) has no version at sn {sn}",
                            addr.chunk_id, addr.logical_pool_id, addr.copyset_id
                        ))
                    })?;
                if data.len() as u64 != split {
                    return Err(TaskError::Invalid(format!(
                        "ReadChunkSnapshot answered {} bytes where {split} were asked",
                        data.len()
                    )));
                }
                Ok(data)
            })
            .buffered(self.options.read_concurrency.max(1))
            .try_collect()
            .await?;
        let mut whole = BytesMut::with_capacity(usize::try_from(chunk_size).unwrap_or(0));
        for part in parts {
            whole.extend_from_slice(&part);
        }
        self.store.put_chunk_data(name, whole.freeze()).await?;
        Ok(())
    }

    /// DeleteSnapShot in the MDS, then CheckSnapShotStatus until it is gone (upstream's
    /// DeleteSnapshotOnCurvefs), within `mds_delete_timeout`.
    async fn delete_on_mds(&self, snap: &Snapshot) -> TaskResult<()> {
        self.act()?;
        match self
            .client
            .delete_snapshot(&snap.file, &self.root, snap.seq_num)
            .await
        {
            Ok(()) => {}
            Err(e) if matches!(e.code, ErrorCode::NotExist | ErrorCode::Deleting) => {}
            Err(e) => return Err(call("DeleteSnapShot")(e)),
        }
        let deadline = Instant::now() + self.options.mds_delete_timeout;
        loop {
            match self
                .client
                .check_snapshot_status(&snap.file, &self.root, snap.seq_num)
                .await
            {
                Err(e) if e.code == ErrorCode::NotExist => return Ok(()),
                Err(e) => return Err(call("CheckSnapShotStatus")(e)),
                Ok((FileStatus::KFileDeleting, _)) => {}
                Ok((status, _)) => {
                    return Err(TaskError::Invalid(format!(
                        "the MDS snapshot {} of {} is {} after its delete",
                        snap.seq_num,
                        snap.file,
                        status.as_str_name()
                    )));
                }
            }
            if Instant::now() >= deadline {
                return Err(TaskError::Invalid(format!(
                    "the MDS snapshot {} of {} is still being deleted after {:?}",
                    snap.seq_num, snap.file, self.options.mds_delete_timeout
                )));
            }
            tokio::time::sleep(self.options.check_status_interval).await;
        }
    }

    // ---- cancel: undo, newest first --------------------------------------------------

    async fn cancel_after_transfer(
        &self,
        uuid: &str,
        snap: &Snapshot,
        index: &ChunkIndex,
        others: &[ChunkIndex],
    ) -> TaskResult<()> {
        tracing::info!(uuid, "canceling after the dump");
        self.delete_chunks(index, others, None).await?;
        self.cancel_after_index(uuid, snap).await
    }

    async fn cancel_after_index(&self, uuid: &str, snap: &Snapshot) -> TaskResult<()> {
        self.store
            .delete_chunk_index(&snap.file, snap.seq_num)
            .await?;
        self.cancel_after_mds(uuid, snap).await
    }

    async fn cancel_after_mds(&self, uuid: &str, snap: &Snapshot) -> TaskResult<()> {
        self.delete_on_mds(snap).await?;
        self.records().remove(uuid)?;
        tracing::info!(uuid, file = snap.file, "snapshot canceled");
        Ok(())
    }

    /// Deletes the objects of `index` no index of `others` refers to.
    async fn delete_chunks(
        &self,
        index: &ChunkIndex,
        others: &[ChunkIndex],
        progress: Option<&AtomicU32>,
    ) -> TaskResult<()> {
        let total = index.chunks.len();
        for (n, &chunk) in index.chunks.keys().enumerate() {
            let Some(name) = index.chunk(chunk) else {
                continue;
            };
            if !others.iter().any(|o| o.refers_to(&name)) {
                self.act()?;
                self.store.delete_chunk_data(&name).await?;
            }
            if let Some(p) = progress {
                let span = u64::from(DEL_PROGRESS_CHUNKS_DELETED - DEL_PROGRESS_MAP_BUILT);
                let part = (span * n as u64).checked_div(total as u64).unwrap_or(0);
                p.store(
                    DEL_PROGRESS_MAP_BUILT + u32::try_from(part).unwrap_or(0),
                    Ordering::Relaxed,
                );
            }
        }
        Ok(())
    }

    // ---- the delete task -------------------------------------------------------------

    async fn run_delete(&self, uuid: &str, task: &Task) {
        if let Err(e) = self.delete_task(uuid, &task.progress).await {
            tracing::warn!(uuid, file = task.file, "snapshot delete failed: {e}");
            if let Err(e) = self.update(uuid, |s| s.status = SnapshotStatus::Error) {
                tracing::error!(uuid, "cannot record the delete's failure: {e}");
            }
        }
    }

    /// Upstream's HandleDeleteSnapshotTask: the snapshot's objects no other snapshot of
    /// the file uses, its index, its MDS snapshot if it failed or was canceled before
    /// removing it, and its record.
    async fn delete_task(&self, uuid: &str, progress: &AtomicU32) -> TaskResult<()> {
        let snap = self.get(uuid).ok_or(TaskError::Gone)?;
        let others = self.other_indexes(&snap.file, snap.seq_num).await;
        progress.store(DEL_PROGRESS_MAP_BUILT, Ordering::Relaxed);
        if snap.seq_num != NO_SEQ
            && let Some(index) = self.store.chunk_index(&snap.file, snap.seq_num).await?
        {
            self.delete_chunks(&index, &others, Some(progress)).await?;
            progress.store(DEL_PROGRESS_CHUNKS_DELETED, Ordering::Relaxed);
            self.store
                .delete_chunk_index(&snap.file, snap.seq_num)
                .await?;
        }
        if matches!(
            snap.status,
            SnapshotStatus::ErrorDeleting | SnapshotStatus::Canceling
        ) && snap.seq_num != NO_SEQ
        {
            self.delete_on_mds(&snap).await?;
        }
        progress.store(DEL_PROGRESS_INDEX_DELETED, Ordering::Relaxed);
        self.records().remove(uuid)?;
        progress.store(PROGRESS_DONE, Ordering::Relaxed);
        tracing::info!(uuid, file = snap.file, "snapshot deleted");
        Ok(())
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_sn_follows_upstreams_rule() {
        // Copied aside since the snapshot: the smaller sn, whichever order.
        assert_eq!(snapshot_sn(&[3, 2], 2), Ok(Some(2)));
        assert_eq!(snapshot_sn(&[1, 3], 2), Ok(Some(1)));
        // Unchanged since the snapshot, or since an earlier one.
        assert_eq!(snapshot_sn(&[2], 2), Ok(Some(2)));
        assert_eq!(snapshot_sn(&[1], 2), Ok(Some(1)));
        // First written after the snapshot; never written.
        assert_eq!(snapshot_sn(&[3], 2), Ok(None));
        assert_eq!(snapshot_sn(&[], 2), Ok(None));
        assert!(snapshot_sn(&[1, 2, 3], 2).is_err());
    }

    #[test]
    fn dump_progress_runs_from_10_to_99() {
        assert_eq!(transfer_progress(0, 4), 10);
        assert_eq!(transfer_progress(2, 4), 54);
        assert_eq!(transfer_progress(4, 4), 99);
        // Nothing to dump is all dumped.
        assert_eq!(transfer_progress(0, 0), 99);
    }

    fn snap(uuid: &str, user: &str, file: &str, status: SnapshotStatus) -> Snapshot {
        Snapshot {
            uuid: uuid.into(),
            user: user.into(),
            file: file.into(),
            name: "n".into(),
            seq_num: 1,
            chunk_size: 16 << 20,
            segment_size: 1 << 30,
            file_length: 10 << 30,
            stripe_unit: 0,
            stripe_count: 0,
            poolset: String::new(),
            time_us: 1,
            status,
            progress: 0,
        }
    }

    #[test]
    fn list_filters_combine_and_a_bad_status_matches_nothing() {
        let a = snap("a", "u1", "/v1", SnapshotStatus::Done);
        let b = snap("b", "u2", "/v1", SnapshotStatus::Error);
        let all = SnapshotFilter::default();
        assert!(all.matches(&a) && all.matches(&b));
        let f = SnapshotFilter {
            file: Some("/v1"),
            status: Some("5"),
            ..SnapshotFilter::default()
        };
        assert!(!f.matches(&a) && f.matches(&b));
        let f = SnapshotFilter {
            user: Some("u1"),
            uuid: Some("b"),
            ..SnapshotFilter::default()
        };
        assert!(!f.matches(&a) && !f.matches(&b));
        let f = SnapshotFilter {
            status: Some("done"),
            ..SnapshotFilter::default()
        };
        assert!(!f.matches(&a));
    }
}
