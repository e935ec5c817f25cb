//! The local Curve cluster: its layout on disk, its client.conf, and the entry points that
//! serve its processes.
//!
//! This crate is the one owner of `<data_dir>/cluster.json` and of the cluster's generated
//! `client.conf`: [`ClusterLayout::create`] writes the layout from a [`ClusterSpec`] (every
//! value the spec leaves out takes its default here), every server process reads it here
//! and derives its own configuration from it, so the MDSes and the chunkservers always
//! agree on copyset membership, and [`ClusterLayout::write_client_conf`] writes the conf
//! from the client core's own defaults (`curve_client::conf`). `LocalCluster` (Python)
//! only asks. Nothing here speaks the protocol: that lives in `curve-mds` and
//! `curve-chunkserver`.
//!
//! Each server gets its listening socket already bound by the process that starts it
//! ([`ServerSocket`]), so no other process can take a port between its choice and the
//! server's start. With several MDSes, one is active and the others stand by without
//! opening their ports ([`serve_mds`]).
//!
//! The server processes log here too: [`install_server_log`] makes a `tracing` subscriber
//! writing to `<data_dir>/logs/<server>.log` the process's global default.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use curve_chunkserver::{ChunkServerConfig, CurveVolumes, Durability, HostedCopyset, PeerEntry};
use curve_client::UserInfo;
use curve_mds::{ChunkServerEntry, CopysetEntry, MdsConfig, MdsOptions, TopologyConfig};
use serde::{Deserialize, Serialize};

mod conf;
mod origin;
mod socket;

pub use conf::{CHUNKSERVER_CLIENT_CONF_FILE, CLIENT_CONF_FILE};
pub use socket::ServerSocket;

/// Name of the layout file inside a cluster's data directory.
pub const LAYOUT_FILE: &str = "cluster.json";

/// Replicas per copyset (Curve's default), fewer when the cluster has fewer chunkservers.
pub const REPLICAS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists already: a cluster lives in {dir}", dir = .path.parent().unwrap_or(Path::new("")).display())]
    Exists { path: PathBuf },
    #[error("a cluster spec is invalid: {0}")]
    Spec(String),
    #[error("client.conf: {0}")]
    ClientConf(String),
    #[error("{server}: {message}")]
    Socket { server: String, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid cluster layout: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("chunkserver {0} is not part of this cluster")]
    UnknownChunkServer(u32),
    #[error("cannot resolve host {host:?}: {message}")]
    Resolve { host: String, message: String },
    #[error("MDS: {0}")]
    Mds(String),
    #[error("chunkserver {id}: {message}")]
    ChunkServer { id: u32, message: String },
    #[error("cannot log to {path}: {message}")]
    Log { path: PathBuf, message: String },
}

/// The environment variable holding the servers' log filter, in tracing-subscriber's
/// `EnvFilter` syntax (`debug`, `warn,curve_chunkserver=debug`, ...); `info` when unset;
/// openraft at `error` unless the filter names it.
pub const LOG_ENV: &str = "CURVEFS_LOG";

/// The log file of `server` (`"mds"`, `"chunkserver-<id>"`) of the cluster in `dir`.
pub fn server_log_path(dir: &Path, server: &str) -> PathBuf {
    dir.join("logs").join(format!("{server}.log"))
}

/// The servers' filter from [`LOG_ENV`]'s value: `info` when unset or blank, and openraft
/// at `error` unless the value names openraft itself. openraft reports every election,
/// shutdown and unreachable peer (each heartbeat) at info and warn, so `info` alone buries
/// the servers' own events (the chunkserver logs what matters of those itself).
fn server_log_filter(env: Option<&str>) -> String {
    let text = env
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("info");
    if text.contains("openraft") {
        text.to_owned()
    } else {
        format!("{text},openraft=error")
    }
}

/// Makes a subscriber appending `server`'s events to its log file the global default of
/// this process. Call it once, in a server process, before serving.
///
/// The Python module bridges the `log` facade to Python's logging at import, and
/// `tracing`'s `log` feature turns events into `log` records only while no subscriber is
/// set; once this one is, the servers' events reach the file, not Python. The file is
/// opened for appending, as `LocalCluster` opens it for the process's stderr, so a panic
/// or a traceback lands among the events. A process that already has a global subscriber
/// (a second server run in the same process) keeps it.
pub fn install_server_log(dir: &Path, server: &str) -> Result<(), Error> {
    if tracing::dispatcher::has_been_set() {
        return Ok(());
    }
    let path = server_log_path(dir, server);
    let fail = |message: String| Error::Log {
        path: path.clone(),
        message,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(server_log_filter(
        std::env::var(LOG_ENV).ok().as_deref(),
    ))
    .map_err(|e| fail(format!("{LOG_ENV}: {e}")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| fail(e.to_string()))?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_thread_names(false)
        // One write per event on an O_APPEND file: lines from a process killed mid-run are
        // whole, and nothing is left in a buffer to lose.
        .with_writer(std::sync::Arc::new(file))
        .finish();
    tracing::subscriber::set_global_default(subscriber).map_err(|e| fail(e.to_string()))
}

/// One chunkserver of the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ChunkServerLayout {
    pub id: u32,
    pub port: u16,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_logical_pool_id() -> u32 {
    1
}
fn default_copysets() -> u32 {
    100
}
fn default_poolset() -> String {
    "default".into()
}
fn default_pool_capacity() -> u64 {
    1 << 50
}
fn default_chunkservers() -> Vec<ChunkServerLayout> {
    (1..=3)
        .map(|id| ChunkServerLayout {
            id,
            port: 8200 + id as u16,
        })
        .collect()
}

/// The raw file. Unknown fields are ignored so that a newer layout (more fields) does not
/// break an older server.
#[derive(Debug, Deserialize, Serialize)]
struct LayoutFile {
    #[serde(default = "default_host")]
    host: String,
    #[serde(default)]
    external_ip: Option<String>,
    mds_ports: Vec<u16>,
    #[serde(default = "default_chunkservers")]
    chunkservers: Vec<ChunkServerLayout>,
    #[serde(default = "default_logical_pool_id")]
    logical_pool_id: u32,
    #[serde(default = "default_copysets")]
    copysets: u32,
    #[serde(default = "default_poolset")]
    poolset: String,
    #[serde(default = "default_pool_capacity")]
    pool_capacity: u64,
    #[serde(default)]
    mds: MdsOptions,
    #[serde(default)]
    chunk_fsync: bool,
    /// One port per snapshot/clone service instance: one active, the others standing by.
    #[serde(default)]
    snapshot_clone_ports: Vec<u16>,
    /// The one port of layouts written before standbys existed.
    #[serde(default, skip_serializing)]
    snapshot_clone_port: Option<u16>,
    #[serde(default)]
    snapshot_clone: SnapshotCloneConf,
}

/// The settings of the snapshot/clone service a layout may give, under the names of
/// upstream's `conf/snapshot_clone_server.conf`; the others are the service's own defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct SnapshotCloneConf {
    /// Snapshots per volume, failed ones not counted (see
    /// [`curve_snapshotclone::SnapshotOptions::max_snapshots`]).
    #[serde(rename = "server.maxSnapshotLimit")]
    pub max_snapshot_limit: usize,
}

impl Default for SnapshotCloneConf {
    fn default() -> Self {
        Self {
            max_snapshot_limit: curve_snapshotclone::SnapshotOptions::default().max_snapshots,
        }
    }
}

/// A validated `cluster.json` and the directory it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    pub dir: PathBuf,
    /// Where the servers listen, and where chunkservers replicate to each other.
    pub host: String,
    /// Where clients reach the servers, on the same ports, if not `host`: the MDS reports
    /// it as each chunkserver's `externalIp` (upstream's client-facing network). The
    /// local cluster puts its fault-injecting proxies there, so that faults hit the
    /// clients' paths and not replication.
    pub external_ip: Option<String>,
    pub mds_ports: Vec<u16>,
    pub chunkservers: Vec<ChunkServerLayout>,
    pub logical_pool_id: u32,
    pub copysets: u32,
    pub poolset: String,
    pub pool_capacity: u64,
    pub mds: MdsOptions,
    /// Chunkservers put every acknowledged write on stable storage (`Durability::Sync`),
    /// and the MDS fsyncs every commit of its store; off, a write or a metadata change
    /// survives a killed process but not a power cut.
    pub chunk_fsync: bool,
    /// Where the snapshot/clone service's instances listen (none: the cluster has no
    /// service). The one holding the lease of the service's folder serves; the others
    /// stand by with their ports closed, as upstream's do.
    pub snapshot_clone_ports: Vec<u16>,
    /// What the snapshot/clone service is configured with.
    pub snapshot_clone: SnapshotCloneConf,
}

