//! One chunk sub-request, sent to the copyset leader and retried per §11.2 until it
//! succeeds, fails for good, exhausts `chunkserver.opMaxRetry`, or reaches the deadline of
//! the user IO it belongs to (`chunkserver.maxRetryTimeMS` after the IO began; curvefs's
//! addition: upstream retries ~forever).

use std::time::{Duration, Instant};

use bytes::Bytes;
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse, GetChunkInfoRequest,
    GetChunkInfoResponse,
};
use rand::Rng;

use futures::future::BoxFuture;

use crate::context::Context;
use crate::error::{Cause, Error, ErrorCode, Result, chunk_status_to_code};
use crate::events::warn_limited;
use crate::metacache::{ChunkAddr, LeaderView};
use crate::metrics::{IoMetrics, RpcOp, Sink};
use crate::transport::{self, TransportError, methods};

/// Largest p with 2^p ≤ ratio (0 for ratios below 2).
fn max_pow(ratio: u64) -> u32 {
    if ratio < 2 {
        0
    } else {
        63 - ratio.leading_zeros()
    }
}

/// What the chunk path needs of the open file a request belongs to. The file layer
/// implements it; this module does not know what an open file is beyond this.
pub trait ChunkTarget: Sync {
    /// The inode id, sent with writes for IO fencing.
    fn file_id(&self) -> u64;
    /// The `sn` and `epoch` a WriteChunk carries now.
    fn write_sn_and_epoch(&self) -> (u64, u64);
    /// Fails once IO on the file is disabled for good (checked before every attempt).
    fn check_not_disabled(&self) -> Result<()>;
    /// Re-reads the file's sn and epoch from the MDS (after BACKWARD).
    fn refresh_info(&self) -> BoxFuture<'_, Result<()>>;
    /// The file's own metrics, if it keeps any (its client's are always kept).
    fn metrics(&self) -> Option<&IoMetrics> {
        None
    }
    /// The file's path, for log events ("" for none).
    fn volume(&self) -> &str {
        ""
    }
}

/// One chunk operation. Reads return the data, `None` for a chunk never written (zeros);
/// the others return `None` on success.
#[derive(Debug, Clone)]
pub enum ChunkOp {
    Read,
    Write(Bytes),
    /// RecoverChunk: the chunkserver fills the unwritten pages of [offset, offset + size)
    /// of a clone chunk from its origin (a flatten sends it for every chunk).
    Recover,
    /// CreateCloneChunk: a clone chunk whose unwritten pages read from `location`
    /// (`"<path>:<offset>@cs"` or `"<key>@s3"`); `size` must be the chunk size. CHUNK_EXIST
    /// (a chunk already there with another location or sn) fails with EXISTS.
    CreateClone {
        location: String,
        sn: u64,
        corrected_sn: u64,
    },
    /// ReadChunkSnapshot: the chunk's bytes as they were at `sn` (the snapshot/clone
    /// service's dump of a snapshot); `None` when the chunk has no version at `sn`.
    ReadSnapshot {
        sn: u64,
    },
    /// DeleteChunkSnapshotOrCorrectSn: drops the chunk's snapshot and raises its
    /// correctedSn to `corrected_sn` (the MDS's clean of a deleted snapshot sends
    /// the snapshot's seq + 1). BACKWARD fails with its code, as upstream's.
    DeleteSnapshotOrCorrectSn {
        corrected_sn: u64,
    },
}

/// Where the unwritten part of a chunk of a lazy clone reads from: ReadChunk and
/// WriteChunk carry it as `cloneFileSource` (12) and `cloneFileOffset` (13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSource {
    /// The clone source's path.
    pub file: String,
    /// The source offset of the chunk's first byte: `chunkIndex × chunkSize`.
    pub offset: u64,
}

/// A [`ChunkTarget`] for requests that belong to no open file (CreateCloneChunk and
/// RecoverChunk sent on their own): no inode, no sn, never disabled.
pub struct NoFile;

impl ChunkTarget for NoFile {
    fn file_id(&self) -> u64 {
        0
    }

