//! Clone chunks reading a real volume: an MDS and three chunkservers served from a real
//! cluster layout (each chunkserver on its own runtime, so killing one drops all its
//! tasks at once, as SIGKILL would), a source volume written through curvefs's client,
//! and clone chunks whose origin the chunkservers read through their own read-only
//! client, as root, from the conf the layout gives them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use curve_client::chunk::ChunkOp;
use curve_client::metacache::ChunkAddr;
use curve_client::{Client, ClientConfig, CreateOptions, UserInfo};
use curve_cluster::{ClusterLayout, ClusterSpec, ServerSocket, ServerState};

const MIB: u64 = 1 << 20;
/// A chunk id no segment of the MDS hands out.
const CLONE_CHUNK: u64 = 1 << 40;

struct Servers {
    _dir: tempfile::TempDir,
    layout: ClusterLayout,
    /// The MDS's runtime, then one per chunkserver (`None` once killed).
    runtimes: Vec<Option<tokio::runtime::Runtime>>,
}

impl Servers {
    fn start() -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let sockets: Vec<ServerSocket> = (0..4)
            .map(|_| ServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().port()).collect();
        let spec: ClusterSpec = serde_json::from_value(serde_json::json!({
            "mds_ports": [ports[0]],
            "chunkserver_ports": &ports[1..],
            "copysets": 1,
        }))
        .unwrap();
        let layout = ClusterLayout::create(dir.path(), &spec).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut runtimes = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (dir, tx) = (dir.path().to_owned(), tx.clone());
            rt.spawn(async move {
                let report = move |state| {
                    let _ = tx.send((index, state));
                };
                let served = if index == 0 {
                    curve_cluster::serve_mds(&dir, 0, Some(socket), report, std::future::pending())
                        .await
                } else {
                    curve_cluster::serve_chunkserver(
                        &dir,
                        index as u32,
                        Some(socket),
                        report,
                        std::future::pending(),
                    )
                    .await
                };
                if let Err(e) = served {
                    eprintln!("server {index} stopped: {e}");
                }
            });
            runtimes.push(Some(rt));
        }
        for _ in 0..4 {
            let (index, state) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(state, ServerState::Serving, "server {index}");
        }
        Servers {
            _dir: dir,
            layout,
            runtimes,
        }
    }

    fn client(&self) -> Client {
        // The MDS runs in this test process: under load an answer can take longer than
        // upstream's 500 ms, and a retried mkdir or CreateFile then answers kFileExists for
        // what its first try made, which this test is not about.
        let overrides = [("mds.rpcTimeoutMS".to_string(), "2000".to_string())];
        let path = self.layout.write_client_conf(&overrides).unwrap();
        Client::new(ClientConfig::from_file(&path).unwrap()).unwrap()
    }

    fn kill_chunkserver(&mut self, id: u32) {
        if let Some(rt) = self.runtimes[id as usize].take() {
            rt.shutdown_background();
        }
    }

    /// Stops every task of chunkserver `id` (its one worker thread blocks) until the
    /// returned sender is dropped, as SIGSTOP and SIGCONT would.
    fn pause_chunkserver(&self, id: u32) -> std::sync::mpsc::Sender<()> {
        let (resume, paused) = std::sync::mpsc::channel::<()>();
        if let Some(rt) = &self.runtimes[id as usize] {
            rt.spawn(async move {
                let _ = paused.recv();
            });
        }
        resume
    }

    fn chunk_file(&self, id: u32, chunk_id: u64) -> std::path::PathBuf {
        self.layout.chunkserver_data_dir(id).join(format!(
            "copysets/{}-1/chunk_{chunk_id}",
            self.layout.logical_pool_id
        ))
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for rt in self.runtimes.iter_mut().filter_map(Option::take) {
            rt.shutdown_background();
        }
    }
}

fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 ^ seed as u8)
        .collect()
}

