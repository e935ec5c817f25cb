//! `client.conf`: upstream's `key=value` format and the keys the client core acts on.
//!
//! Parsing follows upstream: one `key=value` per line, surrounding blanks trimmed, everything
//! after the first `#` dropped, later duplicates win, unknown keys tolerated. A key the core
//! needs that upstream marks *required* must be present, otherwise parsing fails, as Init
//! did. Keys upstream reads but the core has no use for (schedule.*, isolation.*,
//! global.logPath, …) are not required: they configure machinery this client does
//! not have. Absent optional keys take upstream's built-in defaults (not the values written
//! in upstream's sample client.conf where the two differ).
//!
//! Keys added by curvefs (all optional):
//! - `chunkserver.maxRetryTimeMS` (60000): wall time one user IO may spend waiting for a
//!   lapsed lease to be renewed and retrying its chunk requests before it fails (DISABLEIO
//!   resp. the last chunk error, FAILED for transport errors). Upstream retries ~forever; a
//!   Python caller needs an answer. Segment lookups on the MDS have their own budget:
//! - `mds.maxRetryMsInIOPath` (60000): upstream's key, which upstream does not read; here it
//!   bounds the IO-path MDS calls (GetOrAllocateSegment, GetChunkServerListInCopySets) that
//!   upstream retries without limit.
//! - `global.rpcConnectTimeoutMS` (1000): TCP connect timeout of every channel.
//! - `global.channelsPerChunkServer` (2): HTTP/2 connections per chunkserver endpoint,
//!   used round-robin, because one connection's buffer task serialises its requests
//!   (gRPC only; baidu_std keeps brpc's one connection per endpoint).
//! - `mds.transport` and `chunkserver.transport` (`baidu_std`): the wire to the MDS and
//!   to the chunkservers, `baidu_std` (brpc's protocol, what stock Curve servers speak) or
//!   `grpc` (tonic; chunk IO over it only to curvefs's local chunkservers, see
//!   `transport::route`). An unchanged upstream client.conf therefore gets baidu_std.
//! - `global.maxBodySize` (67108864): the largest baidu_std frame body sent or accepted,
//!   brpc's `max_body_size` default.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, ErrorCode, Result};
use crate::transport::Protocol;

