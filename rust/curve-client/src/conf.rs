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
//! Each key is declared once, in the [`client_conf!`] table below (field, type, default,
//! key, doc); the struct, its `Default`, [`KEYS`], [`CURVEFS_KEYS`], [`CONF_KEYS`],
//! [`ClientConfig::value`] and [`ClientConfig::parse`] are generated from it, and the Python
//! `Client(**options)`, its `ClientOptions` type and the docs' key table come from
//! [`CONF_KEYS`]. Keys curvefs adds to upstream's are declared in their own group.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::transport::Protocol;

/// How a value of one type is read from and written to client.conf.
trait ConfValue: Sized {
    /// The kind named in [`ConfKey::kind`]: "int", "bool", "transport" or "addresses".
    const KIND: &'static str;
    fn read(key: &str, raw: &str) -> Result<Self>;
    fn write(&self) -> String;
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl ConfValue for $t {
            const KIND: &'static str = "int";
            fn read(key: &str, raw: &str) -> Result<Self> {
                raw.parse().map_err(|_| {
                    Error::failed(format!("client conf key {key}: {raw:?} is not a valid number"))
                })
            }
            fn write(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
numbers!(u32, u64);

impl ConfValue for bool {
    const KIND: &'static str = "bool";
    fn read(key: &str, raw: &str) -> Result<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(Error::failed(format!(
                "client conf key {key}: {raw:?} is not a boolean"
            ))),
        }
    }
    fn write(&self) -> String {
        if *self { "true" } else { "false" }.to_string()
    }
}

impl ConfValue for Protocol {
    const KIND: &'static str = "transport";
    fn read(key: &str, raw: &str) -> Result<Self> {
        Protocol::parse(&raw.to_ascii_lowercase()).ok_or_else(|| {
            Error::failed(format!(
                "client conf key {key}: {raw:?} is not a transport (baidu_std or grpc)"
            ))
        })
    }
    fn write(&self) -> String {
        self.name().to_string()
    }
}

/// `mds.listen.addr`: comma-separated `ip:port`s.
impl ConfValue for Vec<String> {
    const KIND: &'static str = "addresses";
    fn read(key: &str, raw: &str) -> Result<Self> {
        let addrs: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(Error::failed(format!("client conf key {key} is empty")));
        }
        for a in &addrs {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(Error::failed(format!(
                    "client conf key {key}: {a:?} is not ip:port"
                )));
            }
        }
        Ok(addrs)
    }
    fn write(&self) -> String {
        self.join(",")
    }
}

/// One key of [`CONF_KEYS`], as the Python API and the docs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfKey {
    /// The [`ClientConfig`] field, and `curvefs.Client`'s keyword argument.
    pub field: &'static str,
    /// The client.conf key.
    pub key: &'static str,
    /// "int", "bool", "transport" (`baidu_std` or `grpc`) or "addresses".
    pub kind: &'static str,
    /// The field's doc comment.
    pub doc: &'static str,
    /// A key curvefs adds to upstream's.
    pub curvefs: bool,
}

