//! The local cluster's MDS: Curve's namespace (`curve.mds.CurveFSService`) and topology
//! (`curve.mds.topology.TopologyService`) services, over brpc's baidu_std and gRPC on one
//! port, with every acknowledged
//! change written through to an embedded redb store first.
//!
//! Start it with [`serve`] (binds `MdsConfig::listen`) or [`serve_with_listener`]; both
//! return when the shutdown future completes. What it answers follows upstream Curve's MDS
//! (reference §3, §4, §9, §10, §13), including its order of checks. Knowingly different:
//! DeleteForce removes a recycle-bin entry at once and leaves its chunks on the chunkservers
//! (upstream marks it kFileDeleting and deletes its chunks in the background), and the
//! topology is the static one of the config. Snapshots (`namespace::snapshot`) are
//! upstream's: one per file, seqNum bumped with it, deleted by an asynchronous clean
//! (`clean`) that sends DeleteChunkSnapshotOrCorrectSn to every chunk's copyset leader; the
//! kSnapshotFrozen window after start is `MdsOptions::snapshot_frozen_us` (the local
//! cluster sets it to 0).
//!
//! Modules: `clean` (snapshot cleans), `auth` (date/owner/signature), `path` (path validation), `rules` (length and
//! stripe rules), `store` (redb tables), `records` (file records of open files),
//! `namespace` (the namespace calls), `campaign` (which of several MDSes is active: the
//! `curve_lease` lease over the MDS folder),
//! `service` and `topology` (the tonic faces), `baidu_std` (the same handlers over brpc's
//! protocol), `gate` (no answer from an MDS whose lease ran out).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use curve_proto::mds::curve_fs_service_server::CurveFsServiceServer;
use curve_proto::mds::topology::topology_service_server::TopologyServiceServer;
use tokio::net::TcpListener;

mod auth;
mod baidu_std;
mod clean;
mod gate;
mod namespace;
mod path;
mod records;
mod rules;
mod service;
mod store;
mod topology;

pub use auth::{CURVEFS, Check, METHODS, TOPOLOGY, sign, verify};
pub use curve_lease::{Leadership, LeaseGate, Lost, leader_dir};
pub use store::{STORE_FILES, store_path};

/// Waits until MDS `index` of the MDSes sharing `data_dir` holds the lease
/// ([`curve_lease`]) and returns its term, with the store it serves from copied from the
/// previous holder's. `on_standby` runs once if another MDS holds the lease.
pub async fn campaign(
    data_dir: &std::path::Path,
    index: usize,
    lease: std::time::Duration,
    on_standby: impl FnOnce(),
) -> Result<Leadership, Error> {
    let candidate = curve_lease::Candidate {
        data_dir: data_dir.to_owned(),
        role: "MDS",
        index,
        lease,
        store: Some(STORE_FILES),
    };
    Ok(Leadership::campaign(candidate, on_standby).await?)
}

/// A chunkserver as the MDS knows it (static in the local cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkServerEntry {
    pub id: u32,
    /// Where it listens and where its peers replicate to (upstream's `hostIp`).
    pub host: String,
    pub port: u16,
    /// Where clients send IO, on the same port (upstream's `externalIp`, a chunkserver's
    /// client-facing network); `None`: `host`.
    pub external_ip: Option<String>,
}

impl ChunkServerEntry {
    /// The address clients send IO to.
    pub fn external_ip(&self) -> &str {
        self.external_ip.as_deref().unwrap_or(&self.host)
    }
}

/// A copyset of the logical pool and the chunkservers holding its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopysetEntry {
    pub id: u32,
    /// Chunkserver ids; `members[0]` is the copyset's preferred leader.
    pub members: Vec<u32>,
}

/// The cluster's topology: one poolset holding one logical pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyConfig {
    pub poolset: String,
    pub logical_pool_id: u32,
    /// Bytes the logical pool can hold; Create/Extend are refused past it.
    pub pool_capacity: u64,
    pub chunkservers: Vec<ChunkServerEntry>,
    pub copysets: Vec<CopysetEntry>,
}

