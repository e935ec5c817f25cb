//! The chunkserver over brpc's baidu_std, as a stock Curve client reaches it: chunk data
//! in attachments, GetLeader failures as errno codes, REDIRECTED without a leader hint.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_brpc::{CallError, Channel, DEFAULT_MAX_BODY, errors};
use curve_proto::chunkserver::{
    ChunkOpStatus, ChunkRequest, ChunkResponse, GetLeaderRequest2, GetLeaderResponse2,
};
use prost::Message;

const CHUNK_SERVICE: &str = "curve.chunkserver.ChunkService";
const T: Duration = Duration::from_secs(5);

async fn channel(cluster: &Cluster, i: usize) -> Result<Channel, CallError> {
    Channel::connect(&cluster.addr(i), Duration::from_secs(1), DEFAULT_MAX_BODY).await
}

/// Sends `req` with its data as the attachment, not in field 1000.
async fn call_chunk(
    ch: &Channel,
    method: &str,
    mut req: ChunkRequest,
) -> Result<(ChunkResponse, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let data = req.attachment.take().unwrap_or_default();
    let reply = ch
        .call(
            CHUNK_SERVICE,
            method,
            Bytes::from(req.encode_to_vec()),
            data,
            T,
        )
        .await?;
    let resp = ChunkResponse::decode(reply.payload)?;
    assert!(
        resp.attachment.is_none(),
        "data never rides in field 1000 here"
    );
    Ok((resp, reply.attachment))
}

