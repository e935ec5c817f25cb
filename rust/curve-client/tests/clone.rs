//! Lazy clones of a volume against a real local MDS and chunkservers: reads of a clone's
//! unwritten ranges return the source's bytes, and states the client cannot serve fail
//! loudly. (Writes into a clone need the chunkservers' clone chunks; the Python tests
//! cover them end to end.)
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use curve_client::{Client, CreateOptions, ErrorCode, UserInfo};
use curve_proto::mds::FileStatus;

const SEG: u64 = SEGMENT_SIZE as u64;
const CHUNK: u64 = CHUNK_SIZE as u64;

async fn read_vec(c: &Client, fd: i32, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xAAu8; len];
    c.read(fd, offset, &mut buf).await.unwrap();
    buf
}

/// A 3-segment source with data in segments 0 and 2 (segment 1 never allocated), its
/// bytes as written, and a lazy clone of it installed at `dest`.
async fn source_and_clone(c: &Client, u: &UserInfo, dir: &str) -> (String, String, Vec<u8>) {
    c.mkdir(dir, u).await.unwrap();
    let src = format!("{dir}/src");
    let dest = format!("{dir}/dst");
    c.create(&src, u, 3 * SEG, &CreateOptions::default())
        .await
        .unwrap();
    let mut model = vec![0u8; (3 * SEG) as usize];
    let fd = c.open(&src, u).await.unwrap();
    for (seed, off, len) in [
        (1, 0, 3 * CHUNK / 2),
        (2, 2 * CHUNK + 4096, 8192),
        (3, 2 * SEG + CHUNK - 4096, 8192),
    ] {
        let data = pattern(seed, len as usize);
        c.write(fd, off, &data).await.unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    c.close(fd).await.unwrap();
    let info = c.stat(&src, u).await.unwrap();
    // The orchestration's order (the lead's LocalCluster.clone_volume does the same): the
    // source is marked BeingCloned, the clone made, then installed.
    c.set_clone_file_status(&src, u, None, FileStatus::KFileBeingCloned)
        .await
        .unwrap();
    c.create_clone_file(
        &dest,
        u,
        info.length,
        1,
        CHUNK_SIZE,
        &src,
        &CreateOptions::default(),
    )
    .await
    .unwrap();
    c.set_clone_file_status(&dest, u, None, FileStatus::KFileCloneMetaInstalled)
        .await
        .unwrap();
    (src, dest, model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritten_clone_reads_as_its_source() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("clone");
    let (src, dest, model) = source_and_clone(&c, &u, "/clone").await;
    let st = c.stat(&dest, &u).await.unwrap();
    assert_eq!(st.status, FileStatus::KFileCloneMetaInstalled as i32);
    assert_eq!(st.clone_source, src);
    assert_eq!(st.clone_length, 3 * SEG);
    assert_eq!(
        c.stat(&src, &u).await.unwrap().status,
        FileStatus::KFileBeingCloned as i32
    );

    let fd = c.open(&dest, &u).await.unwrap();
    let file = c.file(fd).unwrap();
    assert_eq!(file.clone_source().unwrap().name, src);
    // Whole volume, then ranges across chunk and segment boundaries, in allocated and
    // unallocated source segments.
    assert!(read_vec(&c, fd, 0, (3 * SEG) as usize).await == model);
    for (off, len) in [
        (CHUNK - 4096, 8192usize),
        (SEG - 4096, 8192),
        (SEG + 4096, 4096),
        (2 * SEG - 8192, 3 * CHUNK as usize),
        (2 * CHUNK, 3 * 4096),
    ] {
        let got = read_vec(&c, fd, off, len).await;
        assert!(
            got[..] == model[off as usize..off as usize + len],
            "at {off}+{len}"
        );
    }
    // Unaligned reads through the handle.
    let mut odd = vec![0u8; 10_001];
    file.pread(CHUNK + 12_345, &mut odd).await.unwrap();
    assert!(odd[..] == model[(CHUNK + 12_345) as usize..(CHUNK + 12_345) as usize + 10_001]);
    c.close(fd).await.unwrap();

    // A second client sees the same.
    let other = cluster.client();
    let fd = other.open(&dest, &u).await.unwrap();
    assert!(read_vec(&other, fd, 0, (3 * SEG) as usize).await == model);
    other.close(fd).await.unwrap();
    // Deleting the source while the clone reads from it is refused.
    let e = c.unlink(&src, &u).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::DeleteBeingCloned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_the_client_cannot_serve_fail_naming_volume_and_source() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("bad");
    c.mkdir("/bad", &u).await.unwrap();
    c.create("/bad/src", &u, SEG, &CreateOptions::default())
        .await
        .unwrap();
    c.create_clone_file(
        "/bad/dst",
        &u,
        SEG,
        1,
        CHUNK_SIZE,
        "/bad/src",
        &CreateOptions::default(),
    )
    .await
    .unwrap();
    // Cloning: not readable yet.
    let fd = c.open("/bad/dst", &u).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let e = c.read(fd, 0, &mut buf).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StatusNotMatch);
    assert!(
        e.message.contains("/bad/dst") && e.message.contains("/bad/src"),
        "{e}"
    );
    assert_eq!(
        c.write(fd, 0, &buf).await.unwrap_err().code,
        ErrorCode::StatusNotMatch
    );
    // Installed while this fd was open: the fd never got the source's segments, so it
    // fails rather than read zeros (the file's status is re-read with its length).
    c.set_clone_file_status("/bad/dst", &u, None, FileStatus::KFileCloneMetaInstalled)
        .await
        .unwrap();
    file_status_seen(&c, fd, FileStatus::KFileCloneMetaInstalled).await;
    let e = c.read(fd, 0, &mut buf).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StatusNotMatch);
    assert!(e.message.contains("/bad/src"), "{e}");
    c.close(fd).await.unwrap();

    // A source the clone's owner may not read: IO fails naming both, no zeros.
    let other = user("someone");
    c.mkdir("/someone", &other).await.unwrap();
    c.create("/someone/src", &other, SEG, &CreateOptions::default())
        .await
        .unwrap();
    let fd = c.open("/someone/src", &other).await.unwrap();
    c.write(fd, 0, &pattern(1, 4096)).await.unwrap();
    c.close(fd).await.unwrap();
    c.create_clone_file(
        "/bad/dst2",
        &u,
        SEG,
        1,
        CHUNK_SIZE,
        "/someone/src",
        &CreateOptions::default(),
    )
    .await
    .unwrap();
    c.set_clone_file_status("/bad/dst2", &u, None, FileStatus::KFileCloneMetaInstalled)
        .await
        .unwrap();
    let fd = c.open("/bad/dst2", &u).await.unwrap();
    let e = c.read(fd, 0, &mut buf).await.unwrap_err();
    assert!(
        e.message.contains("/bad/dst2") && e.message.contains("/someone/src"),
        "{e}"
    );
    c.close(fd).await.unwrap();
}

