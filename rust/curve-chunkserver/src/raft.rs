//! One Raft group per copyset, on openraft (why this library: README, Reliability).
//! This module holds what the group replicates and how it is applied: the log entry
//! ([`Cmd`], the request with its data, as braft's log holds Curve's `ChunkRequest` plus
//! attachment), the state machine that applies committed entries to the chunk files in
//! log order with the sn checks a write gets today, and the Raft snapshot, which is the
//! chunk files themselves plus the applied log id (as Curve's `CurveFilesystemAdaptor`:
//! nothing is copied to take one; a lagging follower is sent the live files and then
//! replays the log after the snapshot, every operation being safe to apply again).
//!
//! The log is `raft_log.rs`, the RPCs between members `raft_net.rs`, the copyset's
//! handle (leadership, reads, writes) `copyset.rs`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::clone::parse_location;
use crate::store::{
    ChunkKey, ChunkStore, CreateCloneError, Durability, SnapshotError, WriteError, replace_file,
};

openraft::declare_raft_types!(
    /// The copysets' Raft types: members are chunkserver ids with their "ip:port".
    pub TypeConfig:
        D = Cmd,
        R = Reply,
);

pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type Membership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFiles>;
pub(crate) type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// A replicated operation on one chunk: every change to a copyset's chunk files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Cmd {
    /// WriteChunk: `location` creates a clone chunk of it if the chunk is missing.
    Write {
        chunk_id: u64,
        offset: u32,
        sn: Option<u64>,
        location: Option<String>,
        #[serde(with = "serde_bytes_compat")]
        data: Bytes,
    },
    /// RecoverChunk's paste of origin bytes into a clone chunk's unwritten pages.
    Paste {
        chunk_id: u64,
        offset: u32,
        #[serde(with = "serde_bytes_compat")]
        data: Bytes,
    },
    /// CreateCloneChunk.
    CreateClone {
        chunk_id: u64,
        sn: u64,
        corrected_sn: u64,
        location: String,
    },
    /// DeleteChunkSnapshotOrCorrectSn (the MDS's clean of a deleted snapshot).
    DeleteSnapshot { chunk_id: u64, corrected_sn: u64 },
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Write {
                chunk_id,
                offset,
                data,
                ..
            } => write!(f, "write {chunk_id}@{offset}+{}", data.len()),
            Cmd::Paste {
                chunk_id,
                offset,
                data,
            } => write!(f, "paste {chunk_id}@{offset}+{}", data.len()),
            Cmd::CreateClone { chunk_id, .. } => write!(f, "create clone {chunk_id}"),
            Cmd::DeleteSnapshot {
                chunk_id,
                corrected_sn,
            } => write!(
                f,
                "delete snapshot of {chunk_id} (correctedSn {corrected_sn})"
            ),
        }
    }
}

/// Bytes as one serde byte string (bincode copies it whole, not byte by byte).
mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// What applying an entry answered: a CHUNK_OP_STATUS, and the chunk's sn for BACKWARD.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub status: i32,
    pub chunk_sn: Option<u64>,
}

/// The Raft snapshot's data: a folder of chunk files. On the leader it is the copyset's
/// own live folder; on a follower receiving one, the folder it was downloaded into.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotFiles {
    pub dir: PathBuf,
}

/// Positioned IO up to this size runs on the apply task itself; larger goes to the
/// blocking pool (awaited: entries still apply one at a time, in log order).
const INLINE_IO_MAX: usize = 256 * 1024;

