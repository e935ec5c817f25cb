//! Counters and latency histograms of a client and of each open file: upstream's per-file
//! bvars (`src/client/client_metric.h`: user-level and RPC-level read/write/discard,
//! in-flight RPCs, get-leader retries, slow requests) and its MDS client's per-method
//! metrics and failover count.
//!
//! Everything on the IO path is a relaxed atomic: no lock, no allocation. Counters are
//! totals since the file was opened (or the client made); rates are the reader's business
//! (a Prometheus `rate()`, or two snapshots), where upstream keeps per-second windows.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Sub-buckets per power of two: 16 keeps every bucket within 1/16 (6.25 %) of its values.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 (µs: 12 days) get their own bucket; larger ones land in the last.
const TOP_BIT: u32 = 40;
/// Tier 0 holds 0..16 exactly; tier t ≥ 1 the 16 buckets of [2^(t+3), 2^(t+4)); one more
/// bucket takes everything from 2^40 up.
const BUCKETS: usize = (((TOP_BIT - SUB_BITS + 1) as u64) << SUB_BITS) as usize + 1;

/// A log-linear histogram of `u64` values (latencies in µs), recorded without a lock:
/// HdrHistogram's bucket layout with 16 sub-buckets per power of two, so a quantile read
/// from it is within 6.25 % of the true one (and never above the largest value seen).
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let p = (63 - v.leading_zeros()).min(TOP_BIT);
    if p == TOP_BIT {
        return BUCKETS - 1;
    }
    let shift = p - SUB_BITS;
    let (tier, sub) = (u64::from(shift) + 1, (v >> shift) & (SUB - 1));
    ((tier << SUB_BITS) + sub) as usize
}

/// The largest value bucket `i` holds.
fn bucket_upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i >> SUB_BITS) - 1;
    let sub = i & (SUB - 1);
    ((SUB + sub + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&self, v: u64) {
        self.buckets[bucket_of(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
    }

    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// A summary read without stopping writers: a value recorded meanwhile may be in the
    /// count but not yet in its bucket, which moves a quantile by at most one sample.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let max = self.max.load(Ordering::Relaxed);
        let quantile = |q: f64| -> u64 {
            if total == 0 {
                return 0;
            }
            // The rank of the q-quantile, 1-based: the smallest value with at least
            // q × total values at or below it.
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_upper(i).min(max);
                }
            }
            max
        };
        HistogramSnapshot {
            count: total,
            sum: self.sum.load(Ordering::Relaxed),
            max,
            p50: quantile(0.5),
            p99: quantile(0.99),
            p999: quantile(0.999),
        }
    }
}

/// A histogram's summary; values in the unit recorded (µs for latencies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum: u64,
    pub max: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

/// One kind of call (upstream's `InterfaceMetric`): calls that succeeded and failed, the
/// bytes they moved, timeouts and redirects (RPC level), and the latency of the ones that
/// succeeded.
#[derive(Default)]
pub struct OpMetrics {
    ops: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    timeouts: AtomicU64,
    redirects: AtomicU64,
    latency: Histogram,
}

