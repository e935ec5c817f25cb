//! The MDS client: one RPC per namespace call, with upstream's failover and retry rules
//! (§11.3) and the status → error mapping (§7), including curvefs's deliberate deviations.
//!
//! Only transport failures are retried; an MDS `statusCode` is a final answer. Deviations
//! from upstream, on purpose:
//! - `kNotSupported` is returned at once, like any status. Upstream re-sends
//!   Rename/DeleteFile/ChangeOwner for `mds.maxRetryMS` (8 s); `client` retries only the
//!   one case where the answer can change (a page file in the MDS's start-up window).
//! - OpenFile returns the mapped code (NotExist, AuthFail, …) where upstream returns FAILED
//!   for every MDS-side refusal.
//! - IO-path calls (GetOrAllocateSegment, GetChunkServerListInCopySets) are bounded by
//!   `mds.maxRetryMsInIOPath` instead of retrying forever.
//! - GetOrAllocateSegment(allocate) answered `kSegmentAllocateError` (pool full) fails at
//!   once with NO_SPACE instead of being retried forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use curve_proto::mds::topology::{
    CopySetServerInfo, GetChunkServerListInCopySetsRequest, GetChunkServerListInCopySetsResponse,
    GetClusterInfoRequest, GetClusterInfoResponse, ListPoolsetRequest, ListPoolsetResponse,
};
use curve_proto::mds::{
    ChangeOwnerRequest, ChangeOwnerResponse, CloneSourceSegment, CloseFileRequest,
    CloseFileResponse, CreateCloneFileRequest, CreateCloneFileResponse, CreateFileRequest,
    CreateFileResponse, DeAllocateSegmentRequest, DeAllocateSegmentResponse, DeleteFileRequest,
    DeleteFileResponse, ExtendFileRequest, ExtendFileResponse, FileInfo, FileStatus, FileType,
    GetFileInfoRequest, GetFileInfoResponse, GetOrAllocateSegmentRequest,
    GetOrAllocateSegmentResponse, ListDirRequest, ListDirResponse, OpenFileRequest,
    OpenFileResponse, PageFileSegment, ProtoSession, ReFreshSessionRequest, ReFreshSessionResponse,
    RecoverFileRequest, RecoverFileResponse, RenameFileRequest, RenameFileResponse,
    SetCloneFileStatusRequest, SetCloneFileStatusResponse, StatusCode,
};

use crate::auth::Credentials;
use crate::auth::UserInfo;
use crate::conf::ClientConfig;
use crate::error::{Cause, Error, ErrorCode, Result};
use crate::events::warn_limited;
use crate::metrics::MdsMetrics;
use crate::transport::{self, RpcMethod, Transport, TransportError, methods};

/// The version string sent with OpenFile and RefreshSession. It must compare (as a string)
/// at least "0.0.5.3", or the MDS refuses snapshots of the open file.
pub const CLIENT_VERSION: &str = concat!("curvefs-", env!("CARGO_PKG_VERSION"));

/// Which retry budget a call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `mds.maxRetryMS`.
    Metadata,
    /// `mds.maxRetryMsInIOPath`, with `mds.waitSleepMs` pauses after
    /// `mds.normalRetryTimesBeforeTriggerWait` ordinary failures.
    IoPath,
}

/// How a new page file is laid out: its stripes and its poolset (empty: the MDS's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub stripe_unit: u64,
    pub stripe_count: u64,
    pub poolset: String,
}

/// This client's endpoint as reported to the MDS (`mds.registerToMDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEndpoint {
    pub ip: String,
    pub port: u32,
}

/// What a RefreshSession told us (§10).
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    Ok(Box<FileInfo>),
    /// kSessionNotExist / kFileNotExists: the file is gone or renamed away.
    Gone,
    /// kOwnerAuthFail.
    AuthFail,
    /// Transport failure after the budget, or any other status: nothing changes.
    Failed,
}

pub struct MdsClient {
    transport: Arc<dyn Transport>,
    addrs: Vec<String>,
    /// Index of the address that last worked, shared by all calls.
    working: AtomicUsize,
    conf: Arc<ClientConfig>,
    endpoint: Option<ClientEndpoint>,
    pub metrics: MdsMetrics,
}