/// The copyset's state machine: its chunk files.
pub(crate) struct StateMachine {
    pub key: (u32, u32),
    pub store: Arc<ChunkStore>,
    /// The copyset's folder of chunk files.
    pub data_dir: PathBuf,
    /// Where the snapshot meta (applied log id and membership) is kept.
    pub meta_path: PathBuf,
    pub durability: Durability,
    pub applied: Option<LogId>,
    pub membership: Membership,
    /// Held for writing while an entry is applied or a snapshot installed, for reading by
    /// reads: a read never sees half of a write.
    pub io_lock: Arc<std::sync::RwLock<()>>,
    /// Reported as `appliedIndex`.
    pub applied_index: Arc<std::sync::atomic::AtomicU64>,
    /// Data bytes applied since the last snapshot: the copyset snapshots (and so purges
    /// its log) by size too, not only every so many entries (copyset.rs).
    pub bytes_since_snapshot: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachine {
    pub fn open(
        key: (u32, u32),
        store: Arc<ChunkStore>,
        raft_dir: &Path,
        durability: Durability,
        io_lock: Arc<std::sync::RwLock<()>>,
        applied_index: Arc<std::sync::atomic::AtomicU64>,
    ) -> io::Result<Self> {
        let meta_path = raft_dir.join("snapshot_meta");
        let meta: Option<SnapshotMeta> = match std::fs::read(&meta_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (applied, membership) = match meta {
            Some(m) => (m.last_log_id, m.last_membership),
            None => (None, StoredMembership::default()),
        };
        if let Some(applied) = applied {
            applied_index.store(applied.index, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(StateMachine {
            data_dir: store.copyset_dir(key.0, key.1),
            key,
            store,
            meta_path,
            durability,
            applied,
            membership,
            io_lock,
            applied_index,
            bytes_since_snapshot: Arc::default(),
        })
    }

    fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        }
    }

    fn save_meta(&self, meta: &SnapshotMeta) -> io::Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
        replace_file(&self.meta_path, &bytes, self.durability)
    }

    async fn execute(&self, cmd: Cmd) -> Reply {
        use curve_proto::chunkserver::ChunkOpStatus;
        let (pool, copyset) = self.key;
        let key = move |chunk_id| ChunkKey {
            logical_pool_id: pool,
            copyset_id: copyset,
            chunk_id,
        };
        let status = |s: ChunkOpStatus| Reply {
            status: s as i32,
            chunk_sn: None,
        };
        let store = self.store.clone();
        let lock = self.io_lock.clone();
        let len = cmd.data_len();
        let run = move || -> Reply {
            let _guard = lock
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match cmd {
                Cmd::Write {
                    chunk_id,
                    offset,
                    sn,
                    location,
                    data,
                } => {
                    let k = key(chunk_id);
                    match store.admit_sn(k, sn, location.as_deref()) {
                        Ok(()) => {}
                        Err(WriteError::Backward) => {
                            return Reply {
                                status: ChunkOpStatus::Backward as i32,
                                chunk_sn: store.sn(k).ok().flatten(),
                            };
                        }
                        Err(WriteError::Conflict(why)) => {
                            // Upstream's chunkservers answer these FAILURE_UNKNOWN too.
                            tracing::warn!(key = ?k, ?sn, why, "applying a write: refused");
                            return status(ChunkOpStatus::FailureUnknown);
                        }
                        Err(WriteError::Io(e)) => {
                            tracing::error!(key = ?k, error = %e, "applying a write: sn update failed");
                            return status(ChunkOpStatus::DiskFail);
                        }
                    }
                    match store.write(k, u64::from(offset), &data, sn) {
                        Ok(()) => status(ChunkOpStatus::Success),
                        Err(e) => {
                            tracing::error!(key = ?k, error = %e, "applying a write failed");
                            status(ChunkOpStatus::DiskFail)
                        }
                    }
                }
                Cmd::Paste {
                    chunk_id,
                    offset,
                    data,
                } => match store.paste(key(chunk_id), u64::from(offset), &data) {
                    Ok(true) => status(ChunkOpStatus::Success),
                    Ok(false) => status(ChunkOpStatus::ChunkNotexist),
                    Err(e) => {
                        tracing::error!(chunk_id, error = %e, "applying a paste failed");
                        status(ChunkOpStatus::DiskFail)
                    }
                },
                Cmd::CreateClone {
                    chunk_id,
                    sn,
                    corrected_sn,
                    location,
                } => {
                    if sn == 0 || parse_location(&location).is_err() {
                        return status(ChunkOpStatus::InvalidRequest);
                    }
                    match store.create_clone(key(chunk_id), sn, corrected_sn, &location) {
                        Ok(()) => status(ChunkOpStatus::Success),
                        Err(CreateCloneError::Conflict) => status(ChunkOpStatus::ChunkExist),
                        Err(CreateCloneError::Io(e)) => {
                            tracing::error!(chunk_id, error = %e, "applying a clone creation failed");
                            status(ChunkOpStatus::DiskFail)
                        }
                    }
                }
                Cmd::DeleteSnapshot {
                    chunk_id,
                    corrected_sn,
                } => match store.delete_snapshot_or_correct_sn(key(chunk_id), corrected_sn) {
                    Ok(()) => status(ChunkOpStatus::Success),
                    Err(SnapshotError::Backward) => status(ChunkOpStatus::Backward),
                    // Upstream answers every other refusal FAILURE_UNKNOWN (a clone
                    // chunk's StatusConflictError among them).
                    Err(e) => {
                        tracing::warn!(chunk_id, corrected_sn, error = ?e, "applying a snapshot delete: refused");
                        status(ChunkOpStatus::FailureUnknown)
                    }
                },
            }
        };
        if len <= INLINE_IO_MAX {
            return run();
        }
        tokio::task::spawn_blocking(run)
            .await
            .unwrap_or_else(|_| status(ChunkOpStatus::FailureUnknown))
    }
}

/// Which entries of a batch to skip: plain writes (no clone location) that no one waits
/// for (a follower's, or a replay's: a proposer's own entries carry a responder and are
/// always applied, their answer depending on it) whose whole range a later plain write
/// of the batch to the same chunk covers, with the same sn (a higher one may be refused
/// where theirs started the chunk's snapshot, store/cow.rs; then both must apply). Looks ahead at
/// most [`LOOKAHEAD`] entries.
fn overwritten_in_batch(batch: &[EntryResponder<TypeConfig>]) -> Vec<bool> {
    const LOOKAHEAD: usize = 256;
    let plain = |e: &Entry| match &e.payload {
        EntryPayload::Normal(Cmd::Write {
            chunk_id,
            offset,
            sn,
            location: None,
            data,
        }) => Some((*chunk_id, u64::from(*offset), data.len() as u64, *sn)),
        _ => None,
    };
    batch
        .iter()
        .enumerate()
        .map(|(i, (entry, responder))| {
            let Some((chunk, start, len, sn)) = plain(entry).filter(|_| responder.is_none()) else {
                return false;
            };
            batch[i + 1..].iter().take(LOOKAHEAD).any(|(later, _)| {
                plain(later).is_some_and(|(c, s, l, later_sn)| {
                    c == chunk && s <= start && s + l >= start + len && later_sn == sn
                })
            })
        })
        .collect()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFiles;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let meta = self.meta();
        self.save_meta(&meta)?;
        self.bytes_since_snapshot
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: SnapshotFiles {
                dir: self.data_dir.clone(),
            },
        })
    }
}