/// The client settings, typed. Field docs name the `client.conf` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `mds.listen.addr`: MDS endpoints `ip:port`, tried in order with failover.
    pub mds_addrs: Vec<String>,
    /// `mds.registerToMDS`: send clientIP/clientPort with RefreshSession and CloseFile.
    pub mds_register_to_mds: bool,
    /// `mds.rpcTimeoutMS`
    pub mds_rpc_timeout_ms: u64,
    /// `mds.maxRPCTimeoutMS`
    pub mds_max_rpc_timeout_ms: u64,
    /// `mds.maxRetryMS`: retry budget of metadata calls.
    pub mds_max_retry_ms: u64,
    /// `mds.maxFailedTimesBeforeChangeMDS`
    pub mds_max_failed_times_before_change_mds: u32,
    /// `mds.refreshTimesPerLease`
    pub mds_refresh_times_per_lease: u32,
    /// `mds.rpcRetryIntervalUS`
    pub mds_rpc_retry_interval_us: u64,
    /// `mds.normalRetryTimesBeforeTriggerWait`
    pub mds_normal_retry_times_before_trigger_wait: u32,
    /// `mds.maxRetryMsInIOPath` (curvefs reads it; see the module doc).
    pub mds_max_retry_ms_in_io_path: u64,
    /// `mds.waitSleepMs`
    pub mds_wait_sleep_ms: u64,
    /// `metacache.getLeaderTimeOutMS`
    pub metacache_get_leader_timeout_ms: u64,
    /// `metacache.getLeaderRetry`
    pub metacache_get_leader_retry: u32,
    /// `metacache.rpcRetryIntervalUS`
    pub metacache_rpc_retry_interval_us: u64,
    /// `chunkserver.opRetryIntervalUS`
    pub chunkserver_op_retry_interval_us: u64,
    /// `chunkserver.opMaxRetry`
    pub chunkserver_op_max_retry: u64,
    /// `chunkserver.rpcTimeoutMS`
    pub chunkserver_rpc_timeout_ms: u64,
    /// `chunkserver.maxRetrySleepIntervalUS`
    pub chunkserver_max_retry_sleep_interval_us: u64,
    /// `chunkserver.maxRPCTimeoutMS`
    pub chunkserver_max_rpc_timeout_ms: u64,
    /// `chunkserver.maxStableTimeoutTimes`
    pub chunkserver_max_stable_timeout_times: u32,
    /// `chunkserver.checkHealthTimeoutMs`
    pub chunkserver_check_health_timeout_ms: u64,
    /// `chunkserver.serverStableThreshold`
    pub chunkserver_server_stable_threshold: u32,
    /// `chunkserver.minRetryTimesForceTimeoutBackoff`
    pub chunkserver_min_retry_times_force_timeout_backoff: u32,
    /// `chunkserver.slowRequestThresholdMS`
    pub chunkserver_slow_request_threshold_ms: u64,
    /// `chunkserver.maxRetryTimeMS` (curvefs; see the module doc).
    pub chunkserver_max_retry_time_ms: u64,
    /// `global.fileMaxInFlightRPCNum`: chunk RPCs in flight per open file.
    pub file_max_in_flight_rpc_num: u32,
    /// `global.fileIOSplitMaxSizeKB`: largest chunk sub-request, KiB.
    pub file_io_split_max_size_kb: u32,
    /// `global.rpcConnectTimeoutMS` (curvefs).
    pub rpc_connect_timeout_ms: u64,
    /// `global.channelsPerChunkServer` (curvefs).
    pub channels_per_chunkserver: u32,
    /// `throttle.enable` (parsed; client-side QoS is not implemented).
    pub throttle_enable: bool,
    /// `mds.transport` (curvefs).
    pub mds_transport: Protocol,
    /// `chunkserver.transport` (curvefs).
    pub chunkserver_transport: Protocol,
    /// `global.maxBodySize` (curvefs).
    pub max_body_size: u32,
    /// `discard.enable`: discard releases whole segments through the MDS.
    pub discard_enable: bool,
    /// `discard.granularity` (parsed; discard here zeroes partial ranges at any size).
    pub discard_granularity: u32,
    /// `discard.taskDelayMs` (parsed; segments are released at once, see `file.rs`).
    pub discard_task_delay_ms: u64,
    /// `closefd.timeout`: seconds a lazy clone's source stays open unused.
    pub closefd_timeout_s: u64,
    /// `closefd.timeInterval`: seconds between sweeps for unused clone sources.
    pub closefd_time_interval_s: u64,
}

impl Default for ClientConfig {
    /// Upstream's sample client.conf values for the required keys, built-in defaults for the
    /// rest; handy for tests and for callers that build a config in code.
    fn default() -> Self {
        Self {
            mds_addrs: vec!["127.0.0.1:6666".to_string()],
            mds_register_to_mds: true,
            mds_rpc_timeout_ms: 500,
            mds_max_rpc_timeout_ms: 2000,
            mds_max_retry_ms: 8000,
            mds_max_failed_times_before_change_mds: 5,
            mds_refresh_times_per_lease: 4,
            mds_rpc_retry_interval_us: 100_000,
            mds_normal_retry_times_before_trigger_wait: 3,
            mds_max_retry_ms_in_io_path: 60_000,
            mds_wait_sleep_ms: 10_000,
            metacache_get_leader_timeout_ms: 500,
            metacache_get_leader_retry: 5,
            metacache_rpc_retry_interval_us: 100_000,
            chunkserver_op_retry_interval_us: 100_000,
            chunkserver_op_max_retry: 2_500_000,
            chunkserver_rpc_timeout_ms: 1000,
            chunkserver_max_retry_sleep_interval_us: 64_000_000,
            chunkserver_max_rpc_timeout_ms: 64_000,
            chunkserver_max_stable_timeout_times: 10,
            chunkserver_check_health_timeout_ms: 100,
            chunkserver_server_stable_threshold: 3,
            chunkserver_min_retry_times_force_timeout_backoff: 5,
            chunkserver_slow_request_threshold_ms: 45_000,
            chunkserver_max_retry_time_ms: 60_000,
            file_max_in_flight_rpc_num: 128,
            file_io_split_max_size_kb: 64,
            rpc_connect_timeout_ms: 1000,
            channels_per_chunkserver: 2,
            throttle_enable: false,
            mds_transport: Protocol::BaiduStd,
            chunkserver_transport: Protocol::BaiduStd,
            max_body_size: 64 << 20,
            discard_enable: false,
            discard_granularity: 4096,
            discard_task_delay_ms: 60_000,
            closefd_timeout_s: 300,
            closefd_time_interval_s: 600,
        }
    }
}

