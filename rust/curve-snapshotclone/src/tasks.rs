//! The service's records (upstream keeps them in etcd): clone tasks (`CloneInfo`) and
//! snapshots (`SnapshotInfo`, snapshots.rs), each kind in one JSON file of the service's
//! data folder, replaced whole on every change (written aside, synced, renamed), so a
//! killed service finds every record as it was last written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// `CloneStatus` (`src/snapshotcloneserver/common/snapshotclone_info.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum TaskStatus {
    Done = 0,
    Cloning = 1,
    Recovering = 2,
    Cleaning = 3,
    ErrorCleaning = 4,
    Error = 5,
    Retrying = 6,
    MetaInstalled = 7,
}

/// `CloneTaskType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum TaskType {
    Clone = 0,
    Recover = 1,
}

/// `CloneStep`: what a task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum CloneStep {
    CreateCloneFile = 0,
    CreateCloneMeta = 1,
    CreateCloneChunk = 2,
    CompleteCloneMeta = 3,
    RecoverChunk = 4,
    ChangeOwner = 5,
    RenameCloneFile = 6,
    CompleteCloneFile = 7,
    End = 8,
}

/// `CloneFileType`: what the source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum SourceType {
    File = 0,
    Snapshot = 1,
}

/// Progress figures of upstream's `snapshotclone_define.h`.
pub const PROGRESS_START: u32 = 0;
pub const PROGRESS_META_INSTALLED: u32 = 5;
pub const PROGRESS_DONE: u32 = 100;

/// One clone task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub uuid: String,
    pub user: String,
    pub source: String,
    pub dest: String,
    /// The file the task made before renaming it onto `dest` (`/clone/<uuid>`).
    pub temp: String,
    pub task_type: TaskType,
    pub status: TaskStatus,
    pub lazy: bool,
    pub next_step: CloneStep,
    /// Creation time, µs since the epoch.
    pub time_us: u64,
    pub source_type: SourceType,
    /// The destination's inode once it exists.
    pub dest_id: Option<u64>,
}

impl Task {
    /// Progress in percent, as upstream reports it per status.
    pub fn progress(&self) -> u32 {
        match self.status {
            TaskStatus::Done => PROGRESS_DONE,
            TaskStatus::MetaInstalled => PROGRESS_META_INSTALLED,
            TaskStatus::Cloning | TaskStatus::Recovering => {
                if self.next_step as u8 >= CloneStep::RecoverChunk as u8 {
                    PROGRESS_META_INSTALLED
                } else {
                    PROGRESS_START
                }
            }
            _ => PROGRESS_START,
        }
    }

    /// The `TaskInfos[]` item of upstream's `TaskCloneInfo::ToJsonObj`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "UUID": self.uuid,
            "User": self.user,
            "File": self.dest,
            "Src": self.source,
            "TaskType": self.task_type as u8,
            "TaskStatus": self.status as u8,
            "IsLazy": self.lazy,
            "NextStep": self.next_step as u8,
            "Time": self.time_us,
            "Progress": self.progress(),
            "FileType": self.source_type as u8,
        })
    }
}

/// Why a fenced instance did not act.
pub const FENCED: &str = "this snapshot/clone service instance's lease ran out";

/// Whether this service instance may act: always for a service alone, and for one of
/// several (`curve_lease`) only while its lease runs. Checked before each record is
/// written and before each step that changes the cluster, so an instance stopped past its
/// lease (SIGSTOP) does nothing once resumed: another instance has its tasks by then.
#[derive(Debug, Clone, Default)]
pub struct Fence(Option<Arc<curve_lease::LeaseGate>>);

impl Fence {
    pub fn new(gate: Arc<curve_lease::LeaseGate>) -> Self {
        Self(Some(gate))
    }

    pub fn is_open(&self) -> bool {
        self.0.as_ref().is_none_or(|g| g.is_open())
    }
}

