//! A real local cluster in the test process: one MDS and three chunkservers on loopback,
//! each server on its own tokio runtime so a test can kill one the way SIGKILL would.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use curve_chunkserver::{ChunkServerConfig, HostedCopyset, PeerEntry};
use curve_client::{Client, ClientConfig, ErrorCode, UserInfo};
use curve_mds::{ChunkServerEntry, CopysetEntry, MdsConfig, MdsOptions, TopologyConfig};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
/// Small geometry so IO crosses chunk and segment boundaries cheaply.
pub const CHUNK_SIZE: u32 = 1 << 20;
pub const SEGMENT_SIZE: u32 = 4 << 20;
pub const BLOCK_SIZE: u32 = 4096;
pub const ROOT_PASSWORD: &str = "root_password";
pub const RECORD_EXPIRE_US: u64 = 1_000_000;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub mds_addr: SocketAddr,
    pub cs_addrs: Vec<SocketAddr>,
    mds_rt: Option<tokio::runtime::Runtime>,
    cs_rts: Vec<Option<tokio::runtime::Runtime>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn bind() -> std::net::TcpListener {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

pub fn mds_options() -> MdsOptions {
    MdsOptions {
        chunk_size: CHUNK_SIZE,
        segment_size: SEGMENT_SIZE,
        block_size: BLOCK_SIZE,
        min_file_length: u64::from(SEGMENT_SIZE),
        file_record_expire_us: RECORD_EXPIRE_US,
        snapshot_frozen_us: 0,
        ..MdsOptions::default()
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mds_listener = bind();
        let cs_listeners: Vec<_> = (0..3).map(|_| bind()).collect();
        let mds_addr = mds_listener.local_addr().unwrap();
        let cs_addrs: Vec<SocketAddr> = cs_listeners
            .iter()
            .map(|l| l.local_addr().unwrap())
            .collect();
        let ids = [1u32, 2, 3];
        // Four copysets, each on all three chunkservers with a rotating preferred leader.
        let copysets: Vec<(u32, Vec<u32>)> = (1..=4u32)
            .map(|c| {
                let first = (c as usize - 1) % 3;
                (c, (0..3).map(|k| ids[(first + k) % 3]).collect())
            })
            .collect();
        let topology = TopologyConfig {
            poolset: "default".into(),
            logical_pool_id: 1,
            pool_capacity: 1 << 40,
            chunkservers: ids
                .iter()
                .zip(&cs_addrs)
                .map(|(id, a)| ChunkServerEntry {
                    id: *id,
                    host: "127.0.0.1".into(),
                    port: a.port(),
                    external_ip: None,
                })
                .collect(),
            copysets: copysets
                .iter()
                .map(|(id, members)| CopysetEntry {
                    id: *id,
                    members: members.clone(),
                })
                .collect(),
        };
        let mds_config = MdsConfig {
            listen: mds_addr,
            data_dir: dir.path().join("mds"),
            options: mds_options(),
            topology,
        };
        let mds_rt = runtime();
        {
            let listener = {
                let _g = mds_rt.enter();
                tokio::net::TcpListener::from_std(mds_listener).unwrap()
            };
            mds_rt.spawn(async move {
                if let Err(e) =
                    curve_mds::serve_with_listener(mds_config, listener, std::future::pending())
                        .await
                {
                    eprintln!("MDS stopped: {e}");
                }
            });
        }
        let addr_of = |id: u32| cs_addrs[(id - 1) as usize].to_string();
        // Clone chunks read their origin volumes through curvefs's client, as root.
        let origin_conf = dir.path().join("cs_client.conf");
        std::fs::write(&origin_conf, format!("mds.listen.addr={mds_addr}\n")).unwrap();
        let mut cs_rts = Vec::new();
        for (i, listener) in cs_listeners.into_iter().enumerate() {
            let id = ids[i];
            let config = ChunkServerConfig {
                id,
                listen: cs_addrs[i],
                data_dir: dir.path().join(format!("chunkserver-{id}")),
                chunk_size: CHUNK_SIZE,
                block_size: BLOCK_SIZE,
                copysets: copysets
                    .iter()
                    .map(|(c, members)| HostedCopyset {
                        logical_pool_id: 1,
                        copyset_id: *c,
                        members: members
                            .iter()
                            .map(|m| PeerEntry {
                                id: *m,
                                addr: addr_of(*m),
                            })
                            .collect(),
                    })
                    .collect(),
                redirect_hints: false,
                durability: curve_chunkserver::Durability::Cache,
                origin: Some(std::sync::Arc::new(curve_chunkserver::CurveVolumes::new(
                    origin_conf.clone(),
                    root(),
                ))),
            };
            let rt = runtime();
            let listener = {
                let _g = rt.enter();
                tokio::net::TcpListener::from_std(listener).unwrap()
            };
            rt.spawn(async move {
                if let Err(e) =
                    curve_chunkserver::serve_with_listener(config, listener, std::future::pending())
                        .await
                {
                    eprintln!("chunkserver {id} stopped: {e}");
                }
            });
            cs_rts.push(Some(rt));
        }
        Cluster {
            dir,
            mds_addr,
            cs_addrs,
            mds_rt: Some(mds_rt),
            cs_rts,
        }
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            mds_addrs: vec![self.mds_addr.to_string()],
            // The MDS runs in this test process, beside other tests' clusters: on a loaded
            // machine an answer can take longer than upstream's 500 ms, and a CreateFile
            // retried after its first try timed out answers kFileExists for the file it
            // made (as upstream's client would), which no test here is about.
            mds_rpc_timeout_ms: 2000,
            mds_max_retry_ms: 3000,
            chunkserver_max_retry_time_ms: 20_000,
            mds_max_retry_ms_in_io_path: 10_000,
            ..ClientConfig::default()
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.config()).unwrap()
    }

    /// Drops every task of the MDS: its port refuses connections from now on.
    pub fn kill_mds(&mut self) {
        if let Some(rt) = self.mds_rt.take() {
            rt.shutdown_background();
        }
    }

    /// Kills chunkserver `i` (0-based).
    pub fn kill_chunkserver(&mut self, i: usize) {
        if let Some(rt) = self.cs_rts[i].take() {
            rt.shutdown_background();
        }
    }

    /// Waits out the MDS's young-start window in which deletions answer kNotSupported,
    /// by deleting a probe file until the MDS accepts.
    pub async fn settle(&self) {
        let c = self.client();
        let u = user("settle");
        let probe = "/settle-probe";
        c.create(
            probe,
            &u,
            u64::from(SEGMENT_SIZE),
            &curve_client::CreateOptions::default(),
        )
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match c.unlink(probe, &u).await {
                Ok(()) => return,
                Err(e)
                    if e.code == ErrorCode::NotSupport && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("settle: {e}"),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(rt) = self.mds_rt.take() {
            rt.shutdown_background();
        }
        for rt in self.cs_rts.iter_mut().filter_map(Option::take) {
            rt.shutdown_background();
        }
    }
}

pub fn user(owner: &str) -> UserInfo {
    UserInfo {
        owner: owner.into(),
        password: String::new(),
    }
}

pub fn root() -> UserInfo {
    UserInfo {
        owner: "root".into(),
        password: ROOT_PASSWORD.into(),
    }
}

/// Deterministic, position-dependent bytes so misplaced blocks show up.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