/// What a new local cluster is made of, as its creator asks for it. The creator has bound
/// the ports already (and holds them until it hands each to its server, see
/// [`ServerSocket`]); everything the spec leaves out takes its default here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default = "default_host")]
    pub host: String,
    /// One port per MDS: the first is the one that starts active.
    pub mds_ports: Vec<u16>,
    /// One port per chunkserver; their ids are 1, 2, ...
    pub chunkserver_ports: Vec<u16>,
    #[serde(default = "default_copysets")]
    pub copysets: u32,
    /// Fields of [`MdsOptions`] by name; the others keep their defaults.
    #[serde(default)]
    pub mds: serde_json::Map<String, serde_json::Value>,
    /// Where clients reach the servers if not `host` (see [`ClusterLayout::external_ip`]).
    #[serde(default)]
    pub external_ip: Option<String>,
    /// See [`ClusterLayout::chunk_fsync`].
    #[serde(default)]
    pub chunk_fsync: bool,
    /// See [`ClusterLayout::snapshot_clone_ports`].
    #[serde(default)]
    pub snapshot_clone_ports: Vec<u16>,
    /// Keys of [`SnapshotCloneConf`] (upstream's names); the others keep their defaults.
    #[serde(default)]
    pub snapshot_clone: serde_json::Map<String, serde_json::Value>,
}

/// The name of MDS `index` (its port is `mds_ports[index]`): its log is `logs/<name>.log`.
/// The first is `mds`, as it was when a cluster had one.
pub fn mds_server_name(index: usize) -> String {
    if index == 0 {
        "mds".into()
    } else {
        format!("mds-{index}")
    }
}

/// The name of the snapshot/clone service, and of its folder.
pub const SNAPSHOT_CLONE_SERVER: &str = "snapshotclone";

/// The name of snapshot/clone service instance `index` (its port is
/// `snapshot_clone_ports[index]`): its log is `logs/<name>.log`. The first is
/// `snapshotclone`, as it was when the service had one instance.
pub fn snapshot_clone_server_name(index: usize) -> String {
    if index == 0 {
        SNAPSHOT_CLONE_SERVER.into()
    } else {
        format!("{SNAPSHOT_CLONE_SERVER}-{index}")
    }
}

/// The name of chunkserver `id`: its log is `logs/<name>.log`.
pub fn chunkserver_server_name(id: u32) -> String {
    format!("chunkserver-{id}")
}

