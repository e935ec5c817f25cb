//! The local cluster's chunkserver: Curve's `curve.chunkserver.ChunkService` and
//! `CliService2.GetLeader`/`TransferLeader` over brpc's baidu_std (as stock chunkservers
//! serve them) and over gRPC, plus curvefs's `LocalChunkServer.Identify` and the Raft
//! RPCs between the members of a copyset, all on one port: a connection whose first bytes
//! are `PRPC` is baidu_std, any other is gRPC, as brpc itself tells them apart.
//!
//! Each copyset is one Raft group (openraft; `raft.rs`, `copyset.rs`), as upstream's are
//! braft groups: a write is applied to the chunk files once its log entry is committed,
//! and answered after that; reads go to the leader, which confirms its leadership first.
//! Chunks live in sparse files.
//!
//! On disk, under `data_dir`: `copysets/<logicalPoolId>-<copysetId>/chunk_<chunkId>`
//! (the data, at its real offsets), `chunk_<chunkId>.sn` (the chunk's sn),
//! `chunk_<chunkId>.clone` (a clone chunk's origin, correctedSn and page bitmap; see
//! below); and `raft/<logicalPoolId>-<copysetId>/` with the copyset's Raft log segments,
//! its vote, and the meta of its last snapshot (raft_log.rs).
//!
//! Clone chunks, as upstream's (`clone.rs`, `store.rs`, the handlers in `service.rs`): a
//! chunk of a lazy clone whose unwritten pages (one bit per block) read from its origin,
//! `"<source path>:<offset>@cs"` or a snapshot's chunk in the snapshot data store,
//! `"<object key>@s3"`, through [`Origin`] (the local cluster's reads a source volume
//! read-only as root with curvefs's client, [`CurveVolumes`], and objects from the
//! snapshot/clone service's data store). WriteChunk with
//! `cloneFileSource`/`cloneFileOffset` to a missing chunk creates one; ReadChunk with them
//! reads a missing chunk from the source; CreateCloneChunk and RecoverChunk as upstream;
//! a chunk whose every page is written becomes a plain chunk. Writes, pastes and
//! creations go through the copyset's Raft log like writes, and a Raft snapshot carries
//! the chunks' clone records with their data. Where this differs from upstream:
//! - The clone record is a file of its own beside the chunk (magic `CVFSCLN1`,
//!   correctedSn u64, pages u32, location length u32, little-endian, the location, the
//!   bitmap LSB-first), replaced whole through a rename and written before the data file
//!   is created; upstream keeps it in the chunk file's CRC-checked meta page. A record
//!   that does not decode fails the chunk's IO (DISK_FAIL), never reads as a plain chunk.
//! - correctedSn lives in the clone record while the chunk is a clone, and moves to the
//!   chunk's copy-on-write record (`chunk_<chunkId>.cow`) when it becomes plain;
//!   upstream's meta page holds both.
//! - Reads never paste the origin's pages (upstream's default, `clone.enable_paste=false`,
//!   with no switch); RecoverChunk does, on every replica.
//! - RecoverChunk of a missing chunk with clone fields answers FAILURE_UNKNOWN without
//!   reading the source (upstream reads it, then finds no chunk to paste into); without
//!   them CHUNK_NOTEXIST, as upstream.
//! - An origin read has [`ORIGIN_DEADLINE`]; its failure fails the request with
//!   FAILURE_UNKNOWN, as upstream's failed download does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A replica of a copyset: the chunkserver id and its address ("ip:port").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub id: u32,
    pub addr: String,
}

/// A copyset hosted on this chunkserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedCopyset {
    pub logical_pool_id: u32,
    pub copyset_id: u32,
    /// All replicas including this chunkserver; `members[0]` is the preferred leader.
    pub members: Vec<PeerEntry>,
}

#[derive(Debug, Clone)]
pub struct ChunkServerConfig {
    pub id: u32,
    pub listen: SocketAddr,
    /// Folder of this chunkserver's chunk files; reused across restarts.
    pub data_dir: PathBuf,
    pub chunk_size: u32,
    pub block_size: u32,
    pub copysets: Vec<HostedCopyset>,
    /// Name the leader in REDIRECTED answers to reads and writes. Off is upstream's
    /// behaviour (the client must ask GetLeader); on saves the client that lookup.
    pub redirect_hints: bool,
    /// Whether an acknowledged write is on stable storage (`Sync`, as upstream's
    /// chunkservers) or in the page cache (`Cache`: survives a killed process only).
    pub durability: Durability,
    /// Reads the source volumes of clone chunks (upstream's OriginCopyer). `None`: reads
    /// of unwritten clone pages and RecoverChunk fail with FAILURE_UNKNOWN.
    pub origin: Option<Arc<dyn Origin>>,
}

mod baidu_std;
mod clone;
mod copyset;
mod origin;
mod raft;
mod raft_log;
mod raft_net;
mod service;
mod store;

use std::collections::HashMap;
use std::future::Future;

