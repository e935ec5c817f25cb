//! A three-chunkserver cluster on loopback for the integration tests: each server runs
//! on its own tokio runtime so "kill" drops every task of that server at once, like a
//! SIGKILL drops a process.

#![allow(dead_code)]

pub mod proxy;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use curve_chunkserver::{ChunkServerConfig, HostedCopyset, MAX_MESSAGE_SIZE, Origin, PeerEntry};
use curve_proto::chunkserver::chunk_service_client::ChunkServiceClient;
use curve_proto::chunkserver::cli_service2_client::CliService2Client;
use curve_proto::chunkserver::{ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse};
use tonic::transport::Channel;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Every call a test makes has this deadline (tonic's per-request timeout), so a server
/// that hangs fails the test instead of hanging CI; far above any answer's time on a
/// loaded machine.
pub const RPC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A channel to `addr` whose calls and connect have `RPC_DEADLINE`.
pub async fn channel_to(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a test's server address is a valid URI")
        .timeout(RPC_DEADLINE)
        .connect_timeout(RPC_DEADLINE)
        .connect()
        .await
}

pub const CHUNK_SIZE: u32 = 4 * 1024 * 1024;
pub const BLOCK_SIZE: u32 = 4096;
pub const POOL: u32 = 1;
/// Led by server 0 (members 0, 1, 2).
pub const CS_A: u32 = 1;
/// Led by server 1 (members 1, 2, 0).
pub const CS_B: u32 = 2;
/// A chunk no test uses: `Cluster::start` writes it once in each copyset.
pub const WARM_UP_CHUNK: u64 = 1 << 40;

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub configs: Vec<ChunkServerConfig>,
    /// The address each server is known by (its listen address unless proxied).
    addrs: Vec<String>,
    runtimes: Vec<Option<tokio::runtime::Runtime>>,
}