fn clone_chunk(chunk_id: u64) -> ChunkAddr {
    ChunkAddr {
        logical_pool_id: 1,
        copyset_id: 1,
        chunk_id,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Pause,
}

#[test]
fn clone_chunks_read_a_real_volume_and_survive_a_killed_leader() {
    clone_chunks_read_a_real_volume_through(Fault::Kill);
}

#[test]
fn clone_chunks_read_a_real_volume_and_survive_a_paused_leader() {
    clone_chunks_read_a_real_volume_through(Fault::Pause);
}

fn clone_chunks_read_a_real_volume_through(fault: Fault) {
    let mut servers = Servers::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let chunk = u64::from(servers.layout.mds.chunk_size);
    let client = rt.block_on(async { servers.client() });
    let alice = UserInfo {
        owner: "alice".into(),
        password: String::new(),
    };
    // The source: alice's, written across the boundary of its chunks 0 and 1 and at the
    // start of chunk 0; the rest of both chunks never written (zeros).
    let source = rt.block_on(async {
        client.mkdir("/images", &alice).await.unwrap();
        client
            .create("/images/src", &alice, 10 << 30, &CreateOptions::default())
            .await
            .unwrap();
        let fd = client.open("/images/src", &alice).await.unwrap();
        let mut source = vec![0u8; 2 * chunk as usize];
        for (at, len) in [(0, MIB as usize), (chunk - 3 * MIB, 4 * MIB as usize)] {
            let data = pattern(1, at, len);
            client.write(fd, at, &data).await.unwrap();
            source[at as usize..at as usize + len].copy_from_slice(&data);
        }
        client.close(fd).await.unwrap();
        source
    });
    let send = |chunk_id: u64, offset: u64, size: u64, op: ChunkOp| {
        let client = client.clone();
        let by = Instant::now() + Duration::from_secs(30);
        async move {
            let started = Instant::now();
            let answer = client
                .send_chunk_op(clone_chunk(chunk_id), offset as u32, size as u32, op, by)
                .await;
            (answer, started.elapsed())
        }
    };
    rt.block_on(async {
        // Clone chunks of the source's chunks 0 and 1, as a clone task's CreateCloneChunk.
        for index in 0..2u64 {
            let op = ChunkOp::CreateClone {
                location: format!("/images/src:{}@cs", index * chunk),
                sn: 1,
                corrected_sn: 0,
            };
            let (answer, _) = send(CLONE_CHUNK + index, 0, chunk, op).await;
            answer.unwrap();
        }
        // Their unwritten pages read as the source's bytes, written and not, read by the
        // chunkservers as root although alice owns the volume.
        for (index, at, len) in [
            (0, 0, 2 * MIB),
            (0, chunk - 2 * MIB, 2 * MIB),
            (1, 0, 2 * MIB),
        ] {
            let (answer, _) = send(CLONE_CHUNK + index, at, len, ChunkOp::Read).await;
            let got = answer.unwrap().unwrap();
            let from = (index * chunk + at) as usize;
            assert!(
                got[..] == source[from..from + len as usize],
                "chunk {index} at {at}"
            );
        }
    });
    // Flatten chunk 0 in 1 MiB pieces (the clone service's split) and kill or pause the
    // copyset's leader (its preferred one, which also serves the source's chunks) a
    // quarter of the way, with a read of chunk 1 in flight.
    let leader = servers.layout.copyset_members(1)[0].id;
    let pieces = chunk / MIB;
    let mut paused = None;
    for piece in 0..pieces {
        if piece == pieces / 4 {
            let reading = rt.spawn(send(CLONE_CHUNK + 1, 0, 4 * MIB, ChunkOp::Read));
            match fault {
                Fault::Kill => servers.kill_chunkserver(leader),
                Fault::Pause => paused = Some(servers.pause_chunkserver(leader)),
            }
            let (answer, took) = rt.block_on(reading).unwrap();
            let got = answer.unwrap().unwrap();
            assert!(got[..] == source[chunk as usize..(chunk + 4 * MIB) as usize]);
            assert!(took < Duration::from_secs(30), "a read took {took:?}");
        }
        let (answer, took) = rt.block_on(send(CLONE_CHUNK, piece * MIB, MIB, ChunkOp::Recover));
        answer.unwrap_or_else(|e| panic!("RecoverChunk of piece {piece}: {e}"));
        assert!(
            took < Duration::from_secs(30),
            "piece {piece} took {took:?}"
        );
    }
    // Flattened: a plain chunk holding the source's bytes on both other replicas.
    for id in servers
        .layout
        .copyset_members(1)
        .iter()
        .map(|m| m.id)
        .filter(|&id| id != leader)
    {
        let file = servers.chunk_file(id, CLONE_CHUNK);
        let record = file.with_file_name(format!("chunk_{CLONE_CHUNK}.clone"));
        // Followers apply an entry once they learn it is committed, which may be after
        // the leader answered.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while record.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !record.exists(),
            "chunkserver {id} still holds a clone record"
        );
        let mut held = std::fs::read(&file).unwrap();
        held.resize(chunk as usize, 0);
        assert!(
            held[..] == source[..chunk as usize],
            "chunkserver {id}'s chunk differs"
        );
    }
    // The paused leader resumes, steps down and is caught up; reads stay right.
    drop(paused);
    let (answer, _) = rt.block_on(send(CLONE_CHUNK, 0, chunk, ChunkOp::Read));
    assert!(answer.unwrap().unwrap()[..] == source[..chunk as usize]);
}