/// Upstream's MDS settings that shape the namespace; defaults are upstream's. The local
/// cluster reads them from the `mds` section of cluster.json, absent fields defaulted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MdsOptions {
    pub root_user: String,
    pub root_password: String,
    pub chunk_size: u32,
    pub segment_size: u32,
    pub block_size: u32,
    pub min_file_length: u64,
    pub max_file_length: u64,
    /// Lifetime of a client's file record without a refresh (`mds.file.expiredTimeUs`).
    pub file_record_expire_us: u64,
    /// Allowed |date - now| in authenticated requests.
    pub auth_date_tolerance_us: u64,
    /// Lease of the active MDS among several (`mds.leader.sessionInterSec`, in ms): a
    /// stopped active MDS is replaced this long after its last renewal.
    pub leader_lease_ms: u64,
    /// How long after start CreateSnapShot answers kSnapshotFrozen (upstream: 10 ×
    /// `mds.file.expiredTimeUs`, fixed): until then an open by an old client may be unseen.
    pub snapshot_frozen_us: u64,
    /// Every store commit is fsynced before the answer, as upstream's etcd does (true,
    /// the default); false, a commit survives a killed MDS (the page cache keeps it) but
    /// not a power cut. Not a cluster.json field: the local cluster sets it from its
    /// `chunk_fsync`, so one switch says how durable the whole cluster is.
    #[serde(skip)]
    pub store_fsync: bool,
}

