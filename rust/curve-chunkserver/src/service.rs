//! The chunkserver's RPC handlers: Curve's `ChunkService` and `CliService2.GetLeader`,
//! and curvefs's own `ReplicaService` that followers answer. Every failure a request can
//! cause becomes a CHUNK_OP_STATUS (or a gRPC status for GetLeader), never a panic.

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
use curve_proto::local::replica_service_server::ReplicaService;
use curve_proto::local::{
    IdentifyRequest, IdentifyResponse, ReplicaStateRequest, ReplicaStateResponse,
    ReplicateWriteRequest, ReplicateWriteResponse,
};
use tonic::{Request, Response, Status};

use crate::clone::{
    Bitmap, CloneMeta, CurveOrigin, LOCATION_LIMIT, curve_location, parse_location,
};
use crate::copyset::{CopysetState, Lagging, Role, peer_id_text};
use crate::election::{HANDOVER, HEARTBEAT_OFFSET, NO_LEADER_MESSAGE, share_lagging};
use crate::origin::{ORIGIN_DEADLINE, Origin};
use crate::replication::{
    CloneFields, PeerChannels, ReplicaOutcome, replicate_write, write_committed,
};
use crate::store::{ChunkKey, ChunkStore, ChunkView, CreateCloneError, SnapshotError, WriteError};
use curve_proto::local::ReplicateKind;

/// Positioned IO up to this size runs on the reactor thread: on page cache it takes
/// microseconds, less than the ~35 µs cross-vCPU wakeup a hand-off to the blocking pool
/// costs on our VMs. Larger transfers (memcpy of MiBs, possibly page faults) go to the
/// blocking pool so one big write cannot stall every other connection.
const INLINE_IO_MAX: usize = 256 * 1024;

/// State shared by all handlers of one chunkserver.
pub(crate) struct Node {
    pub id: u32,
    chunk_size: u32,
    block_size: u32,
    store: Arc<ChunkStore>,
    copysets: HashMap<(u32, u32), Arc<CopysetState>>,
    /// Per-fileId epoch set by UpdateEpoch (memory only, as upstream's epoch map).
    epochs: Mutex<HashMap<u64, u64>>,
    channels: PeerChannels,
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
            channels: PeerChannels::default(),
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

