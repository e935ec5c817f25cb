//! The chunkserver's RPC handlers: Curve's `ChunkService` and `CliService2`. Every change
//! to a copyset's chunks (WriteChunk, CreateCloneChunk, RecoverChunk's paste) is proposed
//! to the copyset's Raft group and answered once committed and applied here; reads are
//! served by the leader after Raft confirms its leadership (a lease, else a quorum round)
//! and its state machine has applied everything committed before. Every failure a request
//! can cause becomes a CHUNK_OP_STATUS (or a gRPC status for GetLeader), never a panic.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use curve_proto::chunkserver::chunk_service_server::ChunkService;
use curve_proto::chunkserver::cli_service2_server::CliService2;
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse, GetChunkInfoRequest,
    GetChunkInfoResponse, GetLeaderRequest2, GetLeaderResponse2, TransferLeaderRequest2,
    TransferLeaderResponse2, UpdateEpochRequest, UpdateEpochResponse,
};
use curve_proto::common::Peer;
use curve_proto::local::local_chunk_server_server::LocalChunkServer;
use curve_proto::local::{IdentifyRequest, IdentifyResponse};
use openraft::ReadPolicy;
use tonic::{Request, Response, Status};

use crate::clone::{
    Bitmap, CloneMeta, CurveOrigin, LOCATION_LIMIT, OriginKind, curve_location, parse_location,
};
use crate::copyset::{CopysetState, peer_id_text};
use crate::origin::{ORIGIN_DEADLINE, Origin};
use crate::raft::Cmd;
use crate::store::{ChunkKey, ChunkStore, ChunkView, SnapshotError};

/// What GetLeader fails with while no leader is known (braft's text).
pub(crate) const NO_LEADER_MESSAGE: &str = "no leader known for this copyset";

/// How long a read waits for the leader's state machine to apply what was committed
/// before it (a new leader replaying its log); then it is REDIRECTED and retried.
const READ_APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a write waits for its entry to be committed and applied; then it is
/// answered FAILURE_UNKNOWN (a status the client retries), as a write that missed a
/// majority was before. Curve's client gives up on an RPC after 1 s and resends it.
const PROPOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// State shared by all handlers of one chunkserver.
pub(crate) struct Node {
    pub id: u32,
    chunk_size: u32,
    block_size: u32,
    store: Arc<ChunkStore>,
    copysets: HashMap<(u32, u32), Arc<CopysetState>>,
    /// Per-fileId epoch set by UpdateEpoch (memory only, as upstream's epoch map).
    epochs: Mutex<HashMap<u64, u64>>,
    /// Fill `redirect` in REDIRECTED answers to reads and writes. Upstream's chunkserver
    /// does not (its code for it is commented out), so clients must find the leader with
    /// GetLeader; the local cluster does the same unless asked.
    redirect_hints: bool,
    /// Reads the origins of clone chunks; `None`: clone reads and RecoverChunk fail.
    origin: Option<Arc<dyn Origin>>,
}

/// Why a CliService2 call has no answer. Over baidu_std the call fails with the errno
/// that upstream's chunkserver (braft) gives; over gRPC with the nearest status.
pub(crate) enum CliRefusal {
    /// ENOENT: the copyset is not hosted here.
    NotHosted(String),
    /// EAGAIN: GetLeader while no leader is known.
    NoLeader,
    /// EPERM: TransferLeader asked of a member that does not lead.
    NotLeader(String),
    /// EINVAL: TransferLeader to a peer that is not a member.
    NotMember(String),
}

impl CliRefusal {
    /// The errno brpc carries, and the message.
    pub fn errno(&self) -> (i32, String) {
        use curve_brpc::errors::{SYS_EAGAIN, SYS_EINVAL, SYS_ENOENT, SYS_EPERM};
        match self {
            CliRefusal::NotHosted(why) => (SYS_ENOENT, why.clone()),
            CliRefusal::NoLeader => (SYS_EAGAIN, NO_LEADER_MESSAGE.to_string()),
            CliRefusal::NotLeader(why) => (SYS_EPERM, why.clone()),
            CliRefusal::NotMember(why) => (SYS_EINVAL, why.clone()),
        }
    }
}

impl From<CliRefusal> for Status {
    fn from(refusal: CliRefusal) -> Status {
        match refusal {
            CliRefusal::NotHosted(why) => Status::not_found(why),
            CliRefusal::NoLeader => Status::unavailable(NO_LEADER_MESSAGE),
            CliRefusal::NotLeader(why) => Status::failed_precondition(why),
            CliRefusal::NotMember(why) => Status::invalid_argument(why),
        }
    }
}