impl Cluster {
    pub async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::start_with_hints(true).await
    }

    /// `redirect_hints: false` is upstream's behaviour (REDIRECTED names no leader).
    pub async fn start_with_hints(
        redirect_hints: bool,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::start_with(redirect_hints, None, None).await
    }

    /// With `origin` reading the source volumes of clone chunks.
    pub async fn start_with_origin(
        origin: Arc<dyn Origin>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::start_with(false, None, Some(origin)).await
    }

    /// Server `member` is reached by every other server (and by `addr`) through a
    /// proxy the test can cut, while its own calls to the others go direct.
    pub async fn start_with_proxy(
        member: usize,
    ) -> Result<(Self, proxy::Proxy), Box<dyn std::error::Error + Send + Sync>> {
        let proxy = proxy::Proxy::bind().await?;
        let cluster = Self::start_with(true, Some((member, &proxy)), None).await?;
        Ok((cluster, proxy))
    }

    /// [`Cluster::start_with_proxy`] with `origin` reading clone chunks' sources.
    pub async fn start_with_proxy_and_origin(
        member: usize,
        origin: Arc<dyn Origin>,
    ) -> Result<(Self, proxy::Proxy), Box<dyn std::error::Error + Send + Sync>> {
        let proxy = proxy::Proxy::bind().await?;
        let cluster = Self::start_with(true, Some((member, &proxy)), Some(origin)).await?;
        Ok((cluster, proxy))
    }

    async fn start_with(
        redirect_hints: bool,
        proxied: Option<(usize, &proxy::Proxy)>,
        origin: Option<Arc<dyn Origin>>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        capture_server_log();
        let dir = tempfile::tempdir()?;
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(std::net::TcpListener::bind("127.0.0.1:0")?);
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()?;
        let known: Vec<String> = (0..3)
            .map(|i| match proxied {
                Some((member, proxy)) if member == i => {
                    proxy.forward_to(addrs[i]);
                    proxy.addr().to_string()
                }
                _ => addrs[i].to_string(),
            })
            .collect();
        let peer = |i: usize| PeerEntry {
            id: i as u32,
            addr: known[i].clone(),
        };
        let configs: Vec<ChunkServerConfig> = (0..3)
            .map(|i| ChunkServerConfig {
                id: i as u32,
                listen: addrs[i],
                data_dir: dir.path().join(format!("chunkserver-{i}")),
                chunk_size: CHUNK_SIZE,
                block_size: BLOCK_SIZE,
                copysets: vec![
                    HostedCopyset {
                        logical_pool_id: POOL,
                        copyset_id: CS_A,
                        members: vec![peer(0), peer(1), peer(2)],
                    },
                    HostedCopyset {
                        logical_pool_id: POOL,
                        copyset_id: CS_B,
                        members: vec![peer(1), peer(2), peer(0)],
                    },
                ],
                redirect_hints,
                durability: curve_chunkserver::Durability::Cache,
                origin: origin.clone(),
            })
            .collect();
        let mut cluster = Cluster {
            _dir: dir,
            configs,
            addrs: known,
            runtimes: vec![None, None, None],
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            cluster.run(i, listener)?;
        }
        cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
        cluster.wait_leader(CS_B, 1, &[0, 1, 2]).await?;
        cluster.wait_serving_writes().await?;
        Ok(cluster)
    }

    /// Waits (up to 15 s) until each copyset's leader acknowledges a write to
    /// [`WARM_UP_CHUNK`]. Every member naming the leader is not yet enough: right after
    /// the election its followers' first heartbeats, catch-up and connections are still
    /// under way, and on a loaded machine (a debug build, the other tests' clusters) the
    /// first write could miss a replication deadline and be answered FAILURE_UNKNOWN, a
    /// status a client retries. The tests' own writes then meet a cluster that serves.
    async fn wait_serving_writes(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for (copyset_id, leader) in [(CS_A, 0), (CS_B, 1)] {
            let mut client = self.chunk_client(leader).await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            loop {
                let request = write_request(copyset_id, WARM_UP_CHUNK, 0, pattern(4096, 0), 1);
                let answer = ChunkOpStatus::try_from(write(&mut client, request).await?.status);
                match answer {
                    Ok(ChunkOpStatus::Success) => break,
                    Ok(ChunkOpStatus::FailureUnknown | ChunkOpStatus::Redirected)
                        if std::time::Instant::now() < deadline =>
                    {
                        eprintln!("copyset {copyset_id}: warm-up write answered {answer:?}; again");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    other => {
                        return Err(
                            format!("copyset {copyset_id}: warm-up write: {other:?}").into()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    }

    fn run(
        &mut self,
        i: usize,
        listener: std::net::TcpListener,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let rt = Self::runtime()?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        self.spawn(i, rt, listener);
        Ok(())
    }

    fn spawn(&mut self, i: usize, rt: tokio::runtime::Runtime, listener: tokio::net::TcpListener) {
        let config = self.configs[i].clone();
        rt.spawn(async move {
            if let Err(e) =
                curve_chunkserver::serve_with_listener(config, listener, std::future::pending())
                    .await
            {
                eprintln!("chunkserver {i} stopped: {e}");
            }
        });
        self.runtimes[i] = Some(rt);
    }

    /// Drops every task of server `i`: listener and connections close at once.
    pub fn kill(&mut self, i: usize) {
        if let Some(rt) = self.runtimes[i].take() {
            rt.shutdown_background();
        }
    }

    /// Starts server `i` again on its address and data dir, with its current config.
    pub fn restart(&mut self, i: usize) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.kill(i);
        let rt = Self::runtime()?;
        let addr = self.configs[i].listen;
        // The killed runtime drops its listener on its own threads a moment later, and
        // its connections linger in TIME_WAIT: reuse the address and retry briefly.
        let mut attempts = 0;
        let listener = loop {
            let bound = {
                let _guard = rt.enter();
                tokio::net::TcpSocket::new_v4().and_then(|socket| {
                    socket.set_reuseaddr(true)?;
                    socket.bind(addr)?;
                    socket.listen(1024)
                })
            };
            match bound {
                Ok(listener) => break listener,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.spawn(i, rt, listener);
        Ok(())
    }

    pub fn addr(&self, i: usize) -> String {
        self.addrs[i].clone()
    }

    pub fn chunk_path(&self, i: usize, copyset_id: u32, chunk_id: u64) -> PathBuf {
        self.configs[i]
            .data_dir
            .join(format!("copysets/{POOL}-{copyset_id}/chunk_{chunk_id}"))
    }

    pub async fn chunk_client(
        &self,
        i: usize,
    ) -> Result<ChunkServiceClient<Channel>, tonic::transport::Error> {
        Ok(ChunkServiceClient::new(channel_to(&self.addr(i)).await?)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE))
    }

    pub async fn cli_client(
        &self,
        i: usize,
    ) -> Result<CliService2Client<Channel>, tonic::transport::Error> {
        Ok(CliService2Client::new(channel_to(&self.addr(i)).await?))
    }
}

impl Cluster {
    /// The leader address (PeerId text) that server `i` names for the copyset, if any.
    pub async fn named_leader(&self, i: usize, copyset_id: u32) -> Option<String> {
        let mut cli = self.cli_client(i).await.ok()?;
        cli.get_leader(curve_proto::chunkserver::GetLeaderRequest2 {
            logic_pool_id: POOL,
            copyset_id,
            peer: None,
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().leader.address)
    }

    /// Waits (up to 15 s) until every server in `on` names one of them as the copyset's
    /// leader; returns it.
    pub async fn leader_among(
        &self,
        copyset_id: u32,
        on: &[usize],
    ) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let mut named = Vec::new();
            for &i in on {
                let answer = self.named_leader(i, copyset_id).await;
                named.push(answer);
            }
            let agreed = on.iter().copied().find(|&l| {
                let expected = format!("{}:0", self.addr(l));
                named
                    .iter()
                    .all(|a| a.as_deref() == Some(expected.as_str()))
            });
            if let Some(leader) = agreed {
                return Ok(leader);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("copyset {copyset_id}: no agreed leader among {on:?}").into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 15 s) until every server in `on` names server `leader` as the
    /// copyset's leader and that server leads it.
    pub async fn wait_leader(
        &self,
        copyset_id: u32,
        leader: usize,
        on: &[usize],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let expected = format!("{}:0", self.addr(leader));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let mut settled = true;
            for &i in on {
                let answer = self.named_leader(i, copyset_id).await;
                settled &= answer.as_deref() == Some(expected.as_str());
            }
            if settled {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(
                    format!("copyset {copyset_id}: server {leader} did not become leader").into(),
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.runtimes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            print_captured_log();
        }
    }
}

/// What the servers logged (info and up), kept so that a failed assertion shows why a server
/// answered as it did (a failure seen once under load must say more than its status).
/// The test binary's clusters share it, so it holds other tests' lines too.
static SERVER_LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
/// Only the newest part is kept and printed.
const LOG_SHOWN: usize = 64 * 1024;

struct ServerLog;

impl Write for ServerLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut log = SERVER_LOG
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.extend_from_slice(buf);
        if log.len() > 4 * LOG_SHOWN {
            let cut = log.len() - LOG_SHOWN;
            log.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_server_log() {
    // Another test of this binary may have installed it already.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_thread_names(true)
        .with_writer(|| ServerLog)
        .try_init();
}

fn print_captured_log() {
    let log = SERVER_LOG
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let start = log.len().saturating_sub(LOG_SHOWN);
    eprintln!(
        "--- what the test clusters logged (newest {} bytes) ---\n{}",
        log.len() - start,
        String::from_utf8_lossy(&log[start..])
    );
}

pub fn write_request(
    copyset_id: u32,
    chunk_id: u64,
    offset: u32,
    data: Vec<u8>,
    sn: u64,
) -> ChunkRequest {
    ChunkRequest {
        op_type: ChunkOpType::ChunkOpWrite as i32,
        logic_pool_id: POOL,
        copyset_id,
        chunk_id,
        offset: Some(offset),
        size: Some(data.len() as u32),
        sn: Some(sn),
        file_id: Some(1),
        attachment: Some(data.into()),
        ..Default::default()
    }
}

pub fn read_request(copyset_id: u32, chunk_id: u64, offset: u32, size: u32) -> ChunkRequest {
    ChunkRequest {
        op_type: ChunkOpType::ChunkOpRead as i32,
        logic_pool_id: POOL,
        copyset_id,
        chunk_id,
        offset: Some(offset),
        size: Some(size),
        ..Default::default()
    }
}

pub async fn write(
    client: &mut ChunkServiceClient<Channel>,
    request: ChunkRequest,
) -> Result<ChunkResponse, tonic::Status> {
    Ok(client.write_chunk(request).await?.into_inner())
}

pub async fn read(
    client: &mut ChunkServiceClient<Channel>,
    request: ChunkRequest,
) -> Result<ChunkResponse, tonic::Status> {
    Ok(client.read_chunk(request).await?.into_inner())
}

/// A block-aligned buffer whose bytes depend on `seed`, so misplaced data shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `len` bytes at `offset` of a chunk file on disk (zeros past its end).
pub fn on_disk(path: &std::path::Path, offset: usize, len: usize) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let mut out = vec![0u8; len];
    if offset < bytes.len() {
        let end = (offset + len).min(bytes.len());
        out[..end - offset].copy_from_slice(&bytes[offset..end]);
    }
    Ok(out)
}

/// The fuzz tests' source of cases: deterministic by default (CI draws the same 200 cases
/// every run), `CURVEFS_FUZZ_SEED=<u64>` replays a run, `CURVEFS_FUZZ_SEED=random` draws a
/// fresh one, and `CURVEFS_FUZZ_CASES=<n>` runs longer. The seed is printed (shown by
/// cargo test with a failure), so any run can be replayed.
pub fn fuzz_runner() -> (proptest::test_runner::TestRunner, usize) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    const DEFAULT_SEED: u64 = 20;
    let seed = match std::env::var("CURVEFS_FUZZ_SEED").as_deref() {
        Err(_) | Ok("") => DEFAULT_SEED,
        Ok("random") => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CURVEFS_FUZZ_SEED={s:?}: a u64 or \"random\"")),
    };
    let cases = match std::env::var("CURVEFS_FUZZ_CASES").as_deref() {
        Err(_) | Ok("") => 200,
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CURVEFS_FUZZ_CASES={s:?}: a count")),
    };
    println!("fuzz: CURVEFS_FUZZ_SEED={seed} CURVEFS_FUZZ_CASES={cases}");
    let bytes: Vec<u8> = std::iter::repeat_n(seed.to_le_bytes(), 4)
        .flatten()
        .collect();
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    (TestRunner::new_with_rng(Config::default(), rng), cases)
}
