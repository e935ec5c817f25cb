//! Clone chunks on three real chunkservers over real sockets, both wires: reads and
//! writes with clone fields, CreateCloneChunk, RecoverChunk, their replication and
//! catch-up. The origin (the source volume) is a test reader behind the chunkserver's
//! `Origin` trait, whose bytes are a function of source and offset; a real volume in a
//! real MDS + chunkserver cluster is read in curve-cluster's tests.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use curve_brpc::{Channel, DEFAULT_MAX_BODY};
use curve_chunkserver::{ORIGIN_DEADLINE, Origin, OriginError};
use curve_proto::chunkserver::{ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse};
use futures::future::BoxFuture;
use prost::Message;

const SOURCE: &str = "/origin-volume";
const BLOCK: usize = BLOCK_SIZE as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Fail,
    Hang,
}

/// A source volume whose byte at offset `i` is [`source_byte`]`(i)`.
#[derive(Debug)]
struct TestOrigin {
    reads: AtomicUsize,
    mode: Mutex<Mode>,
}

impl TestOrigin {
    fn new() -> Arc<Self> {
        Arc::new(TestOrigin {
            reads: AtomicUsize::new(0),
            mode: Mutex::new(Mode::Serve),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

fn source_byte(i: u64) -> u8 {
    (i.wrapping_mul(131) ^ (i / 4096).wrapping_mul(17)) as u8 | 1
}

fn source_bytes(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(source_byte).collect()
}

impl Origin for TestOrigin {
    fn read(
        &self,
        source: &str,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'_, Result<Vec<u8>, OriginError>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap_or_else(PoisonError::into_inner);
        let known = source == SOURCE;
        Box::pin(async move {
            match mode {
                Mode::Serve if known => Ok(source_bytes(offset, len)),
                Mode::Serve => Err(OriginError("no such volume".into())),
                Mode::Fail => Err(OriginError("origin unavailable".into())),
                Mode::Hang => std::future::pending().await,
            }
        })
    }
}

/// The chunk at `chunk_index` of the clone reads the source from this offset.
fn clone_offset(chunk_index: u64) -> u64 {
    chunk_index * u64::from(CHUNK_SIZE)
}

fn with_source(mut req: ChunkRequest, chunk_index: u64) -> ChunkRequest {
    req.clone_file_source = Some(SOURCE.into());
    req.clone_file_offset = Some(clone_offset(chunk_index));
    req
}

fn location(chunk_index: u64) -> String {
    format!("{SOURCE}:{}@cs", clone_offset(chunk_index))
}

fn create_clone_request(chunk_id: u64, sn: u64, corrected: u64, location: &str) -> ChunkRequest {
    ChunkRequest {
        op_type: ChunkOpType::ChunkOpCreateClone as i32,
        logic_pool_id: POOL,
        copyset_id: CS_A,
        chunk_id,
        size: Some(CHUNK_SIZE),
        sn: Some(sn),
        corrected_sn: Some(corrected),
        location: Some(location.to_string()),
        ..Default::default()
    }
}

fn recover_request(chunk_id: u64, offset: u32, size: u32) -> ChunkRequest {
    ChunkRequest {
        op_type: ChunkOpType::ChunkOpRecover as i32,
        logic_pool_id: POOL,
        copyset_id: CS_A,
        chunk_id,
        offset: Some(offset),
        size: Some(size),
        ..Default::default()
    }
}

fn status(resp: &ChunkResponse) -> ChunkOpStatus {
    ChunkOpStatus::try_from(resp.status).unwrap_or(ChunkOpStatus::FailureUnknown)
}

/// One face of the chunkserver: gRPC or baidu_std, each method as the client sends it.
enum Wire {
    Grpc(
        curve_proto::chunkserver::chunk_service_client::ChunkServiceClient<
            tonic::transport::Channel,
        >,
    ),
    Brpc(Channel),
}

impl Wire {
    async fn connect(
        cluster: &Cluster,
        i: usize,
        brpc: bool,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(if brpc {
            Wire::Brpc(
                Channel::connect(&cluster.addr(i), Duration::from_secs(1), DEFAULT_MAX_BODY)
                    .await?,
            )
        } else {
            Wire::Grpc(cluster.chunk_client(i).await?)
        })
    }

    /// Sends `req` to `method`; the data of a read in the answer's `attachment`.
    async fn call(
        &mut self,
        method: &str,
        mut req: ChunkRequest,
    ) -> Result<ChunkResponse, Box<dyn std::error::Error + Send + Sync>> {
        match self {
            Wire::Grpc(client) => Ok(match method {
                "ReadChunk" => client.read_chunk(req).await?,
                "WriteChunk" => client.write_chunk(req).await?,
                "CreateCloneChunk" => client.create_clone_chunk(req).await?,
                "RecoverChunk" => client.recover_chunk(req).await?,
                other => return Err(format!("no method {other}").into()),
            }
            .into_inner()),
            Wire::Brpc(channel) => {
                let data = req.attachment.take().unwrap_or_default();
                let reply = channel
                    .call(
                        "curve.chunkserver.ChunkService",
                        method,
                        Bytes::from(req.encode_to_vec()),
                        data,
                        Duration::from_secs(15),
                    )
                    .await?;
                let mut resp = ChunkResponse::decode(reply.payload)?;
                if !reply.attachment.is_empty() {
                    resp.attachment = Some(reply.attachment);
                }
                Ok(resp)
            }
        }
    }
}

fn data_of(resp: &ChunkResponse) -> &[u8] {
    resp.attachment.as_deref().unwrap_or_default()
}

fn record_path(cluster: &Cluster, i: usize, chunk_id: u64) -> std::path::PathBuf {
    cluster
        .chunk_path(i, CS_A, chunk_id)
        .with_file_name(format!("chunk_{chunk_id}.clone"))
}

async fn reads_and_writes_of_a_lazy_clone(brpc: bool) -> TestResult {
    let origin = TestOrigin::new();
    let cluster = Cluster::start_with_origin(origin.clone()).await?;
    let mut leader = Wire::connect(&cluster, 0, brpc).await?;
    // A chunk the clone never wrote: CHUNK_NOTEXIST without clone fields (the client
    // then reads zeros), the source's bytes with them.
    let resp = leader
        .call("ReadChunk", read_request(CS_A, 30, 0, 8192))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::ChunkNotexist);
    let resp = leader
        .call(
            "ReadChunk",
            with_source(read_request(CS_A, 30, 4096, 8192), 3),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    assert_eq!(data_of(&resp), source_bytes(clone_offset(3) + 4096, 8192));
    assert!(
        !cluster.chunk_path(0, CS_A, 30).exists(),
        "a read created the chunk"
    );
    // A write with clone fields makes a clone chunk on every replica (followers apply
    // it once committed, which may be after the ack).
    let written = pattern(2 * BLOCK, 9);
    let resp = leader
        .call(
            "WriteChunk",
            with_source(write_request(CS_A, 30, 8192, written.clone(), 1), 3),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    for i in 0..3 {
        let record = record_path(&cluster, i, 30);
        eventually(&format!("replica {i} holds a clone record"), || {
            Ok(record.exists())
        })
        .await?;
    }
    // A read across written and unwritten pages: the chunk's where written, the
    // source's around them, with or without clone fields (the chunk knows its origin).
    let mut expected = source_bytes(clone_offset(3), 5 * BLOCK);
    expected[2 * BLOCK..4 * BLOCK].copy_from_slice(&written);
    for req in [
        read_request(CS_A, 30, 0, 5 * BLOCK_SIZE),
        with_source(read_request(CS_A, 30, 0, 5 * BLOCK_SIZE), 3),
    ] {
        let resp = leader.call("ReadChunk", req).await?;
        assert_eq!(status(&resp), ChunkOpStatus::Success);
        assert_eq!(data_of(&resp), &expected[..]);
    }
    // Entirely written pages are read from the chunk alone.
    let before = origin.reads();
    let resp = leader
        .call("ReadChunk", read_request(CS_A, 30, 8192, 8192))
        .await?;
    assert_eq!(data_of(&resp), &written[..]);
    assert_eq!(origin.reads(), before, "written pages read from the origin");
    // Reads do not paste: the unwritten pages are still unwritten on disk.
    assert_eq!(
        on_disk(&cluster.chunk_path(0, CS_A, 30), 0, BLOCK)?,
        vec![0; BLOCK]
    );
    // Without clone fields a write to a missing chunk makes a plain chunk, as before.
    let resp = leader
        .call(
            "WriteChunk",
            write_request(CS_A, 31, 0, pattern(BLOCK, 2), 1),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    assert!(!record_path(&cluster, 0, 31).exists());
    let resp = leader
        .call(
            "ReadChunk",
            with_source(read_request(CS_A, 31, 0, 2 * BLOCK_SIZE), 3),
        )
        .await?;
    let mut plain = pattern(BLOCK, 2);
    plain.extend(vec![0; BLOCK]);
    assert_eq!(
        data_of(&resp),
        &plain[..],
        "a plain chunk's unwritten bytes are zeros"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_of_a_lazy_clone_over_grpc() -> TestResult {
    reads_and_writes_of_a_lazy_clone(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_of_a_lazy_clone_over_baidu_std() -> TestResult {
    reads_and_writes_of_a_lazy_clone(true).await
}

async fn create_clone_chunk_then_recover_it(brpc: bool) -> TestResult {
    let origin = TestOrigin::new();
    let cluster = Cluster::start_with_origin(origin.clone()).await?;
    let mut leader = Wire::connect(&cluster, 0, brpc).await?;
    let loc = location(5);
    // Refused before anything is created.
    let mut wrong_size = create_clone_request(40, 1, 0, &loc);
    wrong_size.size = Some(CHUNK_SIZE / 2);
    for (what, req) in [
        ("sn 0", create_clone_request(40, 0, 0, &loc)),
        ("no location", create_clone_request(40, 1, 0, "")),
        (
            "bad location",
            create_clone_request(40, 1, 0, "/origin-volume@cs"),
        ),
        (
            "S3 location without a key",
            create_clone_request(40, 1, 0, "@s3"),
        ),
        ("size not the chunk size", wrong_size),
    ] {
        let resp = leader.call("CreateCloneChunk", req).await?;
        assert_eq!(status(&resp), ChunkOpStatus::InvalidRequest, "{what}");
    }
    assert!(!cluster.chunk_path(0, CS_A, 40).exists());
    for _ in 0..2 {
        let resp = leader
            .call("CreateCloneChunk", create_clone_request(40, 1, 0, &loc))
            .await?;
        assert_eq!(status(&resp), ChunkOpStatus::Success, "not idempotent");
    }
    for (what, req) in [
        ("another sn", create_clone_request(40, 2, 0, &loc)),
        ("another correctedSn", create_clone_request(40, 1, 1, &loc)),
        (
            "another location",
            create_clone_request(40, 1, 0, &location(6)),
        ),
    ] {
        let resp = leader.call("CreateCloneChunk", req).await?;
        assert_eq!(status(&resp), ChunkOpStatus::ChunkExist, "{what}");
    }
    for i in 0..3 {
        let record = record_path(&cluster, i, 40);
        eventually(&format!("replica {i} holds a clone record"), || {
            Ok(record.exists())
        })
        .await?;
    }
    // A written range recovers at once, without the origin.
    let resp = leader
        .call(
            "WriteChunk",
            write_request(CS_A, 40, 0, pattern(BLOCK, 4), 1),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let before = origin.reads();
    let resp = leader
        .call("RecoverChunk", recover_request(40, 0, BLOCK_SIZE))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    assert_eq!(origin.reads(), before);
    // A range with unwritten pages is pasted on every replica, around the written page.
    let resp = leader
        .call("RecoverChunk", recover_request(40, 0, 1 << 20))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let mut expected = source_bytes(clone_offset(5), 1 << 20);
    expected[..BLOCK].copy_from_slice(&pattern(BLOCK, 4));
    for i in 0..3 {
        assert_eq!(
            on_disk_eventually(&cluster.chunk_path(i, CS_A, 40), 0, 1 << 20, &expected).await?,
            expected,
            "replica {i}"
        );
    }
    // The whole chunk: it becomes a plain chunk everywhere.
    let resp = leader
        .call("RecoverChunk", recover_request(40, 0, CHUNK_SIZE))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    for i in 0..3 {
        let record = record_path(&cluster, i, 40);
        eventually(&format!("replica {i} is a plain chunk"), || {
            Ok(!record.exists())
        })
        .await?;
        let tail = on_disk(
            &cluster.chunk_path(i, CS_A, 40),
            (CHUNK_SIZE as usize) - BLOCK,
            BLOCK,
        )?;
        assert_eq!(
            tail,
            source_bytes(
                clone_offset(5) + u64::from(CHUNK_SIZE) - BLOCK as u64,
                BLOCK
            )
        );
    }
    // A plain chunk recovers at once; a missing one is CHUNK_NOTEXIST.
    let before = origin.reads();
    let resp = leader
        .call("RecoverChunk", recover_request(40, 0, CHUNK_SIZE))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let resp = leader
        .call("RecoverChunk", recover_request(41, 0, BLOCK_SIZE))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::ChunkNotexist);
    assert_eq!(origin.reads(), before);
    // Followers redirect both, as any other IO.
    let mut follower = Wire::connect(&cluster, 1, brpc).await?;
    let resp = follower
        .call("CreateCloneChunk", create_clone_request(42, 1, 0, &loc))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Redirected);
    let resp = follower
        .call("RecoverChunk", recover_request(40, 0, BLOCK_SIZE))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Redirected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_clone_chunk_then_recover_it_over_grpc() -> TestResult {
    create_clone_chunk_then_recover_it(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_clone_chunk_then_recover_it_over_baidu_std() -> TestResult {
    create_clone_chunk_then_recover_it(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_fails_or_hangs_fails_the_request_never_zeros() -> TestResult {
    let origin = TestOrigin::new();
    let cluster = Cluster::start_with_origin(origin.clone()).await?;
    let mut leader = Wire::connect(&cluster, 0, false).await?;
    let resp = leader
        .call(
            "CreateCloneChunk",
            create_clone_request(50, 1, 0, &location(1)),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    origin.set(Mode::Fail);
    for (what, method, req) in [
        (
            "read of a missing chunk",
            "ReadChunk",
            with_source(read_request(CS_A, 51, 0, BLOCK_SIZE), 1),
        ),
        (
            "read of a clone chunk",
            "ReadChunk",
            read_request(CS_A, 50, 0, BLOCK_SIZE),
        ),
        (
            "recover",
            "RecoverChunk",
            recover_request(50, 0, BLOCK_SIZE),
        ),
    ] {
        let resp = leader.call(method, req).await?;
        assert_eq!(status(&resp), ChunkOpStatus::FailureUnknown, "{what}");
        assert!(data_of(&resp).is_empty(), "{what} answered data");
    }
    // An unknown source volume is a failure too.
    origin.set(Mode::Serve);
    let mut unknown = read_request(CS_A, 51, 0, BLOCK_SIZE);
    unknown.clone_file_source = Some("/no-such-volume".into());
    unknown.clone_file_offset = Some(0);
    let resp = leader.call("ReadChunk", unknown).await?;
    assert_eq!(status(&resp), ChunkOpStatus::FailureUnknown);
    // A hung origin: the request fails once the origin deadline passes, not later.
    origin.set(Mode::Hang);
    for (method, req) in [
        ("ReadChunk", read_request(CS_A, 50, 0, BLOCK_SIZE)),
        ("RecoverChunk", recover_request(50, 0, BLOCK_SIZE)),
    ] {
        let started = Instant::now();
        let resp = leader.call(method, req).await?;
        let took = started.elapsed();
        assert_eq!(status(&resp), ChunkOpStatus::FailureUnknown, "{method}");
        assert!(
            took >= ORIGIN_DEADLINE && took < ORIGIN_DEADLINE + Duration::from_secs(3),
            "{method} took {took:?}"
        );
    }
    // Nothing was pasted meanwhile: the chunk is still entirely unwritten.
    origin.set(Mode::Serve);
    let resp = leader
        .call("ReadChunk", read_request(CS_A, 50, 0, BLOCK_SIZE))
        .await?;
    assert_eq!(data_of(&resp), source_bytes(clone_offset(1), BLOCK));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_the_dead_gets_the_clone_chunks_state() -> TestResult {
    let origin = TestOrigin::new();
    let mut cluster = Cluster::start_with_origin(origin.clone()).await?;
    cluster.kill(2);
    let mut leader = Wire::connect(&cluster, 0, false).await?;
    // While member 2 is down: a clone chunk created and left unwritten, one written in
    // part and recovered in part, and one written with clone fields.
    let resp = leader
        .call(
            "CreateCloneChunk",
            create_clone_request(60, 1, 0, &location(0)),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let resp = leader
        .call(
            "CreateCloneChunk",
            create_clone_request(61, 1, 0, &location(1)),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let resp = leader
        .call(
            "WriteChunk",
            write_request(CS_A, 61, 4096, pattern(BLOCK, 7), 1),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let resp = leader
        .call("RecoverChunk", recover_request(61, 65536, 65536))
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let resp = leader
        .call(
            "WriteChunk",
            with_source(write_request(CS_A, 62, 0, pattern(BLOCK, 8), 1), 2),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    cluster.restart(2)?;
    // Caught up: member 2's files equal the leader's, records included.
    let deadline = Instant::now() + Duration::from_secs(20);
    let same = |chunk_id: u64| -> std::io::Result<bool> {
        let read = |i: usize| -> std::io::Result<(Vec<u8>, Vec<u8>)> {
            Ok((
                std::fs::read(cluster.chunk_path(i, CS_A, chunk_id)).unwrap_or_default(),
                std::fs::read(record_path(&cluster, i, chunk_id)).unwrap_or_default(),
            ))
        };
        let (leader, follower) = (read(0)?, read(2)?);
        Ok(!leader.1.is_empty() && leader == follower)
    };
    loop {
        if same(60)? && same(61)? && same(62)? {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 2 never caught up the clone chunks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The copyset goes on serving the clone chunk once its leader dies.
    cluster.kill(0);
    let new_leader = cluster.leader_among(CS_A, &[1, 2]).await?;
    let mut client = Wire::connect(&cluster, new_leader, false).await?;
    let mut expected = source_bytes(clone_offset(1), 2 * BLOCK);
    expected[BLOCK..].copy_from_slice(&pattern(BLOCK, 7));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client
            .call("ReadChunk", read_request(CS_A, 61, 0, 2 * BLOCK_SIZE))
            .await?;
        if status(&resp) == ChunkOpStatus::Success {
            assert_eq!(data_of(&resp), &expected[..]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader never served: {:?}",
            status(&resp)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_follower_during_recover_chunk_misses_nothing() -> TestResult {
    let origin = TestOrigin::new();
    let (cluster, proxy) = Cluster::start_with_proxy_and_origin(1, origin.clone()).await?;
    let mut leader = Wire::connect(&cluster, 0, false).await?;
    let resp = leader
        .call(
            "CreateCloneChunk",
            create_clone_request(70, 1, 0, &location(2)),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let resp = leader
        .call(
            "WriteChunk",
            write_request(CS_A, 70, 0, pattern(BLOCK, 3), 1),
        )
        .await?;
    assert_eq!(status(&resp), ChunkOpStatus::Success);
    let record = record_path(&cluster, 1, 70);
    eventually("member 1 has the clone chunk", || Ok(record.exists())).await?;
    // Member 1 hangs (bytes stop both ways, as for a SIGSTOPped process) while the whole
    // chunk is recovered, 1 MiB at a time.
    proxy.cut();
    let piece = 1u32 << 20;
    for offset in (0..CHUNK_SIZE).step_by(piece as usize) {
        let started = Instant::now();
        let resp = leader
            .call("RecoverChunk", recover_request(70, offset, piece))
            .await?;
        let took = started.elapsed();
        assert_eq!(status(&resp), ChunkOpStatus::Success, "piece at {offset}");
        assert!(
            took < Duration::from_secs(3),
            "piece at {offset} took {took:?}"
        );
    }
    let mut expected = source_bytes(clone_offset(2), CHUNK_SIZE as usize);
    expected[..BLOCK].copy_from_slice(&pattern(BLOCK, 3));
    for i in [0, 2] {
        let record = record_path(&cluster, i, 70);
        eventually(&format!("replica {i} is a plain chunk"), || {
            Ok(!record.exists())
        })
        .await?;
        assert!(
            on_disk_eventually(
                &cluster.chunk_path(i, CS_A, 70),
                0,
                CHUNK_SIZE as usize,
                &expected
            )
            .await?
                == expected,
            "replica {i}"
        );
    }
    // Member 1 answers again: the leader's catch-up makes its chunk plain and whole.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let caught_up = !record_path(&cluster, 1, 70).exists()
            && on_disk(&cluster.chunk_path(1, CS_A, 70), 0, CHUNK_SIZE as usize)? == expected;
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member 1 never caught up chunk 70"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
