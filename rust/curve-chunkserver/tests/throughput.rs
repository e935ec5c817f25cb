//! Rough figures for the chunkserver's data path, all three servers and the client in
//! one process. Ignored by default (timing, not correctness); run with
//! `cargo test --release -p curve-chunkserver --test throughput -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::*;
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn write_and_read_figures() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    const OPS: u32 = 500;

    let t = Instant::now();
    for i in 0..OPS {
        write(
            &mut leader,
            write_request(CS_A, 1, i * 4096, pattern(4096, 1), 1),
        )
        .await?;
    }
    println!("QD1 4 KiB write (3 replicas): {:?}/op", t.elapsed() / OPS);

    let t = Instant::now();
    for i in 0..OPS {
        read(&mut leader, read_request(CS_A, 1, i * 4096, 4096)).await?;
    }
    println!("QD1 4 KiB read: {:?}/op", t.elapsed() / OPS);

    let t = Instant::now();
    let writes = (0..4 * OPS).map(|i| {
        let mut client = leader.clone();
        async move {
            write(
                &mut client,
                write_request(CS_A, 2, (i % 1000) * 4096, pattern(4096, 1), 1),
            )
            .await
        }
    });
    let mut in_flight = futures::stream::iter(writes).buffer_unordered(32);
    while let Some(r) = in_flight.next().await {
        r?;
    }
    drop(in_flight);
    println!(
        "QD32 4 KiB write: {:.0} ops/s",
        f64::from(4 * OPS) / t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    for _ in 0..20 {
        write(
            &mut leader,
            write_request(CS_A, 3, 0, pattern(4 << 20, 1), 1),
        )
        .await?;
    }
    println!("QD1 4 MiB write: {:?}/op", t.elapsed() / 20);
    Ok(())
}
