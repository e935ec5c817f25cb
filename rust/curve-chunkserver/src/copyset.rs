//! One hosted copyset: its Raft group member (openraft, `raft.rs`) and what the services
//! ask of it. Leadership, terms, log replication, catch-up and snapshot install are the
//! library's; this module starts the member, answers who leads from Raft's state, and
//! serves Raft's RPCs for the group (`raft_net.rs`).
//!
//! - Membership is the cluster layout's at creation: the layout's first member
//!   initialises the group with it and campaigns at once, the others learn it from the
//!   first member's first AppendEntries, so a new cluster's leaders are where the layout
//!   puts them. Adding and removing members is not offered (see README).
//! - Leaders follow the layout's order, as Curve's MDS leader scheduler spreads leaders:
//!   a leader hands leadership (a Raft leader transfer) to the earliest member before it
//!   in the layout whose log has everything the leader's has; not when it became leader
//!   through `TransferLeader` (an operator's choice), which stays.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openraft::Instant as _;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};

use crate::raft::{Raft, SnapshotFiles, StateMachine};
use crate::raft_log::LogStore;
use crate::raft_net::{
    GroupNetwork, OPERATOR_TRANSFER_WINDOW, PeerChannels, RaftRpc, RaftRpcReply, is_chunk_file_name,
};
use crate::store::{ChunkStore, Durability};
use crate::{HostedCopyset, PeerEntry};

/// Raft's timing, near braft's with Curve's `election_timeout_ms` = 1000: elections after
/// 1–2 s without a leader (and a follower grants no vote while its leader's lease, the
/// election timeout, lasts); heartbeats every 250 ms, not braft's 100 ms: a local
/// cluster hosts 100 copysets on three chunkservers sharing two cores, and each group
/// heartbeats on its own.
pub(crate) const HEARTBEAT_MS: u64 = 250;
pub(crate) const ELECTION_TIMEOUT_MIN_MS: u64 = 1000;
pub(crate) const ELECTION_TIMEOUT_MAX_MS: u64 = 2000;
/// A snapshot (only its meta: the chunk files are the data) every this many entries, or
/// once [`SNAPSHOT_BYTES`] of data were applied since the last; [`LOG_KEEP`] entries stay
/// in the log after it for followers a little behind. The log holds each write's data, so
/// it is bounded by size: a local cluster has hundreds of copysets per chunkserver, and
/// 64 entries kept after snapshots taken every 32 MiB left 5 GiB of log per chunkserver
/// holding 250 MiB of chunks (and filled a CI machine's disk). Taking a snapshot writes
/// one small file, so taking them often costs little; a follower further behind than
/// the kept entries is sent the chunk files instead.
const SNAPSHOT_EVERY: u64 = 256;
const SNAPSHOT_BYTES: u64 = 4 << 20;
const LOG_KEEP: u64 = 8;
/// Entries per AppendEntries (each at most one chunk of data).
const MAX_PAYLOAD_ENTRIES: u64 = 16;
/// How often the preferred-leader check runs.
const HANDBACK_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct CopysetState {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    members: Vec<PeerEntry>,
    self_index: usize,
    pub raft: Raft,
    /// Reads take it shared; applying an entry or installing a snapshot, exclusive.
    pub io_lock: Arc<RwLock<()>>,
    applied_index: Arc<AtomicU64>,
    raft_dir: PathBuf,
    /// The snapshot being received: its id.
    receiving: tokio::sync::Mutex<Option<u64>>,
    /// When an operator's `TransferLeader` naming this member last arrived (a
    /// leader's hand-back to an earlier member does not count).
    transfer_to_us: Mutex<Option<Instant>>,
    /// The member an operator's TransferLeader to this leader named, and when: the
    /// network marks the transfer it sends there as the operator's.
    operator_transfer: Arc<Mutex<Option<(u64, Instant)>>>,
    /// Whether this member, while leading, hands leadership to the first member.
    hands_back: AtomicBool,
    /// The state machine's count of data bytes applied since its last snapshot.
    bytes_since_snapshot: Arc<AtomicU64>,
}

/// Why a copyset could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("this chunkserver is not a member")]
    NotMember,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
}