    pub fn channels(&self) -> &PeerChannels {
        &self.channels
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
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
        if !copyset.lease_valid() {
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
        match self.merge_with_chunk(key, offset, fetched).await {
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
    /// were at `sn` (store/cow.rs), from the leader under its lease.
    pub(crate) async fn read_snapshot(&self, req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, key) = match self.admit(&req, ChunkOpType::ChunkOpReadSnap) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if !copyset.lease_valid() {
            return status_response(ChunkOpStatus::Redirected);
        }
        let store = self.store.clone();
        let (sn, offset, len) = (
            req.sn.unwrap_or(0),
            u64::from(range.offset),
            range.size as usize,
        );
        let result = run_io(len, move || {
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
        let (offset, len) = (u64::from(range.offset), range.size as usize);
        let result = run_io(len, move || store.read(key, offset, len)).await;
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
        key: ChunkKey,
        offset: u64,
        fetched: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        let len = fetched.len();
        let store = self.store.clone();
        run_io(len, move || {
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
        match tokio::time::timeout(ORIGIN_DEADLINE, reader.read(&origin.source, at, len)).await {
            Ok(Ok(data)) if data.len() == len => Ok(data),
            Ok(Ok(data)) => Err(format!("{} bytes read of {len}", data.len())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {ORIGIN_DEADLINE:?}")),
        }
    }

    /// WriteChunk, run to its end on a task of its own whatever becomes of the caller.
    /// Both servers drop an RPC's future when the client's connection goes, and a write
    /// dropped half-way may be on the leader and not on a follower, or land late (its
    /// blocking thread still running) after its range was released to a newer write of
    /// the same bytes, which a replica would then hold the older data over for good.
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

    /// RecoverChunk, run to its end for the same reasons as a write.
    pub(crate) async fn recover_to_the_end(self: &Arc<Self>, req: ChunkRequest) -> ChunkResponse {
        let node = self.clone();
        tokio::spawn(async move { node.recover_chunk(req).await })
            .await
            .unwrap_or_else(|_| status_response(ChunkOpStatus::FailureUnknown))
    }

    async fn write(&self, mut req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, key) = match self.admit(&req, ChunkOpType::ChunkOpWrite) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if !copyset.lease_valid() {
            // As for reads: a leader no majority answered for a lease may have been
            // replaced while it was stopped, and a write it still finds in its socket
            // (sent before the client timed out and went to the new leader, where newer
            // writes to the same bytes may have followed) must reach neither its replica
            // nor a follower that now follows another leader. No hint: we may not lead.
            return status_response(ChunkOpStatus::Redirected);
        }
        if self.epoch_too_old(req.file_id, req.epoch) {
            return status_response(ChunkOpStatus::EpochTooOld);
        }
        // Upstream crashes on a short attachment; we refuse it before touching anything.
        let data = req.attachment.take().unwrap_or_default();
        // A write of no bytes is refused too: it would be replicated as one, which a
        // follower cannot tell from data lost on the way.
        if data.len() != range.size as usize || data.is_empty() {
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        // A write with clone fields to a missing chunk creates a clone chunk of that
        // location (upstream's WriteChunkRequest and CSDataStore::WriteChunk).
        let location = match clone_source(&req) {
            Ok(source) => source.map(|s| curve_location(&s.source, s.offset)),
            Err(refusal) => return refusal,
        };
        // Checked before replicating so a BACKWARD write reaches no replica.
        match self.store.admit_sn(key, req.sn, location.as_deref()) {
            Ok(()) => {}
            Err(WriteError::Backward) => {
                return ChunkResponse {
                    status: ChunkOpStatus::Backward as i32,
                    chunk_sn: self.store.sn(key).ok().flatten(),
                    ..Default::default()
                };
            }
            Err(WriteError::Conflict(why)) => {
                tracing::warn!(?key, sn = ?req.sn, why, "write refused");
                return status_response(ChunkOpStatus::FailureUnknown);
            }
            Err(WriteError::Io(e)) => {
                tracing::warn!(?key, error = %e, "chunk sn update failed");
                return status_response(ChunkOpStatus::DiskFail);
            }
        }
        let fields = CloneFields {
            location,
            ..CloneFields::default()
        };
        self.apply_everywhere(copyset, key, range, data, req.sn, fields)
            .await
    }

    /// Applies a write, paste or clone creation here and on every live follower
    /// (`fields.kind` says which), and answers whether it is committed.
    async fn apply_everywhere(
        &self,
        copyset: &CopysetState,
        key: ChunkKey,
        range: Range,
        data: Bytes,
        sn: Option<u64>,
        fields: CloneFields,
    ) -> ChunkResponse {
        let in_flight = copyset
            .begin_write(key.chunk_id, u64::from(range.offset), u64::from(range.size))
            .await;
        let offset = u64::from(range.offset);
        if fields.kind == ReplicateKind::CreateClone {
            // Here first: a conflict here goes to no follower (CHUNK_EXIST).
            let (location, corrected) = (
                fields.location.clone().unwrap_or_default(),
                fields.corrected_sn.unwrap_or(0),
            );
            let created = self
                .store
                .create_clone(key, sn.unwrap_or(0), corrected, &location);
            match created {
                Ok(()) => {}
                Err(CreateCloneError::Conflict) => {
                    in_flight.finish(&[]);
                    return status_response(ChunkOpStatus::ChunkExist);
                }
                Err(CreateCloneError::Io(e)) => {
                    in_flight.finish(&[]);
                    tracing::warn!(?key, error = %e, "clone chunk creation failed");
                    return status_response(ChunkOpStatus::DiskFail);
                }
            }
        }
        // The local write and the followers' run concurrently: the write is idempotent
        // at its offset, so a failure on either side is settled by the client's retry.
        let store = self.store.clone();
        let local_data = data.clone();
        let kind = fields.kind;
        let local = run_io(data.len(), move || match kind {
            ReplicateKind::Paste => match store.paste(key, offset, &local_data)? {
                true => Ok(()),
                false => Err(io::Error::other("the clone chunk vanished")),
            },
            ReplicateKind::CreateClone => Ok(()),
            _ => store.write(key, offset, &local_data, sn),
        });
        let remote = replicate_write(
            &self.channels,
            copyset,
            self.id,
            key,
            range.offset,
            &data,
            sn,
            &fields,
        );
        let (local, mut outcomes) = futures::join!(local, remote);
        if kind != ReplicateKind::Write {
            // A follower without the chunk (it missed its creation) or with another one
            // (CHUNK_EXIST) misses this too: its catch-up copy brings it the leader's.
            for (_, outcome) in &mut outcomes {
                let missing = ReplicaOutcome::Refused(ChunkOpStatus::ChunkNotexist as u32);
                let other = ReplicaOutcome::Refused(ChunkOpStatus::ChunkExist as u32);
                if *outcome == missing || *outcome == other {
                    *outcome = ReplicaOutcome::Unreachable;
                }
            }
        }
        let backward = ReplicaOutcome::Refused(ChunkOpStatus::Backward as u32);
        if outcomes.iter().any(|(_, o)| *o == backward) && copyset.is_leader() {
            // A follower serves a newer leadership: ours is over (it is not committed).
            copyset.step_down();
        }
        let missed: Vec<usize> = outcomes
            .iter()
            .filter(|(_, o)| *o != ReplicaOutcome::Applied)
            .map(|(i, _)| *i)
            .collect();
        in_flight.finish(&missed);
        if let Err(e) = local {
            tracing::warn!(?key, ?kind, error = %e, "chunk write failed");
            return status_response(ChunkOpStatus::DiskFail);
        }
        let applied_index = copyset.bump_applied_index();
        if !write_committed(copyset, &outcomes) {
            if !missed.is_empty() {
                // It may be on some replicas: the members without it may lack it.
                copyset.note_missed(&missed);
            }
            tracing::warn!(
                ?key,
                ?kind,
                ?outcomes,
                "write not on a majority of replicas"
            );
            return status_response(ChunkOpStatus::FailureUnknown);
        }
        if !missed.is_empty() {
            // Acknowledged without some members: every replica holding it must record
            // that they lack writes before the client hears of it (see copyset.rs).
            let version = copyset.note_missed(&missed);
            if !copyset.is_leader() {
                // Leadership moved while it was in flight: the new leader's record does
                // not name the members that missed it, and only a leader may share one.
                return status_response(ChunkOpStatus::FailureUnknown);
            }
            let holders: Vec<usize> = outcomes
                .iter()
                .filter(|(_, o)| *o == ReplicaOutcome::Applied)
                .map(|(i, _)| *i)
                .collect();
            if !share_lagging(self, copyset, &holders, version).await {
                tracing::warn!(?key, "followers did not record the members lacking writes");
                return status_response(ChunkOpStatus::FailureUnknown);
            }
        }
        copyset.note_majority();
        ChunkResponse {
            status: ChunkOpStatus::Success as i32,
            applied_index: Some(applied_index),
            ..Default::default()
        }
    }

    /// CreateCloneChunk (upstream's CreateCloneChunkRequest and
    /// CSDataStore::CreateCloneChunk): a clone chunk of `location` with every page
    /// unwritten, on every replica. The same location, sn and correctedSn again is
    /// SUCCESS; a chunk that exists otherwise is CHUNK_EXIST. `size` must be the chunk
    /// size; sn 0, no location or one that is not `<path>:<offset>@cs` is INVALID_REQUEST
    /// (an `@s3` one too: there is no S3 here).
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
        if !copyset.lease_valid() {
            return status_response(ChunkOpStatus::Redirected);
        }
        let key = ChunkKey {
            logical_pool_id: req.logic_pool_id,
            copyset_id: req.copyset_id,
            chunk_id: req.chunk_id,
        };
        let sn = req.sn.unwrap_or(0);
        let location = req.location.unwrap_or_default();
        if sn == 0 || location.is_empty() || location.len() > LOCATION_LIMIT {
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        if let Err(e) = parse_location(&location) {
            tracing::warn!(?key, error = %e, "CreateCloneChunk refused");
            return status_response(ChunkOpStatus::InvalidRequest);
        }
        let fields = CloneFields {
            kind: ReplicateKind::CreateClone,
            location: Some(location),
            corrected_sn: Some(req.corrected_sn.unwrap_or(0)),
            bitmap: None,
        };
        let whole = Range {
            offset: 0,
            size: self.chunk_size,
        };
        self.apply_everywhere(copyset, key, whole, Bytes::new(), Some(sn), fields)
            .await
    }

    /// RecoverChunk (upstream's ReadChunkRequest for CHUNK_OP_RECOVER and CloneCore):
    /// fills the unwritten pages of the range from the clone chunk's origin and pastes
    /// them on every replica. A written range or a plain chunk is SUCCESS at once; a
    /// missing chunk is CHUNK_NOTEXIST, or FAILURE_UNKNOWN when the request names a clone
    /// source (upstream reads the source, then finds no chunk to paste into).
    async fn recover_chunk(&self, req: ChunkRequest) -> ChunkResponse {
        let (copyset, range, key) = match self.admit(&req, ChunkOpType::ChunkOpRecover) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if !copyset.lease_valid() {
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
        let fields = CloneFields {
            kind: ReplicateKind::Paste,
            ..CloneFields::default()
        };
        self.apply_everywhere(copyset, key, range, Bytes::from(data), None, fields)
            .await
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

    /// A follower applying its leader's write. The leader already checked sn and epoch;
    /// the range is checked again because this is a network input like any other.
    pub(crate) async fn apply_replicated(&self, req: ReplicateWriteRequest) -> ChunkOpStatus {
        let Some(copyset) = self.copyset(req.logic_pool_id, req.copyset_id) else {
            return ChunkOpStatus::CopysetNotexist;
        };
        if !copyset.is_member(req.leader_id) || req.leader_id == self.id {
            return ChunkOpStatus::InvalidRequest;
        }
        if req.offset == HEARTBEAT_OFFSET && req.data.is_empty() {
            return Self::heartbeat(copyset, &req);
        }
        let kind = match req.kind.map(ReplicateKind::try_from) {
            None => ReplicateKind::Write,
            Some(Ok(kind)) => kind,
            Some(Err(_)) => return ChunkOpStatus::InvalidRequest,
        };
        let carries_data = !matches!(kind, ReplicateKind::CreateClone | ReplicateKind::CloneState);
        if carries_data && req.data.is_empty() {
            // Leaders replicate only writes that carry data (an empty WriteChunk is
            // refused before it is replicated); answering success for none would tell the
            // leader this replica holds bytes it never received.
            tracing::warn!(copyset = %copyset.name(), chunk_id = req.chunk_id, offset = req.offset, "replicated write without data refused");
            return ChunkOpStatus::InvalidRequest;
        }
        let Ok(size) = u32::try_from(req.data.len()) else {
            return ChunkOpStatus::InvalidRequest;
        };
        let range = if carries_data {
            match self.check_range(Some(req.offset), Some(size)) {
                Some(range) => range,
                None => return ChunkOpStatus::InvalidRequest,
            }
        } else {
            Range { offset: 0, size: 0 }
        };
        // Two leaders must not both commit: the one that is leader here refuses, and a
        // follower applies only its own leader's writes. A deposed leader (it was
        // stopped or cut off while another took over) is told so and steps down; a
        // sender this member does not follow yet (a new leader whose first heartbeat
        // has not arrived) is refused without that.
        match copyset.role() {
            Role::Follower(leader) if copyset.member_index(req.leader_id) == Some(leader) => {}
            Role::Follower(_) if req.term.unwrap_or(0) < copyset.term() => {
                return ChunkOpStatus::Backward;
            }
            Role::Leader | Role::Follower(_) | Role::Unknown => {
                return ChunkOpStatus::Redirected;
            }
        }
        let key = ChunkKey {
            logical_pool_id: req.logic_pool_id,
            copyset_id: req.copyset_id,
            chunk_id: req.chunk_id,
        };
        let status = match kind {
            ReplicateKind::Write => self.apply_replicated_write(key, range, req).await,
            ReplicateKind::Raw => {
                let store = self.store.clone();
                let (offset, data) = (u64::from(range.offset), req.data);
                match run_io(data.len(), move || store.write_raw(key, offset, &data)).await {
                    Ok(()) => ChunkOpStatus::Success,
                    Err(e) => {
                        tracing::warn!(?key, error = %e, "catch-up write failed");
                        ChunkOpStatus::DiskFail
                    }
                }
            }
            ReplicateKind::Paste => {
                let store = self.store.clone();
                let (offset, data) = (u64::from(range.offset), req.data);
                match run_io(data.len(), move || store.paste(key, offset, &data)).await {
                    Ok(true) => ChunkOpStatus::Success,
                    Ok(false) => ChunkOpStatus::ChunkNotexist,
                    Err(e) => {
                        tracing::warn!(?key, error = %e, "replicated paste failed");
                        ChunkOpStatus::DiskFail
                    }
                }
            }
            ReplicateKind::CreateClone => {
                let location = req.location.unwrap_or_default();
                let sn = req.sn.unwrap_or(0);
                if sn == 0 || parse_location(&location).is_err() {
                    return ChunkOpStatus::InvalidRequest;
                }
                let corrected = req.corrected_sn.unwrap_or(0);
                match self.store.create_clone(key, sn, corrected, &location) {
                    Ok(()) => ChunkOpStatus::Success,
                    Err(CreateCloneError::Conflict) => ChunkOpStatus::ChunkExist,
                    Err(CreateCloneError::Io(e)) => {
                        tracing::warn!(?key, error = %e, "replicated clone creation failed");
                        ChunkOpStatus::DiskFail
                    }
                }
            }
            ReplicateKind::CloneState => {
                let state = match req.location {
                    None => None,
                    Some(location) => {
                        let pages = self.chunk_size / self.block_size.max(1);
                        let bitmap = req
                            .clone_bitmap
                            .as_deref()
                            .and_then(|b| Bitmap::from_bytes(pages, b));
                        let (Some(bitmap), Ok(_)) = (bitmap, parse_location(&location)) else {
                            return ChunkOpStatus::InvalidRequest;
                        };
                        Some(CloneMeta {
                            location,
                            corrected_sn: req.corrected_sn.unwrap_or(0),
                            bitmap,
                        })
                    }
                };
                match self.store.install_clone_state(key, req.sn, state) {
                    Ok(()) => ChunkOpStatus::Success,
                    Err(e) => {
                        tracing::warn!(?key, error = %e, "catch-up chunk state failed");
                        ChunkOpStatus::DiskFail
                    }
                }
            }
        };
        if status == ChunkOpStatus::Success {
            copyset.bump_applied_index();
        }
        status
    }

    /// A follower applying its leader's WriteChunk.
    async fn apply_replicated_write(
        &self,
        key: ChunkKey,
        range: Range,
        req: ReplicateWriteRequest,
    ) -> ChunkOpStatus {
        // A follower keeps the highest sn it has seen but never refuses its leader.
        match self.store.admit_sn(key, req.sn, req.location.as_deref()) {
            Ok(()) | Err(WriteError::Backward) => {}
            Err(WriteError::Conflict(why)) => {
                tracing::warn!(?key, sn = ?req.sn, why, "replicated write refused");
                return ChunkOpStatus::FailureUnknown;
            }
            Err(WriteError::Io(e)) => {
                tracing::warn!(?key, error = %e, "replicated sn update failed");
                return ChunkOpStatus::DiskFail;
            }
        }
        let store = self.store.clone();
        let offset = u64::from(range.offset);
        let data = req.data;
        let sn = req.sn;
        match run_io(data.len(), move || store.write(key, offset, &data, sn)).await {
            Ok(()) => ChunkOpStatus::Success,
            Err(e) => {
                tracing::warn!(?key, error = %e, "replicated write failed");
                ChunkOpStatus::DiskFail
            }
        }
    }
}

impl Node {
    /// A leader's heartbeat (format in election.rs): adopt it as leader unless it is
    /// from an older term, and note whether it says we hold every write.
    fn heartbeat(copyset: &CopysetState, req: &ReplicateWriteRequest) -> ChunkOpStatus {
        let Some(sender) = copyset.member_index(req.leader_id) else {
            return ChunkOpStatus::InvalidRequest;
        };
        let term = req.sn.unwrap_or(0);
        // An older term is refused unless it comes from the leader we follow anyway:
        // terms are per node and restart from what each persisted, so after a cluster
        // restart the leader everyone agreed on may carry a lower one.
        let from_our_leader = copyset.role() == Role::Follower(sender);
        let seen = copyset.observe_term(term);
        if seen == std::cmp::Ordering::Less && !from_our_leader {
            return ChunkOpStatus::Backward;
        }
        // Same term on two leaders: the earlier member in order keeps it. Compared with
        // the term we held before this heartbeat: a leader of an older term (one that
        // was stopped while the others elected a new one, and thawed) follows the newer
        // one, which must not be made to step down in its favour.
        if copyset.is_leader() && seen == std::cmp::Ordering::Equal && copyset.self_index() < sender
        {
            return ChunkOpStatus::Backward;
        }
        if let Some(version) = req.lagging_version {
            let incoming = Lagging {
                term: req.lagging_term.unwrap_or(0),
                version,
                ids: req.lagging.iter().copied().collect(),
            };
            // We hold a record from a newer leadership than the sender's: it must not
            // lead on an older view of who lacks writes.
            if !copyset.adopt_lagging(incoming) {
                return ChunkOpStatus::Backward;
            }
        }
        copyset.follow(sender);
        // Asked before this heartbeat counts: it is about what we held until now.
        let answer = if req.chunk_id == 0 && copyset.recently_in_sync() {
            ChunkOpStatus::ChunkExist
        } else {
            ChunkOpStatus::Success
        };
        let in_sync = req.chunk_id == 1 || req.chunk_id == HANDOVER;
        {
            let mut election = copyset.election();
            let now = std::time::Instant::now();
            election.last_leader_contact = Some(now);
            if in_sync {
                election.last_heartbeat = Some(now);
            }
        }
        // The sender stopped leading for a TransferLeader naming us; a record saying we
        // lack writes overrides it (the transfer then fails and probes sort it out).
        if req.chunk_id == HANDOVER && !copyset.self_lagging() {
            copyset.lead_with(None, false);
        }
        answer
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
    Ok(Some(CurveOrigin {
        source: source.clone(),
        offset,
    }))
}

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
    /// CliService2.GetLeader. A member earlier in order than us that asks (it names
    /// itself in `peer`) gets leadership back once it holds every write.
    pub(crate) fn get_leader(
        &self,
        req: &GetLeaderRequest2,
    ) -> Result<GetLeaderResponse2, CliRefusal> {
        let copyset = self.hosted(req.logic_pool_id, req.copyset_id)?;
        if copyset.role() == Role::Leader
            && let Some(asking) = req
                .peer
                .as_ref()
                .and_then(|p| p.address.as_deref())
                .and_then(|a| copyset.member_by_address(a))
            && asking < copyset.self_index()
            && copyset.hands_back()
            && copyset.follower_ready_to_lead(asking)
        {
            tracing::info!(copyset = %copyset.name(), to = asking, "handing leadership back");
            copyset.follow(asking);
        }
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
    /// the leader hands over once the transferee has caught up (election.rs), or gives
    /// up after `TRANSFER_TIMEOUT`. Transferring to the leader itself succeeds.
    pub(crate) fn transfer_leader(
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
        if to != copyset.self_index() {
            copyset.start_transfer(to);
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
        Ok(Response::new(self.0.transfer_leader(request.get_ref())?))
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

impl Node {
    /// What a starting peer asks before it claims leadership (election.rs `discover`).
    fn replica_state(&self, req: ReplicaStateRequest) -> ReplicaStateResponse {
        let Some(copyset) = self.copyset(req.logic_pool_id, req.copyset_id) else {
            return ReplicaStateResponse {
                status: ChunkOpStatus::CopysetNotexist as u32,
                ..Default::default()
            };
        };
        let lagging = copyset.lagging();
        ReplicaStateResponse {
            status: 0,
            term: Some(copyset.term()),
            lagging_term: Some(lagging.term),
            lagging_version: Some(lagging.version),
            lagging: lagging.ids.into_iter().collect(),
        }
    }
}

#[tonic::async_trait]
impl ReplicaService for Handlers {
    async fn replica_state(
        &self,
        request: Request<ReplicaStateRequest>,
    ) -> Result<Response<ReplicaStateResponse>, Status> {
        Ok(Response::new(self.0.replica_state(request.into_inner())))
    }

    async fn replicate_write(
        &self,
        request: Request<ReplicateWriteRequest>,
    ) -> Result<Response<ReplicateWriteResponse>, Status> {
        let status = self.0.apply_replicated(request.into_inner()).await;
        Ok(Response::new(ReplicateWriteResponse {
            status: status as u32,
        }))
    }
}
