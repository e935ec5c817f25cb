//! The snapshot records of the service: upstream's `SnapshotInfo`
//! (`src/snapshotcloneserver/common/snapshotclone_info.h`), kept as the clone tasks are
//! (tasks.rs), and the `Snapshots[]` item of its answers.

use serde::{Deserialize, Serialize};

use crate::tasks::{Record, RecordStore};

/// A snapshot's `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum SnapshotStatus {
    Done = 0,
    Pending = 1,
    Deleting = 2,
    ErrorDeleting = 3,
    Canceling = 4,
    Error = 5,
}

/// Progress figures of upstream's `snapshot_core.cpp`.
pub const PROGRESS_CREATED_ON_CURVE: u32 = 5;
pub const PROGRESS_INDEX_STORED: u32 = 6;
pub const PROGRESS_MAP_BUILT: u32 = 10;
pub const PROGRESS_TRANSFERRED: u32 = 99;
pub const PROGRESS_DONE: u32 = 100;

/// Uninitialised `seqNum`: the MDS snapshot is not taken yet.
pub const NO_SEQ: u64 = 0;

/// One snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub uuid: String,
    pub user: String,
    pub file: String,
    pub name: String,
    /// The volume's seqNum the snapshot holds (the MDS snapshot's), `NO_SEQ` until taken.
    pub seq_num: u64,
    pub chunk_size: u32,
    pub segment_size: u64,
    pub file_length: u64,
    pub stripe_unit: u64,
    pub stripe_count: u64,
    pub poolset: String,
    /// Creation time, µs since the epoch.
    pub time_us: u64,
    pub status: SnapshotStatus,
    pub progress: u32,
}

impl Record for Snapshot {
    const FILE: &'static str = "snapshots.json";
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn time_us(&self) -> u64 {
        self.time_us
    }
}

/// The snapshots.
pub type SnapshotStore = RecordStore<Snapshot>;

impl Snapshot {
    /// The `Snapshots[]` item of upstream's `FileSnapshotInfo::ToJsonObj`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "UUID": self.uuid,
            "User": self.user,
            "File": self.file,
            "SeqNum": self.seq_num,
            "Name": self.name,
            "Time": self.time_us,
            "FileLength": self.file_length,
            "Status": self.status as u8,
            "Progress": self.progress,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn snapshots_survive_a_reopen_beside_the_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SnapshotStore::open(dir.path()).unwrap();
        let snap = Snapshot {
            uuid: "u1".into(),
            user: "curve".into(),
            file: "/vol".into(),
            name: "s1".into(),
            seq_num: 3,
            chunk_size: 16 << 20,
            segment_size: 1 << 30,
            file_length: 10 << 30,
            stripe_unit: 0,
            stripe_count: 0,
            poolset: String::new(),
            time_us: 7,
            status: SnapshotStatus::Pending,
            progress: PROGRESS_CREATED_ON_CURVE,
        };
        store.put(snap.clone()).unwrap();
        assert!(dir.path().join("snapshots.json").is_file());
        let again = SnapshotStore::open(dir.path()).unwrap();
        assert_eq!(again.get("u1"), Some(&snap));
        let json = snap.to_json();
        assert_eq!(
            (json["Status"].as_u64(), json["SeqNum"].as_u64()),
            (Some(1), Some(3))
        );
        assert_eq!(json["Progress"], 5);
    }
}