impl CopysetState {
    /// Starts this chunkserver's member of the copyset's Raft group.
    pub async fn open(
        hosted: &HostedCopyset,
        self_id: u32,
        store: Arc<ChunkStore>,
        raft_dir: PathBuf,
        durability: Durability,
        channels: Arc<PeerChannels>,
    ) -> Result<Self, OpenError> {
        let self_index = hosted
            .members
            .iter()
            .position(|m| m.id == self_id)
            .ok_or(OpenError::NotMember)?;
        let key = (hosted.logical_pool_id, hosted.copyset_id);
        let log = LogStore::open(&raft_dir, durability)?;
        let io_lock = Arc::new(RwLock::new(()));
        let applied_index = Arc::new(AtomicU64::new(0));
        let sm = StateMachine::open(
            key,
            store,
            &raft_dir,
            durability,
            io_lock.clone(),
            applied_index.clone(),
        )?;
        let bytes_since_snapshot = sm.bytes_since_snapshot.clone();
        let addrs: HashMap<u64, String> = hosted
            .members
            .iter()
            .map(|m| (u64::from(m.id), m.addr.clone()))
            .collect();
        let operator_transfer = Arc::new(Mutex::new(None));
        let network = GroupNetwork {
            key,
            channels,
            addrs: Arc::new(addrs),
            operator_transfer: operator_transfer.clone(),
        };
        let config = Config {
            cluster_name: format!("copyset-{}-{}", key.0, key.1),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            install_snapshot_timeout: 30_000,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
            max_in_snapshot_log_to_keep: LOG_KEEP,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| OpenError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(u64::from(self_id), config, network, log, sm)
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        // Every member initialises the group with the same membership, as braft starts
        // every peer from its initial conf: were only the first member to do it, a
        // copyset whose first member died before its first AppendEntries reached the
        // others would be left with two members that can never campaign. Simultaneous
        // campaigns resolve through the randomised election timeouts.
        if !initialized {
            let members: BTreeMap<u64, BasicNode> = hosted
                .members
                .iter()
                .map(|m| (u64::from(m.id), BasicNode::new(m.addr.clone())))
                .collect();
            raft.initialize(members)
                .await
                .map_err(|e| OpenError::Raft(e.to_string()))?;
        }
        Ok(CopysetState {
            logical_pool_id: key.0,
            copyset_id: key.1,
            members: hosted.members.clone(),
            self_index,
            raft,
            io_lock,
            applied_index,
            raft_dir,
            receiving: tokio::sync::Mutex::new(None),
            transfer_to_us: Mutex::new(None),
            operator_transfer,
            hands_back: AtomicBool::new(true),
            bytes_since_snapshot,
        })
    }

    pub fn members(&self) -> &[PeerEntry] {
        &self.members
    }

    /// The member whose PeerId text or "ip:port" is `address`.
    pub fn member_by_address(&self, address: &str) -> Option<usize> {
        let addr = address.strip_suffix(":0").unwrap_or(address);
        self.members.iter().position(|m| m.addr == addr)
    }

    /// The leader as Raft knows it now (a follower names the leader it follows).
    pub fn leader(&self) -> Option<&PeerEntry> {
        let id = self.raft.metrics().borrow_watched().current_leader?;
        self.members.iter().find(|m| u64::from(m.id) == id)
    }

    /// Whether this member leads now. Only a hint for routing: reads and writes are
    /// confirmed by Raft itself (a lease or a commit).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader
            && m.current_leader == Some(u64::from(self.members[self.self_index].id))
    }

