//! The client's side of upstream's authentication, against a real local cluster: every
//! namespace request it sends carries the owner, a fresh date and, for root, the signature
//! the MDS verifies (read back off the wire); and every call the MDS refuses for a wrong
//! root password, a missing one or another owner's path comes back as AUTHFAIL.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_client::auth::now_us;
use curve_client::transport::{BaiduStdTransport, RpcMethod, RpcReply, Transport, TransportError};
use curve_client::{Client, CreateOptions, ErrorCode, UserInfo};
use curve_mds::{CURVEFS, Check, METHODS};
use curve_proto::mds::*;
use futures::future::BoxFuture;
use prost::Message;

const SEG: u64 = SEGMENT_SIZE as u64;

/// Passes every call on and keeps a copy of each namespace request.
struct Recording {
    inner: BaiduStdTransport,
    seen: Arc<Mutex<Vec<(&'static str, Bytes)>>>,
}

impl Transport for Recording {
    fn call(
        &self,
        endpoint: &str,
        method: &RpcMethod,
        request: Bytes,
        attachment: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcReply, TransportError>> {
        if method.service == CURVEFS {
            self.seen
                .lock()
                .unwrap()
                .push((method.method, request.clone()));
        }
        self.inner
            .call(endpoint, method, request, attachment, timeout)
    }
}

/// (owner, signature, date) of a namespace request, as the MDS reads them.
fn credentials(method: &str, b: &Bytes) -> (String, Option<String>, u64) {
    macro_rules! fields {
        ($t:ty) => {{
            let r = <$t>::decode(b.clone()).unwrap();
            (r.owner, r.signature, r.date)
        }};
    }
    match method {
        "CreateFile" => fields!(CreateFileRequest),
        "DeleteFile" => fields!(DeleteFileRequest),
        "RecoverFile" => fields!(RecoverFileRequest),
        "GetFileInfo" => fields!(GetFileInfoRequest),
        "GetOrAllocateSegment" => fields!(GetOrAllocateSegmentRequest),
        "DeAllocateSegment" => fields!(DeAllocateSegmentRequest),
        "RenameFile" => fields!(RenameFileRequest),
        "ExtendFile" => fields!(ExtendFileRequest),
        "ListDir" => fields!(ListDirRequest),
        "OpenFile" => fields!(OpenFileRequest),
        "CloseFile" => fields!(CloseFileRequest),
        "RefreshSession" => fields!(ReFreshSessionRequest),
        "IncreaseFileEpoch" => fields!(IncreaseFileEpochRequest),
        "CreateCloneFile" => fields!(CreateCloneFileRequest),
        "SetCloneFileStatus" => fields!(SetCloneFileStatusRequest),
        "CreateSnapShot" => fields!(CreateSnapShotRequest),
        "ListSnapShot" => fields!(ListSnapShotFileInfoRequest),
        "DeleteSnapShot" => fields!(DeleteSnapShotRequest),
        "CheckSnapShotStatus" => fields!(CheckSnapShotStatusRequest),
        "GetSnapShotFileSegment" => fields!(GetOrAllocateSegmentRequest),
        "ChangeOwner" => {
            let r = ChangeOwnerRequest::decode(b.clone()).unwrap();
            (r.root_owner, Some(r.signature), r.date)
        }
        m => panic!("{m} is not in curve_mds::METHODS' namespace half"),
    }
}

/// Every namespace call the client has, as `u`, on `dir` (which `u` may create under "/").
/// Returns each call's error code (`None`: it succeeded), in order.
async fn every_call(c: &Client, u: &UserInfo, dir: &str) -> Vec<(&'static str, Option<ErrorCode>)> {
    let mut codes = Vec::new();
    let mut note = |what: &'static str, r: curve_client::Result<()>| {
        codes.push((what, r.err().map(|e| e.code)));
    };
    let vol = format!("{dir}/vol");
    note("mkdir", c.mkdir(dir, u).await);
    note(
        "create",
        c.create(&vol, u, SEG, &CreateOptions::default()).await,
    );
    note("stat", c.stat(&vol, u).await.map(drop));
    note("extend", c.extend(&vol, u, 2 * SEG).await);
    note("list_dir", c.list_dir(dir, u).await.map(drop));
    match c.open(&vol, u).await {
        Ok(fd) => {
            note("write", c.write(fd, 0, &pattern(3, 4096)).await);
            note("read", c.read(fd, 0, &mut [0u8; 4096]).await);
            // With discard.enable, a whole segment goes back through DeAllocateSegment.
            match c.file(fd) {
                Ok(file) => note("discard", file.discard(0, SEG).await),
                Err(e) => note("discard", Err(e)),
            }
            note("close", c.close(fd).await);
        }
        Err(e) => note("open", Err(e)),
    }
    // A snapshot, of a volume of its own (a volume with a snapshot can be neither renamed
    // nor deleted): taken, listed, looked at and deleted.
    let snapped = format!("{dir}/snapped");
    note(
        "create_snapped",
        c.create(&snapped, u, SEG, &CreateOptions::default()).await,
    );
    match c.create_snapshot(&snapped, u).await {
        Ok(snapshot) => {
            let seq = snapshot.seq_num.unwrap_or_default();
            let listed = c.list_snapshots(&snapped, u, &[seq]).await;
            note("list_snapshots", listed.map(drop));
            let status = c.check_snapshot_status(&snapped, u, seq).await;
            note("check_snapshot_status", status.map(drop));
            let segment = c.get_snapshot_segment(&snapped, u, seq, 0).await;
            note("get_snapshot_segment", segment.map(drop));
            note("delete_snapshot", c.delete_snapshot(&snapped, u, seq).await);
        }
        Err(e) => note("create_snapshot", Err(e)),
    }
    let moved = format!("{dir}/moved");
    note("rename", c.rename(u, &vol, &moved).await);
    note("change_owner", c.change_owner(&moved, "carol", u).await);
    note("unlink", c.unlink(&moved, u).await);
    note("recover", c.recover(&moved, u, 0).await);
    // A clone with no source volume (as a clone from a snapshot starts), then installed.
    let clone = format!("{dir}/clone");
    let made = c
        .create_clone_file(&clone, u, SEG, 1, CHUNK_SIZE, "", &CreateOptions::default())
        .await;
    note("create_clone_file", made.map(drop));
    note(
        "set_clone_file_status",
        c.set_clone_file_status(&clone, u, None, FileStatus::KFileCloneMetaInstalled)
            .await,
    );
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_upstreams_credentials() {
    let cluster = Cluster::start().await;
    cluster.settle().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let transport = Recording {
        inner: BaiduStdTransport::new(Duration::from_secs(1), curve_brpc::DEFAULT_MAX_BODY),
        seen: seen.clone(),
    };
    let mut conf = cluster.config();
    conf.discard_enable = true;
    let c = Client::with_transport(conf, Arc::new(transport)).unwrap();

    let codes = every_call(&c, &root(), "/signed").await;
    assert!(codes.iter().all(|(_, code)| code.is_none()), "{codes:?}");
    let root_requests = std::mem::take(&mut *seen.lock().unwrap());
    // As a user: everything but change_owner, which only root may do.
    let codes = every_call(&c, &user("alice"), "/alice").await;
    let refused: Vec<_> = codes.iter().filter(|(_, c)| c.is_some()).collect();
    assert_eq!(refused, [&("change_owner", Some(ErrorCode::AuthFail))]);
    let user_requests = std::mem::take(&mut *seen.lock().unwrap());

    let mut methods = std::collections::BTreeSet::new();
    for (requests, owner) in [(&root_requests, "root"), (&user_requests, "alice")] {
        for (method, bytes) in requests {
            methods.insert(*method);
            let (got_owner, signature, date) = credentials(method, bytes);
            assert_eq!(got_owner, owner, "{method}");
            // Fresh: taken per request, well inside the MDS's 15 s.
            assert!(
                now_us().abs_diff(date) < 10_000_000,
                "{method}: date {date}"
            );
            let signature = signature.unwrap_or_else(|| panic!("{method}: no signature field"));
            if owner == "root" {
                assert!(
                    curve_mds::verify(ROOT_PASSWORD, date, "root", &signature),
                    "{method}: {signature:?} does not verify"
                );
            } else {
                // Users are not signed: the field is present and empty, as upstream sends it.
                assert_eq!(signature, "", "{method}");
            }
        }
    }
    // Every authenticated method but IncreaseFileEpoch (which this client never sends)
    // was sent and checked.
    let expected: std::collections::BTreeSet<_> = METHODS
        .iter()
        .filter(|(s, m, check)| *s == CURVEFS && *check != Check::None && *m != "IncreaseFileEpoch")
        .map(|(_, m, _)| *m)
        .collect();
    assert_eq!(methods, expected.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_authfail_on_every_call() {
    let cluster = Cluster::start().await;
    cluster.settle().await;
    let c = cluster.client();
    // A volume and a directory of alice's for the others to try.
    let alice = user("alice");
    let opts = CreateOptions::default();
    c.mkdir("/alice", &alice).await.unwrap();
    c.create("/alice/vol", &alice, SEG, &opts).await.unwrap();
    c.create("/alice/moved", &alice, SEG, &opts).await.unwrap();
    c.unlink("/alice/moved", &alice).await.unwrap();

    let wrong = UserInfo {
        owner: "root".into(),
        password: "not-the-password".into(),
    };
    let unsigned = UserInfo {
        owner: "root".into(),
        password: String::new(),
    };
    for (what, u) in [
        ("wrong root password", wrong),
        ("root without a password", unsigned),
        ("another owner", user("bob")),
    ] {
        let codes = every_call(&c, &u, "/alice").await;
        let mut expected = vec![
            ("mkdir", Some(ErrorCode::AuthFail)),
            ("create", Some(ErrorCode::AuthFail)),
            ("stat", Some(ErrorCode::AuthFail)),
            ("extend", Some(ErrorCode::AuthFail)),
            ("list_dir", Some(ErrorCode::AuthFail)),
            ("open", Some(ErrorCode::AuthFail)),
            ("create_snapped", Some(ErrorCode::AuthFail)),
            ("create_snapshot", Some(ErrorCode::AuthFail)),
            ("rename", Some(ErrorCode::AuthFail)),
            ("change_owner", Some(ErrorCode::AuthFail)),
            ("unlink", Some(ErrorCode::AuthFail)),
            ("recover", Some(ErrorCode::AuthFail)),
            ("create_clone_file", Some(ErrorCode::AuthFail)),
            ("set_clone_file_status", Some(ErrorCode::AuthFail)),
        ];
        if what == "another owner" {
            // Anyone may create at the top level, so bob's Mkdir of "/alice" gets as far
            // as finding it exists.
            expected[0] = ("mkdir", Some(ErrorCode::Exists));
        }
        assert_eq!(codes, expected, "{what}");
    }
    // Nothing changed: alice's files are where they were.
    assert_eq!(c.stat("/alice/vol", &alice).await.unwrap().length, SEG);
    assert_eq!(
        c.stat("/alice/moved", &alice).await.unwrap_err().code,
        ErrorCode::NotExist
    );
}