impl ClusterLayout {
    /// Writes `<dir>/cluster.json` for a new cluster made as `spec` asks, and returns it.
    /// Refuses if the folder holds a layout already (load that one instead). The file is
    /// written whole or not at all: a half-written layout would strand the folder's data.
    #[allow(
        clippy::needless_update,
        reason = "fields a chunkserver's entry may gain later take their defaults"
    )]
    pub fn create(dir: &Path, spec: &ClusterSpec) -> Result<Self, Error> {
        let path = dir.join(LAYOUT_FILE);
        let mds: MdsOptions = options("MDS", &spec.mds)?;
        let file = LayoutFile {
            host: spec.host.clone(),
            mds_ports: spec.mds_ports.clone(),
            chunkservers: (1..)
                .zip(&spec.chunkserver_ports)
                .map(|(id, &port)| ChunkServerLayout {
                    id,
                    port,
                    ..ChunkServerLayout::default()
                })
                .collect(),
            logical_pool_id: default_logical_pool_id(),
            copysets: spec.copysets,
            poolset: default_poolset(),
            pool_capacity: default_pool_capacity(),
            mds,
            external_ip: spec.external_ip.clone(),
            chunk_fsync: spec.chunk_fsync,
            snapshot_clone_ports: spec.snapshot_clone_ports.clone(),
            snapshot_clone_port: None,
            snapshot_clone: options("snapshot/clone service", &spec.snapshot_clone)?,
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Spec(e.to_string()))?;
        // What is written is what a server will read: validate it through the reader.
        let layout = Self::parse(dir, &text)?;
        let write_err = |source| Error::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write_err)?;
        let tmp = dir.join(format!("{LAYOUT_FILE}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            // A link, unlike a rename, never replaces a layout another creator wrote.
            std::fs::hard_link(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(layout),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists { path }),
            Err(e) => Err(write_err(e)),
        }
    }

    /// Reads `<dir>/cluster.json`, or `None` if the folder holds no cluster yet.
    pub fn load_if_present(dir: &Path) -> Result<Option<Self>, Error> {
        match Self::load(dir) {
            Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// What a caller starting the servers needs to know, as JSON: each server's name, port,
    /// address and log file, the copysets, the root user's password, the client.conf path.
    pub fn describe(&self) -> serde_json::Value {
        let log = |name: &str| server_log_path(&self.dir, name);
        let mds: Vec<_> = self
            .mds_ports
            .iter()
            .enumerate()
            .map(|(index, &port)| {
                let name = mds_server_name(index);
                serde_json::json!({
                    "index": index,
                    "name": name,
                    "port": port,
                    "addr": self.addr_string(port),
                    "log": log(&name),
                })
            })
            .collect();
        let chunkservers: Vec<_> = self
            .chunkservers
            .iter()
            .map(|c| {
                let name = chunkserver_server_name(c.id);
                serde_json::json!({
                    "id": c.id,
                    "name": name,
                    "port": c.port,
                    "addr": self.addr_string(c.port),
                    "log": log(&name),
                    "data_dir": self.chunkserver_data_dir(c.id),
                })
            })
            .collect();
        let snapshot_clone: Vec<_> = self
            .snapshot_clone_ports
            .iter()
            .enumerate()
            .map(|(index, &port)| {
                let name = snapshot_clone_server_name(index);
                serde_json::json!({
                    "index": index,
                    "name": name,
                    "port": port,
                    "addr": self.addr_string(port),
                    "log": log(&name),
                    "data_dir": self.snapshot_clone_data_dir(),
                    "store_dir": self.snapshot_clone_store_dir(),
                })
            })
            .collect();
        serde_json::json!({
            "dir": self.dir,
            "host": self.host,
            "external_ip": self.external_ip,
            "chunk_fsync": self.chunk_fsync,
            "mds": mds,
            "chunkservers": chunkservers,
            "logical_pool_id": self.logical_pool_id,
            "copysets": self.copysets,
            "root_user": self.mds.root_user,
            "root_password": self.mds.root_password,
            "client_conf": self.dir.join(CLIENT_CONF_FILE),
            "snapshot_clone": snapshot_clone,
        })
    }

    /// The snapshot/clone service's folder, shared by its instances: its task records, its
    /// client.conf and the lease (`leader/`).
    pub fn snapshot_clone_data_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_CLONE_SERVER)
    }

    /// Where the snapshot/clone service dumps snapshots (upstream's S3 bucket) unless its
    /// folder holds an upstream `s3.conf` naming an S3 endpoint
    /// ([`Self::snapshot_clone_s3_conf`]): object keys are files under it.
    pub fn snapshot_clone_store_dir(&self) -> PathBuf {
        self.snapshot_clone_data_dir().join("data")
    }

    /// An upstream `s3.conf` the snapshot/clone service reads at start, if present.
    pub fn snapshot_clone_s3_conf(&self) -> PathBuf {
        self.snapshot_clone_data_dir().join("s3.conf")
    }

    /// Reads and validates `<dir>/cluster.json`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(LAYOUT_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(dir, &text)
    }

    /// Parses and validates the text of a `cluster.json` that lives in `dir`.
    pub fn parse(dir: &Path, text: &str) -> Result<Self, Error> {
        let path = dir.join(LAYOUT_FILE);
        let raw: LayoutFile = serde_json::from_str(text).map_err(|source| Error::Parse {
            path: path.clone(),
            source,
        })?;
        let layout = ClusterLayout {
            dir: dir.to_path_buf(),
            host: raw.host,
            external_ip: raw.external_ip,
            mds_ports: raw.mds_ports,
            chunkservers: raw.chunkservers,
            logical_pool_id: raw.logical_pool_id,
            copysets: raw.copysets,
            poolset: raw.poolset,
            pool_capacity: raw.pool_capacity,
            mds: raw.mds,
            chunk_fsync: raw.chunk_fsync,
            snapshot_clone_ports: if raw.snapshot_clone_ports.is_empty() {
                raw.snapshot_clone_port.into_iter().collect()
            } else {
                raw.snapshot_clone_ports
            },
            snapshot_clone: raw.snapshot_clone,
        };
        layout
            .validate()
            .map_err(|message| Error::Invalid { path, message })?;
        Ok(layout)
    }

    fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("host is empty".into());
        }
        if let Some(ip) = &self.external_ip
            && ip.parse::<IpAddr>().is_err()
        {
            return Err(format!("external_ip {ip:?} is not an IP address"));
        }
        if self.mds_ports.is_empty() {
            return Err("mds_ports is empty".into());
        }
        if self.mds_ports.contains(&0) {
            return Err("an MDS port is 0; the layout must name fixed ports".into());
        }
        if self.chunkservers.is_empty() {
            return Err("chunkservers is empty".into());
        }
        for (i, cs) in self.chunkservers.iter().enumerate() {
            if cs.port == 0 {
                return Err(format!("chunkserver {} has port 0", cs.id));
            }
            if self.chunkservers[..i].iter().any(|o| o.id == cs.id) {
                return Err(format!("chunkserver id {} appears twice", cs.id));
            }
        }
        if self.snapshot_clone_ports.contains(&0) {
            return Err("a snapshot/clone service port is 0".into());
        }
        let mut ports: Vec<u16> = self.mds_ports.clone();
        ports.extend(self.chunkservers.iter().map(|c| c.port));
        ports.extend(&self.snapshot_clone_ports);
        ports.sort_unstable();
        if let Some(w) = ports.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("port {} is used twice", w[0]));
        }
        if self.copysets == 0 {
            return Err("copysets must be at least 1".into());
        }
        let m = &self.mds;
        if m.block_size == 0 || m.chunk_size == 0 || m.segment_size == 0 {
            return Err("mds block_size, chunk_size and segment_size must be positive".into());
        }
        if !m.chunk_size.is_multiple_of(m.block_size)
            || !m.segment_size.is_multiple_of(m.chunk_size)
        {
            return Err(
                "mds chunk_size must be a multiple of block_size and segment_size of chunk_size"
                    .into(),
            );
        }
        if m.min_file_length > m.max_file_length {
            return Err("mds min_file_length exceeds max_file_length".into());
        }
        Ok(())
    }

    /// Copyset ids of the logical pool: `1..=copysets`.
    pub fn copyset_ids(&self) -> impl Iterator<Item = u32> + '_ {
        1..=self.copysets
    }

    /// Chunkservers holding copyset `copyset_id`, the preferred leader first. Replicas are
    /// placed round-robin so that leadership and load spread evenly.
    pub fn copyset_members(&self, copyset_id: u32) -> Vec<&ChunkServerLayout> {
        let n = self.chunkservers.len();
        let start = (copyset_id.saturating_sub(1) as usize) % n.max(1);
        (0..REPLICAS.min(n))
            .map(|j| &self.chunkservers[(start + j) % n])
            .collect()
    }

    /// Address of `port` on the cluster's host, as peers and `client.conf` spell it.
    pub fn addr_string(&self, port: u16) -> String {
        Self::join_host_port(&self.host, port)
    }

    fn join_host_port(host: &str, port: u16) -> String {
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        }
    }

    /// `ip:port` of every MDS, comma separated.
    pub fn mds_addrs(&self) -> String {
        self.mds_ports
            .iter()
            .map(|p| self.addr_string(*p))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Where a client reaches the server on `port`: on `external_ip` if the layout has
    /// one (the local cluster's fault proxies), else where it listens.
    pub fn client_addr_string(&self, port: u16) -> String {
        match &self.external_ip {
            Some(ip) => Self::join_host_port(ip, port),
            None => self.addr_string(port),
        }
    }

    fn socket_addr(&self, port: u16) -> Result<SocketAddr, Error> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let resolve_err = |message: String| Error::Resolve {
            host: self.host.clone(),
            message,
        };
        (self.host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| resolve_err(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_err("no address".into()))
    }

    fn chunkserver(&self, id: u32) -> Result<&ChunkServerLayout, Error> {
        self.chunkservers
            .iter()
            .find(|c| c.id == id)
            .ok_or(Error::UnknownChunkServer(id))
    }

    /// The MDS's configuration, listening on the first of `mds_ports`.
    pub fn mds_config(&self) -> Result<MdsConfig, Error> {
        self.mds_config_at(0)
    }

    /// The configuration of the MDS listening on `mds_ports[index]`.
    pub fn mds_config_at(&self, index: usize) -> Result<MdsConfig, Error> {
        let port = *self.mds_ports.get(index).ok_or_else(|| Error::Invalid {
            path: self.dir.join(LAYOUT_FILE),
            message: format!("no MDS port at index {index}"),
        })?;
        let topology = TopologyConfig {
            poolset: self.poolset.clone(),
            logical_pool_id: self.logical_pool_id,
            pool_capacity: self.pool_capacity,
            chunkservers: self
                .chunkservers
                .iter()
                .map(|c| ChunkServerEntry {
                    id: c.id,
                    host: self.host.clone(),
                    port: c.port,
                    external_ip: self.external_ip.clone(),
                })
                .collect(),
            copysets: self
                .copyset_ids()
                .map(|id| CopysetEntry {
                    id,
                    members: self.copyset_members(id).iter().map(|c| c.id).collect(),
                })
                .collect(),
        };
        Ok(MdsConfig {
            listen: self.socket_addr(port)?,
            data_dir: self.dir.join("mds"),
            options: MdsOptions {
                store_fsync: self.chunk_fsync,
                ..self.mds.clone()
            },
            topology,
        })
    }

    /// The folder of chunkserver `id`'s chunk files.
    pub fn chunkserver_data_dir(&self, id: u32) -> PathBuf {
        self.dir.join(format!("chunkserver-{id}"))
    }

    /// The configuration of chunkserver `id`: only the copysets it hosts.
    pub fn chunkserver_config(&self, id: u32) -> Result<ChunkServerConfig, Error> {
        let me = self.chunkserver(id)?;
        let copysets = self
            .copyset_ids()
            .filter_map(|copyset_id| {
                let members = self.copyset_members(copyset_id);
                members.iter().any(|m| m.id == id).then(|| HostedCopyset {
                    logical_pool_id: self.logical_pool_id,
                    copyset_id,
                    members: members
                        .iter()
                        .map(|m| PeerEntry {
                            id: m.id,
                            addr: self.addr_string(m.port),
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(ChunkServerConfig {
            id,
            listen: self.socket_addr(me.port)?,
            data_dir: self.chunkserver_data_dir(id),
            chunk_size: self.mds.chunk_size,
            block_size: self.mds.block_size,
            copysets,
            // Upstream's chunkservers name no leader in REDIRECTED: clients meet that here.
            redirect_hints: false,
            durability: if self.chunk_fsync {
                Durability::Sync
            } else {
                Durability::Cache
            },
            // Clone chunks read their source volumes as root, as upstream's chunkservers
            // read theirs as `curve.root_username` with `curve.root_password`, and
            // snapshots' chunks from the snapshot/clone service's data store.
            origin: Some(Arc::new(origin::ClusterOrigins::new(
                CurveVolumes::new(
                    self.chunkserver_client_conf_path(id),
                    UserInfo {
                        owner: self.mds.root_user.clone(),
                        password: self.mds.root_password.clone(),
                    },
                ),
                self.snapshot_clone_s3_conf(),
                self.snapshot_clone_store_dir(),
            ))),
        })
    }
}

/// Options (`T`, of `what`) from the fields a spec names over `T`'s defaults; an unknown
/// name or a wrong type is refused (a typo must not silently leave a default in place).
fn options<T: Default + Serialize + serde::de::DeserializeOwned>(
    what: &str,
    given: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, Error> {
    let defaults = serde_json::to_value(T::default()).map_err(|e| Error::Spec(e.to_string()))?;
    let serde_json::Value::Object(mut fields) = defaults else {
        return Err(Error::Spec(format!("{what} options are not a JSON object")));
    };
    for (name, value) in given {
        if !fields.contains_key(name) {
            let known: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(Error::Spec(format!(
                "unknown {what} option {name:?} (known: {})",
                known.join(", ")
            )));
        }
        fields.insert(name.clone(), value.clone());
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| Error::Spec(format!("{what} options: {e}")))
}

/// What a server process tells the process that started it, once, as a line on its
/// stdout; `LocalCluster` counts the server as started when it reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Listening on its port and serving.
    Serving,
    /// An MDS waiting for the active one to go; its port stays closed until then.
    Standby,
    /// An MDS whose lease another MDS took (it was stopped past it): it stops serving.
    Deposed,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Serving => "serving",
            ServerState::Standby => "standby",
            ServerState::Deposed => "deposed",
        }
    }
}

/// The listening socket of `server`: the one handed down, or one bound here at `addr`.
fn open_port(
    server: &str,
    socket: Option<ServerSocket>,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, Error> {
    let socket_err = |e: std::io::Error| Error::Socket {
        server: server.to_string(),
        message: format!("cannot listen on {addr}: {e}"),
    };
    let socket = match socket {
        Some(s) => s,
        None => ServerSocket::bind(addr).map_err(socket_err)?,
    };
    socket.listen().map_err(socket_err)
}

/// Serves MDS `index` of the cluster in `dir` until `shutdown` completes, or until it loses
/// the lease of the cluster's MDS folder.
///
/// The MDS becomes active only once it holds the lease (`curve_mds::Leadership`): until
/// then it reports [`ServerState::Standby`] and leaves its port closed, as upstream's MDS
/// followers do, so clients walking `mds.listen.addr` pass over it. Once active it opens its
/// port, reports [`ServerState::Serving`] and serves the store the MDS before it left. An
/// MDS that finds its lease taken by another (it was stopped past the lease) reports
/// [`ServerState::Deposed`] and stops, as upstream's MDS exits when it loses its etcd
/// session.
pub async fn serve_mds(
    dir: &Path,
    index: usize,
    socket: Option<ServerSocket>,
    report: impl Fn(ServerState),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let served = mds_run(dir, index, socket, report, shutdown).await;
    log_end("MDS", &served);
    served
}

/// The last line of a server's log: `<who> stopped`, or why it failed.
fn log_end(who: &str, served: &Result<(), Error>) {
    match served {
        Ok(()) => tracing::info!("{who} stopped"),
        Err(e) => tracing::error!("{e}"),
    }
}

async fn mds_run(
    dir: &Path,
    index: usize,
    socket: Option<ServerSocket>,
    report: impl Fn(ServerState),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let config = ClusterLayout::load(dir)?.mds_config_at(index)?;
    let mds_err = |e: curve_mds::Error| Error::Mds(e.to_string());
    let lease = std::time::Duration::from_millis(config.options.leader_lease_ms.max(1));
    let mut shutdown = Box::pin(shutdown);
    let campaign = curve_mds::campaign(&config.data_dir, index, lease, || {
        tracing::info!(
            "MDS {index} standing by on {}: another MDS is active",
            config.listen
        );
        report(ServerState::Standby);
    });
    let mut leadership = tokio::select! {
        held = campaign => held.map_err(mds_err)?,
        () = &mut shutdown => return Ok(()),
    };
    tracing::info!("MDS {index} is active (term {})", leadership.term());
    let listener = open_port(&mds_server_name(index), socket, config.listen)?;
    report(ServerState::Serving);
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<curve_mds::Lost>();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            _ = lost_rx => {}
        }
    };
    let serving = curve_mds::serve_leading(config, &leadership, listener, stop);
    let mut lost_tx = Some(lost_tx);
    let mut lost = None;
    tokio::pin!(serving);
    let served = loop {
        tokio::select! {
            served = &mut serving => break served,
            why = leadership.hold(), if lost.is_none() => {
                tracing::error!("MDS {index} lost its lease: {why}; it stops serving");
                lost = Some(why.clone());
                if let Some(tx) = lost_tx.take() {
                    let _ = tx.send(why);
                }
            }
        }
    };
    if let Some(why) = lost {
        report(ServerState::Deposed);
        served.map_err(mds_err)?;
        return Err(Error::Mds(format!("MDS {index} was deposed: {why}")));
    }
    // The lease goes with the serving, not before: the next MDS copies the store once
    // nothing writes to it.
    leadership.release();
    served.map_err(mds_err)
}

/// Serves chunkserver `id` of the cluster in `dir` until `shutdown` completes.
pub async fn serve_chunkserver(
    dir: &Path,
    id: u32,
    socket: Option<ServerSocket>,
    report: impl Fn(ServerState),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let served = chunkserver_run(dir, id, socket, report, shutdown).await;
    log_end(&format!("chunkserver {id}"), &served);
    served
}

async fn chunkserver_run(
    dir: &Path,
    id: u32,
    socket: Option<ServerSocket>,
    report: impl Fn(ServerState),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let layout = ClusterLayout::load(dir)?;
    let config = layout.chunkserver_config(id)?;
    // The conf its origin reader (clone chunks) builds its client from, fresh at each
    // start so it follows the layout.
    layout.write_chunkserver_client_conf(id)?;
    let listener = open_port(&chunkserver_server_name(id), socket, config.listen)?;
    tracing::info!(
        "chunkserver {id} serving on {}, {} copysets, data in {}",
        config.listen,
        config.copysets.len(),
        config.data_dir.display()
    );
    report(ServerState::Serving);
    curve_chunkserver::serve_with_listener(config, listener, shutdown)
        .await
        .map_err(|e| Error::ChunkServer {
            id,
            message: e.to_string(),
        })
}

/// Serves instance `index` of the cluster's snapshot/clone service (upstream's HTTP API)
/// until `shutdown` completes, or until it loses the lease of the service's folder. It
/// calls the cluster as its root user, through a client of its own configured by
/// `snapshotclone/client.conf` (the cluster's defaults, written when it becomes active).
///
/// As an MDS does ([`serve_mds`]), an instance becomes active only once it holds the lease
/// (`curve_lease`, over [`ClusterLayout::snapshot_clone_data_dir`]): until then it reports
/// [`ServerState::Standby`] and leaves its port closed, as upstream's standbys do (they
/// wait in their etcd campaign), so clients trying every address pass over it. Once
/// active it loads the records, resumes the tasks the instance before it left, and acts
/// only while its lease runs ([`curve_snapshotclone::Fence`]); one that finds its lease
/// taken reports [`ServerState::Deposed`] and stops.
pub async fn serve_snapshot_clone(
    dir: &Path,
    index: usize,
    socket: Option<ServerSocket>,
    report: impl Fn(ServerState),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let served = snapshot_clone_run(dir, index, socket, report, shutdown).await;
    log_end("snapshot/clone service", &served);
    served
}

async fn snapshot_clone_run(
    dir: &Path,
    index: usize,
    socket: Option<ServerSocket>,
    report: impl Fn(ServerState),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let layout = ClusterLayout::load(dir)?;
    let name = snapshot_clone_server_name(index);
    let port = *layout
        .snapshot_clone_ports
        .get(index)
        .ok_or_else(|| Error::Invalid {
            path: dir.join(LAYOUT_FILE),
            message: format!("the cluster has no snapshot/clone service instance {index}"),
        })?;
    let addr = layout.socket_addr(port)?;
    let data_dir = layout.snapshot_clone_data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| Error::Write {
        path: data_dir.clone(),
        source,
    })?;
    let lease_err = |e: curve_lease::Error| Error::Invalid {
        path: data_dir.clone(),
        message: e.to_string(),
    };
    let candidate = curve_lease::Candidate {
        data_dir: data_dir.clone(),
        role: "snapshot/clone service",
        index,
        // The MDS's lease: one figure for every server of the cluster that stands by.
        lease: std::time::Duration::from_millis(layout.mds.leader_lease_ms.max(1)),
        store: None,
    };
    let mut shutdown = Box::pin(shutdown);
    let campaign = curve_lease::Leadership::campaign(candidate, || {
        tracing::info!("snapshot/clone service {index} standing by on {addr}: another is active");
        report(ServerState::Standby);
    });
    let mut leadership = tokio::select! {
        held = campaign => held.map_err(lease_err)?,
        () = &mut shutdown => return Ok(()),
    };
    tracing::info!(
        "snapshot/clone service {index} is active (term {})",
        leadership.term()
    );
    let conf_path = data_dir.join(CLIENT_CONF_FILE);
    let text = layout.client_conf(&[])?;
    std::fs::write(&conf_path, text).map_err(|source| Error::Write {
        path: conf_path.clone(),
        source,
    })?;
    let service_err = |message: String| Error::Invalid {
        path: conf_path.clone(),
        message,
    };
    let config = curve_client::ClientConfig::from_file(&conf_path)
        .map_err(|e| service_err(format!("client conf: {e}")))?;
    let client =
        curve_client::Client::new(config).map_err(|e| service_err(format!("client: {e}")))?;
    let root = curve_client::UserInfo {
        owner: layout.mds.root_user.clone(),
        password: layout.mds.root_password.clone(),
    };
    let s3_conf = layout.snapshot_clone_s3_conf();
    let store = curve_snapshotclone::datastore::DataStore::from_conf_or_local(
        Some(s3_conf.as_path()).filter(|p| p.is_file()),
        &layout.snapshot_clone_store_dir(),
    )
    .map_err(|e| Error::Invalid {
        path: s3_conf.clone(),
        message: e.to_string(),
    })?;
    tracing::info!("snapshots are dumped to {store:?}");
    let snapshot = curve_snapshotclone::SnapshotOptions {
        // Upstream's server.mdsSessionTimeUs is the MDS's mds.file.expiredTimeUs: the
        // lease within which every client of a volume picks up its new seqNum.
        mds_session_time: std::time::Duration::from_micros(layout.mds.file_record_expire_us),
        max_snapshots: layout.snapshot_clone.max_snapshot_limit,
        ..curve_snapshotclone::SnapshotOptions::default()
    };
    let listener = open_port(&name, socket, addr)?;
    tracing::info!("snapshot/clone service {index} serving on {addr}");
    report(ServerState::Serving);
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<curve_lease::Lost>();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            _ = lost_rx => {}
        }
    };
    let serving = curve_snapshotclone::serve(
        curve_snapshotclone::ServiceConfig {
            client,
            root,
            options: curve_snapshotclone::CloneOptions::default(),
            snapshot,
            data_dir,
            store,
            fence: curve_snapshotclone::Fence::new(leadership.gate()),
        },
        listener,
        stop,
    );
    tokio::pin!(serving);
    let mut lost_tx = Some(lost_tx);
    let mut lost = None;
    let served = loop {
        tokio::select! {
            served = &mut serving => break served,
            why = leadership.hold(), if lost.is_none() => {
                tracing::error!(
                    "snapshot/clone service {index} lost its lease: {why}; it stops serving"
                );
                lost = Some(why.clone());
                if let Some(tx) = lost_tx.take() {
                    let _ = tx.send(why);
                }
            }
        }
    };
    let served = served.map_err(|e| Error::Socket {
        server: name.clone(),
        message: e.to_string(),
    });
    if let Some(why) = lost {
        report(ServerState::Deposed);
        served?;
        return Err(Error::Socket {
            server: name,
            message: format!("snapshot/clone service {index} was deposed: {why}"),
        });
    }
    // Tasks still running are dropped with the runtime; their records stay as last
    // written, and the next active instance resumes them.
    leadership.release();
    served
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_server_log_filter_quiets_openraft_unless_named() {
        assert_eq!(server_log_filter(None), "info,openraft=error");
        assert_eq!(server_log_filter(Some("  ")), "info,openraft=error");
        assert_eq!(
            server_log_filter(Some("info,curve_mds=debug")),
            "info,curve_mds=debug,openraft=error"
        );
        assert_eq!(
            server_log_filter(Some("debug,openraft=info")),
            "debug,openraft=info"
        );
    }

    const FULL: &str = r#"{"host": "127.0.0.1", "mds_ports": [6700],
        "chunkservers": [{"id": 1, "port": 8201}, {"id": 2, "port": 8202}, {"id": 3, "port": 8203}],
        "logical_pool_id": 1, "copysets": 100, "poolset": "default", "pool_capacity": 1125899906842624,
        "mds": {"root_user": "root", "root_password": "root_password", "chunk_size": 16777216,
                "segment_size": 1073741824, "block_size": 4096, "min_file_length": 10737418240,
                "max_file_length": 21990232555520, "file_record_expire_us": 5000000}}"#;

    fn parse(text: &str) -> Result<ClusterLayout, Error> {
        ClusterLayout::parse(Path::new("/data"), text)
    }

    #[test]
    fn full_layout_parses() {
        let l = parse(FULL).unwrap();
        assert_eq!(l.mds_ports, vec![6700]);
        assert_eq!(l.chunkservers.len(), 3);
        assert_eq!(l.copysets, 100);
        assert_eq!(l.pool_capacity, 1 << 50);
        assert_eq!(l.mds.chunk_size, 16 << 20);
        assert_eq!(l.mds.file_record_expire_us, 5_000_000);
    }

    #[test]
    fn only_ports_uses_defaults() {
        let l = parse(r#"{"mds_ports": [6700, 6701], "chunkservers": [{"id": 7, "port": 9000}]}"#)
            .unwrap();
        assert_eq!(l.host, "127.0.0.1");
        assert_eq!(l.logical_pool_id, 1);
        assert_eq!(l.copysets, 100);
        assert_eq!(l.poolset, "default");
        assert_eq!(l.pool_capacity, 1125899906842624);
        assert_eq!(l.mds, MdsOptions::default());
        assert_eq!(l.mds.root_user, "root");
        assert_eq!(l.mds.min_file_length, 10 << 30);
        assert_eq!(l.mds_addrs(), "127.0.0.1:6700,127.0.0.1:6701");
        assert_eq!(l.snapshot_clone.max_snapshot_limit, 1024);
    }

    #[test]
    fn partial_mds_section_keeps_other_defaults() {
        let l = parse(r#"{"mds_ports": [1], "mds": {"root_password": "x"}}"#).unwrap();
        assert_eq!(l.mds.root_password, "x");
        assert_eq!(l.mds.segment_size, 1 << 30);
        assert_eq!(l.chunkservers.len(), 3);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        parse(r#"{"mds_ports": [1], "logs": "/tmp/logs"}"#).unwrap();
    }

    #[test]
    fn bad_json_is_a_clear_error() {
        let e = parse("{not json").unwrap_err();
        assert!(matches!(e, Error::Parse { .. }));
        assert!(e.to_string().contains("cluster.json"), "{e}");

        let e = parse(r#"{"chunkservers": []}"#).unwrap_err();
        assert!(e.to_string().contains("mds_ports"), "{e}");

        let e = parse(r#"{"mds_ports": ["x"]}"#).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");

        let e = parse(r#"{"mds_ports": [70000]}"#).unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e}");
    }

    #[test]
    fn invalid_layouts_are_refused() {
        for (text, needle) in [
            (r#"{"mds_ports": []}"#, "mds_ports"),
            (r#"{"mds_ports": [1], "chunkservers": []}"#, "chunkservers"),
            (r#"{"mds_ports": [1], "copysets": 0}"#, "copysets"),
            (
                r#"{"mds_ports": [1], "chunkservers": [{"id": 1, "port": 2}, {"id": 1, "port": 3}]}"#,
                "twice",
            ),
            (
                r#"{"mds_ports": [2], "chunkservers": [{"id": 1, "port": 2}]}"#,
                "port 2",
            ),
            (
                r#"{"mds_ports": [1], "mds": {"block_size": 0}}"#,
                "block_size",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = ClusterLayout::load(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Read { .. }));
        assert!(e.to_string().contains("cluster.json"));
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LAYOUT_FILE), FULL).unwrap();
        let l = ClusterLayout::load(dir.path()).unwrap();
        assert_eq!(l.dir, dir.path());
    }

    #[test]
    fn membership_is_round_robin() {
        let l = parse(FULL).unwrap();
        let ids = |c| {
            l.copyset_members(c)
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(1), vec![1, 2, 3]);
        assert_eq!(ids(2), vec![2, 3, 1]);
        assert_eq!(ids(3), vec![3, 1, 2]);
        assert_eq!(ids(4), vec![1, 2, 3]);
        assert_eq!(l.copyset_ids().count(), 100);
    }

    #[test]
    fn membership_with_fewer_or_more_chunkservers() {
        let one = parse(r#"{"mds_ports": [1], "chunkservers": [{"id": 5, "port": 2}]}"#).unwrap();
        assert_eq!(one.copyset_members(3).len(), 1);
        assert_eq!(one.copyset_members(3)[0].id, 5);

        let five = parse(
            r#"{"mds_ports": [1], "copysets": 7, "chunkservers": [{"id": 1, "port": 11},
            {"id": 2, "port": 12}, {"id": 3, "port": 13}, {"id": 4, "port": 14}, {"id": 5, "port": 15}]}"#,
        )
        .unwrap();
        let m: Vec<u32> = five.copyset_members(5).iter().map(|c| c.id).collect();
        assert_eq!(m, vec![5, 1, 2]);
        let m: Vec<u32> = five.copyset_members(7).iter().map(|c| c.id).collect();
        assert_eq!(m, vec![2, 3, 4]);
    }

    #[test]
    fn mds_config_carries_the_topology() {
        let l = parse(FULL).unwrap();
        let c = l.mds_config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:6700".parse().unwrap());
        assert_eq!(c.data_dir, Path::new("/data/mds"));
        // The layout's chunk_fsync (off here) decides whether the MDS fsyncs its store.
        assert_eq!(
            c.options,
            MdsOptions {
                store_fsync: false,
                ..MdsOptions::default()
            }
        );
        assert_eq!(c.topology.poolset, "default");
        assert_eq!(c.topology.pool_capacity, 1 << 50);
        assert_eq!(c.topology.chunkservers.len(), 3);
        assert_eq!(c.topology.chunkservers[1].port, 8202);
        assert_eq!(c.topology.copysets.len(), 100);
        assert_eq!(c.topology.copysets[1].id, 2);
        assert_eq!(c.topology.copysets[1].members, vec![2, 3, 1]);
        assert!(l.mds_config_at(1).is_err());
    }

    #[test]
    fn chunkserver_config_holds_only_its_copysets() {
        let l = parse(
            r#"{"mds_ports": [1], "copysets": 8, "chunkservers": [{"id": 1, "port": 11},
            {"id": 2, "port": 12}, {"id": 3, "port": 13}, {"id": 4, "port": 14}]}"#,
        )
        .unwrap();
        let c = l.chunkserver_config(4).unwrap();
        assert_eq!(c.id, 4);
        assert_eq!(c.listen, "127.0.0.1:14".parse().unwrap());
        assert_eq!(c.data_dir, Path::new("/data/chunkserver-4"));
        assert_eq!(c.chunk_size, 16 << 20);
        assert_eq!(c.block_size, 4096);
        let ids: Vec<u32> = c.copysets.iter().map(|h| h.copyset_id).collect();
        // Copyset c starts at chunkserver (c-1)%4; 4 holds those starting at 2, 3 and 4.
        assert_eq!(ids, vec![2, 3, 4, 6, 7, 8]);
        let cs4 = &c.copysets[2];
        assert_eq!(cs4.logical_pool_id, 1);
        assert_eq!(cs4.members[0].id, 4);
        assert_eq!(cs4.members[0].addr, "127.0.0.1:14");
        assert_eq!(cs4.members[1].addr, "127.0.0.1:11");
        assert!(matches!(
            l.chunkserver_config(9),
            Err(Error::UnknownChunkServer(9))
        ));
    }

    #[test]
    fn server_logs_live_in_the_logs_folder() {
        assert_eq!(
            server_log_path(Path::new("/data"), "chunkserver-2"),
            Path::new("/data/logs/chunkserver-2.log")
        );
    }

    fn spec(text: &str) -> ClusterSpec {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_spec_s_fsync_and_external_ip_reach_the_servers_and_the_client_conf() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            r#"{"mds_ports": [6700], "chunkserver_ports": [6701],
                "external_ip": "127.0.0.2", "chunk_fsync": true}"#,
        );
        let l = ClusterLayout::create(dir.path(), &s).unwrap();
        assert_eq!(ClusterLayout::load(dir.path()).unwrap(), l);
        let cs = l.chunkserver_config(1).unwrap();
        assert_eq!(cs.durability, Durability::Sync);
        assert_eq!(cs.listen, "127.0.0.1:6701".parse().unwrap());
        let conf = l.client_conf(&[]).unwrap();
        assert!(conf.contains("mds.listen.addr=127.0.0.2:6700\n"), "{conf}");
        let plain = tempfile::tempdir().unwrap();
        let l = ClusterLayout::create(
            plain.path(),
            &spec(r#"{"mds_ports": [6700], "chunkserver_ports": [6701]}"#),
        )
        .unwrap();
        assert_eq!(
            l.chunkserver_config(1).unwrap().durability,
            Durability::Cache
        );
        assert!(
            l.client_conf(&[])
                .unwrap()
                .contains("mds.listen.addr=127.0.0.1:6700\n")
        );
    }

    #[test]
    fn create_writes_a_layout_the_servers_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            ClusterLayout::load_if_present(dir.path())
                .unwrap()
                .is_none()
        );
        let s = spec(
            r#"{"mds_ports": [7001, 7002], "chunkserver_ports": [7101, 7102, 7103],
                "copysets": 6, "mds": {"root_password": "pw", "file_record_expire_us": 2000000},
                "snapshot_clone": {"server.maxSnapshotLimit": 2}}"#,
        );
        let created = ClusterLayout::create(dir.path(), &s).unwrap();
        let loaded = ClusterLayout::load_if_present(dir.path()).unwrap().unwrap();
        assert_eq!(created, loaded);
        assert_eq!(loaded.mds_ports, vec![7001, 7002]);
        let ids: Vec<u32> = loaded.chunkservers.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(loaded.chunkservers[2].port, 7103);
        assert_eq!(loaded.copysets, 6);
        assert_eq!(loaded.mds.root_password, "pw");
        assert_eq!(loaded.mds.file_record_expire_us, 2_000_000);
        assert_eq!(loaded.mds.segment_size, MdsOptions::default().segment_size);
        assert_eq!(loaded.pool_capacity, default_pool_capacity());
        assert_eq!(loaded.snapshot_clone.max_snapshot_limit, 2);

        let e = ClusterLayout::create(dir.path(), &s).unwrap_err();
        assert!(matches!(e, Error::Exists { .. }), "{e}");
        assert_eq!(ClusterLayout::load(dir.path()).unwrap(), loaded);

        let d = loaded.describe();
        assert_eq!(d["mds"][1]["name"], "mds-1");
        assert_eq!(d["mds"][0]["name"], "mds");
        assert_eq!(d["mds"][1]["addr"], "127.0.0.1:7002");
        assert_eq!(d["chunkservers"][0]["name"], "chunkserver-1");
        assert_eq!(d["root_password"], "pw");
        let log = dir.path().join("logs").join("mds-1.log");
        assert_eq!(d["mds"][1]["log"], log.to_str().unwrap());
    }

    #[test]
    fn a_bad_spec_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                r#"{"mds_ports": [1], "chunkserver_ports": [2], "mds": {"root_pasword": "x"}}"#,
                "root_pasword",
            ),
            (
                r#"{"mds_ports": [1], "chunkserver_ports": [2], "mds": {"block_size": "big"}}"#,
                "MDS options",
            ),
            (
                r#"{"mds_ports": [1], "chunkserver_ports": [2],
                    "snapshot_clone": {"server.maxSnapshotLimits": 2}}"#,
                "unknown snapshot/clone service option \"server.maxSnapshotLimits\"",
            ),
            (r#"{"mds_ports": [1], "chunkserver_ports": [1]}"#, "port 1"),
            (
                r#"{"mds_ports": [], "chunkserver_ports": [2]}"#,
                "mds_ports",
            ),
        ] {
            let e = ClusterLayout::create(dir.path(), &spec(text)).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        assert!(
            serde_json::from_str::<ClusterSpec>(
                r#"{"mds_ports": [1], "chunkserver_ports": [2], "x": 1}"#
            )
            .is_err()
        );
        assert!(
            ClusterLayout::load_if_present(dir.path())
                .unwrap()
                .is_none()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn refused(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    }

    #[tokio::test]
    async fn a_standby_mds_keeps_its_port_closed_until_the_active_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let sockets: Vec<ServerSocket> = (0..3)
            .map(|_| ServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().port()).collect();
        let s = ClusterSpec {
            host: default_host(),
            mds_ports: ports[..2].to_vec(),
            chunkserver_ports: ports[2..].to_vec(),
            copysets: 1,
            mds: serde_json::Map::new(),
            external_ip: None,
            chunk_fsync: false,
            snapshot_clone_ports: Vec::new(),
            snapshot_clone: serde_json::Map::new(),
        };
        ClusterLayout::create(dir.path(), &s).unwrap();
        let mut sockets = sockets.into_iter();
        let mut start = |index: usize| {
            let (state_tx, state_rx) = tokio::sync::mpsc::unbounded_channel();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let dir = dir.path().to_owned();
            let socket = sockets.next();
            let task = tokio::spawn(async move {
                serve_mds(
                    &dir,
                    index,
                    socket,
                    move |state| state_tx.send(state).unwrap(),
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await
            });
            (state_rx, stop_tx, task)
        };
        async fn wait_state(
            rx: &mut tokio::sync::mpsc::UnboundedReceiver<ServerState>,
        ) -> ServerState {
            tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap()
        }
        let (mut first_state, first_stop, first) = start(0);
        assert_eq!(wait_state(&mut first_state).await, ServerState::Serving);
        let (mut second_state, _second_stop, second) = start(1);
        assert_eq!(wait_state(&mut second_state).await, ServerState::Standby);
        assert!(!refused(ports[0]));
        assert!(refused(ports[1]), "a standby MDS accepted a connection");

        first_stop.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(wait_state(&mut second_state).await, ServerState::Serving);
        assert!(!refused(ports[1]));
        assert!(refused(ports[0]), "a stopped MDS's port still accepts");
        second.abort();
    }

    #[test]
    fn external_ip_reaches_the_topology_only() {
        let l = parse(r#"{"mds_ports": [1], "external_ip": "127.0.0.2"}"#).unwrap();
        let c = l.mds_config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
        let cs = &c.topology.chunkservers[0];
        assert_eq!(
            (cs.host.as_str(), cs.external_ip()),
            ("127.0.0.1", "127.0.0.2")
        );
        // Replication goes to the listening address, not through the clients' path.
        let peers = &l.chunkserver_config(1).unwrap().copysets[0].members;
        assert_eq!(peers[1].addr, "127.0.0.1:8202");
        assert_eq!(parse(FULL).unwrap().external_ip, None);
        let e = parse(r#"{"mds_ports": [1], "external_ip": "proxy"}"#).unwrap_err();
        assert!(e.to_string().contains("external_ip"), "{e}");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let l = parse(r#"{"host": "::1", "mds_ports": [1]}"#).unwrap();
        assert_eq!(l.mds_addrs(), "[::1]:1");
        assert_eq!(l.mds_config().unwrap().listen, "[::1]:1".parse().unwrap());
    }
}
