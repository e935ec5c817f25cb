//! The MDS's snapshot calls (CreateSnapShot, ListSnapShot, GetSnapShotFileSegment,
//! DeleteSnapShot, CheckSnapShotStatus) on both wires against a real MDS, with upstream's
//! status codes; the store keeps a snapshot and its unfinished clean across a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_proto::mds::*;
use prost::Message;

#[derive(Clone, Copy, Debug)]
enum WireKind {
    Grpc,
    BaiduStd,
}

/// One MDS connection over either wire; each call returns the decoded response.
enum Wire {
    Grpc(Fs),
    BaiduStd(curve_brpc::Channel),
}

impl Wire {
    async fn open(mds: &Mds, kind: WireKind) -> Wire {
        match kind {
            WireKind::Grpc => Wire::Grpc(mds.fs().await),
            WireKind::BaiduStd => Wire::BaiduStd(
                curve_brpc::Channel::connect(
                    &mds.addr.to_string(),
                    RPC_DEADLINE,
                    curve_brpc::DEFAULT_MAX_BODY,
                )
                .await
                .unwrap(),
            ),
        }
    }

    async fn brpc<Req: Message, Resp: Message + Default>(
        ch: &curve_brpc::Channel,
        method: &str,
        req: Req,
    ) -> Resp {
        let reply = ch
            .call(
                curve_mds::CURVEFS,
                method,
                Bytes::from(req.encode_to_vec()),
                Bytes::new(),
                RPC_DEADLINE,
            )
            .await
            .unwrap();
        Resp::decode(reply.payload).unwrap()
    }

    async fn create(&mut self, path: &str, owner: &str) -> CreateSnapShotResponse {
        let (owner, signature, date) = cred(owner);
        let req = CreateSnapShotRequest {
            file_name: path.into(),
            owner,
            signature,
            date,
        };
        match self {
            Wire::Grpc(fs) => fs.0.create_snap_shot(req).await.unwrap().into_inner(),
            Wire::BaiduStd(ch) => Self::brpc(ch, "CreateSnapShot", req).await,
        }
    }

    async fn list(&mut self, path: &str, owner: &str, seq: &[u64]) -> ListSnapShotFileInfoResponse {
        let (owner, signature, date) = cred(owner);
        let req = ListSnapShotFileInfoRequest {
            file_name: path.into(),
            seq: seq.to_vec(),
            owner,
            signature,
            date,
        };
        match self {
            Wire::Grpc(fs) => fs.0.list_snap_shot(req).await.unwrap().into_inner(),
            Wire::BaiduStd(ch) => Self::brpc(ch, "ListSnapShot", req).await,
        }
    }

    async fn delete(&mut self, path: &str, owner: &str, seq: u64) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let req = DeleteSnapShotRequest {
            file_name: path.into(),
            seq,
            owner,
            signature,
            date,
        };
        let r: DeleteSnapShotResponse = match self {
            Wire::Grpc(fs) => fs.0.delete_snap_shot(req).await.unwrap().into_inner(),
            Wire::BaiduStd(ch) => Self::brpc(ch, "DeleteSnapShot", req).await,
        };
        code(r.status_code)
    }

    async fn status(&mut self, path: &str, owner: &str, seq: u64) -> CheckSnapShotStatusResponse {
        let (owner, signature, date) = cred(owner);
        let req = CheckSnapShotStatusRequest {
            file_name: path.into(),
            seq,
            owner,
            signature,
            date,
        };
        match self {
            Wire::Grpc(fs) => fs.0.check_snap_shot_status(req).await.unwrap().into_inner(),
            Wire::BaiduStd(ch) => Self::brpc(ch, "CheckSnapShotStatus", req).await,
        }
    }

    async fn segment(
        &mut self,
        path: &str,
        owner: &str,
        seq: u64,
        offset: u64,
    ) -> GetOrAllocateSegmentResponse {
        let (owner, signature, date) = cred(owner);
        let req = GetOrAllocateSegmentRequest {
            file_name: path.into(),
            owner,
            offset,
            allocate_if_not_exist: false,
            seq_num: Some(seq),
            signature,
            date,
            epoch: None,
        };
        match self {
            Wire::Grpc(fs) => {
                fs.0.get_snap_shot_file_segment(req)
                    .await
                    .unwrap()
                    .into_inner()
            }
            Wire::BaiduStd(ch) => Self::brpc(ch, "GetSnapShotFileSegment", req).await,
        }
    }
}

