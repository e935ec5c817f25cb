//! Open/read/write/close against a real local MDS and three chunkservers.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use curve_client::transport::{
    GrpcTransport, RpcMethod, RpcReply, Transport, TransportError, methods,
};
use futures::future::BoxFuture;

use common::*;
use curve_client::{Client, CreateOptions, ErrorCode, UserInfo};

const SEG: u64 = SEGMENT_SIZE as u64;
const CHUNK: u64 = CHUNK_SIZE as u64;

fn code<T: std::fmt::Debug>(r: curve_client::Result<T>) -> ErrorCode {
    r.unwrap_err().code
}

async fn volume(c: &Client, owner: &str, name: &str, size: u64) -> (UserInfo, String) {
    let u = user(owner);
    let dir = format!("/{owner}");
    match c.mkdir(&dir, &u).await {
        Ok(()) => {}
        Err(e) if e.code == ErrorCode::Exists => {}
        Err(e) => panic!("mkdir {dir}: {e}"),
    }
    let path = format!("{dir}/{name}");
    c.create(&path, &u, size, &CreateOptions::default())
        .await
        .unwrap();
    (u, path)
}

async fn read_vec(c: &Client, fd: i32, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xAAu8; len];
    c.read(fd, offset, &mut buf).await.unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_across_chunk_and_segment_boundaries() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "io", "v", 4 * SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    assert_eq!(fd, 0);

    // A small write, then writes straddling a chunk boundary and a segment boundary.
    let cases = [
        (0, 4096usize),
        (CHUNK - 8192, 16384),
        (SEG - 3 * CHUNK / 2, 2 * CHUNK as usize + 4096),
        (3 * SEG - 4096, 8192),
        (4 * SEG - 4096, 4096),
    ];
    for (i, (off, len)) in cases.iter().enumerate() {
        let data = pattern(i as u64 + 1, *len);
        c.write(fd, *off, &data).await.unwrap();
        assert_eq!(read_vec(&c, fd, *off, *len).await, data, "case {i}");
    }
    // Everything again after all writes (no overlaps among the cases).
    for (i, (off, len)) in cases.iter().enumerate() {
        assert_eq!(
            read_vec(&c, fd, *off, *len).await,
            pattern(i as u64 + 1, *len)
        );
    }
    // Overwrite part of a block range and read the mix back.
    let over = pattern(99, 4096);
    c.write(fd, CHUNK - 4096, &over).await.unwrap();
    let got = read_vec(&c, fd, CHUNK - 8192, 16384).await;
    let orig = pattern(2, 16384);
    assert_eq!(&got[..4096], &orig[..4096]);
    assert_eq!(&got[4096..8192], &over[..]);
    assert_eq!(&got[8192..], &orig[8192..]);

    // Another client sees the data.
    let other = cluster.client();
    let fd2 = other.open(&path, &u).await.unwrap();
    assert_eq!(read_vec(&other, fd2, 0, 4096).await, pattern(1, 4096));
    other.close(fd2).await.unwrap();
    c.close(fd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holes_read_as_zeros() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "holes", "v", 3 * SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    // Unallocated segment.
    assert!(
        read_vec(&c, fd, SEG, 64 * 1024)
            .await
            .iter()
            .all(|b| *b == 0)
    );
    // Allocated segment, never-written chunk: write chunk 0 only, read chunk 2.
    c.write(fd, 0, &pattern(5, 4096)).await.unwrap();
    assert!(
        read_vec(&c, fd, 2 * CHUNK, 8192)
            .await
            .iter()
            .all(|b| *b == 0)
    );
    // Written chunk, unwritten block right after the written one.
    assert!(read_vec(&c, fd, 4096, 4096).await.iter().all(|b| *b == 0));
    // A read spanning data, a hole segment and back.
    let got = read_vec(&c, fd, SEG - 4096, 8192).await;
    assert!(got.iter().all(|b| *b == 0));
    // A cached hole becomes data once written.
    c.write(fd, SEG, &pattern(6, 4096)).await.unwrap();
    assert_eq!(read_vec(&c, fd, SEG, 4096).await, pattern(6, 4096));
    c.close(fd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_io_64_mib() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "big", "v", 32 * SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    let len = 64 * MIB as usize;
    let data = pattern(7, len);
    // Start unaligned to chunks so every piece boundary is exercised.
    let off = CHUNK / 2;
    let start = Instant::now();
    c.write(fd, off, &data).await.unwrap();
    let wrote = start.elapsed();
    let mut buf = vec![0u8; len];
    let start = Instant::now();
    c.read(fd, off, &mut buf).await.unwrap();
    let read = start.elapsed();
    assert!(buf == data, "64 MiB read back differs");
    eprintln!("64 MiB: write {wrote:?}, read {read:?}");
    c.close(fd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_from_many_tasks() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "conc", "v", 4 * SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    let tasks = 32u64;
    let len = 64 * 1024usize;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            // Spread over all segments; each task owns its range.
            let off = t * (4 * SEG / tasks);
            for round in 0..4u64 {
                let data = pattern(t * 100 + round, len);
                c.write(fd, off + round * len as u64, &data).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    for t in 0..tasks {
        let off = t * (4 * SEG / tasks);
        for round in 0..4u64 {
            let got = read_vec(&c, fd, off + round * len as u64, len).await;
            assert!(
                got == pattern(t * 100 + round, len),
                "task {t} round {round}"
            );
        }
    }
    c.close(fd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_argument_errors() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "args", "v", SEG).await;
    assert_eq!(code(c.open("/args/missing", &u).await), ErrorCode::NotExist);
    assert_eq!(
        code(c.open(&path, &user("mallory")).await),
        ErrorCode::AuthFail
    );
    let fd = c.open(&path, &u).await.unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(code(c.read(fd + 100, 0, &mut buf).await), ErrorCode::BadFd);
    assert_eq!(code(c.write(fd + 100, 0, &buf).await), ErrorCode::BadFd);
    assert_eq!(code(c.read(fd, 512, &mut buf).await), ErrorCode::NotAligned);
    assert_eq!(
        code(c.write(fd, 0, &buf[..1000]).await),
        ErrorCode::NotAligned
    );
    assert_eq!(code(c.read(fd, SEG, &mut buf).await), ErrorCode::Failed);
    assert_eq!(
        code(c.write(fd, SEG - 2048 * 2, &[0u8; 8192]).await),
        ErrorCode::Failed
    );
    // Zero-length IO succeeds without looking at anything.
    c.read(fd, 12345, &mut []).await.unwrap();
    c.write(fd, 12345, &[]).await.unwrap();
    // Extending an open file makes the new range usable at once.
    c.extend(&path, &u, 2 * SEG).await.unwrap();
    c.write(fd, SEG, &pattern(1, 4096)).await.unwrap();
    assert_eq!(read_vec(&c, fd, SEG, 4096).await, pattern(1, 4096));

    // fds are never reused; close makes the fd bad.
    let fd2 = c.open(&path, &u).await.unwrap();
    assert!(fd2 > fd);
    c.close(fd).await.unwrap();
    assert_eq!(code(c.read(fd, 0, &mut buf).await), ErrorCode::BadFd);
    assert_eq!(code(c.write(fd, 0, &buf).await), ErrorCode::BadFd);
    assert_eq!(code(c.close(fd).await), ErrorCode::BadFd);
    let fd3 = c.open(&path, &u).await.unwrap();
    assert!(fd3 > fd2);
    c.close(fd2).await.unwrap();
    c.close(fd3).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_file_is_occupied_until_closed() {
    let cluster = Cluster::start().await;
    cluster.settle().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "occ", "v", SEG).await;
    let refreshes = Arc::new(AtomicUsize::new(0));
    let transport = CountRefreshes {
        inner: GrpcTransport::new(Duration::from_secs(1), 1),
        done: refreshes.clone(),
    };
    let c = Client::with_transport(cluster.config(), Arc::new(transport)).unwrap();
    let fd = c.open(&path, &u).await.unwrap();
    // Open registered the file as this client's.
    assert_eq!(code(c.unlink(&path, &u).await), ErrorCode::FileOccupied);
    // And the session's refreshes keep it so, past the record's first lifetime.
    let deadline = Instant::now() + Duration::from_secs(20);
    while refreshes.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "no two session refreshes within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code(c.unlink(&path, &u).await), ErrorCode::FileOccupied);
    c.close(fd).await.unwrap();
    c.unlink(&path, &u).await.unwrap();
}

/// The real transport, counting the RefreshSession calls that got an answer.
struct CountRefreshes {
    inner: GrpcTransport,
    done: Arc<AtomicUsize>,
}

impl Transport for CountRefreshes {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        let call = self
            .inner
            .call(endpoint, method, request, attachment, timeout);
        if *method != methods::REFRESH_SESSION {
            return call;
        }
        let done = self.done.clone();
        Box::pin(async move {
            let reply = call.await;
            if reply.is_ok() {
                done.fetch_add(1, Ordering::SeqCst);
            }
            reply
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_io_in_flight() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "cl", "v", 2 * SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    let writer = {
        let c = c.clone();
        tokio::spawn(async move { c.write(fd, 0, &pattern(3, 8 * MIB as usize)).await })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.close(fd).await.unwrap();
    // The write either finished before close or failed cleanly; it never hangs.
    let r = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("write did not hang")
        .unwrap();
    if let Err(e) = r {
        assert!(
            matches!(e.code, ErrorCode::BadFd | ErrorCode::DisableIo),
            "{e}"
        );
    }
    assert_eq!(code(c.write(fd, 0, &[0u8; 4096]).await), ErrorCode::BadFd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_survives_losing_a_chunkserver() {
    let mut cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "ha", "v", SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    let before = pattern(11, 4 * CHUNK as usize);
    c.write(fd, 0, &before).await.unwrap();
    // Let the chunkservers' followers settle on their leader first: killed within the
    // first few hundred ms, the local chunkserver's followers keep naming the dead leader
    // and the client retries until its budget ends. That is the home-made replication's
    // fault, not the client's; issue 21 replaces it with Raft, and this wait with it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill_chunkserver(0);
    let after = pattern(12, 4 * CHUNK as usize);
    c.write(fd, 0, &after).await.unwrap();
    assert!(read_vec(&c, fd, 0, after.len()).await == after);
    c.close(fd).await.unwrap();
}

/// A transport that drops this client's RefreshSession calls while `cut` is set, as a
/// partition between it and the MDS would: everything else goes through the real one.
struct RefreshCut {
    inner: GrpcTransport,
    cut: Arc<AtomicBool>,
}

impl Transport for RefreshCut {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        if self.cut.load(Ordering::SeqCst) && *method == methods::REFRESH_SESSION {
            let endpoint = endpoint.to_string();
            return Box::pin(async move {
                Err(TransportError::Connect {
                    endpoint,
                    message: "refreshes cut by the test".into(),
                })
            });
        }
        self.inner
            .call(endpoint, method, request, attachment, timeout)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_open_file_disables_io() {
    let cluster = Cluster::start().await;
    cluster.settle().await;
    let conf = cluster.config();
    let cut = Arc::new(AtomicBool::new(false));
    let transport = RefreshCut {
        inner: GrpcTransport::new(Duration::from_secs(1), 1),
        cut: cut.clone(),
    };
    let c = Client::with_transport(conf, Arc::new(transport)).unwrap();
    let (u, path) = volume(&c, "gone", "v", SEG).await;
    let fd = c.open(&path, &u).await.unwrap();
    c.write(fd, 0, &pattern(1, 4096)).await.unwrap();
    let other = cluster.client();
    // Open registered this client: the file cannot be renamed away under it.
    assert_eq!(
        code(other.rename(&u, &path, "/gone/w").await),
        ErrorCode::FileOccupied
    );
    // Cut the refreshes until the MDS forgets the record, then rename it away.
    cut.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while other.rename(&u, &path, "/gone/w").await.is_err() {
        assert!(Instant::now() < deadline, "the record never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next refresh reports kFileNotExists: IO must fail, not hang or go on.
    cut.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.write(fd, 0, &pattern(2, 4096)).await {
            Ok(()) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(()) => panic!("IO still allowed 5 s after the file was renamed away"),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::DisableIo, "{e}");
                break;
            }
        }
    }
    c.close(fd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_mds_keeps_io_within_the_lease_then_disables_it() {
    let mut cluster = Cluster::start().await;
    let conf = curve_client::ClientConfig {
        mds_max_retry_ms: 300,
        chunkserver_max_retry_time_ms: 2000,
        ..cluster.config()
    };
    // Set up with default budgets: a loaded test machine may need more than 300 ms.
    let (u, path) = volume(&cluster.client(), "lease", "v", SEG).await;
    let c = Client::new(conf).unwrap();
    let fd = c.open(&path, &u).await.unwrap();
    c.write(fd, 0, &pattern(1, 8192)).await.unwrap();
    cluster.kill_mds();
    // Allocated segments keep working while the lease lasts.
    c.write(fd, 4096, &pattern(2, 4096)).await.unwrap();
    assert_eq!(read_vec(&c, fd, 4096, 4096).await, pattern(2, 4096));
    // Past the lease, IO waits for a renewal that never comes, then fails: no hang.
    tokio::time::sleep(Duration::from_micros(RECORD_EXPIRE_US + 200_000)).await;
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    assert_eq!(code(c.read(fd, 0, &mut buf).await), ErrorCode::DisableIo);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn striped_file_round_trips() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("stripe");
    c.mkdir("/stripe", &u).await.unwrap();
    let opts = CreateOptions {
        stripe_unit: 64 * KIB,
        stripe_count: 4,
        poolset: String::new(),
    };
    c.create("/stripe/v", &u, 4 * SEG, &opts).await.unwrap();
    let info = c.stat("/stripe/v", &u).await.unwrap();
    assert_eq!(info.stripe_unit, 64 * KIB);
    assert_eq!(info.stripe_count, 4);
    let fd = c.open("/stripe/v", &u).await.unwrap();
    // Unaligned to stripe units, across stripes, chunks and both segments.
    let off = 3 * 64 * KIB - 8192;
    let len = (SEG + 5 * CHUNK) as usize;
    let data = pattern(21, len);
    c.write(fd, off, &data).await.unwrap();
    assert!(read_vec(&c, fd, off, len).await == data);
    // Small reads inside the range agree with the big write.
    for probe in [0u64, 64 * KIB, CHUNK + 4096, SEG - off] {
        let got = read_vec(&c, fd, off + probe, 4096).await;
        assert_eq!(
            got,
            data[probe as usize..probe as usize + 4096],
            "at {probe}"
        );
    }
    // Unwritten stripes read as zeros.
    assert!(read_vec(&c, fd, 0, 8192).await.iter().all(|b| *b == 0));
    c.close(fd).await.unwrap();
    // Another client with the same layout reads the same bytes.
    let other = cluster.client();
    let fd = other.open("/stripe/v", &u).await.unwrap();
    assert!(read_vec(&other, fd, off, len).await == data);
    other.close(fd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_io_through_a_file_handle() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let (u, path) = volume(&c, "rmw", "v", SEG).await;
    let file = c.open_file(&path, &u).await.unwrap();
    // Around a chunk boundary, starting and ending inside blocks.
    let data = Bytes::from(pattern(7, (CHUNK as usize) / 2 + 333));
    let offset = CHUNK - 5000;
    file.pwrite(offset, data.clone()).await.unwrap();
    let mut back = vec![0u8; data.len()];
    file.pread(offset, &mut back).await.unwrap();
    assert!(back[..] == data[..]);
    // The bytes around it were not touched.
    let mut around = vec![1u8; 8192];
    file.pread(offset - 8192, &mut around).await.unwrap();
    assert!(around.iter().all(|b| *b == 0));
    // Small writes inside one block, and reads of odd sizes.
    file.pwrite(3, Bytes::from_static(b"abc")).await.unwrap();
    let mut small = [0u8; 7];
    file.pread(1, &mut small).await.unwrap();
    assert_eq!(&small, b"\0\0abc\0\0");

    // Eight tasks write interleaved 100-byte pieces of the same blocks: none is lost.

    let tasks: Vec<_> = (0..8u8)
        .map(|t| {
            let file = file.clone();
            tokio::spawn(async move {
                for i in 0..20u64 {
                    let at = 2 * CHUNK + (i * 8 + u64::from(t)) * 100;
                    file.pwrite(at, Bytes::from(vec![t + 1; 100]))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = vec![0u8; 8 * 20 * 100];
    file.pread(2 * CHUNK, &mut all).await.unwrap();
    for (k, piece) in all.chunks(100).enumerate() {
        let t = (k % 8) as u8;
        assert!(piece.iter().all(|b| *b == t + 1), "piece {k}");
    }
    file.close().await.unwrap();
    // Closed: IO fails with BAD_FD, a second close is harmless.
    let e = file.pwrite(0, Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::BadFd);
    file.close().await.unwrap();
}