impl OpMetrics {
    pub fn ok(&self, bytes: u64, took: Duration) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.latency.record_duration(took);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn timeout(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn redirect(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.redirects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> OpSnapshot {
        OpSnapshot {
            ops: self.ops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            redirects: self.redirects.load(Ordering::Relaxed),
            latency_us: self.latency.snapshot(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    pub ops: u64,
    pub errors: u64,
    pub bytes: u64,
    pub timeouts: u64,
    pub redirects: u64,
    pub latency_us: HistogramSnapshot,
}

/// The user-level operations, as upstream's `_read`, `_write`, `_discard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOp {
    Read,
    Write,
    Discard,
}

/// The chunk RPCs counted at RPC level, as upstream's `_read_rpc`, `_write_rpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcOp {
    Read,
    Write,
}

/// The IO metrics of one open file (upstream's `FileMetric`), or of all the files a
/// client opened (the same counters, summed as they are recorded).
#[derive(Default)]
pub struct IoMetrics {
    read: OpMetrics,
    write: OpMetrics,
    discard: OpMetrics,
    read_rpc: OpMetrics,
    write_rpc: OpMetrics,
    inflight_rpcs: AtomicI64,
    get_leader_retries: AtomicU64,
    slow_requests: AtomicU64,
}

impl IoMetrics {
    pub fn user(&self, op: UserOp) -> &OpMetrics {
        match op {
            UserOp::Read => &self.read,
            UserOp::Write => &self.write,
            UserOp::Discard => &self.discard,
        }
    }

    pub fn rpc(&self, op: RpcOp) -> &OpMetrics {
        match op {
            RpcOp::Read => &self.read_rpc,
            RpcOp::Write => &self.write_rpc,
        }
    }

    pub fn rpc_started(&self) {
        self.inflight_rpcs.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rpc_ended(&self) {
        self.inflight_rpcs.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get_leader_retry(&self) {
        self.get_leader_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn slow_request(&self) {
        self.slow_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            read: self.read.snapshot(),
            write: self.write.snapshot(),
            discard: self.discard.snapshot(),
            read_rpc: self.read_rpc.snapshot(),
            write_rpc: self.write_rpc.snapshot(),
            inflight_rpcs: self.inflight_rpcs.load(Ordering::Relaxed).max(0) as u64,
            get_leader_retries: self.get_leader_retries.load(Ordering::Relaxed),
            slow_requests: self.slow_requests.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSnapshot {
    pub read: OpSnapshot,
    pub write: OpSnapshot,
    pub discard: OpSnapshot,
    pub read_rpc: OpSnapshot,
    pub write_rpc: OpSnapshot,
    pub inflight_rpcs: u64,
    pub get_leader_retries: u64,
    pub slow_requests: u64,
}

/// Where one IO's numbers go: its file's metrics and its client's.
#[derive(Clone, Copy)]
pub struct Sink<'a> {
    pub file: Option<&'a IoMetrics>,
    pub client: &'a IoMetrics,
}

impl Sink<'_> {
    pub fn each(&self, f: impl Fn(&IoMetrics)) {
        f(self.client);
        if let Some(file) = self.file {
            f(file);
        }
    }
}

/// The MDS client's metrics (upstream's `MDSClientMetric`): one [`OpMetrics`] per RPC
/// method, the number of MDS failovers and the address in use.
#[derive(Default)]
pub struct MdsMetrics {
    /// Looked up per MDS call (not on the chunk IO path); a method's entry is made once.
    methods: RwLock<Vec<(&'static str, Arc<OpMetrics>)>>,
    failovers: AtomicU64,
}

impl MdsMetrics {
    pub fn method(&self, name: &'static str) -> Arc<OpMetrics> {
        let found = crate::read_lock(&self.methods)
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.clone());
        if let Some(m) = found {
            return m;
        }
        let mut all = crate::write_lock(&self.methods);
        if let Some((_, m)) = all.iter().find(|(n, _)| *n == name) {
            return m.clone();
        }
        let m = Arc::new(OpMetrics::default());
        all.push((name, m.clone()));
        m
    }

    pub fn failover(&self) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, current_addr: String) -> MdsSnapshot {
        let mut methods: Vec<(String, OpSnapshot)> = crate::read_lock(&self.methods)
            .iter()
            .map(|(n, m)| (n.to_string(), m.snapshot()))
            .collect();
        methods.sort_by(|a, b| a.0.cmp(&b.0));
        MdsSnapshot {
            methods,
            failovers: self.failovers.load(Ordering::Relaxed),
            current_addr,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdsSnapshot {
    /// By method name (OpenFile, GetFileInfo, …), sorted.
    pub methods: Vec<(String, OpSnapshot)>,
    pub failovers: u64,
    pub current_addr: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_hold_their_values() {
        let mut prev_upper = None;
        for i in 0..BUCKETS - 1 {
            let upper = bucket_upper(i);
            if let Some(p) = prev_upper {
                assert_eq!(bucket_of(p + 1), i, "first value of bucket {i}");
            }
            assert_eq!(bucket_of(upper), i, "last value of bucket {i}");
            prev_upper = Some(upper);
        }
        assert_eq!(bucket_of(prev_upper.unwrap() + 1), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 10_000);
        assert_eq!(s.sum, 10_000 * 10_001 / 2);
        assert_eq!(s.max, 10_000);
        for (got, want) in [(s.p50, 5_000.0), (s.p99, 9_900.0), (s.p999, 9_990.0)] {
            let err = (got as f64 - want) / want;
            assert!((0.0..0.0625).contains(&err), "{got} for {want}");
        }
    }

    #[test]
    fn an_empty_histogram_reads_zero() {
        assert_eq!(
            Histogram::default().snapshot(),
            HistogramSnapshot::default()
        );
    }
}