async fn lifecycle(kind: WireKind) {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    let mut w = Wire::open(&mds, kind).await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, StatusCode::KOk);
    let (st, written) = fs.segment("/vol", "alice", 0, true, None).await;
    assert_eq!(st, StatusCode::KOk);
    let (_, file) = fs.stat("/vol", "alice").await;
    let file = file.unwrap();
    assert_eq!(file.seq_num, Some(1));

    // Taken: `<file>-<old seq>`, a snapshot page file under the file; the file's seq moves on.
    let r = w.create("/vol", "alice").await;
    assert_eq!(code(r.status_code), StatusCode::KOk);
    let snap = r.snap_shot_file_info.unwrap();
    assert_eq!(snap.file_name.as_deref(), Some("vol-1"));
    assert_eq!(snap.seq_num, Some(1));
    assert_eq!(snap.parent_id, file.id);
    assert_eq!(snap.file_type, Some(FileType::InodeSnapshotPagefile as i32));
    assert_eq!(snap.length, file.length);
    assert_ne!(snap.id, file.id);
    let (_, now) = fs.stat("/vol", "alice").await;
    assert_eq!(now.unwrap().seq_num, Some(2));
    // RefreshSession carries the new seq to open clients.
    assert_eq!(
        fs.open("/vol", "alice").await.status_code,
        StatusCode::KOk as i32
    );
    let refreshed = fs.refresh("/vol", "alice", None).await;
    assert_eq!(refreshed.file_info.unwrap().seq_num, Some(2));

    // One in flight: a second answers 120 with the first.
    let again = w.create("/vol", "alice").await;
    assert_eq!(code(again.status_code), StatusCode::KFileUnderSnapShot);
    assert_eq!(again.snap_shot_file_info.unwrap().id, snap.id);
    assert_eq!(
        w.create("/vol", "bob").await.status_code,
        StatusCode::KOwnerAuthFail as i32
    );
    assert_eq!(
        w.create("/nope", "alice").await.status_code,
        StatusCode::KFileNotExists as i32
    );

    // Listed by seq only.
    let listed = w.list("/vol", "alice", &[1]).await;
    assert_eq!(code(listed.status_code), StatusCode::KOk);
    assert_eq!(listed.file_info.len(), 1);
    assert_eq!(listed.file_info[0].id, snap.id);
    assert!(w.list("/vol", "alice", &[]).await.file_info.is_empty());
    assert!(w.list("/vol", "alice", &[2]).await.file_info.is_empty());

    // The snapshot's segments are the file's.
    let seg = w.segment("/vol", "alice", 1, 0).await;
    assert_eq!(code(seg.status_code), StatusCode::KOk);
    assert_eq!(seg.page_file_segment, written);
    let unallocated = w.segment("/vol", "alice", 1, GIB).await;
    assert_eq!(
        code(unallocated.status_code),
        StatusCode::KSegmentNotAllocated
    );
    assert_eq!(
        code(w.segment("/vol", "alice", 1, 7).await.status_code),
        StatusCode::KParaError
    );
    assert_eq!(
        code(w.segment("/vol", "alice", 5, 0).await.status_code),
        StatusCode::KSnapshotFileNotExists
    );

    // A file with a snapshot can be neither deleted nor renamed.
    fs.close("/vol", "alice", None).await;
    tokio::time::sleep(Duration::from_micros(RECORD_EXPIRE_US + 50_000)).await;
    assert_eq!(
        fs.unlink("/vol", "alice").await,
        StatusCode::KFileUnderSnapShot
    );
    assert_eq!(
        fs.rename("/vol", "/vol2", "alice").await,
        StatusCode::KFileUnderSnapShot
    );

    let st = w.status("/vol", "alice", 1).await;
    assert_eq!(code(st.status_code), StatusCode::KOk);
    assert_eq!(st.file_status, Some(FileStatus::KFileCreated as i32));
    assert_eq!(st.progress, Some(0));
    assert_eq!(
        w.delete("/vol", "alice", 9).await,
        StatusCode::KSnapshotFileNotExists
    );

    // Deleting: the clean cannot reach this topology's chunkservers (none run), so the
    // snapshot stays kFileDeleting and its clean keeps retrying.
    assert_eq!(w.delete("/vol", "alice", 1).await, StatusCode::KOk);
    assert_eq!(
        w.delete("/vol", "alice", 1).await,
        StatusCode::KSnapshotDeleting
    );
    let st = w.status("/vol", "alice", 1).await;
    assert_eq!(code(st.status_code), StatusCode::KOk);
    assert_eq!(st.file_status, Some(FileStatus::KFileDeleting as i32));
    assert!(st.progress.unwrap() < 100);
    assert_eq!(
        fs.unlink("/vol", "alice").await,
        StatusCode::KFileUnderSnapShot
    );
    drop(w);
    drop(fs);
    mds.stop().await;

    // The record and its clean survive a restart.
    let mds = Mds::start_settled(dir.path()).await;
    let mut w = Wire::open(&mds, kind).await;
    let st = w.status("/vol", "alice", 1).await;
    assert_eq!(code(st.status_code), StatusCode::KOk, "the clean resumed");
    assert_eq!(st.file_status, Some(FileStatus::KFileDeleting as i32));
    let (_, file) = mds.fs().await.stat("/vol", "alice").await;
    assert_eq!(file.unwrap().seq_num, Some(2));
    drop(w);
    mds.stop().await;
}