/// Every key the core reads, with the name of its [`ClientConfig`] field: the Python API
/// takes these names as keyword arguments (`curvefs.Client(mds_rpc_timeout_ms=1000)`).
pub const KEYS: &[(&str, &str)] = &[
    ("mds_addrs", "mds.listen.addr"),
    ("mds_register_to_mds", "mds.registerToMDS"),
    ("mds_rpc_timeout_ms", "mds.rpcTimeoutMS"),
    ("mds_max_rpc_timeout_ms", "mds.maxRPCTimeoutMS"),
    ("mds_max_retry_ms", "mds.maxRetryMS"),
    (
        "mds_max_failed_times_before_change_mds",
        "mds.maxFailedTimesBeforeChangeMDS",
    ),
    ("mds_refresh_times_per_lease", "mds.refreshTimesPerLease"),
    ("mds_rpc_retry_interval_us", "mds.rpcRetryIntervalUS"),
    (
        "mds_normal_retry_times_before_trigger_wait",
        "mds.normalRetryTimesBeforeTriggerWait",
    ),
    ("mds_max_retry_ms_in_io_path", "mds.maxRetryMsInIOPath"),
    ("mds_wait_sleep_ms", "mds.waitSleepMs"),
    (
        "metacache_get_leader_timeout_ms",
        "metacache.getLeaderTimeOutMS",
    ),
    ("metacache_get_leader_retry", "metacache.getLeaderRetry"),
    (
        "metacache_rpc_retry_interval_us",
        "metacache.rpcRetryIntervalUS",
    ),
    (
        "chunkserver_op_retry_interval_us",
        "chunkserver.opRetryIntervalUS",
    ),
    ("chunkserver_op_max_retry", "chunkserver.opMaxRetry"),
    ("chunkserver_rpc_timeout_ms", "chunkserver.rpcTimeoutMS"),
    (
        "chunkserver_max_retry_sleep_interval_us",
        "chunkserver.maxRetrySleepIntervalUS",
    ),
    (
        "chunkserver_max_rpc_timeout_ms",
        "chunkserver.maxRPCTimeoutMS",
    ),
    (
        "chunkserver_max_stable_timeout_times",
        "chunkserver.maxStableTimeoutTimes",
    ),
    (
        "chunkserver_check_health_timeout_ms",
        "chunkserver.checkHealthTimeoutMs",
    ),
    (
        "chunkserver_server_stable_threshold",
        "chunkserver.serverStableThreshold",
    ),
    (
        "chunkserver_min_retry_times_force_timeout_backoff",
        "chunkserver.minRetryTimesForceTimeoutBackoff",
    ),
    (
        "chunkserver_slow_request_threshold_ms",
        "chunkserver.slowRequestThresholdMS",
    ),
    (
        "chunkserver_max_retry_time_ms",
        "chunkserver.maxRetryTimeMS",
    ),
    ("file_max_in_flight_rpc_num", "global.fileMaxInFlightRPCNum"),
    ("file_io_split_max_size_kb", "global.fileIOSplitMaxSizeKB"),
    ("rpc_connect_timeout_ms", "global.rpcConnectTimeoutMS"),
    ("channels_per_chunkserver", "global.channelsPerChunkServer"),
    ("throttle_enable", "throttle.enable"),
    ("mds_transport", "mds.transport"),
    ("chunkserver_transport", "chunkserver.transport"),
    ("max_body_size", "global.maxBodySize"),
    ("discard_enable", "discard.enable"),
    ("discard_granularity", "discard.granularity"),
    ("discard_task_delay_ms", "discard.taskDelayMs"),
    ("closefd_timeout_s", "closefd.timeout"),
    ("closefd_time_interval_s", "closefd.timeInterval"),
];

/// The keys curvefs adds to upstream's (see the module doc). A conf written for stock
/// clients too (the local cluster's) leaves them out where they hold their default.
pub const CURVEFS_KEYS: &[&str] = &[
    "chunkserver.maxRetryTimeMS",
    "global.rpcConnectTimeoutMS",
    "global.channelsPerChunkServer",
    "mds.transport",
    "chunkserver.transport",
    "global.maxBodySize",
];

/// The one key a conf must have. Upstream's Init also refuses a conf that lacks any of
/// the keys its sample marks required; here every other key falls back to upstream's
/// default, so a two-line conf is enough to reach a cluster.
pub const REQUIRED_KEYS: &[&str] = &["mds.listen.addr"];

