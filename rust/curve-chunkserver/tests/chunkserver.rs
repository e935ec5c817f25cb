//! The chunkserver over gRPC, as Curve's client sees it: three servers on loopback,
//! called through the generated tonic clients.

mod common;

use std::time::Duration;

use common::*;
use curve_proto::chunkserver::chunk_service_client::ChunkServiceClient;
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkOpType, ChunkRequest, ChunkResponse, GetChunkInfoRequest,
    GetLeaderRequest2, UpdateEpochRequest,
};
use tonic::transport::Channel;

/// Lets the leader's heartbeats run three rounds (a round is the election tick, 500 ms):
/// the one wait on time in these tests. What the heartbeats teach a follower (that it
/// holds every acknowledged write, the current term) is state no RPC shows, and polling
/// with a heartbeat of our own would change it. The home-made protocol this waits on is
/// to be replaced by Raft (issue 21), whose state is observable.
async fn heartbeat_rounds() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

fn status(code: i32) -> ChunkOpStatus {
    ChunkOpStatus::try_from(code).unwrap_or(ChunkOpStatus::FailureUnknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_on_leader_is_read_back_and_on_every_replica() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    let data = pattern(8192, 7);
    let resp = write(&mut leader, write_request(CS_A, 11, 4096, data.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);

    let resp = read(&mut leader, read_request(CS_A, 11, 4096, 8192)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(resp.attachment.as_deref(), Some(&data[..]));

    // Around the written range the chunk reads as zeros.
    let resp = read(&mut leader, read_request(CS_A, 11, 0, 16384)).await?;
    let got = resp.attachment.unwrap_or_default();
    assert_eq!(got.len(), 16384);
    assert!(got[..4096].iter().all(|&b| b == 0));
    assert_eq!(&got[4096..12288], &data[..]);
    assert!(got[12288..].iter().all(|&b| b == 0));

    for i in 0..3 {
        let on = on_disk_eventually(&cluster.chunk_path(i, CS_A, 11), 4096, 8192, &data).await?;
        assert_eq!(on, data, "replica {i}");
    }

    let info = leader
        .get_chunk_info(GetChunkInfoRequest {
            logic_pool_id: POOL,
            copyset_id: CS_A,
            chunk_id: 11,
        })
        .await?
        .into_inner();
    assert_eq!(status(info.status), ChunkOpStatus::Success);
    assert_eq!(info.chunk_sn, vec![1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copyset_led_by_another_server_replicates_too() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(1).await?;
    let data = pattern(4096, 3);
    let resp = write(&mut leader, write_request(CS_B, 5, 0, data.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    for i in 0..3 {
        assert_eq!(
            on_disk_eventually(&cluster.chunk_path(i, CS_B, 5), 0, 4096, &data).await?,
            data
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_redirects_to_leader() -> TestResult {
    let cluster = Cluster::start().await?;
    let expected = format!("{}:0", cluster.addr(0));
    for i in [1, 2] {
        let mut follower = cluster.chunk_client(i).await?;
        let resp = write(
            &mut follower,
            write_request(CS_A, 1, 0, pattern(4096, 1), 1),
        )
        .await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
        assert_eq!(resp.redirect.as_deref(), Some(expected.as_str()));
        let resp = read(&mut follower, read_request(CS_A, 1, 0, 4096)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
        assert_eq!(resp.redirect.as_deref(), Some(expected.as_str()));
        assert!(resp.attachment.is_none());
    }
    // The redirected write was not applied anywhere.
    assert!(!cluster.chunk_path(0, CS_A, 1).exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_leader_answers_leader_or_not_found() -> TestResult {
    let cluster = Cluster::start().await?;
    for i in 0..3 {
        let mut cli = cluster.cli_client(i).await?;
        for (copyset_id, leader) in [(CS_A, 0), (CS_B, 1)] {
            let resp = cli
                .get_leader(GetLeaderRequest2 {
                    logic_pool_id: POOL,
                    copyset_id,
                    peer: None,
                })
                .await?
                .into_inner();
            assert_eq!(
                resp.leader.address,
                Some(format!("{}:0", cluster.addr(leader)))
            );
            assert_eq!(resp.leader.id, Some(leader as u64));
        }
        let err = cli
            .get_leader(GetLeaderRequest2 {
                logic_pool_id: POOL,
                copyset_id: 99,
                peer: None,
            })
            .await;
        assert!(matches!(err, Err(s) if s.code() == tonic::Code::NotFound));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_written_chunk_is_chunk_notexist() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    let resp = read(&mut leader, read_request(CS_A, 42, 0, 4096)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::ChunkNotexist);
    assert!(resp.attachment.is_none());
    let info = leader
        .get_chunk_info(GetChunkInfoRequest {
            logic_pool_id: POOL,
            copyset_id: CS_A,
            chunk_id: 42,
        })
        .await?
        .into_inner();
    // Upstream answers a missing chunk's info with success and no sn.
    assert_eq!(status(info.status), ChunkOpStatus::Success);
    assert!(info.chunk_sn.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_and_write_nothing() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    let block = BLOCK_SIZE as usize;
    let mut cases = vec![
        (
            "misaligned offset",
            write_request(CS_A, 3, 512, pattern(block, 1), 1),
        ),
        (
            "misaligned size",
            write_request(CS_A, 3, 0, pattern(block + 512, 1), 1),
        ),
        (
            "past the chunk end",
            write_request(CS_A, 3, CHUNK_SIZE - BLOCK_SIZE, pattern(2 * block, 1), 1),
        ),
    ];
    let mut short = write_request(CS_A, 3, 0, pattern(block, 1), 1);
    short.size = Some(2 * BLOCK_SIZE);
    cases.push(("attachment shorter than size", short));
    let mut long = write_request(CS_A, 3, 0, pattern(2 * block, 1), 1);
    long.size = Some(BLOCK_SIZE);
    cases.push(("attachment longer than size", long));
    let mut absent = write_request(CS_A, 3, 0, pattern(block, 1), 1);
    absent.attachment = None;
    cases.push(("no attachment", absent));
    cases.push(("no bytes", write_request(CS_A, 3, 0, Vec::new(), 1)));
    let mut no_size = write_request(CS_A, 3, 0, pattern(block, 1), 1);
    no_size.size = None;
    cases.push(("no size", no_size));
    let mut wrong_op = write_request(CS_A, 3, 0, pattern(block, 1), 1);
    wrong_op.op_type = ChunkOpType::ChunkOpRead as i32;
    cases.push(("opType read on WriteChunk", wrong_op));
    let mut unknown_op = write_request(CS_A, 3, 0, pattern(block, 1), 1);
    unknown_op.op_type = 1234;
    cases.push(("unknown opType", unknown_op));
    for (what, request) in cases {
        let resp = write(&mut leader, request).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::InvalidRequest, "{what}");
    }

    let mut wrong_op = read_request(CS_A, 3, 0, BLOCK_SIZE);
    wrong_op.op_type = ChunkOpType::ChunkOpWrite as i32;
    for (what, request) in [
        ("read misaligned", read_request(CS_A, 3, 100, BLOCK_SIZE)),
        ("read odd size", read_request(CS_A, 3, 0, 100)),
        (
            "read past end",
            read_request(CS_A, 3, CHUNK_SIZE, BLOCK_SIZE),
        ),
        (
            "read overflow",
            read_request(CS_A, 3, u32::MAX - 4095, BLOCK_SIZE),
        ),
        ("opType write on ReadChunk", wrong_op),
    ] {
        let resp = read(&mut leader, request).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::InvalidRequest, "{what}");
    }
    for i in 0..3 {
        assert!(!cluster.chunk_path(i, CS_A, 3).exists(), "replica {i}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_copyset_is_copyset_notexist() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut client = cluster.chunk_client(2).await?;
    let resp = write(&mut client, write_request(77, 1, 0, pattern(4096, 1), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::CopysetNotexist);
    let resp = read(&mut client, read_request(77, 1, 0, 4096)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::CopysetNotexist);
    let info = client
        .get_chunk_info(GetChunkInfoRequest {
            logic_pool_id: 9,
            copyset_id: CS_A,
            chunk_id: 1,
        })
        .await?
        .into_inner();
    assert_eq!(status(info.status), ChunkOpStatus::CopysetNotexist);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_sn_is_backward() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    let ok = ChunkOpStatus::Success;
    assert_eq!(
        status(
            write(&mut leader, write_request(CS_A, 8, 0, pattern(4096, 1), 5))
                .await?
                .status
        ),
        ok
    );
    let resp = write(&mut leader, write_request(CS_A, 8, 0, pattern(4096, 2), 4)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Backward);
    // The refused write changed nothing.
    let resp = read(&mut leader, read_request(CS_A, 8, 0, 4096)).await?;
    assert_eq!(resp.attachment.as_deref(), Some(&pattern(4096, 1)[..]));
    for sn in [5, 6] {
        let resp = write(&mut leader, write_request(CS_A, 8, 0, pattern(4096, 3), sn)).await?;
        assert_eq!(status(resp.status), ok, "sn {sn}");
    }
    let info = leader
        .get_chunk_info(GetChunkInfoRequest {
            logic_pool_id: POOL,
            copyset_id: CS_A,
            chunk_id: 8,
        })
        .await?
        .into_inner();
    // The first write at 6 kept the chunk as it was at 5: `[sn, snapshot sn]`.
    assert_eq!(info.chunk_sn, vec![6, 5]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_fences_writes_of_that_file() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    let resp = leader
        .update_epoch(UpdateEpochRequest {
            file_id: 7,
            epoch: 2,
        })
        .await?
        .into_inner();
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    let resp = leader
        .update_epoch(UpdateEpochRequest {
            file_id: 7,
            epoch: 1,
        })
        .await?
        .into_inner();
    assert_eq!(status(resp.status), ChunkOpStatus::EpochTooOld);

    let with = |file_id: u64, epoch: Option<u64>| {
        let mut r = write_request(CS_A, 9, 0, pattern(4096, 1), 1);
        r.file_id = Some(file_id);
        r.epoch = epoch;
        r
    };
    for (file_id, epoch, expected) in [
        (7, Some(1), ChunkOpStatus::EpochTooOld),
        (7, Some(3), ChunkOpStatus::EpochTooOld),
        (7, Some(2), ChunkOpStatus::Success),
        (7, None, ChunkOpStatus::Success),
        (8, Some(1), ChunkOpStatus::Success),
    ] {
        let resp = write(&mut leader, with(file_id, epoch)).await?;
        assert_eq!(
            status(resp.status),
            expected,
            "file {file_id} epoch {epoch:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_sn() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let data = pattern(65536, 9);
    {
        let mut leader = cluster.chunk_client(0).await?;
        let resp = write(
            &mut leader,
            write_request(CS_A, 21, 131072, data.clone(), 4),
        )
        .await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    for i in 0..3 {
        cluster.restart(i)?;
    }
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    let mut leader = cluster.chunk_client(0).await?;
    let resp = read_once_leading(&mut leader, read_request(CS_A, 21, 131072, 65536)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(resp.attachment.as_deref(), Some(&data.clone()[..]));
    let resp = write(&mut leader, write_request(CS_A, 21, 0, pattern(4096, 1), 3)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Backward);

    // Make a follower the preferred leader: it serves the replicated data itself.
    for config in &mut cluster.configs {
        for hosted in &mut config.copysets {
            if hosted.copyset_id == CS_A {
                hosted.members.swap(0, 2);
            }
        }
    }
    for i in 0..3 {
        cluster.restart(i)?;
    }
    // Server 2 is now preferred: it takes leadership over once it has caught up.
    cluster.wait_leader(CS_A, 2, &[0, 1, 2]).await?;
    let mut new_leader = cluster.chunk_client(2).await?;
    let resp = read_once_leading(&mut new_leader, read_request(CS_A, 21, 131072, 65536)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(resp.attachment.as_deref(), Some(&data[..]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_is_acknowledged_with_one_follower_down_not_two() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    cluster.kill(2);
    let data = pattern(4096, 4);
    let resp = write(&mut leader, write_request(CS_A, 30, 0, data.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(
        on_disk_eventually(&cluster.chunk_path(1, CS_A, 30), 0, 4096, &data).await?,
        data
    );
    // The skipped follower missed it: there is no catch-up.
    assert!(!cluster.chunk_path(2, CS_A, 30).exists());

    cluster.kill(1);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        write(&mut leader, write_request(CS_A, 31, 0, data.clone(), 1)),
    )
    .await??;
    assert_eq!(status(resp.status), ChunkOpStatus::FailureUnknown);
    // Cut off from every follower, the leader's lease lapses: it stops serving reads
    // (it might have been replaced) and says so without naming a leader. Reads change
    // nothing, so poll until it does (the lease is 1.5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let resp = loop {
        let resp = read(&mut leader, read_request(CS_A, 30, 0, 4096)).await?;
        if status(resp.status) != ChunkOpStatus::Success {
            break resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a leader cut off from its followers still served reads after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
    assert_eq!(resp.redirect, None);
    // Nor does it apply writes: a write it finds now may predate a newer one at a
    // leader that replaced it.
    let resp = write(&mut leader, write_request(CS_A, 33, 0, data.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
    assert!(!cluster.chunk_path(0, CS_A, 33).exists());

    // A follower that comes back receives new writes again, once a heartbeat round
    // renewed the lease.
    cluster.restart(1)?;
    cluster.wait_leader(CS_A, 0, &[0, 1]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let resp = loop {
        let resp = write(&mut leader, write_request(CS_A, 32, 0, data.clone(), 1)).await?;
        if status(resp.status) != ChunkOpStatus::Redirected
            || tokio::time::Instant::now() > deadline
        {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(
        on_disk_eventually(&cluster.chunk_path(1, CS_A, 32), 0, 4096, &data).await?,
        data
    );
    let resp = read(&mut leader, read_request(CS_A, 30, 0, 4096)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_chunk_write_and_concurrent_small_writes() -> TestResult {
    let cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    let whole = pattern(CHUNK_SIZE as usize, 5);
    let resp = write(&mut leader, write_request(CS_A, 40, 0, whole.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    let resp = read(&mut leader, read_request(CS_A, 40, 0, CHUNK_SIZE)).await?;
    assert_eq!(resp.attachment.as_deref(), Some(&whole[..]));
    assert_eq!(
        on_disk_eventually(
            &cluster.chunk_path(2, CS_A, 40),
            0,
            CHUNK_SIZE as usize,
            &whole
        )
        .await?,
        whole
    );

    let writes = (0..64u32).map(|i| {
        let mut client = leader.clone();
        async move {
            let data = pattern(4096, i as u8);
            write(&mut client, write_request(CS_A, 41, i * 4096, data, 1)).await
        }
    });
    for resp in futures::future::join_all(writes).await {
        assert_eq!(status(resp?.status), ChunkOpStatus::Success);
    }
    let resp = read(&mut leader, read_request(CS_A, 41, 0, 64 * 4096)).await?;
    let got = resp.attachment.unwrap_or_default();
    for i in 0..64usize {
        assert_eq!(&got[i * 4096..(i + 1) * 4096], &pattern(4096, i as u8)[..]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_and_handback_after_catch_up() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let before = pattern(8192, 1);
    {
        let mut leader = cluster.chunk_client(0).await?;
        let resp = write(&mut leader, write_request(CS_A, 50, 0, before.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    // Let the followers be heartbeated as holding every write.
    heartbeat_rounds().await;

    let started = std::time::Instant::now();
    cluster.kill(0);
    cluster.wait_leader(CS_A, 1, &[1, 2]).await?;
    let failover = started.elapsed();
    // A guard, not a speed target: an election is a few 500 ms ticks; 12 s is the margin
    // for a loaded machine (wait_leader itself gives up at 15 s).
    assert!(
        failover < Duration::from_secs(12),
        "failover took {failover:?}"
    );

    let mut acting = cluster.chunk_client(1).await?;
    let resp = read(&mut acting, read_request(CS_A, 50, 0, 8192)).await?;
    assert_eq!(resp.attachment.as_deref(), Some(&before[..]));
    // Written while server 0 is down: it must get this before leading again.
    let during = pattern(4096, 2);
    let resp = write(
        &mut acting,
        write_request(CS_A, 51, 4096, during.clone(), 1),
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    let resp = write(&mut acting, write_request(CS_A, 50, 0, during.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);

    // The other copyset's leader (server 1) kept serving throughout.
    let mut b_leader = cluster.chunk_client(1).await?;
    let resp = write(
        &mut b_leader,
        write_request(CS_B, 1, 0, pattern(4096, 3), 1),
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);

    cluster.restart(0)?;
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    let mut leader = cluster.chunk_client(0).await?;
    let resp = read_once_leading(&mut leader, read_request(CS_A, 51, 4096, 4096)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(resp.attachment.as_deref(), Some(&during[..]));
    let resp = read(&mut leader, read_request(CS_A, 50, 0, 8192)).await?;
    let got = resp.attachment.unwrap_or_default();
    assert_eq!(&got[..4096], &during[..]);
    assert_eq!(&got[4096..], &before[4096..]);

    // Server 1 gave leadership back and redirects again.
    let resp = write(&mut acting, write_request(CS_A, 52, 0, pattern(4096, 4), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
    assert_eq!(resp.redirect, Some(format!("{}:0", cluster.addr(0))));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_that_missed_writes_is_caught_up() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    cluster.kill(2);
    let data = pattern(65536, 6);
    let resp = write(&mut leader, write_request(CS_A, 60, 65536, data.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    cluster.restart(2)?;
    let path = cluster.chunk_path(2, CS_A, 60);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_disk(&path, 65536, 65536).ok() != Some(data.clone()) {
        assert!(std::time::Instant::now() < deadline, "no catch-up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_follower_costs_one_deadline_not_one_per_write() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    cluster.kill(2);
    // A listener that never accepts: connections open, nothing answers (like SIGSTOP).
    let black_hole = {
        let mut attempts = 0;
        loop {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            match socket
                .bind(cluster.configs[2].listen)
                .and_then(|()| socket.listen(64))
            {
                Ok(l) => break l,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let first = std::time::Instant::now();
    let resp = write(&mut leader, write_request(CS_A, 70, 0, pattern(4096, 1), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert!(
        first.elapsed() < Duration::from_secs(6),
        "the first write beside a silent member took {:?}",
        first.elapsed()
    );
    let rest = std::time::Instant::now();
    for i in 1..20u32 {
        let resp = write(
            &mut leader,
            write_request(CS_A, 70, i * 4096, pattern(4096, i as u8), 1),
        )
        .await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    assert!(
        rest.elapsed() < Duration::from_secs(2),
        "19 writes took {:?}",
        rest.elapsed()
    );
    drop(black_hole);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_after_shutdown_with_open_connections() -> TestResult {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = curve_chunkserver::ChunkServerConfig {
        id: 5,
        listen: addr,
        data_dir: dir.path().to_path_buf(),
        chunk_size: CHUNK_SIZE,
        block_size: BLOCK_SIZE,
        copysets: vec![curve_chunkserver::HostedCopyset {
            logical_pool_id: POOL,
            copyset_id: CS_A,
            members: vec![curve_chunkserver::PeerEntry {
                id: 5,
                addr: addr.to_string(),
            }],
        }],
        redirect_hints: true,
        durability: curve_chunkserver::Durability::Cache,
        origin: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(curve_chunkserver::serve_with_listener(
        config,
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    // A single-member copyset leads itself and acknowledges alone.
    let mut client = curve_proto::chunkserver::chunk_service_client::ChunkServiceClient::new(
        channel_to(&addr.to_string()).await?,
    );
    let mut acknowledged = false;
    for _ in 0..100 {
        let resp = write(&mut client, write_request(CS_A, 1, 0, pattern(4096, 1), 1)).await?;
        if status(resp.status) == ChunkOpStatus::Success {
            acknowledged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acknowledged);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    drop(client);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_are_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = curve_chunkserver::ChunkServerConfig {
        id: 1,
        listen: listener.local_addr()?,
        data_dir: dir.path().to_path_buf(),
        chunk_size: CHUNK_SIZE,
        block_size: BLOCK_SIZE,
        copysets: vec![curve_chunkserver::HostedCopyset {
            logical_pool_id: POOL,
            copyset_id: CS_A,
            members: vec![curve_chunkserver::PeerEntry {
                id: 2,
                addr: "127.0.0.1:1".to_string(),
            }],
        }],
        redirect_hints: false,
        durability: curve_chunkserver::Durability::Cache,
        origin: None,
    };
    let result = curve_chunkserver::serve_with_listener(config, listener, async {}).await;
    assert!(matches!(
        result,
        Err(curve_chunkserver::Error::InvalidConfig { id: 1, .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_soon_after_start_fails_over_and_reads_its_writes() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let data = pattern(4096, 8);
    {
        let mut leader = cluster.chunk_client(0).await?;
        let resp = write(&mut leader, write_request(CS_A, 80, 0, data.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.kill(0);
    cluster.wait_leader(CS_A, 1, &[1, 2]).await?;
    let mut acting = cluster.chunk_client(1).await?;
    let resp = read_once_leading(&mut acting, read_request(CS_A, 80, 0, 4096)).await?;
    assert_eq!(resp.attachment.as_deref(), Some(&data[..]));
    // With two of three members left, writes still reach a majority.
    let resp = write(&mut acting, write_request(CS_A, 81, 0, pattern(4096, 9), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_completes_while_the_chunk_keeps_being_written() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let mut leader = cluster.chunk_client(0).await?;
    cluster.kill(2);
    // Region A: written only while server 2 is down.
    let missed = pattern(1 << 20, 12);
    let resp = write(&mut leader, write_request(CS_A, 90, 0, missed.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    cluster.restart(2)?;

    // Region B of the same chunk is rewritten without pause meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = (0..4u32).map(|w| {
        let mut client = leader.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let offset = (1 << 20) + ((n * 4 + w) % 256) * 4096;
                let r = write(
                    &mut client,
                    write_request(CS_A, 90, offset, pattern(4096, 1), 1),
                )
                .await;
                if !matches!(r, Ok(ref resp) if status(resp.status) == ChunkOpStatus::Success) {
                    return Err(format!("write failed: {r:?}"));
                }
                n += 1;
            }
            Ok(n)
        })
    });
    let writers: Vec<_> = writers.collect();
    let path = cluster.chunk_path(2, CS_A, 90);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while on_disk(&path, 0, 1 << 20).ok() != Some(missed.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "catch-up did not finish under writes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let n = w.await??;
        assert!(n > 0);
    }
    // Every replica ends identical.
    let resp = read(&mut leader, read_request(CS_A, 90, 0, 2 << 20)).await?;
    let expected = resp.attachment.unwrap_or_default();
    for i in 0..3 {
        assert_eq!(
            on_disk_eventually(&cluster.chunk_path(i, CS_A, 90), 0, 2 << 20, &expected).await?,
            expected,
            "replica {i}"
        );
    }
    Ok(())
}

/// Reads from a server that every member already names leader. Right after it takes
/// over, a leader answers REDIRECTED until a majority has confirmed its lease (it must not
/// serve reads before then), so that answer is retried for a while; any other is returned.
async fn read_once_leading(
    client: &mut ChunkServiceClient<Channel>,
    request: ChunkRequest,
) -> Result<ChunkResponse, tonic::Status> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = read(client, request.clone()).await?;
        if status(resp.status) != ChunkOpStatus::Redirected || std::time::Instant::now() > deadline
        {
            return Ok(resp);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads through whichever server serves reads for the copyset: the first successful
/// read must already hold `expected` (a stale leader answering is a failure, not a retry).
async fn read_through_leader(cluster: &Cluster, chunk_id: u64, expected: &[u8]) -> TestResult {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        for i in 0..3 {
            let Ok(mut client) = cluster.chunk_client(i).await else {
                continue;
            };
            let Ok(resp) = read(
                &mut client,
                read_request(CS_A, chunk_id, 0, expected.len() as u32),
            )
            .await
            else {
                continue;
            };
            if status(resp.status) == ChunkOpStatus::Success {
                assert!(
                    resp.attachment.as_deref() == Some(expected),
                    "server {i} served a stale chunk {chunk_id}"
                );
                return Ok(());
            }
        }
        assert!(std::time::Instant::now() < deadline, "nobody serves reads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes acknowledged while `members[0]` was down survive a restart of every server,
/// whatever order they come back in: the stale member neither leads nor copies its
/// chunks over the newer ones, and ends up with them itself.
async fn cold_restart_keeps_writes_missed_by_first_member(staggered: bool) -> TestResult {
    let mut cluster = Cluster::start().await?;
    let before = pattern(8192, 1);
    {
        let mut leader = cluster.chunk_client(0).await?;
        let resp = write(&mut leader, write_request(CS_A, 100, 0, before.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    heartbeat_rounds().await; // the followers learn that they hold every write
    cluster.kill(0);
    cluster.wait_leader(CS_A, 1, &[1, 2]).await?;
    let during = pattern(8192, 2);
    let fresh = pattern(4096, 3);
    {
        let mut acting = cluster.chunk_client(1).await?;
        let resp = write(&mut acting, write_request(CS_A, 100, 0, during.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
        let resp = write(&mut acting, write_request(CS_A, 101, 0, fresh.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    cluster.kill(1);
    cluster.kill(2);
    if staggered {
        cluster.restart(0)?;
        // Alone, it may neither lead nor serve what it has: given 2 s (four election
        // ticks) to try, it still does not.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let mut stale = cluster.chunk_client(0).await?;
        let resp = read(&mut stale, read_request(CS_A, 100, 0, 8192)).await?;
        assert_ne!(status(resp.status), ChunkOpStatus::Success);
        cluster.restart(1)?;
        // The scenario's shape (members back one after the other), not a wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.restart(2)?;
    } else {
        for i in 0..3 {
            cluster.restart(i)?;
        }
    }
    read_through_leader(&cluster, 100, &during).await?;
    read_through_leader(&cluster, 101, &fresh).await?;
    // Every replica ends up with them (catch-up went the right way).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0..3 {
        while on_disk(&cluster.chunk_path(i, CS_A, 100), 0, 8192).ok() != Some(during.clone())
            || on_disk(&cluster.chunk_path(i, CS_A, 101), 0, 4096).ok() != Some(fresh.clone())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "replica {i} lacks the writes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And members[0] takes leadership back once it has them.
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    read_through_leader(&cluster, 100, &during).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_restart_of_every_server_keeps_acknowledged_writes() -> TestResult {
    cold_restart_keeps_writes_missed_by_first_member(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_restart_with_stale_first_member_first_keeps_acknowledged_writes() -> TestResult {
    cold_restart_keeps_writes_missed_by_first_member(true).await
}

/// The leader and a follower that missed writes go down with everyone; the follower
/// and the third member come back without the leader. The follower is first in order
/// among them but must not lead: the third member does, and catches it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_restart_without_the_leader_skips_the_member_that_missed_writes() -> TestResult {
    let mut cluster = Cluster::start().await?;
    let before = pattern(8192, 4);
    let after = pattern(8192, 5);
    {
        let mut leader = cluster.chunk_client(0).await?;
        let resp = write(&mut leader, write_request(CS_A, 110, 0, before.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
        cluster.kill(1);
        let resp = write(&mut leader, write_request(CS_A, 110, 0, after.clone(), 1)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Success);
    }
    cluster.kill(0);
    cluster.kill(2);
    cluster.restart(1)?;
    cluster.restart(2)?;
    cluster.wait_leader(CS_A, 2, &[1, 2]).await?;
    read_through_leader(&cluster, 110, &after).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while on_disk(&cluster.chunk_path(1, CS_A, 110), 0, 8192).ok() != Some(after.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "server 1 not caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        on_disk_eventually(&cluster.chunk_path(2, CS_A, 110), 0, 8192, &after).await?,
        after
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_that_missed_the_last_acknowledged_write_does_not_take_over() -> TestResult {
    // Member 1, first in line after leader 0 of CS_A, is reached through a proxy.
    let (mut cluster, proxy) = Cluster::start_with_proxy(1).await?;
    let mut leader = cluster.chunk_client(0).await?;
    let resp = write(&mut leader, write_request(CS_A, 80, 0, pattern(4096, 1), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    // Both followers are heartbeated as holding every write.
    heartbeat_rounds().await;

    // Member 1 stops hearing the others but still reaches them: its probes find leader
    // 0 alive, so it keeps following, unaware of the write below.
    proxy.cut();
    let acknowledged = pattern(4096, 2);
    let resp = write(
        &mut leader,
        write_request(CS_A, 80, 0, acknowledged.clone(), 1),
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    // The leader dies at once, well within a heartbeat slack, and member 1 is heard again.
    cluster.kill(0);
    proxy.restore();

    // Member 2 holds the write and must lead first; had member 1 led, its catch-up copy
    // would have overwritten the write with its older chunk. (Member 1 may lead again
    // later, once member 2 has caught it up: the hand-back.)
    // Whoever serves the read (the leader may already have handed leadership on to
    // member 1) must serve the acknowledged bytes.
    cluster.leader_among(CS_A, &[1, 2]).await?;
    read_through_leader(&cluster, 80, &acknowledged).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_moves_leadership_and_it_stays() -> TestResult {
    use curve_proto::chunkserver::TransferLeaderRequest2;
    use curve_proto::common::Peer;
    let cluster = Cluster::start().await?;
    let data = pattern(8192, 5);
    let mut first = cluster.chunk_client(0).await?;
    let resp = write(&mut first, write_request(CS_A, 90, 0, data.clone(), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    let peer = |i: usize| Peer {
        id: Some(i as u64),
        address: Some(format!("{}:0", cluster.addr(i))),
    };
    let transfer = |from: usize, to: Peer| TransferLeaderRequest2 {
        logic_pool_id: POOL,
        copyset_id: CS_A,
        leader: peer(from),
        transferee: to,
    };

    // Refusals, with the leader unchanged: asked of a follower, to a stranger, for a
    // copyset not hosted.
    let mut follower = cluster.cli_client(1).await?;
    let refused = follower.transfer_leader(transfer(1, peer(2))).await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::FailedPrecondition)
    );
    let mut cli = cluster.cli_client(0).await?;
    let stranger = Peer {
        id: Some(9),
        address: Some("127.0.0.1:1:0".to_string()),
    };
    let refused = cli.transfer_leader(transfer(0, stranger)).await;
    assert_eq!(
        refused.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );
    let refused = cli
        .transfer_leader(TransferLeaderRequest2 {
            copyset_id: 77,
            ..transfer(0, peer(2))
        })
        .await;
    assert_eq!(refused.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    // To itself: nothing to do.
    cli.transfer_leader(transfer(0, peer(0))).await?;
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;

    // To the last member: it leads, serves the data, and keeps leading although
    // member 0, earlier in order, asks for leadership back with every probe.
    let started = std::time::Instant::now();
    cli.transfer_leader(transfer(0, peer(2))).await?;
    cluster.wait_leader(CS_A, 2, &[0, 1, 2]).await?;
    // A handover is immediate; an election after a timeout would take ticks more. 10 s
    // keeps a margin for a loaded machine below wait_leader's own 15 s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the transfer to member 2 took {:?}",
        started.elapsed()
    );
    let mut last = cluster.chunk_client(2).await?;
    let resp = read_once_leading(&mut last, read_request(CS_A, 90, 0, 8192)).await?;
    assert_eq!(resp.attachment.as_deref(), Some(&data[..]));
    let resp = write(&mut last, write_request(CS_A, 90, 0, pattern(4096, 6), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    // Four election ticks of member 0 asking for leadership back: it stays with 2.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    cluster.wait_leader(CS_A, 2, &[0, 1, 2]).await?;
    let resp = write(&mut first, write_request(CS_A, 90, 0, pattern(4096, 7), 1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Redirected);

    // And back.
    let mut cli = cluster.cli_client(2).await?;
    cli.transfer_leader(transfer(2, peer(0))).await?;
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    Ok(())
}
