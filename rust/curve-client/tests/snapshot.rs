//! The seqNum path of a snapshot on a real local cluster: the MDS's CreateSnapShot bumps
//! the volume's seqNum, an open volume adopts it from RefreshSession, and its next write
//! carries it to the chunkservers (the chunk's `.sn` sidecar moves). Also the client's
//! typed snapshot calls.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use curve_client::ErrorCode;
use curve_proto::mds::{FileStatus, FileType};

/// The sn every replica's sidecar holds for the chunks written so far: `chunk_<id>.sn`
/// files (8 bytes, little endian) under each chunkserver's data dir.
fn sidecar_sns(root: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("chunk_") && n.ends_with(".sn"))
            {
                let bytes = std::fs::read(&path).unwrap();
                out.push(u64::from_le_bytes(bytes[..8].try_into().unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_moves_the_sn_writes_carry() {
    let cluster = Cluster::start().await;
    cluster.settle().await;
    let c = cluster.client();
    let u = user("snap");
    let path = "/snapvol";
    c.create(
        path,
        &u,
        u64::from(SEGMENT_SIZE),
        &curve_client::CreateOptions::default(),
    )
    .await
    .unwrap();
    let fd = c.open(path, &u).await.unwrap();
    c.write(fd, 0, &pattern(1, 4096)).await.unwrap();
    let before = sidecar_sns(cluster.dir.path());
    assert!(!before.is_empty(), "the write left no chunk sidecar");
    assert!(before.iter().all(|sn| *sn == 1), "{before:?}");

    let snap = c.create_snapshot(path, &u).await.unwrap();
    assert_eq!(snap.seq_num, Some(1));
    assert_eq!(snap.file_name.as_deref(), Some("snapvol-1"));
    assert_eq!(snap.file_type, Some(FileType::InodeSnapshotPagefile as i32));
    let again = c.create_snapshot(path, &u).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::UnderSnapshot);

    // The open volume learns seqNum 2 at its next RefreshSession.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fd_sn = c.file(fd).unwrap().write_sn_and_epoch().0;
        if fd_sn == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "fd {fd} kept sn {fd_sn}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.write(fd, 0, &pattern(2, 4096)).await.unwrap();
    // Followers apply the write once they learn it is committed, maybe after the ack.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = sidecar_sns(cluster.dir.path());
    while !after.iter().all(|sn| *sn == 2) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = sidecar_sns(cluster.dir.path());
    }
    assert!(after.iter().all(|sn| *sn == 2), "{after:?}");
    let mut back = vec![0u8; 4096];
    c.read(fd, 0, &mut back).await.unwrap();
    assert_eq!(back, pattern(2, 4096));

    // The typed calls.
    let listed = c.list_snapshots(path, &u, &[1]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, snap.id);
    let segment = c.get_snapshot_segment(path, &u, 1, 0).await.unwrap();
    assert!(segment.is_some_and(|s| !s.chunks.is_empty()));
    assert_eq!(
        c.check_snapshot_status(path, &u, 1).await.unwrap(),
        (FileStatus::KFileCreated, 0)
    );
    assert_eq!(
        c.unlink(path, &u).await.unwrap_err().code,
        ErrorCode::UnderSnapshot
    );
    assert_eq!(
        c.check_snapshot_status(path, &u, 7).await.unwrap_err().code,
        ErrorCode::NotExist
    );
    c.delete_snapshot(path, &u, 1).await.unwrap();
    assert_eq!(
        c.delete_snapshot(path, &u, 1).await.unwrap_err().code,
        ErrorCode::Deleting
    );
    assert!(c.create_snapshot("relative", &u).await.is_err());
    c.close(fd).await.unwrap();
}