impl ClientConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::failed(format!("cannot read client conf {}: {e}", path.display()))
        })?;
        Self::parse(&text)
    }

    /// The value of `key` (one of [`KEYS`]) as client.conf spells it, so that [`parse`]
    /// reads the same value back; `None` for any other key.
    ///
    /// [`parse`]: ClientConfig::parse
    pub fn value(&self, key: &str) -> Option<String> {
        let b = |v: bool| if v { "true" } else { "false" }.to_string();
        Some(match key {
            "mds.listen.addr" => self.mds_addrs.join(","),
            "mds.registerToMDS" => b(self.mds_register_to_mds),
            "mds.rpcTimeoutMS" => self.mds_rpc_timeout_ms.to_string(),
            "mds.maxRPCTimeoutMS" => self.mds_max_rpc_timeout_ms.to_string(),
            "mds.maxRetryMS" => self.mds_max_retry_ms.to_string(),
            "mds.maxFailedTimesBeforeChangeMDS" => {
                self.mds_max_failed_times_before_change_mds.to_string()
            }
            "mds.refreshTimesPerLease" => self.mds_refresh_times_per_lease.to_string(),
            "mds.rpcRetryIntervalUS" => self.mds_rpc_retry_interval_us.to_string(),
            "mds.normalRetryTimesBeforeTriggerWait" => {
                self.mds_normal_retry_times_before_trigger_wait.to_string()
            }
            "mds.maxRetryMsInIOPath" => self.mds_max_retry_ms_in_io_path.to_string(),
            "mds.waitSleepMs" => self.mds_wait_sleep_ms.to_string(),
            "metacache.getLeaderTimeOutMS" => self.metacache_get_leader_timeout_ms.to_string(),
            "metacache.getLeaderRetry" => self.metacache_get_leader_retry.to_string(),
            "metacache.rpcRetryIntervalUS" => self.metacache_rpc_retry_interval_us.to_string(),
            "chunkserver.opRetryIntervalUS" => self.chunkserver_op_retry_interval_us.to_string(),
            "chunkserver.opMaxRetry" => self.chunkserver_op_max_retry.to_string(),
            "chunkserver.rpcTimeoutMS" => self.chunkserver_rpc_timeout_ms.to_string(),
            "chunkserver.maxRetrySleepIntervalUS" => {
                self.chunkserver_max_retry_sleep_interval_us.to_string()
            }
            "chunkserver.maxRPCTimeoutMS" => self.chunkserver_max_rpc_timeout_ms.to_string(),
            "chunkserver.maxStableTimeoutTimes" => {
                self.chunkserver_max_stable_timeout_times.to_string()
            }
            "chunkserver.checkHealthTimeoutMs" => {
                self.chunkserver_check_health_timeout_ms.to_string()
            }
            "chunkserver.serverStableThreshold" => {
                self.chunkserver_server_stable_threshold.to_string()
            }
            "chunkserver.minRetryTimesForceTimeoutBackoff" => self
                .chunkserver_min_retry_times_force_timeout_backoff
                .to_string(),
            "chunkserver.slowRequestThresholdMS" => {
                self.chunkserver_slow_request_threshold_ms.to_string()
            }
            "chunkserver.maxRetryTimeMS" => self.chunkserver_max_retry_time_ms.to_string(),
            "global.fileMaxInFlightRPCNum" => self.file_max_in_flight_rpc_num.to_string(),
            "global.fileIOSplitMaxSizeKB" => self.file_io_split_max_size_kb.to_string(),
            "global.rpcConnectTimeoutMS" => self.rpc_connect_timeout_ms.to_string(),
            "global.channelsPerChunkServer" => self.channels_per_chunkserver.to_string(),
            "throttle.enable" => b(self.throttle_enable),
            "mds.transport" => self.mds_transport.name().to_string(),
            "chunkserver.transport" => self.chunkserver_transport.name().to_string(),
            "global.maxBodySize" => self.max_body_size.to_string(),
            "discard.enable" => b(self.discard_enable),
            "discard.granularity" => self.discard_granularity.to_string(),
            "discard.taskDelayMs" => self.discard_task_delay_ms.to_string(),
            "closefd.timeout" => self.closefd_timeout_s.to_string(),
            "closefd.timeInterval" => self.closefd_time_interval_s.to_string(),
            _ => return None,
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        let kv = parse_pairs(text);
        if let Some(missing) = REQUIRED_KEYS.iter().find(|k| !kv.contains_key(**k)) {
            return Err(Error::failed(format!(
                "client conf lacks required key {missing}"
            )));
        }
        let d = Self::default();
        let r = Reader { kv: &kv };
        let conf = Self {
            mds_addrs: parse_addrs(r.raw("mds.listen.addr").unwrap_or_default())?,
            mds_register_to_mds: r.boolean("mds.registerToMDS", d.mds_register_to_mds)?,
            mds_rpc_timeout_ms: r.num("mds.rpcTimeoutMS", d.mds_rpc_timeout_ms)?,
            mds_max_rpc_timeout_ms: r.num("mds.maxRPCTimeoutMS", d.mds_max_rpc_timeout_ms)?,
            mds_max_retry_ms: r.num("mds.maxRetryMS", d.mds_max_retry_ms)?,
            mds_max_failed_times_before_change_mds: r.num(
                "mds.maxFailedTimesBeforeChangeMDS",
                d.mds_max_failed_times_before_change_mds,
            )?,
            mds_refresh_times_per_lease: r
                .num("mds.refreshTimesPerLease", d.mds_refresh_times_per_lease)?,
            mds_rpc_retry_interval_us: r
                .num("mds.rpcRetryIntervalUS", d.mds_rpc_retry_interval_us)?,
            mds_normal_retry_times_before_trigger_wait: r.num(
                "mds.normalRetryTimesBeforeTriggerWait",
                d.mds_normal_retry_times_before_trigger_wait,
            )?,
            mds_max_retry_ms_in_io_path: r
                .num("mds.maxRetryMsInIOPath", d.mds_max_retry_ms_in_io_path)?,
            mds_wait_sleep_ms: r.num("mds.waitSleepMs", d.mds_wait_sleep_ms)?,
            metacache_get_leader_timeout_ms: r.num(
                "metacache.getLeaderTimeOutMS",
                d.metacache_get_leader_timeout_ms,
            )?,
            metacache_get_leader_retry: r
                .num("metacache.getLeaderRetry", d.metacache_get_leader_retry)?,
            metacache_rpc_retry_interval_us: r.num(
                "metacache.rpcRetryIntervalUS",
                d.metacache_rpc_retry_interval_us,
            )?,
            chunkserver_op_retry_interval_us: r.num(
                "chunkserver.opRetryIntervalUS",
                d.chunkserver_op_retry_interval_us,
            )?,
            chunkserver_op_max_retry: r
                .num("chunkserver.opMaxRetry", d.chunkserver_op_max_retry)?,
            chunkserver_rpc_timeout_ms: r
                .num("chunkserver.rpcTimeoutMS", d.chunkserver_rpc_timeout_ms)?,
            chunkserver_max_retry_sleep_interval_us: r.num(
                "chunkserver.maxRetrySleepIntervalUS",
                d.chunkserver_max_retry_sleep_interval_us,
            )?,
            chunkserver_max_rpc_timeout_ms: r.num(
                "chunkserver.maxRPCTimeoutMS",
                d.chunkserver_max_rpc_timeout_ms,
            )?,
            chunkserver_max_stable_timeout_times: r.num(
                "chunkserver.maxStableTimeoutTimes",
                d.chunkserver_max_stable_timeout_times,
            )?,
            chunkserver_check_health_timeout_ms: r.num(
                "chunkserver.checkHealthTimeoutMs",
                d.chunkserver_check_health_timeout_ms,
            )?,
            chunkserver_server_stable_threshold: r.num(
                "chunkserver.serverStableThreshold",
                d.chunkserver_server_stable_threshold,
            )?,
            chunkserver_min_retry_times_force_timeout_backoff: r.num(
                "chunkserver.minRetryTimesForceTimeoutBackoff",
                d.chunkserver_min_retry_times_force_timeout_backoff,
            )?,
            chunkserver_slow_request_threshold_ms: r.num(
                "chunkserver.slowRequestThresholdMS",
                d.chunkserver_slow_request_threshold_ms,
            )?,
            chunkserver_max_retry_time_ms: r.num(
                "chunkserver.maxRetryTimeMS",
                d.chunkserver_max_retry_time_ms,
            )?,
            file_max_in_flight_rpc_num: r
                .num("global.fileMaxInFlightRPCNum", d.file_max_in_flight_rpc_num)?,
            file_io_split_max_size_kb: r
                .num("global.fileIOSplitMaxSizeKB", d.file_io_split_max_size_kb)?,
            rpc_connect_timeout_ms: r
                .num("global.rpcConnectTimeoutMS", d.rpc_connect_timeout_ms)?,
            channels_per_chunkserver: r
                .num("global.channelsPerChunkServer", d.channels_per_chunkserver)?,
            throttle_enable: r.boolean("throttle.enable", d.throttle_enable)?,
            mds_transport: r.protocol("mds.transport", d.mds_transport)?,
            chunkserver_transport: r.protocol("chunkserver.transport", d.chunkserver_transport)?,
            max_body_size: r.num("global.maxBodySize", d.max_body_size)?,
            discard_enable: r.boolean("discard.enable", d.discard_enable)?,
            discard_granularity: r.num("discard.granularity", d.discard_granularity)?,
            discard_task_delay_ms: r.num("discard.taskDelayMs", d.discard_task_delay_ms)?,
            closefd_timeout_s: r.num("closefd.timeout", d.closefd_timeout_s)?,
            closefd_time_interval_s: r.num("closefd.timeInterval", d.closefd_time_interval_s)?,
        };
        conf.validate()?;
        Ok(conf)
    }

    /// Values that would make the core divide by zero or never send anything.
    fn validate(&self) -> Result<()> {
        let positive = [
            ("mds.rpcTimeoutMS", self.mds_rpc_timeout_ms),
            (
                "mds.refreshTimesPerLease",
                u64::from(self.mds_refresh_times_per_lease),
            ),
            ("chunkserver.rpcTimeoutMS", self.chunkserver_rpc_timeout_ms),
            ("chunkserver.opMaxRetry", self.chunkserver_op_max_retry),
            (
                "metacache.getLeaderTimeOutMS",
                self.metacache_get_leader_timeout_ms,
            ),
            (
                "metacache.getLeaderRetry",
                u64::from(self.metacache_get_leader_retry),
            ),
            (
                "global.fileMaxInFlightRPCNum",
                u64::from(self.file_max_in_flight_rpc_num),
            ),
            (
                "global.fileIOSplitMaxSizeKB",
                u64::from(self.file_io_split_max_size_kb),
            ),
            (
                "global.channelsPerChunkServer",
                u64::from(self.channels_per_chunkserver),
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::failed(format!("client conf key {key} must be > 0")));
        }
        // A sub-request's size travels as a uint32 and must fit one chunk RPC frame,
        // with room for the messages around its data.
        let split = u64::from(self.file_io_split_max_size_kb) * 1024;
        if split > u64::from(u32::MAX) || split + 64 * 1024 > u64::from(self.max_body_size) {
            return Err(Error::failed(format!(
                "client conf key global.fileIOSplitMaxSizeKB is too large for \
                 global.maxBodySize={}",
                self.max_body_size
            )));
        }
        Ok(())
    }
}

fn parse_pairs(text: &str) -> HashMap<String, String> {
    let mut kv = HashMap::new();
    for line in text.lines() {
        let line = match line.find('#') {
            Some(i) => &line[..i],
            None => line,
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        kv.insert(key.to_string(), value.trim().to_string());
    }
    kv
}

fn parse_addrs(raw: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if addrs.is_empty() {
        return Err(Error::failed("client conf key mds.listen.addr is empty"));
    }
    for a in &addrs {
        if a.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::failed(format!(
                "client conf key mds.listen.addr: {a:?} is not ip:port"
            )));
        }
    }
    Ok(addrs)
}