    fn write_sn_and_epoch(&self) -> (u64, u64) {
        (0, 0)
    }

    fn check_not_disabled(&self) -> Result<()> {
        Ok(())
    }

    fn refresh_info(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

struct Policy {
    base_timeout: Duration,
    max_timeout: Duration,
    timeout_pow: u32,
    retry_interval: Duration,
    max_sleep: Duration,
    overload_pow: u32,
    max_retry: u64,
}

impl Policy {
    fn new(ctx: &Context) -> Self {
        let c = &ctx.conf;
        let base_ms = c.chunkserver_rpc_timeout_ms.max(1);
        let max_ms = c.chunkserver_max_rpc_timeout_ms.max(base_ms);
        let interval_us = c.chunkserver_op_retry_interval_us;
        let max_sleep_us = c.chunkserver_max_retry_sleep_interval_us.max(interval_us);
        Self {
            base_timeout: Duration::from_millis(base_ms),
            max_timeout: Duration::from_millis(max_ms),
            timeout_pow: max_pow(max_ms / base_ms),
            retry_interval: Duration::from_micros(interval_us),
            max_sleep: Duration::from_micros(max_sleep_us),
            overload_pow: max_pow(max_sleep_us / interval_us.max(1)),
            max_retry: c.chunkserver_op_max_retry.max(1),
        }
    }

    fn timeout(&self, retries: u64) -> Duration {
        let pow = u32::try_from(retries)
            .unwrap_or(u32::MAX)
            .min(self.timeout_pow);
        self.base_timeout
            .saturating_mul(1u32 << pow.min(31))
            .min(self.max_timeout)
    }

    /// OVERLOAD backoff: exponential with ±10 % jitter, within [interval, max sleep].
    fn overload_sleep(&self, retries: u64) -> Duration {
        let pow = u32::try_from(retries)
            .unwrap_or(u32::MAX)
            .min(self.overload_pow);
        let nominal = self.retry_interval.saturating_mul(1u32 << pow.min(31));
        let jitter = rand::thread_rng().gen_range(0.9..=1.1);
        Duration::try_from_secs_f64(nominal.as_secs_f64() * jitter)
            .unwrap_or(self.max_sleep)
            .clamp(self.retry_interval, self.max_sleep)
    }
}

/// What to do after an attempt that did not finish the request.
enum Next {
    /// Retry after this pause.
    Retry(Duration),
}

/// Sends one chunk sub-request with retries until `deadline`. A read answers `Ok(None)`
/// for a chunk that was never written; the other operations answer `Ok(None)` on success.
/// `source` is attached to reads and writes only (upstream's CalcRequestSourceInfo).
#[allow(clippy::too_many_arguments)]
pub async fn send(
    ctx: &Context,
    file: &impl ChunkTarget,
    addr: ChunkAddr,
    offset_in_chunk: u32,
    size: u32,
    op: ChunkOp,
    source: Option<&RequestSource>,
    deadline: Instant,
) -> Result<Option<Bytes>> {
    let policy = Policy::new(ctx);
    let start = Instant::now();
    let entry = ctx
        .copysets
        .entry(addr.logical_pool_id, addr.copyset_id)
        .await?;
    let (op_type, method, attachment) = match &op {
        ChunkOp::Read => (ChunkOpType::ChunkOpRead, &methods::READ_CHUNK, Bytes::new()),
        ChunkOp::Write(d) => (ChunkOpType::ChunkOpWrite, &methods::WRITE_CHUNK, d.clone()),
        ChunkOp::Recover => (
            ChunkOpType::ChunkOpRecover,
            &methods::RECOVER_CHUNK,
            Bytes::new(),
        ),
        ChunkOp::CreateClone { .. } => (
            ChunkOpType::ChunkOpCreateClone,
            &methods::CREATE_CLONE_CHUNK,
            Bytes::new(),
        ),
        ChunkOp::ReadSnapshot { .. } => (
            ChunkOpType::ChunkOpReadSnap,
            &methods::READ_CHUNK_SNAPSHOT,
            Bytes::new(),
        ),
        ChunkOp::DeleteSnapshotOrCorrectSn { .. } => (
            ChunkOpType::ChunkOpDeleteSnap,
            &methods::DELETE_CHUNK_SNAPSHOT_OR_CORRECT_SN,
            Bytes::new(),
        ),
    };
    let is_write = matches!(op, ChunkOp::Write(_));
    // Operations answered with data: a missing chunk (or version) is `None`, not an error.
    let is_read = matches!(op, ChunkOp::Read | ChunkOp::ReadSnapshot { .. });
    let sink = Sink {
        file: file.metrics(),
        client: &ctx.metrics,
    };
    // Reads and writes are counted at RPC level, as upstream's `_read_rpc`/`_write_rpc`.
    let rpc_op = if matches!(op, ChunkOp::Read) {
        Some(RpcOp::Read)
    } else if is_write {
        Some(RpcOp::Write)
    } else {
        None
    };
    let count = |f: &dyn Fn(&crate::metrics::OpMetrics)| {
        if let Some(op) = rpc_op {
            sink.each(|m| f(m.rpc(op)));
        }
    };
    let source = source.filter(|_| is_read || is_write);
    if is_write {
        check_write_data(size, &attachment)?;
    }
    let mut retries: u64 = 0;
    // Tries sent to the current leader: the timeout backoff starts over when the leader
    // changes, so a request that leaves a hung leader is not stuck with its long timeout
    // (what upstream gets from its "leader may change" flag).
    let mut tries_on_leader: u64 = 0;
    let mut last_endpoint = String::new();
    let mut last = Error::failed("chunk request was not sent");
    // Whether the last failure was a reply, a timeout or an unreachable chunkserver.
    let mut last_cause = Cause::Answered;
    loop {
        file.check_not_disabled()?;
        let now = Instant::now();
        if retries >= policy.max_retry || (retries > 0 && now >= deadline) {
            tracing::warn!(
                volume = file.volume(),
                copyset = addr.copyset_id,
                logical_pool = addr.logical_pool_id,
                chunk = addr.chunk_id,
                endpoint = %last_endpoint,
                tries = retries,
                cause = ?last_cause,
                "{} of chunk {} gave up after {retries} tries: {}",
                method.method,
                addr.chunk_id,
                last.message
            );
            return Err(Error::new(
                last.code,
                format!(
                    "chunk {} of copyset ({}, {}) failed after {retries} tries in {:?}: {}",
                    addr.chunk_id,
                    addr.logical_pool_id,
                    addr.copyset_id,
                    now - start,
                    last.message
                ),
            )
            .because(last_cause));
        }
        if retries > 0 {
            warn_limited!(
                volume = file.volume(),
                copyset = addr.copyset_id,
                logical_pool = addr.logical_pool_id,
                chunk = addr.chunk_id,
                endpoint = %last_endpoint,
                attempt = retries,
                cause = %last.message,
                "retrying {} of chunk {} (try {}): {}",
                method.method,
                addr.chunk_id,
                retries + 1,
                last.message
            );
        }
        retries += 1;
        let leader = match ctx.copysets.leader(&entry, deadline).await {
            Ok(l) => l,
            Err(e) => {
                sink.each(IoMetrics::get_leader_retry);
                last_cause = e.cause;
                last = e;
                sleep_until_deadline(policy.retry_interval, deadline).await;
                continue;
            }
        };
        if leader.endpoint != last_endpoint {
            last_endpoint.clone_from(&leader.endpoint);
            tries_on_leader = 0;
        }
        tries_on_leader += 1;
        let (sn, epoch) = file.write_sn_and_epoch();
        let mut req = ChunkRequest {
            op_type: op_type as i32,
            logic_pool_id: addr.logical_pool_id,
            copyset_id: addr.copyset_id,
            chunk_id: addr.chunk_id,
            offset: Some(offset_in_chunk),
            size: Some(size),
            sn: is_write.then_some(sn),
            file_id: is_write.then_some(file.file_id()),
            epoch: (is_write && epoch != 0).then_some(epoch),
            clone_file_source: source.map(|s| s.file.clone()),
            clone_file_offset: source.map(|s| s.offset),
            ..Default::default()
        };
        if let ChunkOp::CreateClone {
            location,
            sn,
            corrected_sn,
        } = &op
        {
            // Upstream's CreateCloneChunk sends no offset: the chunk is made whole.
            req.offset = None;
            req.location = Some(location.clone());
            req.sn = Some(*sn);
            req.corrected_sn = Some(*corrected_sn);
        }
        match &op {
            ChunkOp::ReadSnapshot { sn } => req.sn = Some(*sn),
            ChunkOp::DeleteSnapshotOrCorrectSn { corrected_sn } => {
                req.offset = None;
                req.size = None;
                req.corrected_sn = Some(*corrected_sn);
            }
            _ => {}
        }
        let timeout = policy
            .timeout(tries_on_leader - 1)
            .min(deadline.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        let sent = Instant::now();
        sink.each(IoMetrics::rpc_started);
        let reply = transport::unary_with_attachment::<_, ChunkResponse>(
            ctx.transport.as_ref(),
            &leader.endpoint,
            method,
            &req,
            attachment.clone(),
            timeout,
        )
        .await;
        sink.each(IoMetrics::rpc_ended);
        let took = sent.elapsed();
        let answered = |ok: bool| {
            if ok {
                count(&|m| m.ok(u64::from(size), took));
            } else {
                count(&|m| m.error());
            }
        };
        let Next::Retry(pause) = match reply {
            Ok((resp, data)) => {
                last_cause = Cause::Answered;
                let status =
                    ChunkOpStatus::try_from(resp.status).unwrap_or(ChunkOpStatus::FailureUnknown);
                let done = status == ChunkOpStatus::Success
                    && (!is_read || data.len() == size as usize)
                    || status == ChunkOpStatus::ChunkNotexist && is_read;
                if status == ChunkOpStatus::Redirected {
                    count(&|m| m.redirect());
                } else {
                    answered(done);
                }
                match status {
                    ChunkOpStatus::Success => {
                        if !is_read {
                            return Ok(None);
                        }
                        if data.len() == size as usize {
                            return Ok(Some(data));
                        }
                        last = Error::failed(format!(
                            "ReadChunk returned {} bytes for {size}",
                            data.len()
                        ));
                        Next::Retry(policy.retry_interval)
                    }
                    ChunkOpStatus::ChunkNotexist if is_read => return Ok(None),
                    ChunkOpStatus::Redirected => {
                        last = status_error(status, &leader);
                        sink.each(IoMetrics::get_leader_retry);
                        // A hint naming no known peer is no better than no hint.
                        let hinted = resp
                            .redirect
                            .as_deref()
                            .filter(|r| !r.is_empty())
                            .and_then(|r| ctx.copysets.redirect(&entry, r));
                        let moved = match hinted {
                            Some(l) => Some(l),
                            None => ctx
                                .copysets
                                .refresh_leader(&entry, leader.version, deadline)
                                .await
                                .ok(),
                        };
                        Next::Retry(pause_unless_moved(
                            &leader,
                            moved,
                            policy.retry_interval / 10,
                        ))
                    }
                    ChunkOpStatus::CopysetNotexist => {
                        last = status_error(status, &leader);
                        ctx.copysets
                            .refresh_leader(&entry, leader.version, deadline)
                            .await
                            .ok();
                        Next::Retry(policy.retry_interval)
                    }
                    ChunkOpStatus::Backward if is_write => {
                        // A snapshot bumped the file's sn: adopt it and resend at once.
                        // If the MDS has no newer sn (yet), resending the same one can
                        // only be refused again: pause as for any other retry.
                        last = status_error(status, &leader);
                        file.refresh_info().await.ok();
                        if file.write_sn_and_epoch().0 > sn {
                            Next::Retry(Duration::ZERO)
                        } else {
                            Next::Retry(policy.retry_interval)
                        }
                    }
                    ChunkOpStatus::Overload => {
                        last = status_error(status, &leader);
                        Next::Retry(policy.overload_sleep(retries - 1))
                    }
                    ChunkOpStatus::DiskFail
                    | ChunkOpStatus::CrcFail
                    | ChunkOpStatus::FailureUnknown => {
                        last = status_error(status, &leader);
                        Next::Retry(policy.retry_interval)
                    }
                    // INVALID_REQUEST, CHUNK_EXIST, EPOCH_TOO_OLD, NOSPACE (cluster full:
                    // no retry loop), CHUNK_NOTEXIST on anything but a read, BACKWARD on
                    // anything but a write.
                    _ => return Err(status_error(status, &leader)),
                }
            }
            Err(TransportError::Rejected(why)) => {
                answered(false);
                // The chunkserver cannot run this request at all; no retry can fix it.
                return Err(Error::new(
                    ErrorCode::InvalidRequest,
                    format!("{} to {}: {why}", method.method, leader.endpoint),
                ));
            }
            Err(e) => {
                let timed_out = matches!(e, TransportError::Timeout(_));
                if timed_out {
                    count(&|m| m.timeout());
                } else {
                    answered(false);
                }
                sink.each(IoMetrics::get_leader_retry);
                last_cause = if timed_out {
                    Cause::TimedOut
                } else if matches!(e, TransportError::Connect { .. }) {
                    Cause::Unreachable
                } else {
                    Cause::Answered
                };
                last = Error::failed(format!("{} to {}: {e}", method.method, leader.endpoint));
                let moved = ctx
                    .copysets
                    .refresh_leader(&entry, leader.version, deadline)
                    .await
                    .ok();
                if timed_out {
                    // The grown timeout is the backoff.
                    Next::Retry(Duration::ZERO)
                } else {
                    Next::Retry(pause_unless_moved(&leader, moved, policy.retry_interval))
                }
            }
        };
        sleep_until_deadline(pause, deadline).await;
    }
}

/// GetChunkInfo: the chunk's `[sn]`, or `[sn, snapshot sn]` while it keeps a snapshot;
/// empty for a chunk never written (upstream's answer). Asked of the copyset's leader,
/// following it as it moves, with the chunk path's retries, until `deadline`.
pub async fn chunk_info(ctx: &Context, addr: ChunkAddr, deadline: Instant) -> Result<Vec<u64>> {
    let policy = Policy::new(ctx);
    let entry = ctx
        .copysets
        .entry(addr.logical_pool_id, addr.copyset_id)
        .await?;
    let req = GetChunkInfoRequest {
        logic_pool_id: addr.logical_pool_id,
        copyset_id: addr.copyset_id,
        chunk_id: addr.chunk_id,
    };
    let method = &methods::GET_CHUNK_INFO;
    let mut last = Error::failed("GetChunkInfo was not sent");
    let mut tries: u64 = 0;
    loop {
        let now = Instant::now();
        if tries >= policy.max_retry || (tries > 0 && now >= deadline) {
            return Err(Error::new(
                last.code,
                format!(
                    "GetChunkInfo of chunk {} of copyset ({}, {}) failed after {tries} tries: {}",
                    addr.chunk_id, addr.logical_pool_id, addr.copyset_id, last.message
                ),
            ));
        }
        tries += 1;
        let leader = match ctx.copysets.leader(&entry, deadline).await {
            Ok(l) => l,
            Err(e) => {
                last = e;
                sleep_until_deadline(policy.retry_interval, deadline).await;
                continue;
            }
        };
        let timeout = policy
            .timeout(tries - 1)
            .min(deadline.saturating_duration_since(now))
            .max(Duration::from_millis(1));
        let reply = transport::unary::<_, GetChunkInfoResponse>(
            ctx.transport.as_ref(),
            &leader.endpoint,
            method,
            &req,
            timeout,
        )
        .await;
        let pause = match reply {
            Ok(resp) => {
                let status =
                    ChunkOpStatus::try_from(resp.status).unwrap_or(ChunkOpStatus::FailureUnknown);
                last = status_error(status, &leader);
                match status {
                    ChunkOpStatus::Success => return Ok(resp.chunk_sn),
                    ChunkOpStatus::Redirected | ChunkOpStatus::CopysetNotexist => {
                        let moved = ctx
                            .copysets
                            .refresh_leader(&entry, leader.version, deadline)
                            .await
                            .ok();
                        pause_unless_moved(&leader, moved, policy.retry_interval / 10)
                    }
                    ChunkOpStatus::Overload
                    | ChunkOpStatus::DiskFail
                    | ChunkOpStatus::FailureUnknown => policy.retry_interval,
                    _ => return Err(last),
                }
            }
            Err(TransportError::Rejected(why)) => {
                return Err(Error::new(
                    ErrorCode::InvalidRequest,
                    format!("{} to {}: {why}", method.method, leader.endpoint),
                ));
            }
            Err(e) => {
                let timed_out = matches!(e, TransportError::Timeout(_));
                last = Error::failed(format!("{} to {}: {e}", method.method, leader.endpoint));
                let moved = ctx
                    .copysets
                    .refresh_leader(&entry, leader.version, deadline)
                    .await
                    .ok();
                if timed_out {
                    Duration::ZERO
                } else {
                    pause_unless_moved(&leader, moved, policy.retry_interval)
                }
            }
        };
        sleep_until_deadline(pause, deadline).await;
    }
}

/// A WriteChunk whose data is not exactly `size` bytes is what makes a stock chunkserver
/// abort (it fails to apply it from its Raft log, on every replica): never send one.
fn check_write_data(size: u32, data: &[u8]) -> Result<()> {
    if data.len() == size as usize {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::InvalidRequest,
        format!(
            "WriteChunk of {size} bytes carries {} bytes of data; not sent",
            data.len()
        ),
    ))
}

fn status_error(status: ChunkOpStatus, leader: &LeaderView) -> Error {
    Error::new(
        chunk_status_to_code(status),
        format!(
            "chunkserver {} answered {}",
            leader.endpoint,
            status.as_str_name()
        ),
    )
}

/// No pause when a different leader was found: the retry goes somewhere new.
fn pause_unless_moved(before: &LeaderView, now: Option<LeaderView>, pause: Duration) -> Duration {
    match now {
        Some(l) if l.endpoint != before.endpoint => Duration::ZERO,
        _ => pause,
    }
}

async fn sleep_until_deadline(pause: Duration, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let pause = pause.min(left);
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn write_data_must_match_its_size() {
        assert!(check_write_data(4096, &[0; 4096]).is_ok());
        for len in [0, 4095, 4097] {
            let e = check_write_data(4096, &vec![0; len]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn pow_of_ratio() {
        assert_eq!(max_pow(0), 0);
        assert_eq!(max_pow(1), 0);
        assert_eq!(max_pow(8), 3);
        assert_eq!(max_pow(9), 3);
        assert_eq!(max_pow(64), 6);
    }

    fn policy(base_ms: u64, max_ms: u64) -> Policy {
        Policy {
            base_timeout: Duration::from_millis(base_ms),
            max_timeout: Duration::from_millis(max_ms),
            timeout_pow: max_pow(max_ms / base_ms),
            retry_interval: Duration::from_millis(100),
            max_sleep: Duration::from_secs(8),
            overload_pow: max_pow(80),
            max_retry: 10,
        }
    }

    #[test]
    fn timeout_doubles_up_to_the_cap() {
        let p = policy(1000, 8000);
        let got: Vec<u64> = (0..6).map(|r| p.timeout(r).as_millis() as u64).collect();
        assert_eq!(got, vec![1000, 2000, 4000, 8000, 8000, 8000]);
        let p = policy(1000, 5000);
        assert_eq!(p.timeout(10), Duration::from_millis(4000));
    }

    #[test]
    fn overload_sleep_grows_with_jitter_and_stays_clamped() {
        let p = policy(1000, 8000);
        for r in 0..20 {
            let s = p.overload_sleep(r);
            assert!(
                s >= Duration::from_millis(100) && s <= Duration::from_secs(8),
                "{s:?}"
            );
        }
        let s3 = p.overload_sleep(3);
        assert!(
            s3 >= Duration::from_millis(720) && s3 <= Duration::from_millis(880),
            "{s3:?}"
        );
    }
}