/// Declares every key once: `field: type = default, "client.conf key";` with its doc
/// comment, in two groups (upstream's keys, then curvefs's own).
macro_rules! client_conf {
    (
        upstream { $( $(#[doc = $udoc:literal])+ $ufield:ident: $uty:ty = $udefault:expr, $ukey:literal; )+ }
        curvefs { $( $(#[doc = $cdoc:literal])+ $cfield:ident: $cty:ty = $cdefault:expr, $ckey:literal; )+ }
    ) => {
        /// The client settings, typed. Field docs name the `client.conf` key.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct ClientConfig {
            $( #[doc = concat!("`", $ukey, "`:")] $(#[doc = $udoc])+ pub $ufield: $uty, )+
            $( #[doc = concat!("`", $ckey, "` (curvefs):")] $(#[doc = $cdoc])+ pub $cfield: $cty, )+
        }

        impl Default for ClientConfig {
            /// Upstream's sample client.conf values for the required keys, built-in defaults
            /// for the rest; handy for tests and for callers that build a config in code.
            fn default() -> Self {
                Self {
                    $( $ufield: $udefault, )+
                    $( $cfield: $cdefault, )+
                }
            }
        }

        /// Every key the core reads, with the name of its [`ClientConfig`] field: the Python
        /// API takes these names as keyword arguments (`curvefs.Client(mds_rpc_timeout_ms=1000)`).
        pub const KEYS: &[(&str, &str)] = &[
            $( (stringify!($ufield), $ukey), )+
            $( (stringify!($cfield), $ckey), )+
        ];

        /// The keys curvefs adds to upstream's. A conf written for stock clients too (the
        /// local cluster's) leaves them out where they hold their default.
        pub const CURVEFS_KEYS: &[&str] = &[ $( $ckey, )+ ];

        /// Every key with its kind and doc: what the Python API and the docs' table show.
        pub const CONF_KEYS: &[ConfKey] = &[
            $( ConfKey {
                field: stringify!($ufield),
                key: $ukey,
                kind: <$uty as ConfValue>::KIND,
                doc: concat!($($udoc),+),
                curvefs: false,
            }, )+
            $( ConfKey {
                field: stringify!($cfield),
                key: $ckey,
                kind: <$cty as ConfValue>::KIND,
                doc: concat!($($cdoc),+),
                curvefs: true,
            }, )+
        ];

        impl ClientConfig {
            /// The value of `key` (one of [`KEYS`]) as client.conf spells it, so that
            /// [`parse`] reads the same value back; `None` for any other key.
            ///
            /// [`parse`]: ClientConfig::parse
            pub fn value(&self, key: &str) -> Option<String> {
                match key {
                    $( $ukey => Some(self.$ufield.write()), )+
                    $( $ckey => Some(self.$cfield.write()), )+
                    _ => None,
                }
            }

            /// Every key from `kv`, the absent ones at their default.
            fn read(kv: &HashMap<String, String>) -> Result<Self> {
                fn get<T: ConfValue>(
                    kv: &HashMap<String, String>,
                    key: &str,
                    default: T,
                ) -> Result<T> {
                    kv.get(key).map_or(Ok(default), |raw| T::read(key, raw))
                }
                let d = Self::default();
                Ok(Self {
                    $( $ufield: get(kv, $ukey, d.$ufield)?, )+
                    $( $cfield: get(kv, $ckey, d.$cfield)?, )+
                })
            }
        }
    };
}

client_conf! {
    upstream {
        /// MDS endpoints `ip:port`, comma-separated, tried in order with failover.
        mds_addrs: Vec<String> = vec!["127.0.0.1:6666".to_string()], "mds.listen.addr";
        /// Send clientIP/clientPort with RefreshSession and CloseFile.
        mds_register_to_mds: bool = true, "mds.registerToMDS";
        /// First timeout of an MDS call, ms.
        mds_rpc_timeout_ms: u64 = 500, "mds.rpcTimeoutMS";
        /// Largest timeout of an MDS call as it backs off, ms.
        mds_max_rpc_timeout_ms: u64 = 2000, "mds.maxRPCTimeoutMS";
        /// Retry budget of a metadata call, ms.
        mds_max_retry_ms: u64 = 8000, "mds.maxRetryMS";
        /// Failed calls to one MDS before the client tries the next.
        mds_max_failed_times_before_change_mds: u32 = 5, "mds.maxFailedTimesBeforeChangeMDS";
        /// RefreshSession calls per lease.
        mds_refresh_times_per_lease: u32 = 4, "mds.refreshTimesPerLease";
        /// Pause between MDS retries, µs.
        mds_rpc_retry_interval_us: u64 = 100_000, "mds.rpcRetryIntervalUS";
        /// Quick retries before the client waits `mds.waitSleepMs`.
        mds_normal_retry_times_before_trigger_wait: u32 = 3, "mds.normalRetryTimesBeforeTriggerWait";
        /// Budget of the IO path's MDS calls (GetOrAllocateSegment,
        /// GetChunkServerListInCopySets), ms; upstream declares it but retries those calls
        /// without limit.
        mds_max_retry_ms_in_io_path: u64 = 60_000, "mds.maxRetryMsInIOPath";
        /// Wait after the quick retries, ms.
        mds_wait_sleep_ms: u64 = 10_000, "mds.waitSleepMs";
        /// Timeout of a GetLeader call, ms.
        metacache_get_leader_timeout_ms: u64 = 500, "metacache.getLeaderTimeOutMS";
        /// GetLeader attempts before a leader lookup fails.
        metacache_get_leader_retry: u32 = 5, "metacache.getLeaderRetry";
        /// Pause between leader lookups, µs.
        metacache_rpc_retry_interval_us: u64 = 100_000, "metacache.rpcRetryIntervalUS";
        /// Pause between chunk request retries, µs.
        chunkserver_op_retry_interval_us: u64 = 100_000, "chunkserver.opRetryIntervalUS";
        /// Attempts of one chunk request.
        chunkserver_op_max_retry: u64 = 2_500_000, "chunkserver.opMaxRetry";
        /// First timeout of a chunk request, ms.
        chunkserver_rpc_timeout_ms: u64 = 1000, "chunkserver.rpcTimeoutMS";
        /// Largest pause between chunk request retries as they back off, µs.
        chunkserver_max_retry_sleep_interval_us: u64 = 64_000_000, "chunkserver.maxRetrySleepIntervalUS";
        /// Largest timeout of a chunk request as it backs off, ms.
        chunkserver_max_rpc_timeout_ms: u64 = 64_000, "chunkserver.maxRPCTimeoutMS";
        /// Timeouts in a row before a chunkserver is checked for health.
        chunkserver_max_stable_timeout_times: u32 = 10, "chunkserver.maxStableTimeoutTimes";
        /// Timeout of that health check, ms.
        chunkserver_check_health_timeout_ms: u64 = 100, "chunkserver.checkHealthTimeoutMs";
        /// Unstable chunkservers of a server before the whole server counts as unstable.
        chunkserver_server_stable_threshold: u32 = 3, "chunkserver.serverStableThreshold";
        /// Retries after which a timeout backs off even without an overload answer.
        chunkserver_min_retry_times_force_timeout_backoff: u32 = 5, "chunkserver.minRetryTimesForceTimeoutBackoff";
        /// A chunk request slower than this is logged as slow, ms.
        chunkserver_slow_request_threshold_ms: u64 = 45_000, "chunkserver.slowRequestThresholdMS";
        /// Chunk RPCs in flight per open file.
        file_max_in_flight_rpc_num: u32 = 128, "global.fileMaxInFlightRPCNum";
        /// Largest chunk sub-request, KiB.
        file_io_split_max_size_kb: u32 = 64, "global.fileIOSplitMaxSizeKB";
        /// Client-side QoS (parsed; not implemented).
        throttle_enable: bool = false, "throttle.enable";
        /// Discard releases whole segments through the MDS.
        discard_enable: bool = false, "discard.enable";
        /// Discard granularity (parsed; discard here zeroes partial ranges at any size).
        discard_granularity: u32 = 4096, "discard.granularity";
        /// Delay before a discarded segment is released (parsed; segments are released at
        /// once, see `file.rs`), ms.
        discard_task_delay_ms: u64 = 60_000, "discard.taskDelayMs";
        /// Seconds a lazy clone's source stays open unused.
        closefd_timeout_s: u64 = 300, "closefd.timeout";
        /// Seconds between sweeps for unused clone sources.
        closefd_time_interval_s: u64 = 600, "closefd.timeInterval";
    }
    curvefs {
        /// Wall time one user IO may spend waiting for a lapsed lease to be renewed and
        /// retrying its chunk requests before it fails (DISABLEIO, or the last chunk error,
        /// FAILED for transport errors), ms. Upstream retries about forever; a Python caller
        /// needs an answer.
        chunkserver_max_retry_time_ms: u64 = 60_000, "chunkserver.maxRetryTimeMS";
        /// TCP connect timeout of every channel, ms.
        rpc_connect_timeout_ms: u64 = 1000, "global.rpcConnectTimeoutMS";
        /// HTTP/2 connections per chunkserver, used round-robin, because one connection's
        /// buffer task serialises its requests (gRPC only; baidu_std keeps brpc's one
        /// connection per chunkserver).
        channels_per_chunkserver: u32 = 2, "global.channelsPerChunkServer";
        /// The wire to the MDS: `baidu_std` (brpc's protocol, what stock Curve servers
        /// speak) or `grpc` (a stock MDS answers both on its port).
        mds_transport: Protocol = Protocol::BaiduStd, "mds.transport";
        /// The wire to the chunkservers: `baidu_std` or `grpc`; `grpc` carries chunk IO only
        /// to curvefs's local chunkservers (see `transport::route`).
        chunkserver_transport: Protocol = Protocol::BaiduStd, "chunkserver.transport";
        /// The largest baidu_std frame body sent or accepted (brpc's `max_body_size`), bytes.
        max_body_size: u32 = 64 << 20, "global.maxBodySize";
    }
}

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

    pub fn parse(text: &str) -> Result<Self> {
        let kv = parse_pairs(text);
        if let Some(missing) = REQUIRED_KEYS.iter().find(|k| !kv.contains_key(**k)) {
            return Err(Error::failed(format!(
                "client conf lacks required key {missing}"
            )));
        }
        let conf = Self::read(&kv)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn the_declaration_gives_every_key_a_kind_and_a_doc() {
        assert_eq!(CONF_KEYS.len(), KEYS.len());
        for (row, (field, key)) in CONF_KEYS.iter().zip(KEYS) {
            assert_eq!((row.field, row.key), (*field, *key));
            assert!(!row.doc.trim().is_empty(), "{key}");
            assert_eq!(row.curvefs, CURVEFS_KEYS.contains(key), "{key}");
        }
    }

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