struct Reader<'a> {
    kv: &'a HashMap<String, String>,
}

impl Reader<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }

    fn num<T: FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::new(
                    ErrorCode::Failed,
                    format!("client conf key {key}: {v:?} is not a valid number"),
                )
            }),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(Error::failed(format!(
                    "client conf key {key}: {v:?} is not a boolean"
                ))),
            },
        }
    }

    fn protocol(&self, key: &str, default: Protocol) -> Result<Protocol> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => Protocol::parse(&v.to_ascii_lowercase()).ok_or_else(|| {
                Error::failed(format!(
                    "client conf key {key}: {v:?} is not a transport (baidu_std or grpc)"
                ))
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn minimal(extra: &str) -> String {
        let mut s = String::new();
        for k in REQUIRED_KEYS {
            let v = match *k {
                "mds.listen.addr" => "127.0.0.1:6666",
                "mds.registerToMDS" => "true",
                _ => "7",
            };
            s.push_str(&format!("{k}={v}\n"));
        }
        s.push_str(extra);
        s
    }

    #[test]
    fn parses_upstream_sample() {
        let text = "\
# comment line
mds.listen.addr=127.0.0.1:6666,127.0.0.1:6667   # two MDS
mds.registerToMDS=True
mds.rpcTimeoutMS=500
mds.maxRPCTimeoutMS=2000
mds.maxRetryMS=8000
mds.maxFailedTimesBeforeChangeMDS=2
mds.refreshTimesPerLease=4
mds.rpcRetryIntervalUS=100000
mds.normalRetryTimesBeforeTriggerWait=3
mds.maxRetryMsInIOPath=86400000
mds.waitSleepMs=10000
metacache.getLeaderTimeOutMS=500
metacache.getLeaderRetry=5
metacache.rpcRetryIntervalUS=100000
schedule.queueCapacity=1000000
schedule.threadpoolSize=2
isolation.taskQueueCapacity=1000000
isolation.taskThreadPoolSize=1
chunkserver.opRetryIntervalUS=100000
chunkserver.opMaxRetry=2500000
chunkserver.rpcTimeoutMS=1000
chunkserver.maxRetrySleepIntervalUS=8000000
chunkserver.maxRPCTimeoutMS=8000
chunkserver.maxStableTimeoutTimes=10
chunkserver.checkHealthTimeoutMs=100
chunkserver.serverStableThreshold=3
chunkserver.minRetryTimesForceTimeoutBackoff=5
chunkserver.maxRetryTimesBeforeConsiderSuspend=20
global.fileMaxInFlightRPCNum=128
global.fileIOSplitMaxSizeKB=64
global.logging.enable=True
global.logLevel=0
global.logPath=/data/log/curve/
  discard.enable = true
";
        let c = ClientConfig::parse(text).expect("sample parses");
        assert_eq!(c.mds_addrs, vec!["127.0.0.1:6666", "127.0.0.1:6667"]);
        assert!(c.mds_register_to_mds);
        assert_eq!(c.mds_max_failed_times_before_change_mds, 2);
        assert_eq!(c.mds_max_retry_ms_in_io_path, 86_400_000);
        assert_eq!(c.chunkserver_max_rpc_timeout_ms, 8000);
        assert_eq!(c.chunkserver_max_retry_sleep_interval_us, 8_000_000);
        assert_eq!(c.file_io_split_max_size_kb, 64);
        assert_eq!(c.chunkserver_max_retry_time_ms, 60_000);
    }

    #[test]
    fn absent_optional_keys_take_builtin_defaults() {
        let c = ClientConfig::parse(&minimal("")).expect("minimal parses");
        assert_eq!(c.mds_max_retry_ms, 8000);
        assert_eq!(c.mds_max_failed_times_before_change_mds, 5);
        assert_eq!(c.chunkserver_max_rpc_timeout_ms, 64_000);
        assert_eq!(c.mds_max_retry_ms_in_io_path, 60_000);
        assert_eq!(c.mds_rpc_timeout_ms, 500);
        assert_eq!(c.file_io_split_max_size_kb, 64);
    }

    #[test]
    fn later_duplicates_win_and_comments_are_dropped() {
        let c = ClientConfig::parse(&minimal(
            "mds.rpcTimeoutMS=100\nmds.rpcTimeoutMS = 250 # trailing\n#mds.rpcTimeoutMS=9\n",
        ))
        .expect("parses");
        assert_eq!(c.mds_rpc_timeout_ms, 250);
    }

    #[test]
    fn transports_default_to_baidu_std_and_can_be_chosen_per_peer() {
        let c = ClientConfig::parse(&minimal("")).expect("parses");
        assert_eq!(c.mds_transport, Protocol::BaiduStd);
        assert_eq!(c.chunkserver_transport, Protocol::BaiduStd);
        let c = ClientConfig::parse(&minimal("mds.transport=grpc\nchunkserver.transport=GRPC\n"))
            .expect("parses");
        assert_eq!(c.mds_transport, Protocol::Grpc);
        assert_eq!(c.chunkserver_transport, Protocol::Grpc);
        let e = ClientConfig::parse(&minimal("chunkserver.transport=http\n")).unwrap_err();
        assert!(e.message.contains("chunkserver.transport"), "{e}");
        let e = ClientConfig::parse(&minimal("global.maxBodySize=65536\n")).unwrap_err();
        assert!(e.message.contains("global.maxBodySize"), "{e}");
    }

    proptest::proptest! {
        /// Any text, and any mix of real keys with arbitrary values, parses to a config or
        /// an error naming a problem; never a panic.
        #[test]
        fn arbitrary_conf_text_never_panics(text in ".{0,400}") {
            let _ = ClientConfig::parse(&text);
        }

        #[test]
        fn real_keys_with_arbitrary_values_never_panic(
            picks in proptest::collection::vec((0..KEYS.len(), "[ -~]{0,24}"), 0..12)
        ) {
            let mut text = String::from("mds.listen.addr=127.0.0.1:6666\n");
            for (i, value) in picks {
                text.push_str(&format!("{}={value}\n", KEYS[i].1));
            }
            if let Err(e) = ClientConfig::parse(&text) {
                proptest::prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn every_key_in_the_table_is_read() {
        for (field, key) in KEYS {
            if *key == "mds.listen.addr" {
                continue;
            }
            let e =
                ClientConfig::parse(&minimal(&format!("{key}=not-a-value\n"))).expect_err(field);
            assert!(e.message.contains(key), "{key}: {e}");
        }
        let keys: std::collections::HashSet<&str> = KEYS.iter().map(|(_, k)| *k).collect();
        assert_eq!(keys.len(), KEYS.len(), "no key twice");
    }

    #[test]
    fn every_key_is_written_back_as_parse_reads_it() {
        let changed = ClientConfig {
            mds_addrs: vec!["127.0.0.1:1".into(), "[::1]:2".into()],
            mds_register_to_mds: false,
            mds_rpc_timeout_ms: 11,
            mds_max_failed_times_before_change_mds: 1,
            chunkserver_max_retry_time_ms: 12,
            chunkserver_transport: Protocol::Grpc,
            discard_enable: true,
            max_body_size: 1 << 27,
            closefd_timeout_s: 7,
            ..ClientConfig::default()
        };
        for conf in [ClientConfig::default(), changed] {
            let text: String = KEYS
                .iter()
                .map(|(field, key)| format!("{key}={}\n", conf.value(key).expect(field)))
                .collect();
            assert_eq!(ClientConfig::parse(&text).unwrap(), conf);
        }
        assert_eq!(ClientConfig::default().value("global.logPath"), None);
        let keys: Vec<&str> = KEYS.iter().map(|(_, k)| *k).collect();
        assert!(CURVEFS_KEYS.iter().all(|k| keys.contains(k)));
    }

    #[test]
    fn booleans_accept_upstream_spellings() {
        for (v, want) in [
            ("true", true),
            ("YES", true),
            ("1", true),
            ("False", false),
            ("no", false),
            ("0", false),
        ] {
            let c =
                ClientConfig::parse(&minimal(&format!("mds.registerToMDS={v}\n"))).expect("parses");
            assert_eq!(c.mds_register_to_mds, want, "{v}");
        }
        let e = ClientConfig::parse(&minimal("mds.registerToMDS=maybe\n")).unwrap_err();
        assert!(e.message.contains("mds.registerToMDS"), "{e}");
    }

    #[test]
    fn missing_mds_address_is_an_error() {
        let e = ClientConfig::parse("global.fileIOSplitMaxSizeKB=64\n").unwrap_err();
        assert_eq!(e.code, ErrorCode::Failed);
        assert!(e.message.contains("mds.listen.addr"), "{e}");
    }

    #[test]
    fn non_numeric_value_names_the_key() {
        let e = ClientConfig::parse(&minimal("chunkserver.opMaxRetry=lots\n")).unwrap_err();
        assert!(e.message.contains("chunkserver.opMaxRetry"), "{e}");
        let e = ClientConfig::parse(&minimal("mds.rpcTimeoutMS=-5\n")).unwrap_err();
        assert!(e.message.contains("mds.rpcTimeoutMS"), "{e}");
    }

    #[test]
    fn bad_mds_address_is_an_error() {
        let text = minimal("mds.listen.addr=localhost\n");
        assert!(ClientConfig::parse(&text).is_err());
        let text = minimal("mds.listen.addr= , \n");
        assert!(ClientConfig::parse(&text).is_err());
    }

    #[test]
    fn zero_that_would_stall_the_core_is_refused() {
        let e = ClientConfig::parse(&minimal("global.fileMaxInFlightRPCNum=0\n")).unwrap_err();
        assert!(e.message.contains("global.fileMaxInFlightRPCNum"), "{e}");
    }
}