#[tokio::test]
async fn lifecycle_grpc() {
    lifecycle(WireKind::Grpc).await;
}

#[tokio::test]
async fn lifecycle_baidu_std() {
    lifecycle(WireKind::BaiduStd).await;
}

#[tokio::test]
async fn frozen_after_start_and_old_clients_refused() {
    let dir = tempfile::tempdir().unwrap();
    let frozen = curve_mds::MdsOptions {
        snapshot_frozen_us: 60_000_000,
        ..options()
    };
    let mds = Mds::start(dir.path(), frozen).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, StatusCode::KOk);
    for kind in [WireKind::Grpc, WireKind::BaiduStd] {
        let mut w = Wire::open(&mds, kind).await;
        let r = w.create("/vol", "alice").await;
        assert_eq!(code(r.status_code), StatusCode::KSnapshotFrozen, "{kind:?}");
    }
    drop(fs);
    mds.stop().await;

    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    // A directory is not snapshotted.
    assert_eq!(fs.mkdir("/dir", "alice").await, StatusCode::KOk);
    let mut w = Wire::open(&mds, WireKind::Grpc).await;
    assert_eq!(
        w.create("/dir", "alice").await.status_code,
        StatusCode::KNotSupported as i32
    );
    // A client older than 0.0.5.3 (as strings compare) holding the file open blocks it.
    let (owner, signature, date) = cred("alice");
    let r =
        fs.0.refresh_session(ReFreshSessionRequest {
            file_name: "/vol".into(),
            session_id: String::new(),
            owner,
            signature,
            date,
            client_version: Some("0.0.5.2".into()),
            client_ip: Some("127.0.0.1".into()),
            client_port: Some(9000),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(r.status_code), StatusCode::KOk);
    let r = w.create("/vol", "alice").await;
    assert_eq!(code(r.status_code), StatusCode::KClientVersionNotMatch);
    // Once its record expires, the snapshot goes ahead.
    tokio::time::sleep(Duration::from_micros(RECORD_EXPIRE_US + 50_000)).await;
    assert_eq!(
        w.create("/vol", "alice").await.status_code,
        StatusCode::KOk as i32
    );
    drop(fs);
    drop(w);
    mds.stop().await;
}