use curve_proto::chunkserver::chunk_service_server::ChunkServiceServer;
use curve_proto::chunkserver::cli_service2_server::CliService2Server;
use curve_proto::local::local_chunk_server_server::LocalChunkServerServer;
use tonic::transport::Server;

use crate::copyset::CopysetState;
pub use crate::origin::{CurveVolumes, ORIGIN_DEADLINE, Origin, OriginError};
use crate::service::{Handlers, Node};
use crate::store::ChunkStore;
pub use crate::store::Durability;

/// Largest gRPC message either side accepts: a whole 16 MiB chunk plus headroom, and
/// room for chunk sizes up to 64 MiB (tonic's default of 4 MiB would refuse a 4 MiB write).
pub const MAX_MESSAGE_SIZE: usize = 80 * 1024 * 1024 + 64 * 1024;

/// HTTP/2 receive windows for chunk data (server side and the leader's peer channels).
pub(crate) const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub(crate) const H2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Why a chunkserver could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("chunkserver {id}: {reason}")]
    InvalidConfig { id: u32, reason: String },
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("copyset {copyset}: cannot start its Raft member: {reason}")]
    Raft { copyset: String, reason: String },
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn serve(
    config: ChunkServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    serve_with_listener(config, listener, shutdown).await
}

/// Largest baidu_std message a chunkserver accepts: a Raft AppendEntries carries up to
/// 16 entries of up to a chunk each.
const MAX_BAIDU_STD_BODY: u32 = 320 * 1024 * 1024;

/// Serves ChunkService, CliService2, LocalChunkServer and the copysets' Raft RPCs on an
/// already bound listener (tests bind port 0 first to learn the address), over baidu_std
/// and gRPC, until `shutdown` resolves. In-flight gRPC requests finish first; baidu_std
/// connections are closed.
pub async fn serve_with_listener(
    config: ChunkServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let node = Arc::new(build_node(&config).await?);
    // Aborting on every exit path stops the background tasks with the server.
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for task in &self.0 {
                task.abort();
            }
        }
    }
    let _hand_back = AbortOnDrop(
        node.copysets()
            .map(|c| tokio::spawn(c.clone().hand_back_loop()))
            .collect(),
    );
    let handlers = Handlers(node.clone());
    let (incoming, baidu_std) = curve_brpc::server::share_port_with_limit(
        listener,
        Arc::new(baidu_std::BaiduStd(node.clone())),
        MAX_BAIDU_STD_BODY,
    );
    Server::builder()
        .tcp_nodelay(true)
        // Chunk writes of MiBs would otherwise stall on 1 MiB flow-control windows.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .add_service(
            ChunkServiceServer::new(handlers.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(CliService2Server::new(handlers.clone()))
        .add_service(LocalChunkServerServer::new(handlers))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    baidu_std.shutdown();
    for copyset in node.copysets() {
        if let Err(e) = copyset.raft.shutdown().await {
            tracing::warn!(copyset = %copyset.name(), error = %e, "Raft did not stop cleanly");
        }
    }
    Ok(())
}

async fn build_node(config: &ChunkServerConfig) -> Result<Node, Error> {
    let invalid = |reason: String| Error::InvalidConfig {
        id: config.id,
        reason,
    };
    if config.block_size == 0
        || config.chunk_size == 0
        || !config.chunk_size.is_multiple_of(config.block_size)
    {
        return Err(invalid(format!(
            "chunk size {} is not a positive multiple of block size {}",
            config.chunk_size, config.block_size
        )));
    }
    let store = Arc::new(ChunkStore::new(
        &config.data_dir,
        config.durability,
        config.chunk_size,
        config.block_size,
    ));
    let channels = Arc::new(raft_net::PeerChannels::default());
    let mut copysets = HashMap::new();
    for hosted in &config.copysets {
        let key = (hosted.logical_pool_id, hosted.copyset_id);
        let name = format!("{}-{}", key.0, key.1);
        if !hosted.members.iter().any(|m| m.id == config.id) {
            return Err(invalid(format!(
                "copyset {name} does not list this chunkserver among its members"
            )));
        }
        if copysets.contains_key(&key) {
            return Err(invalid(format!("copyset {name} listed twice")));
        }
        store
            .create_copyset_dir(key.0, key.1)
            .map_err(|source| Error::DataDir {
                path: store.copyset_dir(key.0, key.1),
                source,
            })?;
        let raft_dir = config.data_dir.join("raft").join(&name);
        let state = CopysetState::open(
            hosted,
            config.id,
            store.clone(),
            raft_dir,
            config.durability,
            channels.clone(),
        )
        .await
        .map_err(|e| Error::Raft {
            copyset: name.clone(),
            reason: e.to_string(),
        })?;
        copysets.insert(key, Arc::new(state));
    }
    Ok(Node::new(
        config.id,
        config.chunk_size,
        config.block_size,
        store,
        copysets,
        config.redirect_hints,
        config.origin.clone(),
    ))
}