/// What a request's offset and size turned out to be once validated.
struct Range {
    offset: u32,
    size: u32,
}

fn status_response(status: ChunkOpStatus) -> ChunkResponse {
    ChunkResponse {
        status: status as i32,
        ..Default::default()
    }
}

impl Node {
    pub fn new(
        id: u32,
        chunk_size: u32,
        block_size: u32,
        store: Arc<ChunkStore>,
        copysets: HashMap<(u32, u32), Arc<CopysetState>>,
        redirect_hints: bool,
        origin: Option<Arc<dyn Origin>>,
    ) -> Self {
        Node {
            id,
            chunk_size,
            block_size,
            store,
            copysets,
            epochs: Mutex::new(HashMap::new()),
            redirect_hints,
            origin,
        }
    }

    fn copyset(&self, logical_pool_id: u32, copyset_id: u32) -> Option<&Arc<CopysetState>> {
        self.copysets.get(&(logical_pool_id, copyset_id))
    }

    pub fn copysets(&self) -> impl Iterator<Item = &Arc<CopysetState>> {
        self.copysets.values()
    }

    /// The copyset a Raft RPC is for.
    pub fn raft_group(&self, logical_pool_id: u32, copyset_id: u32) -> Option<&Arc<CopysetState>> {
        self.copyset(logical_pool_id, copyset_id)
    }