fn status_of(code: i32) -> StatusCode {
    StatusCode::try_from(code).unwrap_or(StatusCode::KInternalError)
}

/// An MDS status as a result. A refusal is an answer, not a fault (a stat of a missing
/// file is one): DEBUG, with the path it was about.
fn check(code: i32, what: &str, path: &str) -> Result<()> {
    match status_of(code) {
        StatusCode::KOk => Ok(()),
        s => {
            tracing::debug!(
                method = what,
                path,
                status = s.as_str_name(),
                "MDS answered {what} of {path:?} with {}",
                s.as_str_name()
            );
            Err(Error::from_mds(s, what))
        }
    }
}

fn check_topology(code: i32, what: &str) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::failed(format!("{what}: topology status {code}")))
    }
}

impl MdsClient {
    pub fn new(
        transport: Arc<dyn Transport>,
        conf: Arc<ClientConfig>,
        endpoint: Option<ClientEndpoint>,
    ) -> Self {
        Self {
            transport,
            addrs: conf.mds_addrs.clone(),
            working: AtomicUsize::new(0),
            conf,
            endpoint,
            metrics: MdsMetrics::default(),
        }
    }

    /// The MDS address calls go to first (the one that last answered).
    pub fn current_addr(&self) -> String {
        let n = self.addrs.len().max(1);
        self.addrs
            .get(self.working.load(Ordering::Relaxed) % n)
            .cloned()
            .unwrap_or_default()
    }

    /// Sends the request `make()` builds (rebuilt per attempt so `date` stays fresh) with
    /// failover and retries, and decodes the answer.
    pub async fn call<Req, Resp>(
        &self,
        method: &RpcMethod,
        kind: CallKind,
        make: impl Fn() -> Req,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let c = &self.conf;
        let n = self.addrs.len().max(1);
        let base = Duration::from_millis(c.mds_rpc_timeout_ms);
        let max_timeout = Duration::from_millis(c.mds_max_rpc_timeout_ms.max(c.mds_rpc_timeout_ms));
        let interval = Duration::from_micros(c.mds_rpc_retry_interval_us);
        let budget = Duration::from_millis(match kind {
            CallKind::Metadata => c.mds_max_retry_ms,
            CallKind::IoPath => c.mds_max_retry_ms_in_io_path,
        });
        let deadline = crate::deadline_after(budget);
        let started = Instant::now();
        let stats = self.metrics.method(method.method);
        let mut attempts: u32 = 0;
        let mut idx = self.working.load(Ordering::Relaxed) % n;
        let mut timeout = base;
        let mut failures_here: u32 = 0;
        let mut normal_failures: u32 = 0;
        let mut unreachable_in_a_row = 0usize;
        let mut last_err: Option<TransportError> = None;
        loop {
            let now = Instant::now();
            // Every call gets at least one attempt, even with a zero budget.
            if now >= deadline && last_err.is_some() {
                let cause = match &last_err {
                    Some(TransportError::Connect { .. }) => Cause::Unreachable,
                    _ => Cause::TimedOut,
                };
                let e = last_err.map(|e| e.to_string()).unwrap_or_default();
                stats.error();
                tracing::error!(
                    method = method.method,
                    mds = %self.addrs.join(","),
                    attempts,
                    cause = ?cause,
                    budget_ms = budget.as_millis() as u64,
                    "MDS call gave up: {e}"
                );
                return Err(Error::failed(format!(
                    "{}: MDS unreachable within {budget:?}: {e}",
                    method.method
                ))
                .because(cause));
            }
            let attempt_timeout = timeout.min(deadline.saturating_duration_since(now)).max(
                // A sliver of budget still deserves a real attempt.
                Duration::from_millis(1),
            );
            let Some(addr) = self.addrs.get(idx) else {
                return Err(Error::failed("no MDS address configured"));
            };
            let req = make();
            attempts += 1;
            match transport::unary::<Req, Resp>(
                self.transport.as_ref(),
                addr,
                method,
                &req,
                attempt_timeout,
            )
            .await
            {
                Ok(resp) => {
                    self.working.store(idx, Ordering::Relaxed);
                    stats.ok(0, started.elapsed());
                    return Ok(resp);
                }
                Err(TransportError::Rejected(message)) => {
                    stats.error();
                    // The server cannot run this request at all; asking again (or another
                    // MDS of the same build) cannot change that.
                    return Err(Error::failed(format!(
                        "{}: MDS refused the request: {message}",
                        method.method
                    )));
                }
                Err(e) => {
                    if matches!(e, TransportError::Timeout(_)) {
                        stats.timeout();
                    } else {
                        stats.error();
                    }
                    warn_limited!(
                        mds = %addr,
                        method = method.method,
                        attempt = attempts,
                        cause = %e,
                        "MDS call failed; retrying"
                    );
                    let switch;
                    let mut pause = Duration::ZERO;
                    match &e {
                        TransportError::Connect { .. } => {
                            switch = true;
                            unreachable_in_a_row += 1;
                            // Pause only once every address has refused in a row, so a
                            // dead first address costs nothing but a dead cluster does
                            // not spin.
                            if unreachable_in_a_row >= n {
                                unreachable_in_a_row = 0;
                                pause = interval;
                            }
                        }
                        TransportError::Timeout(_) => {
                            failures_here += 1;
                            timeout = timeout.saturating_mul(2).min(max_timeout);
                            switch = failures_here > c.mds_max_failed_times_before_change_mds;
                        }
                        _ => {
                            failures_here += 1;
                            normal_failures += 1;
                            switch = failures_here > c.mds_max_failed_times_before_change_mds;
                            pause = interval;
                            if kind == CallKind::IoPath
                                && normal_failures > c.mds_normal_retry_times_before_trigger_wait
                            {
                                pause = Duration::from_millis(c.mds_wait_sleep_ms);
                            }
                        }
                    }
                    if switch {
                        let w = self.working.load(Ordering::Relaxed) % n;
                        let from = idx;
                        idx = if w != idx { w } else { (idx + 1) % n };
                        self.working.store(idx, Ordering::Relaxed);
                        if idx != from {
                            self.metrics.failover();
                            let to = self.addrs.get(idx).map(String::as_str).unwrap_or("");
                            warn_limited!(
                                from = %addr,
                                to,
                                method = method.method,
                                cause = %e,
                                "MDS failover: {addr} failed ({e}); trying {to}"
                            );
                        }
                        timeout = base;
                        failures_here = 0;
                    }
                    last_err = Some(e);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !pause.is_zero() && !left.is_zero() {
                        tokio::time::sleep(pause.min(left)).await;
                    }
                }
            }
        }
    }