/// Waits (bounded) until the open file has heard of `status` from a refresh.
async fn file_status_seen(c: &Client, fd: i32, status: FileStatus) {
    let file = c.file(fd).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while file.status() != status as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the open file never saw status {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_into_a_clone_keep_the_sources_bytes_around_them() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("cw");
    let (src, dest, source_model) = source_and_clone(&c, &u, "/cw").await;
    let mut model = source_model.clone();
    let fd = c.open(&dest, &u).await.unwrap();
    let file = c.file(fd).unwrap();
    let mut put = |off: u64, data: &[u8]| {
        model[off as usize..off as usize + data.len()].copy_from_slice(data);
    };
    // Aligned, inside a chunk the source has data in (a clone chunk is made).
    let a = pattern(11, 8192);
    c.write(fd, 8192, &a).await.unwrap();
    put(8192, &a);
    // Unaligned, straddling chunks 0 and 1 (read-modify-write of source blocks).
    let b = pattern(12, 3001);
    file.pwrite(CHUNK - 1000, b.clone().into()).await.unwrap();
    put(CHUNK - 1000, &b);
    // Straddling segments 0 (source data) and 1 (none in the source: plain chunks).
    let d = pattern(13, 3 * 4096);
    c.write(fd, SEG - 4096, &d).await.unwrap();
    put(SEG - 4096, &d);
    // Zeroes over source data read as zeros, not as the source.
    file.write_zeroes(2 * CHUNK + 4096, 8192).await.unwrap();
    put(2 * CHUNK + 4096, &[0; 8192]);
    for (off, len) in [
        (0, 2 * CHUNK as usize),
        (2 * CHUNK, CHUNK as usize),
        (SEG - CHUNK, 2 * CHUNK as usize),
        (2 * SEG, SEG as usize),
    ] {
        let got = read_vec(&c, fd, off, len).await;
        assert!(
            got[..] == model[off as usize..off as usize + len],
            "at {off}+{len}"
        );
    }
    c.close(fd).await.unwrap();
    // A second client sees the same; the source is unchanged.
    let other = cluster.client();
    let fd = other.open(&dest, &u).await.unwrap();
    assert!(read_vec(&other, fd, 0, (3 * SEG) as usize).await == model);
    other.close(fd).await.unwrap();
    let fd = other.open(&src, &u).await.unwrap();
    assert!(read_vec(&other, fd, 0, (3 * SEG) as usize).await == source_model);
    other.close(fd).await.unwrap();
}