/// The builder is a view of the same state: a snapshot is only its meta.
pub(crate) struct Builder {
    meta: SnapshotMeta,
    bytes_since_snapshot: Arc<std::sync::atomic::AtomicU64>,
    data_dir: PathBuf,
    meta_path: PathBuf,
    durability: Durability,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    type SnapshotData = SnapshotFiles;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let bytes = serde_json::to_vec(&self.meta).map_err(io::Error::other)?;
        replace_file(&self.meta_path, &bytes, self.durability)?;
        self.bytes_since_snapshot
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: SnapshotFiles {
                dir: self.data_dir.clone(),
            },
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFiles;
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        let mut batch = Vec::new();
        while let Some(next) = entries.next().await {
            batch.push(next?);
        }
        let overwritten = overwritten_in_batch(&batch);
        for (n, (entry, responder)) in batch.into_iter().enumerate() {
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::default(),
                // Its bytes are all rewritten by a later entry of this batch, whose sn
                // admits it too: the result is the same without it, and a member catching
                // up never shows the older bytes in between.
                EntryPayload::Normal(_) if overwritten.get(n).copied().unwrap_or(false) => {
                    Reply::default()
                }
                EntryPayload::Normal(cmd) => {
                    self.bytes_since_snapshot
                        .fetch_add(cmd.data_len() as u64, std::sync::atomic::Ordering::Relaxed);
                    self.execute(cmd).await
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Reply::default()
                }
            };
            self.applied = Some(entry.log_id);
            self.applied_index
                .store(entry.log_id.index, std::sync::atomic::Ordering::Release);
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder {
            meta: self.meta(),
            bytes_since_snapshot: self.bytes_since_snapshot.clone(),
            data_dir: self.data_dir.clone(),
            meta_path: self.meta_path.clone(),
            durability: self.durability,
        }
    }

    /// Replaces the copyset's chunk files with the received ones (`snapshot.dir`).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFiles,
    ) -> Result<(), io::Error> {
        {
            let _guard = self
                .io_lock
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.store.forget_copyset(self.key.0, self.key.1);
            if snapshot.dir != self.data_dir {
                // Old folder aside, new one in, old one gone: a crash in between leaves
                // either folder whole under the copyset's name or the received one
                // beside it, and the log replays over it.
                let old = self.data_dir.with_extension("old");
                let _ = std::fs::remove_dir_all(&old);
                if self.data_dir.exists() {
                    std::fs::rename(&self.data_dir, &old)?;
                }
                std::fs::rename(&snapshot.dir, &self.data_dir)?;
                let _ = std::fs::remove_dir_all(&old);
            }
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(applied) = self.applied {
            self.applied_index
                .store(applied.index, std::sync::atomic::Ordering::Release);
        }
        self.save_meta(meta)?;
        tracing::info!(copyset = ?self.key, applied = ?meta.last_log_id, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let meta: SnapshotMeta = match std::fs::read(&self.meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotFiles {
                dir: self.data_dir.clone(),
            },
        }))
    }
}
