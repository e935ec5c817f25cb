//! The local cluster's chunkserver: Curve's `curve.chunkserver.ChunkService` and
//! `CliService2.GetLeader` over tonic. Chunks live in sparse files; a copyset's leader
//! applies each write locally and on every live follower before acknowledging it.

use std::net::SocketAddr;
use std::path::PathBuf;

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
}
