//! Raft's RPCs between the members of a copyset, over baidu_std on the chunkservers'
//! one port (as braft's RaftService shares the port with Curve's services): service
//! `curvefs.local.RaftService`, methods `AppendEntries`, `Vote`, `PreVote`,
//! `TransferLeader` and `InstallSnapshot`. A request's payload is bincode of
//! `(logicalPoolId, copysetId, RaftRpc)`, the answer bincode of
//! `Result<RaftRpcReply, String>`; openraft's own messages ride inside.
//!
//! A snapshot is sent as the files of the copyset's folder (chunk data, sn and clone
//! records) in pieces of [`SNAPSHOT_PIECE`], holes skipped: `Begin`, the pieces, then
//! `Finish` with the snapshot's meta, on which the receiver installs it.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::{Deserialize, Serialize};

use crate::raft::{Snapshot, SnapshotFiles, SnapshotMeta, TypeConfig, Vote};

pub(crate) const RAFT_SERVICE: &str = "curvefs.local.RaftService";
/// Bytes of a chunk file per InstallSnapshot piece.
const SNAPSHOT_PIECE: usize = 1024 * 1024;
/// Deadline of one snapshot piece (a MiB on loopback takes milliseconds).
const PIECE_DEADLINE: Duration = Duration::from_secs(10);
/// A refused connection answers in microseconds on loopback; this bounds a black hole.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long an AppendEntries without entries (after the first of a replication stream:
/// one that only carries a newer commit index) waits for the next request, which carries
/// that commit too and supersedes it. openraft sends one to each follower after every
/// commit; without the wait a lone writer costs four Raft RPCs per write instead of two.
/// Only a follower's apply waits for it (reads go to the leader); heartbeats are apart.
const COMMIT_HOLD: Duration = Duration::from_millis(5);

#[derive(Serialize, Deserialize)]
pub(crate) enum RaftRpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// `operator`: an operator's TransferLeader asked for it, not the sender's hand-back
    /// to an earlier member (the receiver then keeps leadership; see copyset.rs).
    Transfer {
        req: TransferLeaderRequest<TypeConfig>,
        operator: bool,
    },
    SnapshotBegin {
        id: u64,
    },
    SnapshotPiece {
        id: u64,
        file: String,
        file_len: u64,
        offset: u64,
        #[serde(with = "serde_bytes_vec")]
        data: Vec<u8>,
    },
    SnapshotFinish {
        id: u64,
        vote: Vote,
        meta: SnapshotMeta,
    },
}

mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum RaftRpcReply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Transfer(TransferLeaderResponse<TypeConfig>),
    SnapshotAck,
    Snapshot(SnapshotResponse<TypeConfig>),
}

impl RaftRpc {
    pub fn method(&self) -> &'static str {
        match self {
            RaftRpc::Append(_) => "AppendEntries",
            RaftRpc::Vote(_) => "Vote",
            RaftRpc::PreVote(_) => "PreVote",
            RaftRpc::Transfer { .. } => "TransferLeader",
            RaftRpc::SnapshotBegin { .. }
            | RaftRpc::SnapshotPiece { .. }
            | RaftRpc::SnapshotFinish { .. } => "InstallSnapshot",
        }
    }
}

/// Reused baidu_std connections per peer address, replaced once failed.
#[derive(Default)]
pub(crate) struct PeerChannels {
    brpc: Mutex<HashMap<String, Arc<curve_brpc::Channel>>>,
}