/// Why a record file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the records {path} were not written: {FENCED}")]
    Fenced { path: PathBuf },
    #[error("cannot read or write the records {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the records {path} are unreadable: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A record the service keeps: found by its UUID, listed by its creation time.
pub trait Record: Clone + Serialize + for<'de> Deserialize<'de> {
    /// The file of the service's data folder that keeps records of this kind.
    const FILE: &'static str;
    fn uuid(&self) -> &str;
    fn time_us(&self) -> u64;
}

impl Record for Task {
    const FILE: &'static str = "clone_tasks.json";
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn time_us(&self) -> u64 {
        self.time_us
    }
}

/// Every record of one kind, by UUID, and the file that keeps them.
#[derive(Debug)]
pub struct RecordStore<T> {
    path: PathBuf,
    records: BTreeMap<String, T>,
    fence: Fence,
}

/// The clone and recover tasks.
pub type TaskStore = RecordStore<Task>;

impl<T: Record> RecordStore<T> {
    /// Loads `<dir>/<T::FILE>` (empty if the file does not exist yet).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(T::FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let records = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<T> =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                list.into_iter()
                    .map(|t| (t.uuid().to_string(), t))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        Ok(Self {
            path,
            records,
            fence: Fence::default(),
        })
    }

    /// Writes the file only while `fence` is open.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    pub fn get(&self, uuid: &str) -> Option<&T> {
        self.records.get(uuid)
    }

    /// Every record, oldest first (upstream lists in its store's order).
    pub fn all(&self) -> Vec<&T> {
        let mut list: Vec<&T> = self.records.values().collect();
        list.sort_by(|a, b| (a.time_us(), a.uuid()).cmp(&(b.time_us(), b.uuid())));
        list
    }

    /// Records `record` (new or changed) and writes the file.
    pub fn put(&mut self, record: T) -> Result<(), StoreError> {
        let uuid = record.uuid().to_string();
        let previous = self.records.insert(uuid.clone(), record);
        self.save().inspect_err(|_| {
            // Keep memory as the file is.
            match previous {
                Some(p) => self.records.insert(uuid.clone(), p),
                None => self.records.remove(&uuid),
            };
        })
    }

    /// Forgets a record and writes the file.
    pub fn remove(&mut self, uuid: &str) -> Result<(), StoreError> {
        if let Some(record) = self.records.remove(uuid) {
            self.save().inspect_err(|_| {
                self.records.insert(uuid.to_string(), record);
            })?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), StoreError> {
        if !self.fence.is_open() {
            return Err(StoreError::Fenced {
                path: self.path.clone(),
            });
        }
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let list: Vec<&T> = self.records.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).map_err(|e| io(std::io::Error::other(e)))?;
        let aside = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&aside).map_err(io)?;
        std::io::Write::write_all(&mut f, &bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&aside, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn task(uuid: &str) -> Task {
        Task {
            uuid: uuid.into(),
            user: "curve".into(),
            source: "/src".into(),
            dest: "/dst".into(),
            temp: format!("/clone/{uuid}"),
            task_type: TaskType::Clone,
            status: TaskStatus::Cloning,
            lazy: true,
            next_step: CloneStep::CreateCloneFile,
            time_us: 1,
            source_type: SourceType::File,
            dest_id: None,
        }
    }

    #[test]
    fn tasks_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TaskStore::open(dir.path()).unwrap();
        store.put(task("a")).unwrap();
        let mut b = task("b");
        b.status = TaskStatus::MetaInstalled;
        store.put(b.clone()).unwrap();
        store.remove("a").unwrap();
        let again = TaskStore::open(dir.path()).unwrap();
        assert!(again.get("a").is_none());
        assert_eq!(again.get("b"), Some(&b));
        assert_eq!(b.progress(), PROGRESS_META_INSTALLED);
        assert_eq!(b.to_json()["TaskStatus"], 7);
    }
}
