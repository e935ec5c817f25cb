//! Read-only opens (upstream's Open4ReadOnly) against a real local MDS and chunkservers.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use curve_client::{CreateOptions, ErrorCode};

/// Mkdir and Create in a cluster of the test's own: EXISTS can only mean a first attempt
/// landed before the client timed out and sent it again (a loaded machine).
fn made(r: curve_client::Result<()>) {
    match r {
        Ok(()) => {}
        Err(e) if e.code == ErrorCode::Exists => {}
        Err(e) => panic!("{e}"),
    }
}

const SEG: u64 = SEGMENT_SIZE as u64;
const CHUNK: u64 = CHUNK_SIZE as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_open_reads_what_a_writer_wrote_and_leaves_no_session() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("ro");
    made(c.mkdir("/ro", &u).await);
    made(
        c.create("/ro/v", &u, 3 * SEG, &CreateOptions::default())
            .await,
    );
    let writer = c.open("/ro/v", &u).await.unwrap();
    // Data straddling a chunk boundary in segment 0; segment 1 stays unallocated.
    let data = pattern(3, 2 * CHUNK as usize);
    c.write(writer, CHUNK / 2, &data).await.unwrap();

    let ro = c.open_readonly("/ro/v", &u, false).await.unwrap();
    assert_eq!(ro.length(), 3 * SEG);
    let mut back = vec![0xAA; data.len()];
    ro.read(CHUNK / 2, &mut back).await.unwrap();
    assert!(back == data);
    // Any offset and length: unaligned, and across the written/unwritten edge.
    let mut odd = vec![0xAA; 10_001];
    ro.read(CHUNK / 2 - 5000, &mut odd).await.unwrap();
    assert!(odd[..5000].iter().all(|b| *b == 0));
    assert_eq!(&odd[5000..], &data[..5001]);
    // An unallocated segment reads zeros, and is asked for again next time
    // (non-exclusive): a write by the writer shows up through the same handle.
    let mut hole = vec![0xAA; 8192];
    ro.read(SEG + 4096, &mut hole).await.unwrap();
    assert!(hole.iter().all(|b| *b == 0));
    c.write(writer, SEG + 4096, &pattern(9, 8192))
        .await
        .unwrap();
    ro.read(SEG + 4096, &mut hole).await.unwrap();
    assert_eq!(hole, pattern(9, 8192));
    // Past the end fails.
    let mut past = vec![0; 4096];
    assert_eq!(
        ro.read(3 * SEG - 2048, &mut past).await.unwrap_err().code,
        ErrorCode::Failed
    );
    c.close(writer).await.unwrap();

    // A read-only open registers nothing with the MDS: the file can be renamed while
    // the handle exists (an OpenFile'd one would be FILE_OCCUPIED).
    let ro2 = c.open_readonly("/ro/v", &u, false).await.unwrap();
    c.rename(&u, "/ro/v", "/ro/w").await.unwrap();
    drop(ro2);
    // A missing file fails at open.
    let e = c.open_readonly("/ro/v", &u, false).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::NotExist);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_open_with_striping_off_reads_in_chunk_order() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("ros");
    made(c.mkdir("/ros", &u).await);
    let opts = CreateOptions {
        stripe_unit: 64 * KIB,
        stripe_count: 4,
        poolset: String::new(),
    };
    made(c.create("/ros/v", &u, SEG, &opts).await);
    let fd = c.open("/ros/v", &u).await.unwrap();
    // One stripe unit at file offset 64 KiB lands in chunk 1 at offset 0.
    let unit = pattern(4, 64 * KIB as usize);
    c.write(fd, 64 * KIB, &unit).await.unwrap();
    let striped = c.open_readonly("/ros/v", &u, false).await.unwrap();
    let flat = c.open_readonly("/ros/v", &u, true).await.unwrap();
    let mut got = vec![0; unit.len()];
    striped.read(64 * KIB, &mut got).await.unwrap();
    assert_eq!(got, unit);
    flat.read(CHUNK, &mut got).await.unwrap();
    assert_eq!(got, unit);
    c.close(fd).await.unwrap();
}