impl PeerChannels {
    async fn get(&self, addr: &str) -> Result<Arc<curve_brpc::Channel>, String> {
        let lock = || self.brpc.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = lock().get(addr).filter(|c| c.is_usable()) {
            return Ok(c.clone());
        }
        let channel = curve_brpc::Channel::connect(addr, CONNECT_TIMEOUT, u32::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let channel = Arc::new(channel);
        lock().insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Why a call got no answer from the peer's Raft.
enum CallFailure {
    /// Not connected or no answer in time: the peer may be down.
    Unreachable(String),
    /// The peer answered with an error.
    Refused(String),
}

impl CallFailure {
    fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            CallFailure::Unreachable(why) => RPCError::Unreachable(Unreachable::from_string(why)),
            CallFailure::Refused(why) => RPCError::Network(NetworkError::from_string(why)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match self {
            CallFailure::Unreachable(why) => {
                StreamingError::Unreachable(Unreachable::from_string(why))
            }
            CallFailure::Refused(why) => StreamingError::Network(NetworkError::from_string(why)),
        }
    }
}

/// Creates the connections of one copyset's Raft to its peers.
#[derive(Clone)]
pub(crate) struct GroupNetwork {
    pub key: (u32, u32),
    pub channels: Arc<PeerChannels>,
    /// Chunkserver id -> "ip:port" from the cluster layout (which owns addresses).
    pub addrs: Arc<HashMap<u64, String>>,
    /// The member an operator's TransferLeader last named, and when.
    pub operator_transfer: Arc<Mutex<Option<(u64, Instant)>>>,
}

/// A transfer to the member an operator named this long ago or less is the operator's.
pub(crate) const OPERATOR_TRANSFER_WINDOW: Duration = Duration::from_secs(10);

pub(crate) struct PeerClient {
    key: (u32, u32),
    channels: Arc<PeerChannels>,
    addr: String,
    target: u64,
    operator_transfer: Arc<Mutex<Option<(u64, Instant)>>>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            key: self.key,
            channels: self.channels.clone(),
            target,
            operator_transfer: self.operator_transfer.clone(),
            addr: self
                .addrs
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
        }
    }
}

impl PeerClient {
    async fn call(&self, rpc: RaftRpc, timeout: Duration) -> Result<RaftRpcReply, CallFailure> {
        let method = rpc.method();
        let payload = bincode::serialize(&(self.key.0, self.key.1, rpc))
            .map_err(|e| CallFailure::Refused(e.to_string()))?;
        let channel = self
            .channels
            .get(&self.addr)
            .await
            .map_err(CallFailure::Unreachable)?;
        let reply = channel
            .call(
                RAFT_SERVICE,
                method,
                Bytes::from(payload),
                Bytes::new(),
                timeout,
            )
            .await
            .map_err(|e| CallFailure::Unreachable(e.to_string()))?;
        let answer: Result<RaftRpcReply, String> = bincode::deserialize(&reply.payload)
            .map_err(|e| CallFailure::Refused(format!("undecodable answer: {e}")))?;
        answer.map_err(CallFailure::Refused)
    }