impl Default for MdsOptions {
    fn default() -> Self {
        Self {
            root_user: "root".into(),
            root_password: "root_password".into(),
            chunk_size: 16 << 20,
            segment_size: 1 << 30,
            block_size: 4096,
            min_file_length: 10 << 30,
            max_file_length: 21_990_232_555_520,
            file_record_expire_us: 5_000_000,
            auth_date_tolerance_us: 15_000_000,
            leader_lease_ms: 5_000,
            snapshot_frozen_us: 50_000_000,
            store_fsync: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MdsConfig {
    pub listen: SocketAddr,
    /// Folder of the redb store; created if missing, reused across restarts.
    pub data_dir: PathBuf,
    pub options: MdsOptions,
    pub topology: TopologyConfig,
}

/// Why the MDS could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid MDS config: {0}")]
    Config(String),
    #[error("cannot create the MDS data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the MDS store {path}: {source}")]
    Store {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("the MDS store {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("cannot bind the MDS to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the MDS server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the MDS start-up task failed: {0}")]
    Startup(String),
}

impl From<curve_lease::Error> for Error {
    fn from(e: curve_lease::Error) -> Self {
        match e {
            curve_lease::Error::DataDir { path, source } => Error::DataDir { path, source },
            curve_lease::Error::Corrupt { path, what } => Error::Corrupt { path, what },
            curve_lease::Error::Other(what) => Error::Startup(what),
        }
    }
}

/// Binds `config.listen` and serves both MDS services on it until `shutdown` completes.
///
/// The store `<data_dir>/mds.redb` is created on first start and reused afterwards; only one
/// process may hold it. Returns `Err` if the port cannot be bound, the config is unusable or
/// the store cannot be opened; `Ok` after `shutdown` once open connections have drained.
///
/// ```no_run
/// # async fn run(config: curve_mds::MdsConfig) -> Result<(), curve_mds::Error> {
/// curve_mds::serve(config, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve(
    config: MdsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    serve_with_listener(config, listener, shutdown).await
}

/// Serves the MDS on an already bound listener (tests bind port 0); `config.listen` is
/// ignored. Opens the store `<data_dir>/mds.redb` before accepting anything, so a store
/// error returns at once. For one MDS alone: several share a folder through
/// [`serve_leading`].
pub async fn serve_with_listener(
    config: MdsConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = store_path(&config.data_dir);
    serve_store(config, store, None, listener, shutdown).await
}

/// Serves the MDS as the holder of `leadership`: from its term's store, and answering only
/// while its lease runs (the lease is renewed by [`Leadership::hold`], run beside this).
pub fn serve_leading<F>(
    config: MdsConfig,
    leadership: &Leadership,
    listener: TcpListener,
    shutdown: F,
) -> impl Future<Output = Result<(), Error>> + use<F>
where
    F: Future<Output = ()> + Send + 'static,
{
    let store = leadership
        .store_path()
        .unwrap_or_else(|| store_path(&config.data_dir));
    serve_store(config, store, Some(leadership.gate()), listener, shutdown)
}

async fn serve_store(
    config: MdsConfig,
    store_file: PathBuf,
    lease: Option<Arc<LeaseGate>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    check_config(&config)?;
    let MdsConfig {
        data_dir,
        options,
        topology,
        ..
    } = config;
    let root_user = options.root_user.clone();
    let store_fsync = options.store_fsync;
    let opened = tokio::task::spawn_blocking(move || {
        store::Store::open(
            &data_dir,
            &store_file,
            store_fsync,
            &root_user,
            &topology,
            namespace::now_us(),
        )
        .map(|opened| (opened, topology))
    })
    .await
    .map_err(|e| Error::Startup(e.to_string()))??;
    let (opened, topology) = opened;
    let topology = Arc::new(topology::Topology {
        config: topology,
        cluster_id: opened.cluster_id,
    });
    let ns = Arc::new(namespace::Namespace::new(
        opened.store,
        options,
        Arc::clone(&topology),
    ));
    let cleaner = clean::Cleaner::new(Arc::clone(&ns), Arc::clone(&topology));
    cleaner.resume().await;
    tracing::info!(
        "MDS serving on {:?}, cluster {}",
        listener.local_addr().ok(),
        topology.cluster_id
    );
    let namespace = Arc::new(service::CurveFsServiceImpl {
        ns,
        cleaner: Arc::clone(&cleaner),
    });
    let topology = Arc::new(topology::TopologyServiceImpl { topology });
    // One port for both wires, as a brpc server has: baidu_std connections start with
    // `PRPC`, the rest go to tonic. Accepting rides out EMFILE and sets TCP_NODELAY.
    let (incoming, baidu_std) = curve_brpc::share_port(
        listener,
        Arc::new(gate::Gated {
            lease: lease.clone(),
            inner: baidu_std::BaiduStd {
                namespace: namespace.clone(),
                topology: topology.clone(),
            },
        }),
    );
    let served = tonic::transport::Server::builder()
        .layer(gate::GateLayer { lease })
        .add_service(CurveFsServiceServer::from_arc(namespace))
        .add_service(TopologyServiceServer::from_arc(topology))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    cleaner.stop();
    served?;
    baidu_std.shutdown();
    Ok(())
}

/// Geometry the namespace divides by must be sane before any request arrives.
fn check_config(config: &MdsConfig) -> Result<(), Error> {
    let o = &config.options;
    if o.chunk_size == 0 || o.segment_size == 0 || !o.segment_size.is_multiple_of(o.chunk_size) {
        return Err(Error::Config(format!(
            "segment size {} must be a non-zero multiple of chunk size {}",
            o.segment_size, o.chunk_size
        )));
    }
    if o.block_size == 0 || !o.chunk_size.is_multiple_of(o.block_size) {
        return Err(Error::Config(format!(
            "chunk size {} must be a multiple of block size {}",
            o.chunk_size, o.block_size
        )));
    }
    let t = &config.topology;
    for copyset in &t.copysets {
        for member in &copyset.members {
            if !t.chunkservers.iter().any(|c| c.id == *member) {
                return Err(Error::Config(format!(
                    "copyset {} names unknown chunkserver {member}",
                    copyset.id
                )));
            }
        }
    }
    Ok(())
}