fn status(code: i32) -> ChunkOpStatus {
    ChunkOpStatus::try_from(code).unwrap_or(ChunkOpStatus::FailureUnknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_read_carry_data_as_attachments() -> TestResult {
    let cluster = Cluster::start_with_hints(false).await?;
    let leader = channel(&cluster, 0).await?;
    let data = pattern(8192, 3);
    let (resp, att) = call_chunk(
        &leader,
        "WriteChunk",
        write_request(CS_A, 21, 4096, data.clone(), 1),
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert!(att.is_empty());
    let (resp, att) = call_chunk(&leader, "ReadChunk", read_request(CS_A, 21, 4096, 8192)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(&att[..], &data[..]);
    // Every replica holds it, written through the same path as over gRPC.
    for i in 0..3 {
        assert_eq!(
            on_disk_eventually(&cluster.chunk_path(i, CS_A, 21), 4096, 8192, &data).await?,
            data
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_attachment_is_not_its_size_is_refused_before_replication() -> TestResult {
    let cluster = Cluster::start_with_hints(false).await?;
    let leader = channel(&cluster, 0).await?;
    let block = BLOCK_SIZE as usize;
    for (what, len, size) in [
        ("empty attachment", 0, BLOCK_SIZE),
        ("short attachment", block, 2 * BLOCK_SIZE),
        ("long attachment", 2 * block, BLOCK_SIZE),
    ] {
        let mut req = write_request(CS_A, 22, 0, pattern(len, 1), 1);
        req.size = Some(size);
        let (resp, _) = call_chunk(&leader, "WriteChunk", req).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::InvalidRequest, "{what}");
    }
    // Field 1000 does not count as data on this wire: only the attachment does.
    let mut req = write_request(CS_A, 22, 0, pattern(block, 1), 1);
    let reply = leader
        .call(
            CHUNK_SERVICE,
            "WriteChunk",
            Bytes::from(req.encode_to_vec()),
            Bytes::new(),
            T,
        )
        .await?;
    req.attachment = None;
    let resp = ChunkResponse::decode(reply.payload)?;
    assert_eq!(status(resp.status), ChunkOpStatus::InvalidRequest);
    for i in 0..3 {
        assert!(!cluster.chunk_path(i, CS_A, 22).exists(), "replica {i}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_without_naming_the_leader_as_upstream() -> TestResult {
    let cluster = Cluster::start_with_hints(false).await?;
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    for i in [1, 2] {
        let follower = channel(&cluster, i).await?;
        let (resp, _) = call_chunk(
            &follower,
            "WriteChunk",
            write_request(CS_A, 23, 0, pattern(4096, 1), 1),
        )
        .await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
        assert_eq!(resp.redirect, None);
        let (resp, att) =
            call_chunk(&follower, "ReadChunk", read_request(CS_A, 23, 0, 4096)).await?;
        assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
        assert_eq!(resp.redirect, None);
        assert!(att.is_empty());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_leader_and_unknown_calls_fail_with_brpc_codes() -> TestResult {
    let cluster = Cluster::start_with_hints(false).await?;
    cluster.wait_leader(CS_A, 0, &[0, 1, 2]).await?;
    let ch = channel(&cluster, 1).await?;
    let ask = |copyset_id| GetLeaderRequest2 {
        logic_pool_id: POOL,
        copyset_id,
        peer: None,
    };
    let reply = ch
        .call(
            "curve.chunkserver.CliService2",
            "GetLeader",
            Bytes::from(ask(CS_A).encode_to_vec()),
            Bytes::new(),
            T,
        )
        .await?;
    let leader = GetLeaderResponse2::decode(reply.payload)?;
    assert_eq!(
        leader.leader.address.as_deref(),
        Some(format!("{}:0", cluster.addr(0)).as_str())
    );
    let r = ch
        .call(
            "curve.chunkserver.CliService2",
            "GetLeader",
            Bytes::from(ask(999).encode_to_vec()),
            Bytes::new(),
            T,
        )
        .await;
    assert!(
        matches!(
            r,
            Err(CallError::Remote {
                code: errors::SYS_ENOENT,
                ..
            })
        ),
        "{r:?}"
    );
    // TransferLeader fails as braft's does: EPERM on a follower, EINVAL for a stranger.
    let peer = |address: String| curve_proto::common::Peer {
        id: None,
        address: Some(address),
    };
    let transfer = |to: String| curve_proto::chunkserver::TransferLeaderRequest2 {
        logic_pool_id: POOL,
        copyset_id: CS_A,
        leader: peer(format!("{}:0", cluster.addr(0))),
        transferee: peer(to),
    };
    for (asked, to, code) in [
        (&ch, format!("{}:0", cluster.addr(2)), errors::SYS_EPERM),
        (
            &channel(&cluster, 0).await?,
            "127.0.0.1:1:0".to_string(),
            errors::SYS_EINVAL,
        ),
    ] {
        let r = asked
            .call(
                "curve.chunkserver.CliService2",
                "TransferLeader",
                Bytes::from(transfer(to).encode_to_vec()),
                Bytes::new(),
                T,
            )
            .await;
        assert!(
            matches!(&r, Err(CallError::Remote { code: c, .. }) if *c == code),
            "{r:?}"
        );
    }
    for (service, method, code) in [
        (CHUNK_SERVICE, "NoSuchMethod", errors::ENOMETHOD),
        ("curve.chunkserver.NoSuchService", "X", errors::ENOSERVICE),
    ] {
        let r = ch
            .call(service, method, Bytes::new(), Bytes::new(), T)
            .await;
        assert!(
            matches!(&r, Err(CallError::Remote { code: c, .. }) if *c == code),
            "{service}.{method}: {r:?}"
        );
    }
    // Bytes that are no protobuf message (a truncated length-delimited field): EREQUEST.
    let r = ch
        .call(
            CHUNK_SERVICE,
            "ReadChunk",
            Bytes::from_static(&[0x0a, 0x05, 0x01]),
            Bytes::new(),
            T,
        )
        .await;
    assert!(
        matches!(
            r,
            Err(CallError::Remote {
                code: errors::EREQUEST,
                ..
            })
        ),
        "{r:?}"
    );
    Ok(())
}

/// A chunk's version before a snapshot, read back with ReadChunkSnapshot as the
/// snapshot/clone service reads it: the first write at the volume's new sn copies the
/// pages it changes aside, on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_a_new_sn_keeps_the_old_version_for_read_chunk_snapshot() -> TestResult {
    use curve_proto::chunkserver::{ChunkOpType, GetChunkInfoRequest, GetChunkInfoResponse};
    let cluster = Cluster::start_with_hints(false).await?;
    let leader = channel(&cluster, 0).await?;
    let before = pattern(16384, 1);
    let after = pattern(4096, 2);
    for (offset, data, sn) in [(0, &before, 1), (4096, &after, 2)] {
        let (resp, _) = call_chunk(
            &leader,
            "WriteChunk",
            write_request(CS_A, 60, offset, data.clone(), sn),
        )
        .await?;
        assert_eq!(
            status(resp.status),
            ChunkOpStatus::Success,
            "write at sn {sn}"
        );
    }
    let snapshot = |sn: u64| ChunkRequest {
        op_type: ChunkOpType::ChunkOpReadSnap as i32,
        sn: Some(sn),
        ..read_request(CS_A, 60, 0, 16384)
    };
    let (resp, old) = call_chunk(&leader, "ReadChunkSnapshot", snapshot(1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(&old[..], &before[..], "the version at sn 1");
    let (resp, now) = call_chunk(&leader, "ReadChunkSnapshot", snapshot(2)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    let expected = [&before[..4096], &after[..], &before[8192..]].concat();
    assert_eq!(&now[..], &expected[..], "the version at sn 2 is the chunk");
    let (resp, _) = call_chunk(&leader, "ReadChunkSnapshot", snapshot(3)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::ChunkNotexist);
    // A client that has not picked up the new sn is sent back for it.
    let (resp, _) = call_chunk(
        &leader,
        "WriteChunk",
        write_request(CS_A, 60, 0, pattern(4096, 3), 1),
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Backward);
    // Only the leader answers.
    let follower = channel(&cluster, 1).await?;
    let (resp, _) = call_chunk(&follower, "ReadChunkSnapshot", snapshot(1)).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Redirected);

    let reply = leader
        .call(
            CHUNK_SERVICE,
            "GetChunkInfo",
            Bytes::from(
                GetChunkInfoRequest {
                    logic_pool_id: POOL,
                    copyset_id: CS_A,
                    chunk_id: 60,
                }
                .encode_to_vec(),
            ),
            Bytes::new(),
            T,
        )
        .await?;
    let info = GetChunkInfoResponse::decode(reply.payload)?;
    assert_eq!(info.chunk_sn, vec![2, 1], "[sn, snapshot sn]");

    // Every replica kept the same old bytes (page 1 copied, the rest still the chunk's).
    for i in 0..3 {
        let mut snap = cluster.chunk_path(i, CS_A, 60).into_os_string();
        snap.push(".snap");
        let copied = on_disk(std::path::Path::new(&snap), 4096, 4096)?;
        assert_eq!(copied, before[4096..8192], "replica {i}");
    }
    Ok(())
}

/// The MDS's clean of a deleted snapshot: DeleteChunkSnapshotOrCorrectSn drops the
/// chunk's snapshot on every replica (through the log); on a chunk without one it raises
/// correctedSn, after which a write at that sn copies nothing aside; a correctedSn below
/// the chunk's sn is BACKWARD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_chunk_snapshot_or_correct_sn_drops_the_snapshot_on_every_replica() -> TestResult {
    use curve_proto::chunkserver::{ChunkOpType, GetChunkInfoRequest, GetChunkInfoResponse};
    let cluster = Cluster::start_with_hints(false).await?;
    let leader = channel(&cluster, 0).await?;
    for (offset, sn) in [(0, 1), (0, 2)] {
        let (resp, _) = call_chunk(
            &leader,
            "WriteChunk",
            write_request(CS_A, 61, offset, pattern(4096, sn as u8), sn),
        )
        .await?;
        assert_eq!(
            status(resp.status),
            ChunkOpStatus::Success,
            "write at sn {sn}"
        );
    }
    let delete = |corrected_sn: Option<u64>| ChunkRequest {
        op_type: ChunkOpType::ChunkOpDeleteSnap as i32,
        logic_pool_id: POOL,
        copyset_id: CS_A,
        chunk_id: 61,
        corrected_sn,
        ..Default::default()
    };
    let chunk_sn = || async {
        let reply = leader
            .call(
                CHUNK_SERVICE,
                "GetChunkInfo",
                Bytes::from(
                    GetChunkInfoRequest {
                        logic_pool_id: POOL,
                        copyset_id: CS_A,
                        chunk_id: 61,
                    }
                    .encode_to_vec(),
                ),
                Bytes::new(),
                T,
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            GetChunkInfoResponse::decode(reply.payload)?.chunk_sn,
        )
    };
    assert_eq!(chunk_sn().await?, vec![2, 1], "[sn, snapshot sn] before");

    let (resp, _) = call_chunk(&leader, "DeleteChunkSnapshotOrCorrectSn", delete(None)).await?;
    assert_eq!(
        status(resp.status),
        ChunkOpStatus::InvalidRequest,
        "no correctedSn"
    );
    let (resp, _) = call_chunk(&leader, "DeleteChunkSnapshotOrCorrectSn", delete(Some(1))).await?;
    assert_eq!(
        status(resp.status),
        ChunkOpStatus::Backward,
        "correctedSn below sn"
    );
    let (resp, _) = call_chunk(&leader, "DeleteChunkSnapshotOrCorrectSn", delete(Some(2))).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(chunk_sn().await?, vec![2], "the snapshot is gone");
    // Followers apply once they learn the entry is committed: allow them a moment.
    for i in 0..3 {
        let mut snap = cluster.chunk_path(i, CS_A, 61).into_os_string();
        snap.push(".snap");
        let snap = std::path::PathBuf::from(snap);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while snap.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!snap.exists(), "replica {i} still holds {snap:?}");
    }
    // No snapshot left: correctedSn goes up to 3, so a write at sn 3 keeps no old version.
    let (resp, _) = call_chunk(&leader, "DeleteChunkSnapshotOrCorrectSn", delete(Some(3))).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    let (resp, _) = call_chunk(
        &leader,
        "WriteChunk",
        write_request(CS_A, 61, 0, pattern(4096, 3), 3),
    )
    .await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Success);
    assert_eq!(chunk_sn().await?, vec![3], "no snapshot taken at sn 3");
    // A follower refers the caller to the leader.
    let follower = channel(&cluster, 1).await?;
    let (resp, _) =
        call_chunk(&follower, "DeleteChunkSnapshotOrCorrectSn", delete(Some(4))).await?;
    assert_eq!(status(resp.status), ChunkOpStatus::Redirected);
    Ok(())
}