    /// Confirms through Raft that this member leads (the leader lease, else a heartbeat
    /// round to a quorum) and waits until its state machine has applied every entry
    /// committed before: what a linearizable read needs. `false`: REDIRECTED.
    async fn linearize(&self, copyset: &CopysetState) -> bool {
        if !copyset.quorum_recently_acked() {
            return false;
        }
        let confirmed = tokio::time::timeout(
            READ_APPLY_WAIT,
            copyset.raft.get_read_linearizer(ReadPolicy::LeaseRead),
        )
        .await;
        let linearizer = match confirmed {
            Err(_) => return false,
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::debug!(copyset = %copyset.name(), error = %e, "read refused: leadership not confirmed");
                return false;
            }
        };
        matches!(
            linearizer
                .try_await_ready(&copyset.raft, Some(READ_APPLY_WAIT))
                .await,
            Ok(Ok(_))
        )
    }

    /// Proposes `cmd` to the copyset's Raft group and answers once it is committed and
    /// applied here. Any failure (not the leader, leadership lost before the commit,
    /// the group stopped) is REDIRECTED without a hint, as upstream answers a braft
    /// task that failed: the entry may still be committed by the next leader, and the
    /// client resends the same bytes.
    async fn propose(&self, copyset: &CopysetState, cmd: Cmd) -> ChunkResponse {
        // As braft's leader steps down once no quorum answered for an election timeout:
        // a leader cut off from its followers takes no new writes.
        if !copyset.quorum_recently_acked() {
            return status_response(ChunkOpStatus::Redirected);
        }
        let proposed = tokio::time::timeout(PROPOSE_DEADLINE, copyset.raft.client_write(cmd)).await;
        let Ok(proposed) = proposed else {
            // Not committed in time (followers gone, or slow): it may still commit; the
            // client retries the same bytes.
            return status_response(ChunkOpStatus::FailureUnknown);
        };
        match proposed {
            Ok(resp) => ChunkResponse {
                status: resp.data.status,
                chunk_sn: resp.data.chunk_sn,
                applied_index: Some(resp.log_id.index),
                ..Default::default()
            },
            Err(e) => {
                tracing::debug!(copyset = %copyset.name(), error = %e, "proposal failed");
                status_response(ChunkOpStatus::Redirected)
            }
        }
    }

    /// `offset + size ≤ chunk_size`, both multiples of the block size (Curve's
    /// CheckRequestOffsetAndLength). A missing offset or size is refused: without them
    /// there is nothing well-defined to read or write.
    fn check_range(&self, offset: Option<u32>, size: Option<u32>) -> Option<Range> {
        let (offset, size) = (offset?, size?);
        let block = self.block_size.max(1);
        let fits = u64::from(offset) + u64::from(size) <= u64::from(self.chunk_size);
        (fits && offset % block == 0 && size % block == 0).then_some(Range { offset, size })
    }

    /// REDIRECTED, with the leader's PeerId if hints are on and a leader is known
    /// (otherwise the client asks GetLeader).
    fn redirect(&self, copyset: &CopysetState) -> ChunkResponse {
        ChunkResponse {
            status: ChunkOpStatus::Redirected as i32,
            redirect: self
                .redirect_hints
                .then(|| copyset.leader().map(peer_id_text))
                .flatten(),
            ..Default::default()
        }
    }

    fn epoch_too_old(&self, file_id: Option<u64>, epoch: Option<u64>) -> bool {
        let (Some(file_id), Some(epoch)) = (file_id, epoch) else {
            return false;
        };
        let epochs = self.epochs.lock().unwrap_or_else(PoisonError::into_inner);
        epochs
            .get(&file_id)
            .is_some_and(|&recorded| recorded != epoch)
    }

    /// What ReadChunk and WriteChunk check first, in this order: the op type matches
    /// the method, the range is valid, the copyset is hosted here and led by us. The
    /// refusal is the whole answer; it is built once per refused request, so its size
    /// costs nothing worth a box.
    #[allow(clippy::result_large_err)]
    fn admit(
        &self,
        req: &ChunkRequest,
        op: ChunkOpType,
    ) -> Result<(&Arc<CopysetState>, Range, ChunkKey), ChunkResponse> {
        if req.op_type != op as i32 {
            return Err(status_response(ChunkOpStatus::InvalidRequest));
        }
        let Some(range) = self.check_range(req.offset, req.size) else {
            return Err(status_response(ChunkOpStatus::InvalidRequest));
        };
        let Some(copyset) = self.copyset(req.logic_pool_id, req.copyset_id) else {
            return Err(status_response(ChunkOpStatus::CopysetNotexist));
        };
        if !copyset.is_leader() {
            return Err(self.redirect(copyset));
        }
        let key = ChunkKey {
            logical_pool_id: req.logic_pool_id,
            copyset_id: req.copyset_id,
            chunk_id: req.chunk_id,
        };
        Ok((copyset, range, key))
    }

    /// ReadChunk, as upstream's `ReadChunkRequest::OnApply`: a missing chunk is
    /// CHUNK_NOTEXIST unless the request names a clone source, whose bytes are then the
    /// answer; a clone chunk with unwritten pages in the range answers the origin's bytes
    /// for those pages. Fetched pages are not pasted into the chunk (upstream's default,
    /// `clone.enable_paste=false`): a read stays a read, RecoverChunk fills chunks.
    pub(crate) async fn read(&self, req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, key) = match self.admit(&req, ChunkOpType::ChunkOpRead) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if !self.linearize(copyset).await {
            // No hint: we may no longer be the leader, and do not know who is.
            return status_response(ChunkOpStatus::Redirected);
        }
        let source = match clone_source(&req) {
            Ok(source) => source,
            Err(refusal) => return refusal,
        };
        let (offset, len) = (u64::from(range.offset), u64::from(range.size));
        let origin = match self.store.view(key) {
            Ok(ChunkView::Missing) => match source {
                Some(source) => source,
                None => return status_response(ChunkOpStatus::ChunkNotexist),
            },
            Ok(ChunkView::Clone(meta)) if !self.written(&meta, offset, len) => {
                match parse_location(&meta.location) {
                    Ok(origin) => origin,
                    Err(e) => {
                        tracing::warn!(?key, error = %e, "clone chunk's origin unreadable");
                        return status_response(ChunkOpStatus::FailureUnknown);
                    }
                }
            }
            Ok(ChunkView::Plain | ChunkView::Clone(_)) => {
                return self.local_read(copyset, key, range).await;
            }
            Err(e) => {
                tracing::warn!(?key, error = %e, "chunk read failed");
                return status_response(ChunkOpStatus::DiskFail);
            }
        };
        let fetched = match self.read_origin(&origin, offset, range.size as usize).await {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(?key, source = %origin.source, error = %e, "origin read failed");
                return status_response(ChunkOpStatus::FailureUnknown);
            }
        };
        // The chunk may have been created or written meanwhile: what it holds now wins
        // over the origin, page by page (upstream's ReadThenMerge).
        match self.merge_with_chunk(copyset, key, offset, fetched).await {
            Ok(data) => ChunkResponse {
                status: ChunkOpStatus::Success as i32,
                applied_index: Some(copyset.applied_index()),
                attachment: Some(Bytes::from(data)),
                ..Default::default()
            },
            Err(e) => {
                tracing::warn!(?key, error = %e, "chunk read failed");
                status_response(ChunkOpStatus::DiskFail)
            }
        }
    }

    /// ReadChunkSnapshot, as upstream's `ReadSnapshotRequest`: the chunk's bytes as they
    /// were at `sn` (store/cow.rs), from the leader once it is known to lead (as ReadChunk).
    pub(crate) async fn read_snapshot(&self, req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, key) = match self.admit(&req, ChunkOpType::ChunkOpReadSnap) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if !self.linearize(copyset).await {
            return status_response(ChunkOpStatus::Redirected);
        }
        let store = self.store.clone();
        let lock = copyset.io_lock.clone();
        let (sn, offset, len) = (
            req.sn.unwrap_or(0),
            u64::from(range.offset),
            range.size as usize,
        );
        let result = run_io(len, move || {
            let _applying = lock.read().unwrap_or_else(PoisonError::into_inner);
            Ok::<_, io::Error>(store.read_snapshot(key, sn, offset, len))
        })
        .await;
        match result {
            Ok(Ok(data)) => ChunkResponse {
                status: ChunkOpStatus::Success as i32,
                applied_index: Some(copyset.applied_index()),
                attachment: Some(Bytes::from(data)),
                ..Default::default()
            },
            Ok(Err(SnapshotError::NotExist)) => status_response(ChunkOpStatus::ChunkNotexist),
            Ok(Err(SnapshotError::Io(e))) | Err(e) => {
                tracing::warn!(?key, sn, error = %e, "chunk snapshot read failed");
                status_response(ChunkOpStatus::DiskFail)
            }
            Ok(Err(other)) => {
                tracing::warn!(?key, sn, error = ?other, "chunk snapshot read refused");
                status_response(ChunkOpStatus::FailureUnknown)
            }
        }
    }

    async fn local_read(
        &self,
        copyset: &CopysetState,
        key: ChunkKey,
        range: Range,
    ) -> ChunkResponse {
        let store = self.store.clone();
        let lock = copyset.io_lock.clone();
        let (offset, len) = (u64::from(range.offset), range.size as usize);
        let result = run_io(len, move || {
            let _applying = lock.read().unwrap_or_else(PoisonError::into_inner);
            store.read(key, offset, len)
        })
        .await;
        match result {
            Ok(Some(data)) => ChunkResponse {
                status: ChunkOpStatus::Success as i32,
                applied_index: Some(copyset.applied_index()),
                attachment: Some(Bytes::from(data)),
                ..Default::default()
            },
            Ok(None) => status_response(ChunkOpStatus::ChunkNotexist),
            Err(e) => {
                tracing::warn!(?key, error = %e, "chunk read failed");
                status_response(ChunkOpStatus::DiskFail)
            }
        }
    }

    /// Whether every page of `offset..offset + len` of a clone chunk is written.
    fn written(&self, meta: &CloneMeta, offset: u64, len: u64) -> bool {
        let (first, last) = self.store.pages_of(offset, len);
        meta.bitmap.all_set(first, last)
    }

    /// `fetched` (the origin's bytes of the range at `offset`) with the pages the chunk
    /// holds now in their place.
    async fn merge_with_chunk(
        &self,
        copyset: &CopysetState,
        key: ChunkKey,
        offset: u64,
        fetched: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        let len = fetched.len();
        let store = self.store.clone();
        let lock = copyset.io_lock.clone();
        run_io(len, move || {
            let _applying = lock.read().unwrap_or_else(PoisonError::into_inner);
            let written: Option<Bitmap> = match store.view(key)? {
                ChunkView::Missing => return Ok(fetched),
                ChunkView::Plain => None,
                ChunkView::Clone(meta) => Some(meta.bitmap),
            };
            let Some(mut local) = store.read(key, offset, len)? else {
                return Ok(fetched);
            };
            let Some(written) = written else {
                return Ok(local);
            };
            let block = u64::from(store.block_size());
            let (first, last) = store.pages_of(offset, len as u64);
            for (from, to, is_written) in written.runs(first, last) {
                if is_written {
                    continue;
                }
                let start =
                    usize::try_from(u64::from(from) * block - offset).map_err(io::Error::other)?;
                let end = usize::try_from(u64::from(to + 1) * block - offset)
                    .map_err(io::Error::other)?
                    .min(len);
                if let (Some(dst), Some(src)) = (local.get_mut(start..end), fetched.get(start..end))
                {
                    dst.copy_from_slice(src);
                }
            }
            Ok(local)
        })
        .await
    }

    /// `len` bytes at `offset` of the chunk whose origin is `origin`, within
    /// [`ORIGIN_DEADLINE`]; exactly `len` bytes or an error.
    async fn read_origin(
        &self,
        origin: &CurveOrigin,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, String> {
        let Some(reader) = &self.origin else {
            return Err("this chunkserver has no origin reader configured".to_string());
        };
        let at = origin
            .offset
            .checked_add(offset)
            .ok_or_else(|| format!("origin offset {} + {offset} overflows", origin.offset))?;
        let read = match origin.kind {
            OriginKind::Curve => reader.read(&origin.source, at, len),
            OriginKind::S3 => reader.read_object(&origin.source, at, len),
        };
        match tokio::time::timeout(ORIGIN_DEADLINE, read).await {
            Ok(Ok(data)) if data.len() == len => Ok(data),
            Ok(Ok(data)) => Err(format!("{} bytes read of {len}", data.len())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {ORIGIN_DEADLINE:?}")),
        }
    }

    /// WriteChunk, run to its end on a task of its own whatever becomes of the caller:
    /// both servers drop an RPC's future when the client's connection goes, and a
    /// proposal is not to be abandoned half-way (it is committed or not either way).
    pub(crate) async fn write_to_the_end(self: &Arc<Self>, req: ChunkRequest) -> ChunkResponse {
        let node = self.clone();
        tokio::spawn(async move { node.write(req).await })
            .await
            .unwrap_or_else(|_| status_response(ChunkOpStatus::FailureUnknown))
    }

    /// CreateCloneChunk, run to its end for the same reasons as a write.
    pub(crate) async fn create_clone_to_the_end(
        self: &Arc<Self>,
        req: ChunkRequest,
    ) -> ChunkResponse {
        let node = self.clone();
        tokio::spawn(async move { node.create_clone_chunk(req).await })
            .await
            .unwrap_or_else(|_| status_response(ChunkOpStatus::FailureUnknown))
    }

    /// DeleteChunkSnapshotOrCorrectSn, run to its end for the same reasons as a write.
    pub(crate) async fn delete_chunk_snapshot_to_the_end(
        self: &Arc<Self>,
        req: ChunkRequest,
    ) -> ChunkResponse {
        let node = self.clone();
        tokio::spawn(async move { node.delete_chunk_snapshot(req).await })
            .await
            .unwrap_or_else(|_| status_response(ChunkOpStatus::FailureUnknown))
    }

    /// RecoverChunk, run to its end for the same reasons as a write.
    pub(crate) async fn recover_to_the_end(self: &Arc<Self>, req: ChunkRequest) -> ChunkResponse {
        let node = self.clone();
        tokio::spawn(async move { node.recover_chunk(req).await })
            .await
            .unwrap_or_else(|_| status_response(ChunkOpStatus::FailureUnknown))
    }

    /// WriteChunk: checked here (range, epoch, data), then through the log; the sn check
    /// (BACKWARD) and the write happen when the entry is applied, alike on every replica.
    async fn write(&self, mut req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, _key) = match self.admit(&req, ChunkOpType::ChunkOpWrite) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if self.epoch_too_old(req.file_id, req.epoch) {
            return status_response(ChunkOpStatus::EpochTooOld);
        }
        // Upstream crashes on a short attachment; we refuse it before touching anything.
        let data = req.attachment.take().unwrap_or_default();
        // A write of no bytes is refused too: there is nothing to log.
        if data.len() != range.size as usize || data.is_empty() {
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        // A write with clone fields to a missing chunk creates a clone chunk of that
        // location (upstream's WriteChunkRequest and CSDataStore::WriteChunk).
        let location = match clone_source(&req) {
            Ok(source) => source.map(|s| curve_location(&s.source, s.offset)),
            Err(refusal) => return refusal,
        };
        let cmd = Cmd::Write {
            chunk_id: req.chunk_id,
            offset: range.offset,
            sn: req.sn,
            location,
            data,
        };
        self.propose(copyset, cmd).await
    }

    /// CreateCloneChunk (upstream's CreateCloneChunkRequest and
    /// CSDataStore::CreateCloneChunk): a clone chunk of `location` with every page
    /// unwritten, on every replica. The same location, sn and correctedSn again is
    /// SUCCESS; a chunk that exists otherwise is CHUNK_EXIST. `size` must be the chunk
    /// size; sn 0, no location or one that is neither `<path>:<offset>@cs` nor
    /// `<object key>@s3` is INVALID_REQUEST.
    async fn create_clone_chunk(&self, req: ChunkRequest) -> ChunkResponse {
        if req.op_type != ChunkOpType::ChunkOpCreateClone as i32
            || req.size != Some(self.chunk_size)
        {
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        let Some(copyset) = self.copyset(req.logic_pool_id, req.copyset_id) else {
            return status_response(ChunkOpStatus::CopysetNotexist);
        };
        if !copyset.is_leader() {
            return self.redirect(copyset);
        }
        let sn = req.sn.unwrap_or(0);
        let location = req.location.unwrap_or_default();
        if sn == 0 || location.is_empty() || location.len() > LOCATION_LIMIT {
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        if let Err(e) = parse_location(&location) {
            tracing::warn!(chunk_id = req.chunk_id, error = %e, "CreateCloneChunk refused");
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        let cmd = Cmd::CreateClone {
            chunk_id: req.chunk_id,
            sn,
            corrected_sn: req.corrected_sn.unwrap_or(0),
            location,
        };
        self.propose(copyset, cmd).await
    }

    /// DeleteChunkSnapshotOrCorrectSn (upstream's ChunkServiceImpl and DeleteSnapshotRequest),
    /// the MDS's clean of a deleted snapshot: through the log, so every replica drops the
    /// chunk's snapshot, or raises its correctedSn when it has none to drop. A request
    /// without correctedSn is INVALID_REQUEST; a missing chunk is SUCCESS.
    async fn delete_chunk_snapshot(&self, req: ChunkRequest) -> ChunkResponse {
        if req.op_type != ChunkOpType::ChunkOpDeleteSnap as i32 {
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        let Some(corrected_sn) = req.corrected_sn else {
            return status_response(ChunkOpStatus::InvalidRequest);
        };
        let Some(copyset) = self.copyset(req.logic_pool_id, req.copyset_id) else {
            return status_response(ChunkOpStatus::CopysetNotexist);
        };
        if !copyset.is_leader() {
            return self.redirect(copyset);
        }
        let cmd = Cmd::DeleteSnapshot {
            chunk_id: req.chunk_id,
            corrected_sn,
        };
        self.propose(copyset, cmd).await
    }

    /// RecoverChunk (upstream's ReadChunkRequest for CHUNK_OP_RECOVER and CloneCore):
    /// fills the unwritten pages of the range from the clone chunk's origin and pastes
    /// them on every replica through the log. A written range or a plain chunk is SUCCESS
    /// at once; a missing chunk is CHUNK_NOTEXIST, or FAILURE_UNKNOWN when the request
    /// names a clone source (upstream reads the source, then finds no chunk to paste into).
    async fn recover_chunk(&self, req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, key) = match self.admit(&req, ChunkOpType::ChunkOpRecover) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if !self.linearize(copyset).await {
            return status_response(ChunkOpStatus::Redirected);
        }
        let source = match clone_source(&req) {
            Ok(source) => source,
            Err(refusal) => return refusal,
        };
        let (offset, len) = (u64::from(range.offset), u64::from(range.size));
        let success = || ChunkResponse {
            status: ChunkOpStatus::Success as i32,
            applied_index: Some(copyset.applied_index()),
            ..Default::default()
        };
        let origin = match self.store.view(key) {
            Ok(ChunkView::Missing) if source.is_some() => {
                return status_response(ChunkOpStatus::FailureUnknown);
            }
            Ok(ChunkView::Missing) => return status_response(ChunkOpStatus::ChunkNotexist),
            Ok(ChunkView::Plain) => return success(),
            Ok(ChunkView::Clone(meta)) if self.written(&meta, offset, len) => return success(),
            Ok(ChunkView::Clone(meta)) => match parse_location(&meta.location) {
                Ok(origin) => origin,
                Err(e) => {
                    tracing::warn!(?key, error = %e, "clone chunk's origin unreadable");
                    return status_response(ChunkOpStatus::FailureUnknown);
                }
            },
            Err(e) => {
                tracing::warn!(?key, error = %e, "RecoverChunk failed");
                return status_response(ChunkOpStatus::DiskFail);
            }
        };
        let data = match self.read_origin(&origin, offset, range.size as usize).await {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(?key, source = %origin.source, error = %e, "origin read failed");
                return status_response(ChunkOpStatus::FailureUnknown);
            }
        };
        let cmd = Cmd::Paste {
            chunk_id: req.chunk_id,
            offset: range.offset,
            data: Bytes::from(data),
        };
        self.propose(copyset, cmd).await
    }

    pub(crate) fn chunk_info(&self, req: GetChunkInfoRequest) -> GetChunkInfoResponse {
        let response = |status: ChunkOpStatus| GetChunkInfoResponse {
            status: status as i32,
            ..Default::default()
        };
        let Some(copyset) = self.copyset(req.logic_pool_id, req.copyset_id) else {
            return response(ChunkOpStatus::CopysetNotexist);
        };
        if !copyset.is_leader() {
            return GetChunkInfoResponse {
                status: ChunkOpStatus::Redirected as i32,
                redirect: copyset.leader().map(peer_id_text),
                chunk_sn: Vec::new(),
            };
        }
        let key = ChunkKey {
            logical_pool_id: req.logic_pool_id,
            copyset_id: req.copyset_id,
            chunk_id: req.chunk_id,
        };
        // As upstream's: `[sn]`, or `[sn, snapshot sn]` while the chunk has a snapshot; a
        // missing chunk is a success with no sn at all.
        match self.store.versions(key) {
            Ok(versions) => GetChunkInfoResponse {
                status: ChunkOpStatus::Success as i32,
                redirect: None,
                chunk_sn: versions
                    .map(|v| std::iter::once(v.sn).chain(v.snapshot_sn).collect())
                    .unwrap_or_default(),
            },
            Err(e) => {
                tracing::warn!(?key, error = %e, "chunk info failed");
                response(ChunkOpStatus::DiskFail)
            }
        }
    }

    /// Records the epoch if it is newer; an older one than recorded is refused with
    /// EPOCH_TOO_OLD so a fenced writer cannot roll the fence back.
    pub(crate) fn update_epoch(&self, req: UpdateEpochRequest) -> UpdateEpochResponse {
        let mut epochs = self.epochs.lock().unwrap_or_else(PoisonError::into_inner);
        let recorded = epochs.entry(req.file_id).or_insert(req.epoch);
        let status = if req.epoch < *recorded {
            ChunkOpStatus::EpochTooOld
        } else {
            *recorded = req.epoch;
            ChunkOpStatus::Success
        };
        UpdateEpochResponse {
            status: status as i32,
        }
    }
}

/// The request's clone source, if it names one (both `cloneFileSource` and
/// `cloneFileOffset`, as upstream's `existCloneInfo`). An empty source path, or one too
/// long for a location, is refused: it could never be read back.
#[allow(clippy::result_large_err)]
fn clone_source(req: &ChunkRequest) -> Result<Option<CurveOrigin>, ChunkResponse> {
    let (Some(source), Some(offset)) = (&req.clone_file_source, req.clone_file_offset) else {
        return Ok(None);
    };
    if source.is_empty() || curve_location(source, offset).len() > LOCATION_LIMIT {
        return Err(status_response(ChunkOpStatus::InvalidRequest));
    }
    Ok(Some(CurveOrigin::volume(source, offset)))
}

/// Positioned IO up to this size runs on the reactor thread: on page cache it takes
/// microseconds, less than the ~35 µs cross-vCPU wakeup a hand-off to the blocking pool
/// costs on our VMs. Larger transfers (memcpy of MiBs, possibly page faults) go to the
/// blocking pool so one big read cannot stall every other connection.
const INLINE_IO_MAX: usize = 256 * 1024;

/// Runs a positioned IO inline or on the blocking pool (see [`INLINE_IO_MAX`]).
async fn run_io<T: Send + 'static>(
    len: usize,
    io: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if len <= INLINE_IO_MAX {
        return io();
    }
    tokio::task::spawn_blocking(io)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// The handlers' face: a cheap clone of the shared node for each tonic service.
#[derive(Clone)]
pub(crate) struct Handlers(pub Arc<Node>);

#[tonic::async_trait]
impl ChunkService for Handlers {
    async fn read_chunk(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Ok(Response::new(self.0.read(request.into_inner()).await))
    }

    async fn write_chunk(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Ok(Response::new(
            self.0.write_to_the_end(request.into_inner()).await,
        ))
    }

    async fn read_chunk_snapshot(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Ok(Response::new(
            self.0.read_snapshot(request.into_inner()).await,
        ))
    }

    async fn delete_chunk_snapshot_or_correct_sn(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Ok(Response::new(
            self.0
                .delete_chunk_snapshot_to_the_end(request.into_inner())
                .await,
        ))
    }

    async fn get_chunk_info(
        &self,
        request: Request<GetChunkInfoRequest>,
    ) -> Result<Response<GetChunkInfoResponse>, Status> {
        Ok(Response::new(self.0.chunk_info(request.into_inner())))
    }

    async fn update_epoch(
        &self,
        request: Request<UpdateEpochRequest>,
    ) -> Result<Response<UpdateEpochResponse>, Status> {
        Ok(Response::new(self.0.update_epoch(request.into_inner())))
    }

    async fn create_clone_chunk(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Ok(Response::new(
            self.0.create_clone_to_the_end(request.into_inner()).await,
        ))
    }

    async fn recover_chunk(
        &self,
        request: Request<ChunkRequest>,
    ) -> Result<Response<ChunkResponse>, Status> {
        Ok(Response::new(
            self.0.recover_to_the_end(request.into_inner()).await,
        ))
    }
}

impl Node {
    /// CliService2.GetLeader, from Raft's state: the leader this member knows of (itself,
    /// or the one it follows).
    pub(crate) fn get_leader(
        &self,
        req: &GetLeaderRequest2,
    ) -> Result<GetLeaderResponse2, CliRefusal> {
        let copyset = self.hosted(req.logic_pool_id, req.copyset_id)?;
        let Some(leader) = copyset.leader() else {
            return Err(CliRefusal::NoLeader);
        };
        Ok(GetLeaderResponse2 {
            leader: Peer {
                id: Some(u64::from(leader.id)),
                address: Some(peer_id_text(leader)),
            },
        })
    }

    fn hosted(
        &self,
        logical_pool_id: u32,
        copyset_id: u32,
    ) -> Result<&Arc<CopysetState>, CliRefusal> {
        self.copyset(logical_pool_id, copyset_id).ok_or_else(|| {
            CliRefusal::NotHosted(format!(
                "copyset {logical_pool_id}-{copyset_id} is not hosted here"
            ))
        })
    }

    /// CliService2.TransferLeader, as braft's `transfer_leadership_to`: answers at once;
    /// Raft hands over once the transferee's log has the leader's last entry (or gives
    /// up after an election timeout). Transferring to the leader itself succeeds.
    pub(crate) async fn transfer_leader(
        &self,
        req: &TransferLeaderRequest2,
    ) -> Result<TransferLeaderResponse2, CliRefusal> {
        let copyset = self.hosted(req.logic_pool_id, req.copyset_id)?;
        let address = req.transferee.address.as_deref().unwrap_or_default();
        let Some(to) = copyset.member_by_address(address) else {
            return Err(CliRefusal::NotMember(format!(
                "{address:?} is not a member of copyset {}",
                copyset.name()
            )));
        };
        if !copyset.is_leader() {
            return Err(CliRefusal::NotLeader(format!(
                "this chunkserver does not lead copyset {}",
                copyset.name()
            )));
        }
        if copyset.members().get(to).map(|m| m.id) != Some(self.id) {
            copyset
                .transfer_to(to)
                .await
                .map_err(CliRefusal::NotLeader)?;
        }
        Ok(TransferLeaderResponse2 {})
    }

    /// LocalChunkServer.Identify: what tells a gRPC client it may send chunk data here.
    pub(crate) fn identify(&self) -> IdentifyResponse {
        IdentifyResponse {
            implementation: curve_proto::LOCAL_CHUNKSERVER_IDENTITY.to_string(),
            chunkserver_id: self.id,
        }
    }
}

#[tonic::async_trait]
impl CliService2 for Handlers {
    async fn get_leader(
        &self,
        request: Request<GetLeaderRequest2>,
    ) -> Result<Response<GetLeaderResponse2>, Status> {
        Ok(Response::new(self.0.get_leader(request.get_ref())?))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest2>,
    ) -> Result<Response<TransferLeaderResponse2>, Status> {
        Ok(Response::new(
            self.0.transfer_leader(request.get_ref()).await?,
        ))
    }
}

#[tonic::async_trait]
impl LocalChunkServer for Handlers {
    async fn identify(
        &self,
        _request: Request<IdentifyRequest>,
    ) -> Result<Response<IdentifyResponse>, Status> {
        Ok(Response::new(self.0.identify()))
    }
}
