//! The local cluster's MDS: Curve's namespace (`curve.mds.CurveFSService`) and topology
//! (`curve.mds.topology.TopologyService`) services over tonic, with every acknowledged
//! change written through to an embedded redb store first.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A chunkserver as the MDS knows it (static in the local cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkServerEntry {
    pub id: u32,
    pub host: String,
    pub port: u16,
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

/// Upstream's MDS settings that shape the namespace; defaults are upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
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