    pub async fn create_file(
        &self,
        path: &str,
        user: &UserInfo,
        file_type: FileType,
        length: Option<u64>,
        layout: Option<&CreateOptions>,
    ) -> Result<()> {
        let resp: CreateFileResponse = self
            .call(&methods::CREATE_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                let (stripe_unit, stripe_count, poolset) = match layout {
                    Some(o) => (
                        Some(o.stripe_unit),
                        Some(o.stripe_count),
                        Some(o.poolset.clone()),
                    ),
                    None => (None, None, None),
                };
                CreateFileRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    file_type: file_type as i32,
                    file_length: length,
                    signature: Some(cr.signature),
                    date: cr.date,
                    stripe_unit,
                    stripe_count,
                    poolset,
                }
            })
            .await?;
        check(resp.status_code, "CreateFile", path)
    }

    /// CreateCloneFile (upstream's SnapshotClient call): a page file made for a clone, in
    /// status Cloning. `clone_source` is the source volume's path for a lazy clone of a
    /// volume, "" for one whose chunks the caller creates (a clone from a snapshot).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_clone_file(
        &self,
        path: &str,
        user: &UserInfo,
        length: u64,
        seq: u64,
        chunk_size: u32,
        clone_source: &str,
        layout: &CreateOptions,
    ) -> Result<FileInfo> {
        let resp: CreateCloneFileResponse = self
            .call(&methods::CREATE_CLONE_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                CreateCloneFileRequest {
                    file_name: path.to_string(),
                    file_type: FileType::InodePagefile as i32,
                    file_length: length,
                    seq,
                    chunksize: chunk_size,
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                    clone_source: clone_source.to_string(),
                    stripe_unit: Some(layout.stripe_unit),
                    stripe_count: Some(layout.stripe_count),
                    poolset: Some(layout.poolset.clone()),
                }
            })
            .await?;
        check(resp.status_code, "CreateCloneFile", path)?;
        resp.file_info
            .ok_or_else(|| Error::failed("CreateCloneFile: MDS answered OK without a FileInfo"))
    }

    /// SetCloneFileStatus: moves a clone along Cloning → CloneMetaInstalled → Cloned
    /// (`status` is a `curve.mds.FileStatus`). `file_id`, when given, must name the inode
    /// at `path` or the MDS refuses.
    pub async fn set_clone_file_status(
        &self,
        path: &str,
        user: &UserInfo,
        file_id: Option<u64>,
        status: FileStatus,
    ) -> Result<()> {
        let resp: SetCloneFileStatusResponse = self
            .call(&methods::SET_CLONE_FILE_STATUS, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                SetCloneFileStatusRequest {
                    file_name: path.to_string(),
                    file_id,
                    file_status: status as i32,
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                }
            })
            .await?;
        check(resp.status_code, "SetCloneFileStatus", path)
    }

    pub async fn get_file_info(&self, path: &str, user: &UserInfo) -> Result<FileInfo> {
        let resp: GetFileInfoResponse = self
            .call(&methods::GET_FILE_INFO, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                GetFileInfoRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                }
            })
            .await?;
        check(resp.status_code, "GetFileInfo", path)?;
        resp.file_info
            .ok_or_else(|| Error::failed("GetFileInfo: MDS answered OK without a FileInfo"))
    }

    pub async fn extend_file(&self, path: &str, user: &UserInfo, new_size: u64) -> Result<()> {
        let resp: ExtendFileResponse = self
            .call(&methods::EXTEND_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                ExtendFileRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    new_size,
                    signature: Some(cr.signature),
                    date: cr.date,
                }
            })
            .await?;
        check(resp.status_code, "ExtendFile", path)
    }

    /// Releases the segment at `offset` (discard). A segment that is not allocated is
    /// released already: that is success, not an error.
    pub async fn deallocate_segment(&self, path: &str, user: &UserInfo, offset: u64) -> Result<()> {
        let resp: DeAllocateSegmentResponse = self
            .call(&methods::DE_ALLOCATE_SEGMENT, CallKind::IoPath, || {
                let cr = Credentials::now(&user.owner, &user.password);
                DeAllocateSegmentRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    offset,
                    signature: Some(cr.signature),
                    date: cr.date,
                }
            })
            .await?;
        if resp.status_code == StatusCode::KSegmentNotAllocated as i32 {
            return Ok(());
        }
        check(resp.status_code, "DeAllocateSegment", path)
    }

    pub async fn delete_file(&self, path: &str, user: &UserInfo, force: bool) -> Result<()> {
        let resp: DeleteFileResponse = self
            .call(&methods::DELETE_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                DeleteFileRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                    file_id: None,
                    force_delete: Some(force),
                }
            })
            .await?;
        check(resp.status_code, "DeleteFile", path)
    }

    pub async fn recover_file(&self, path: &str, user: &UserInfo, file_id: u64) -> Result<()> {
        let resp: RecoverFileResponse = self
            .call(&methods::RECOVER_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                RecoverFileRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                    file_id: Some(file_id),
                }
            })
            .await?;
        check(resp.status_code, "RecoverFile", path)
    }

    pub async fn rename_file(&self, user: &UserInfo, old: &str, new: &str) -> Result<()> {
        let resp: RenameFileResponse = self
            .call(&methods::RENAME_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                RenameFileRequest {
                    old_file_name: old.to_string(),
                    new_file_name: new.to_string(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    old_file_id: None,
                    new_file_id: None,
                    date: cr.date,
                }
            })
            .await?;
        check(resp.status_code, "RenameFile", old)
    }

    pub async fn list_dir(&self, path: &str, user: &UserInfo) -> Result<Vec<FileInfo>> {
        let resp: ListDirResponse = self
            .call(&methods::LIST_DIR, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                ListDirRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                }
            })
            .await?;
        check(resp.status_code, "ListDir", path)?;
        Ok(resp.file_info)
    }

    pub async fn change_owner(&self, path: &str, new_owner: &str, user: &UserInfo) -> Result<()> {
        let resp: ChangeOwnerResponse = self
            .call(&methods::CHANGE_OWNER, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                ChangeOwnerRequest {
                    file_name: path.to_string(),
                    new_owner: new_owner.to_string(),
                    root_owner: cr.owner,
                    signature: cr.signature,
                    date: cr.date,
                }
            })
            .await?;
        check(resp.status_code, "ChangeOwner", path)
    }

    /// OpenFile: the session, the file's info and, for a lazy clone, its source's allocated
    /// segments. Refusals keep their mapped code (deviation: upstream returns FAILED for
    /// all of them).
    pub async fn open_file(
        &self,
        path: &str,
        user: &UserInfo,
    ) -> Result<(ProtoSession, FileInfo, Option<CloneSourceSegment>)> {
        let resp: OpenFileResponse = self
            .call(&methods::OPEN_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                OpenFileRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                    client_version: Some(CLIENT_VERSION.to_string()),
                }
            })
            .await?;
        check(resp.status_code, "OpenFile", path)?;
        match (resp.proto_session, resp.file_info) {
            (Some(s), Some(f)) if s.lease_time > 0 => Ok((s, f, resp.clone_source_segment)),
            (Some(_), Some(_)) => Err(Error::failed("OpenFile: MDS granted a zero lease")),
            _ => Err(Error::failed(
                "OpenFile: MDS answered OK without session or FileInfo",
            )),
        }
    }

    /// CloseFile; SessionNotExist counts as closed, and so does FileNotExists (deviation:
    /// upstream returns FAILED, but a file deleted or renamed away has nothing left to
    /// close).
    pub async fn close_file(&self, path: &str, user: &UserInfo) -> Result<()> {
        let resp: CloseFileResponse = self
            .call(&methods::CLOSE_FILE, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                CloseFileRequest {
                    file_name: path.to_string(),
                    // The MDS no longer issues session ids; upstream always sends "".
                    session_id: String::new(),
                    owner: cr.owner,
                    signature: Some(cr.signature),
                    date: cr.date,
                    client_ip: self.endpoint.as_ref().map(|e| e.ip.clone()),
                    client_port: self.endpoint.as_ref().map(|e| e.port),
                }
            })
            .await?;
        match status_of(resp.status_code) {
            StatusCode::KOk | StatusCode::KSessionNotExist | StatusCode::KFileNotExists => Ok(()),
            s => Err(Error::from_mds(s, "CloseFile")),
        }
    }

    pub async fn refresh_session(
        &self,
        path: &str,
        user: &UserInfo,
        session_id: &str,
    ) -> RefreshOutcome {
        let resp: Result<ReFreshSessionResponse> = self
            .call(&methods::REFRESH_SESSION, CallKind::Metadata, || {
                let cr = Credentials::now(&user.owner, &user.password);
                ReFreshSessionRequest {
                    file_name: path.to_string(),
                    session_id: session_id.to_string(),
                    owner: cr.owner,
                    date: cr.date,
                    signature: Some(cr.signature),
                    client_version: Some(CLIENT_VERSION.to_string()),
                    client_ip: self.endpoint.as_ref().map(|e| e.ip.clone()),
                    client_port: self.endpoint.as_ref().map(|e| e.port),
                }
            })
            .await;
        let Ok(resp) = resp else {
            return RefreshOutcome::Failed;
        };
        match status_of(resp.status_code) {
            StatusCode::KOk => match resp.file_info {
                Some(f) => RefreshOutcome::Ok(Box::new(f)),
                None => RefreshOutcome::Failed,
            },
            StatusCode::KSessionNotExist | StatusCode::KFileNotExists => RefreshOutcome::Gone,
            StatusCode::KOwnerAuthFail => RefreshOutcome::AuthFail,
            _ => RefreshOutcome::Failed,
        }
    }

    /// GetOrAllocateSegment. `Ok(None)`: the segment is not allocated (read path only).
    pub async fn get_or_allocate_segment(
        &self,
        path: &str,
        user: &UserInfo,
        offset: u64,
        allocate: bool,
        epoch: u64,
    ) -> Result<Option<PageFileSegment>> {
        let resp: GetOrAllocateSegmentResponse = self
            .call(&methods::GET_OR_ALLOCATE_SEGMENT, CallKind::IoPath, || {
                let cr = Credentials::now(&user.owner, &user.password);
                GetOrAllocateSegmentRequest {
                    file_name: path.to_string(),
                    owner: cr.owner,
                    offset,
                    allocate_if_not_exist: allocate,
                    seq_num: None,
                    signature: Some(cr.signature),
                    date: cr.date,
                    epoch: (allocate && epoch != 0).then_some(epoch),
                }
            })
            .await?;
        let what = "GetOrAllocateSegment";
        match status_of(resp.status_code) {
            StatusCode::KOk => match resp.page_file_segment {
                // Chunks are placed by their position in the segment asked for: those of
                // another segment would put data at the wrong file offsets.
                Some(seg) if seg.start_offset != offset => Err(Error::failed(format!(
                    "{what}: asked for the segment at {offset}, MDS answered the one at {}",
                    seg.start_offset
                ))),
                Some(seg) if !seg.chunks.is_empty() => Ok(Some(seg)),
                _ => Err(Error::failed(format!(
                    "{what}: MDS answered OK without chunks at offset {offset}"
                ))),
            },
            StatusCode::KSegmentNotAllocated if !allocate => Ok(None),
            StatusCode::KOwnerAuthFail => Err(Error::from_mds(StatusCode::KOwnerAuthFail, what)),
            StatusCode::KEpochTooOld => Err(Error::new(
                ErrorCode::EpochTooOld,
                format!("{what}: the file's epoch moved past ours"),
            )),
            StatusCode::KSegmentAllocateError => Err(Error::new(
                ErrorCode::NoSpace,
                format!("{what}: MDS could not allocate the segment at {offset} (pool full?)"),
            )),
            s => Err(Error::failed(format!(
                "{what} at offset {offset}: MDS answered {}",
                s.as_str_name()
            ))),
        }
    }

    pub async fn get_chunkserver_list_in_copysets(
        &self,
        logical_pool_id: u32,
        copyset_ids: &[u32],
    ) -> Result<Vec<CopySetServerInfo>> {
        let resp: GetChunkServerListInCopySetsResponse = self
            .call(
                &methods::GET_CHUNK_SERVER_LIST_IN_COPYSETS,
                CallKind::IoPath,
                || GetChunkServerListInCopySetsRequest {
                    logical_pool_id,
                    copyset_id: copyset_ids.to_vec(),
                },
            )
            .await?;
        check_topology(resp.status_code, "GetChunkServerListInCopySets")?;
        Ok(resp.cs_info)
    }

    pub async fn get_cluster_info(&self) -> Result<String> {
        let resp: GetClusterInfoResponse = self
            .call(&methods::GET_CLUSTER_INFO, CallKind::Metadata, || {
                GetClusterInfoRequest {}
            })
            .await?;
        check_topology(resp.status_code, "GetClusterInfo")?;
        Ok(resp.cluster_id.unwrap_or_default())
    }

    pub async fn list_poolsets(&self) -> Result<Vec<String>> {
        let resp: ListPoolsetResponse = self
            .call(&methods::LIST_POOLSET, CallKind::Metadata, || {
                ListPoolsetRequest {}
            })
            .await?;
        check_topology(resp.status_code, "ListPoolset")?;
        Ok(resp
            .poolset_infos
            .into_iter()
            .map(|p| p.poolset_name)
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use prost::Message;
    use std::sync::Mutex;

    use crate::transport::RpcReply;

    /// (endpoint, attempt number from 1) → reply.
    type Script = Box<dyn Fn(&str, usize) -> Result<Bytes, TransportError> + Send + Sync>;

    /// Answers per endpoint from a script; records every attempt.
    struct Fake {
        script: Script,
        calls: Mutex<Vec<(String, Duration, Bytes)>>,
    }

    impl Transport for Fake {
        fn call(
            &self,
            endpoint: &str,
            _method: &RpcMethod,
            request: Bytes,
            _attachment: Bytes,
            timeout: Duration,
        ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
            let mut calls = self.calls.lock().unwrap();
            calls.push((endpoint.to_string(), timeout, request));
            let r = (self.script)(endpoint, calls.len()).map(|payload| RpcReply {
                payload,
                attachment: Bytes::new(),
            });
            Box::pin(async move { r })
        }
    }

    fn ok_info() -> Bytes {
        Bytes::from(
            GetFileInfoResponse {
                status_code: StatusCode::KOk as i32,
                file_info: Some(FileInfo {
                    id: Some(7),
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        )
    }

    fn client(
        addrs: &[&str],
        script: impl Fn(&str, usize) -> Result<Bytes, TransportError> + Send + Sync + 'static,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> (MdsClient, Arc<Fake>) {
        let mut conf = ClientConfig {
            mds_addrs: addrs.iter().map(|s| s.to_string()).collect(),
            mds_rpc_retry_interval_us: 1000,
            mds_max_failed_times_before_change_mds: 2,
            ..ClientConfig::default()
        };
        tweak(&mut conf);
        let fake = Arc::new(Fake {
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
        });
        let endpoint = Some(ClientEndpoint {
            ip: "127.0.0.1".into(),
            port: 9999,
        });
        (MdsClient::new(fake.clone(), Arc::new(conf), endpoint), fake)
    }

    fn user() -> UserInfo {
        UserInfo {
            owner: "u".into(),
            password: String::new(),
        }
    }

    fn refused(ep: &str) -> TransportError {
        TransportError::Connect {
            endpoint: ep.into(),
            message: "refused".into(),
        }
    }

    #[tokio::test]
    async fn refused_address_switches_at_once_and_is_remembered() {
        let (mds, fake) = client(
            &["a:1", "b:2"],
            |ep, _| {
                if ep == "a:1" {
                    Err(refused(ep))
                } else {
                    Ok(ok_info())
                }
            },
            |_| {},
        );
        mds.get_file_info("/f", &user()).await.unwrap();
        mds.get_file_info("/f", &user()).await.unwrap();
        let eps: Vec<String> = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect();
        assert_eq!(eps, ["a:1", "b:2", "b:2"]);
    }

    #[tokio::test]
    async fn timeouts_double_then_switch_after_max_failed() {
        let (mds, fake) = client(
            &["a:1", "b:2"],
            |ep, _| {
                if ep == "a:1" {
                    Err(TransportError::Timeout(Duration::ZERO))
                } else {
                    Ok(ok_info())
                }
            },
            |c| {
                c.mds_rpc_timeout_ms = 500;
                c.mds_max_rpc_timeout_ms = 1500;
            },
        );
        mds.get_file_info("/f", &user()).await.unwrap();
        let calls = fake.calls.lock().unwrap();
        let got: Vec<(String, u128)> = calls
            .iter()
            .map(|c| (c.0.clone(), c.1.as_millis()))
            .collect();
        // Third failure on a:1 switches (maxFailedTimesBeforeChangeMDS = 2); the timeout
        // doubles, is clamped to maxRPCTimeoutMS, and resets on the switch.
        assert_eq!(
            got,
            [
                ("a:1".to_string(), 500),
                ("a:1".to_string(), 1000),
                ("a:1".to_string(), 1500),
                ("b:2".to_string(), 500),
            ]
        );
    }

    #[tokio::test]
    async fn budget_bounds_a_dead_cluster() {
        let (mds, fake) = client(
            &["a:1", "b:2"],
            |ep, _| Err(refused(ep)),
            |c| c.mds_max_retry_ms = 200,
        );
        let start = std::time::Instant::now();
        let e = mds.get_file_info("/f", &user()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Failed);
        assert!(start.elapsed() < Duration::from_secs(2));
        // Both addresses were tried, with pauses once every address refused.
        let calls = fake.calls.lock().unwrap();
        assert!(calls.len() >= 2 && calls.len() < 1000, "{}", calls.len());
    }

    #[tokio::test]
    async fn unimplemented_method_is_not_retried() {
        let (mds, fake) = client(
            &["a:1", "b:2"],
            |_, _| Err(TransportError::Rejected("no such method".into())),
            |_| {},
        );
        let e = mds.list_poolsets().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Failed);
        assert_eq!(fake.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn status_codes_are_final_and_mapped() {
        let (mds, fake) = client(
            &["a:1"],
            |_, _| {
                Ok(Bytes::from(
                    RenameFileResponse {
                        status_code: StatusCode::KNotSupported as i32,
                    }
                    .encode_to_vec(),
                ))
            },
            |_| {},
        );
        let e = mds.rename_file(&user(), "/a", "/b").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotSupport);
        // Answered at once: no retry of kNotSupported.
        assert_eq!(fake.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refresh_and_close_carry_version_and_endpoint() {
        let (mds, fake) = client(
            &["a:1"],
            |_, n| {
                Ok(Bytes::from(if n == 1 {
                    ReFreshSessionResponse {
                        status_code: StatusCode::KOk as i32,
                        session_id: String::new(),
                        file_info: Some(FileInfo::default()),
                        proto_session: None,
                    }
                    .encode_to_vec()
                } else {
                    CloseFileResponse {
                        status_code: StatusCode::KSessionNotExist as i32,
                    }
                    .encode_to_vec()
                }))
            },
            |_| {},
        );
        assert!(matches!(
            mds.refresh_session("/f", &user(), "").await,
            RefreshOutcome::Ok(_)
        ));
        mds.close_file("/f", &user()).await.unwrap();
        let calls = fake.calls.lock().unwrap();
        let r = ReFreshSessionRequest::decode(calls[0].2.clone()).unwrap();
        assert_eq!(r.client_version.as_deref(), Some(CLIENT_VERSION));
        assert!(CLIENT_VERSION > "0.0.5.3");
        assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.client_port, Some(9999));
        assert_eq!(r.signature.as_deref(), Some(""));
        let c = CloseFileRequest::decode(calls[1].2.clone()).unwrap();
        assert_eq!(c.session_id, "");
        assert_eq!(c.client_port, Some(9999));
    }

    #[tokio::test]
    async fn segment_lookup_statuses() {
        let status = std::sync::Arc::new(Mutex::new(StatusCode::KSegmentNotAllocated));
        let s2 = status.clone();
        let (mds, fake) = client(
            &["a:1"],
            move |_, _| {
                Ok(Bytes::from(
                    GetOrAllocateSegmentResponse {
                        status_code: *s2.lock().unwrap() as i32,
                        page_file_segment: None,
                    }
                    .encode_to_vec(),
                ))
            },
            |_| {},
        );
        assert!(
            mds.get_or_allocate_segment("/f", &user(), 0, false, 0)
                .await
                .unwrap()
                .is_none()
        );
        for (st, want) in [
            (StatusCode::KParaError, ErrorCode::Failed),
            (StatusCode::KFileNotExists, ErrorCode::Failed),
            (StatusCode::KOwnerAuthFail, ErrorCode::AuthFail),
            (StatusCode::KEpochTooOld, ErrorCode::EpochTooOld),
            (StatusCode::KSegmentAllocateError, ErrorCode::NoSpace),
            (StatusCode::KOk, ErrorCode::Failed), // OK without chunks
        ] {
            *status.lock().unwrap() = st;
            let e = mds
                .get_or_allocate_segment("/f", &user(), 0, true, 3)
                .await
                .unwrap_err();
            assert_eq!(e.code, want, "{st:?}");
        }
        let calls = fake.calls.lock().unwrap();
        let first = GetOrAllocateSegmentRequest::decode(calls[0].2.clone()).unwrap();
        assert!(!first.allocate_if_not_exist);
        assert_eq!(first.epoch, None);
        let last = GetOrAllocateSegmentRequest::decode(calls[1].2.clone()).unwrap();
        assert!(last.allocate_if_not_exist);
        assert_eq!(last.epoch, Some(3));
    }

    #[tokio::test]
    async fn segment_of_another_offset_is_refused() {
        use curve_proto::mds::PageFileChunkInfo;
        let (mds, _) = client(
            &["a:1"],
            |_, _| {
                Ok(Bytes::from(
                    GetOrAllocateSegmentResponse {
                        status_code: StatusCode::KOk as i32,
                        page_file_segment: Some(PageFileSegment {
                            logical_pool_id: 1,
                            start_offset: 1 << 30,
                            segment_size: 1 << 30,
                            chunk_size: 16 << 20,
                            chunks: vec![PageFileChunkInfo {
                                chunk_id: 1,
                                copyset_id: 1,
                            }],
                        }),
                    }
                    .encode_to_vec(),
                ))
            },
            |_| {},
        );
        let e = mds
            .get_or_allocate_segment("/f", &user(), 2 << 30, true, 0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Failed);
        assert!(
            mds.get_or_allocate_segment("/f", &user(), 1 << 30, true, 0)
                .await
                .unwrap()
                .is_some()
        );
    }
}