    async fn send_file(
        &self,
        id: u64,
        dir: &std::path::Path,
        name: &str,
    ) -> Result<(), CallFailure> {
        let file = std::fs::File::open(dir.join(name))
            .map_err(|e| CallFailure::Refused(format!("{name}: {e}")))?;
        let file_len = file
            .metadata()
            .map_err(|e| CallFailure::Refused(e.to_string()))?
            .len();
        let mut offset = 0u64;
        loop {
            let want = usize::try_from((file_len - offset).min(SNAPSHOT_PIECE as u64))
                .unwrap_or(SNAPSHOT_PIECE);
            let mut data = vec![0u8; want];
            let mut got = 0;
            while got < want {
                match file.read_at(&mut data[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => return Err(CallFailure::Refused(format!("{name}: {e}"))),
                }
            }
            data.truncate(got);
            // The first piece creates the file; later all-zero pieces stay holes.
            if offset == 0 || data.iter().any(|b| *b != 0) {
                let piece = RaftRpc::SnapshotPiece {
                    id,
                    file: name.to_string(),
                    file_len,
                    offset,
                    data,
                };
                match self.call(piece, PIECE_DEADLINE).await? {
                    RaftRpcReply::SnapshotAck => {}
                    _ => return Err(CallFailure::Refused("unexpected answer".into())),
                }
            }
            offset += got as u64;
            if got == 0 || offset >= file_len {
                return Ok(());
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFiles;

    /// openraft's sequential stream (one AppendEntries in flight, each answer read before
    /// the next request), except that a commit-only request is held for [`COMMIT_HOLD`]
    /// and dropped when the next request comes meanwhile. Dropping one is safe: the next
    /// request carries the same or a newer commit index, and openraft's queue of requests
    /// in flight takes the later answer as acknowledging the dropped one with the later
    /// one's sending time, so the leader lease only counts what a follower answered.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        struct State<'s, S> {
            client: &'s mut PeerClient,
            input: S,
            first: bool,
            ended: bool,
        }
        let state = State {
            client: self,
            input,
            first: true,
            ended: false,
        };
        let strm = futures::stream::unfold(Some(state), move |state| {
            let option = option.clone();
            async move {
                let mut st = state?;
                let mut held: Option<AppendEntriesRequest<TypeConfig>> = None;
                let req = loop {
                    let next = match held.take() {
                        None if st.ended => return None,
                        None => match st.input.next().await {
                            Some(req) => req,
                            None => return None,
                        },
                        Some(h) => match tokio::time::timeout(COMMIT_HOLD, st.input.next()).await {
                            Ok(Some(req)) => req,
                            Ok(None) => {
                                st.ended = true;
                                break h;
                            }
                            Err(_) => break h,
                        },
                    };
                    if next.entries.is_empty() && !st.first {
                        held = Some(next);
                        continue;
                    }
                    break next;
                };
                st.first = false;
                let prev = req.prev_log_id;
                let last = req.entries.last().map(|e| e.log_id).or(prev);
                let answer = match st
                    .client
                    .call(RaftRpc::Append(req), option.soft_ttl())
                    .await
                {
                    Ok(RaftRpcReply::Append(r)) => r,
                    Ok(_) => {
                        let e = CallFailure::Refused("unexpected answer".into()).into_rpc();
                        return Some((Err(e), None));
                    }
                    Err(e) => return Some((Err(e.into_rpc()), None)),
                };
                // As openraft's sequential stream: a refusal, or a part of the entries
                // taken, ends the stream; openraft starts the next one from what matched.
                let go_on = match &answer {
                    AppendEntriesResponse::Success => true,
                    AppendEntriesResponse::PartialSuccess(matched) => *matched == last,
                    AppendEntriesResponse::Conflict | AppendEntriesResponse::HigherVote(_) => false,
                };
                let result = answer.into_stream_result(prev, last);
                Some((Ok(result), go_on.then_some(st)))
            }
        });
        let strm: BoxStream<'s, _> = Box::pin(strm);
        Box::pin(async move { Ok(strm) })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::Append(rpc), option.soft_ttl()).await {
            Ok(RaftRpcReply::Append(r)) => Ok(r),
            Ok(_) => Err(CallFailure::Refused("unexpected answer".into()).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::Vote(rpc), option.soft_ttl()).await {
            Ok(RaftRpcReply::Vote(r)) => Ok(r),
            Ok(_) => Err(CallFailure::Refused("unexpected answer".into()).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::PreVote(rpc), option.soft_ttl()).await {
            Ok(RaftRpcReply::Vote(r)) => Ok(r),
            Ok(_) => Err(CallFailure::Refused("unexpected answer".into()).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let operator = self
            .operator_transfer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|(to, at)| to == self.target && at.elapsed() < OPERATOR_TRANSFER_WINDOW);
        let rpc = RaftRpc::Transfer { req, operator };
        match self.call(rpc, option.soft_ttl()).await {
            Ok(RaftRpcReply::Transfer(r)) => Ok(r),
            Ok(_) => Err(CallFailure::Refused("unexpected answer".into()).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let id: u64 = rand::random();
        self.call(RaftRpc::SnapshotBegin { id }, PIECE_DEADLINE)
            .await
            .map_err(CallFailure::into_streaming)?;
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&snapshot.snapshot.dir)
            .map_err(|e| CallFailure::Refused(e.to_string()).into_streaming())?;
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && is_chunk_file_name(name)
            {
                names.push(name.to_string());
            }
        }
        let (mut sent, mut bytes) = (0usize, 0u64);
        for name in &names {
            match self.send_file(id, &snapshot.snapshot.dir, name).await {
                Ok(()) => sent += 1,
                // Removed meanwhile (a temporary file renamed): not part of the copyset.
                Err(CallFailure::Refused(why)) if why.contains("No such file") => continue,
                Err(e) => return Err(e.into_streaming()),
            }
            bytes += std::fs::metadata(snapshot.snapshot.dir.join(name)).map_or(0, |m| m.len());
        }
        let finish = RaftRpc::SnapshotFinish {
            id,
            vote,
            meta: snapshot.meta.clone(),
        };
        let answer = self
            .call(finish, PIECE_DEADLINE * 3)
            .await
            .map_err(CallFailure::into_streaming)?;
        tracing::info!(copyset = ?self.key, to = %self.addr, files = sent, bytes, meta = %snapshot.meta, "sent a snapshot");
        match answer {
            RaftRpcReply::Snapshot(r) => Ok(r),
            _ => Err(CallFailure::Refused("unexpected answer".into()).into_streaming()),
        }
    }
}

/// The files a snapshot carries: chunk data, sn and clone records, never a temporary.
/// Also what a receiver accepts as a file name (network input: no path separators).
pub(crate) fn is_chunk_file_name(name: &str) -> bool {
    name.starts_with("chunk_")
        && !name.ends_with(".tmp")
        && !name.contains('/')
        && !name.contains("..")
        && name.len() < 128
}