    /// Leader: whether a quorum acknowledged it within the election timeout (braft's
    /// leader steps down otherwise; openraft keeps leading, so writes and reads ask).
    pub fn quorum_recently_acked(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        // An absolute time: the metrics are published on changes only, so a leader that
        // stopped hearing from its followers keeps the time of the last acknowledgement.
        m.last_quorum_acked.as_ref().is_none_or(|acked| {
            acked.elapsed() < std::time::Duration::from_millis(ELECTION_TIMEOUT_MIN_MS)
        })
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// "pool-copyset", for logs.
    pub fn name(&self) -> String {
        format!("{}-{}", self.logical_pool_id, self.copyset_id)
    }

    /// Asks Raft to hand leadership to member `index` (it does once that member's log
    /// has the leader's last entry, and gives up after an election timeout).
    pub async fn transfer_to(&self, index: usize) -> Result<(), String> {
        let Some(to) = self.members.get(index) else {
            return Err("no such member".into());
        };
        *self
            .operator_transfer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((u64::from(to.id), Instant::now()));
        self.raft
            .trigger()
            .transfer_leader(u64::from(to.id))
            .await
            .map_err(|e| e.to_string())
    }

    /// A Raft RPC from a peer for this group.
    pub async fn serve_rpc(&self, rpc: RaftRpc) -> Result<RaftRpcReply, String> {
        match rpc {
            RaftRpc::Append(req) => self
                .raft
                .append_entries(req)
                .await
                .map(RaftRpcReply::Append)
                .map_err(|e| e.to_string()),
            RaftRpc::Vote(req) => self
                .raft
                .vote(req)
                .await
                .map(RaftRpcReply::Vote)
                .map_err(|e| e.to_string()),
            RaftRpc::PreVote(req) => self
                .raft
                .pre_vote(req)
                .await
                .map(RaftRpcReply::Vote)
                .map_err(|e| e.to_string()),
            RaftRpc::Transfer { req, operator } => {
                if operator {
                    *self
                        .transfer_to_us
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                }
                self.raft
                    .handle_transfer_leader(req)
                    .await
                    .map(RaftRpcReply::Transfer)
                    .map_err(|e| e.to_string())
            }
            RaftRpc::SnapshotBegin { id } => {
                let mut receiving = self.receiving.lock().await;
                let dir = self.receive_dir();
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e.to_string());
                    }
                    _ => {}
                }
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                *receiving = Some(id);
                Ok(RaftRpcReply::SnapshotAck)
            }
            RaftRpc::SnapshotPiece {
                id,
                file,
                file_len,
                offset,
                data,
            } => {
                let receiving = self.receiving.lock().await;
                if *receiving != Some(id) {
                    return Err("no such snapshot transfer".into());
                }
                if !is_chunk_file_name(&file) {
                    return Err(format!("{file:?} is not a chunk file name"));
                }
                let path = self.receive_dir().join(&file);
                let written = (|| -> std::io::Result<()> {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)?;
                    if f.metadata()?.len() != file_len {
                        f.set_len(file_len)?;
                    }
                    f.write_all_at(&data, offset)
                })();
                written.map_err(|e| e.to_string())?;
                Ok(RaftRpcReply::SnapshotAck)
            }
            RaftRpc::SnapshotFinish { id, vote, meta } => {
                let mut receiving = self.receiving.lock().await;
                if *receiving != Some(id) {
                    return Err("no such snapshot transfer".into());
                }
                *receiving = None;
                let snapshot = crate::raft::Snapshot {
                    meta,
                    snapshot: SnapshotFiles {
                        dir: self.receive_dir(),
                    },
                };
                self.raft
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map(RaftRpcReply::Snapshot)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn receive_dir(&self) -> PathBuf {
        self.raft_dir.join("snapshot-receiving")
    }

    /// Snapshots once enough data was applied (every member, leader or not), logs each
    /// leadership won, and moves leadership to the earliest member in layout
    /// order whose log has every entry when this member leads without an operator having
    /// asked for it. Runs until the server stops.
    pub async fn hand_back_loop(self: Arc<Self>) {
        let mut led_term = None;
        loop {
            tokio::time::sleep(HANDBACK_EVERY).await;
            if self.bytes_since_snapshot.load(Ordering::Relaxed) >= SNAPSHOT_BYTES
                && let Err(e) = self.raft.trigger().snapshot().await
            {
                tracing::warn!(copyset = %self.name(), error = %e, "snapshot trigger failed");
            }
            // The earliest member in layout order before us whose log has every entry.
            let (leading, term, earlier) = {
                let metrics = self.raft.metrics();
                let m = metrics.borrow_watched();
                let leading = m.state == ServerState::Leader;
                let caught_up = |id: u64| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|matched| {
                            m.last_log_index.is_some_and(|last| matched.index >= last)
                        })
                };
                let earlier = self.members[..self.self_index]
                    .iter()
                    .map(|p| u64::from(p.id))
                    .find(|id| caught_up(*id));
                (leading, m.current_term, earlier)
            };
            if !leading {
                led_term = None;
                continue;
            }
            if led_term != Some(term) {
                // A new leadership: the operator's if a transfer to us came just before.
                led_term = Some(term);
                tracing::info!(copyset = %self.name(), term, "leading");
                let asked = self
                    .transfer_to_us
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some_and(|t| t.elapsed() < OPERATOR_TRANSFER_WINDOW);
                self.hands_back.store(!asked, Ordering::Release);
            }
            if let Some(to) = earlier
                && self.hands_back.load(Ordering::Acquire)
            {
                tracing::info!(copyset = %self.name(), to, "handing leadership to an earlier member");
                if let Err(e) = self.raft.trigger().transfer_leader(to).await {
                    tracing::warn!(copyset = %self.name(), error = %e, "leader transfer failed");
                }
            }
        }
    }
}

/// braft's PeerId text for a replica, as Curve's `Peer.address` and `redirect` carry it.
pub(crate) fn peer_id_text(peer: &PeerEntry) -> String {
    format!("{}:0", peer.addr)
}
