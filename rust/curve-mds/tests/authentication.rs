//! Upstream's authentication on every method of the local MDS, over real sockets and both
//! wires. Each method `curve_mds::METHODS` marks as authenticated gets every refusal of
//! [`REFUSALS`] (kOwnerAuthFail, and the namespace unchanged afterwards), then the same
//! request from the owner and from signed root, which must succeed; every path-taking
//! method gets every path of [`BAD_PATHS`] (kParaError, nothing changed).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use curve_mds::{CURVEFS, Check, METHODS, sign};
use curve_proto::mds::curve_fs_service_client::CurveFsServiceClient;
use curve_proto::mds::*;
use prost::Message;
use tonic::transport::Channel;

/// Each test's bound: a loaded 2-core machine runs one in well under 20 s.
const BOUND: Duration = Duration::from_secs(120);
const ALICE: &str = "alice";

/// Who a request claims to be.
#[derive(Debug, Clone)]
struct Cred {
    owner: String,
    signature: Option<String>,
    date: u64,
}

fn user(owner: &str, date: u64) -> Cred {
    Cred {
        owner: owner.into(),
        signature: Some(String::new()),
        date,
    }
}

fn root_signed(date: u64) -> Cred {
    Cred {
        owner: ROOT.into(),
        signature: Some(sign(PASSWORD, date, ROOT)),
        date,
    }
}

fn root_with(signature: Option<String>, date: u64) -> Cred {
    Cred {
        owner: ROOT.into(),
        signature,
        date,
    }
}

/// Well outside the 15 s window either way, even if the MDS reads its clock late.
const SKEW_US: u64 = 20_000_000;

/// What a refusal is called, and its credentials given the time the request is built at.
type Refusal = (&'static str, fn(u64) -> Cred);

/// Every way a request is refused. Each is kOwnerAuthFail upstream, on every authenticated
/// method.
const REFUSALS: &[Refusal] = &[
    ("wrong root password", |now| {
        root_with(Some(sign("not-the-password", now, ROOT)), now)
    }),
    ("stale date, owner", |now| user(ALICE, now - SKEW_US)),
    ("stale date, root signed for it", |now| {
        root_signed(now - SKEW_US)
    }),
    ("future date, owner", |now| user(ALICE, now + SKEW_US)),
    ("future date, root signed for it", |now| {
        root_signed(now + SKEW_US)
    }),
    ("date zero", |_| user(ALICE, 0)),
    ("another owner's path", |now| user("bob", now)),
    ("an owner differing in case", |now| user("Alice", now)),
    ("empty owner", |now| user("", now)),
    ("forged signature: not Base64", |now| {
        root_with(Some("forged!".into()), now)
    }),
    ("forged signature: 32 zero bytes", |now| {
        root_with(
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
            now,
        )
    }),
    ("forged signature: one character changed", |now| {
        let mut s = sign(PASSWORD, now, ROOT).into_bytes();
        s[0] = if s[0] == b'A' { b'B' } else { b'A' };
        root_with(String::from_utf8(s).ok(), now)
    }),
    ("forged signature: replayed from another date", |now| {
        root_with(Some(sign(PASSWORD, now - 1_000_000, ROOT)), now)
    }),
    ("forged signature: signed for another owner", |now| {
        root_with(Some(sign(PASSWORD, now, ALICE)), now)
    }),
    ("forged signature: padding dropped", |now| {
        root_with(
            Some(sign(PASSWORD, now, ROOT).trim_end_matches('=').into()),
            now,
        )
    }),
    ("missing signature, root", |now| root_with(None, now)),
    ("empty signature, root", |now| {
        root_with(Some(String::new()), now)
    }),
];

/// Paths that must be refused (kParaError) before anything else, and never resolve.
fn bad_paths() -> Vec<String> {
    let mut paths: Vec<String> = [
        "",
        "alice/vol",
        "./alice/vol",
        "../alice/vol",
        " /alice/vol",
        "/alice/../alice2/vol",
        "/alice/./vol",
        "/alice//vol",
        "//alice/vol",
        "/alice/vol/",
        "/alice/vol\0",
        "/alice\0/vol",
        "/\0",
        "/..",
        "/.",
        "/RecycleBin/..",
        "/RecycleBin/../alice/vol",
    ]
    .map(String::from)
    .into();
    paths.push(format!("/alice/{}", "n".repeat(256)));
    paths.push(format!("/{}/vol", "é".repeat(128)));
    paths
}

/// Requests of the namespace service, encodable for baidu_std and sendable over gRPC.
macro_rules! requests {
    ($($method:ident($req:ident, $resp:ident) => $call:ident),* $(,)?) => {
        #[derive(Debug, Clone)]
        enum Req { $($method($req)),* }

        impl Req {
            fn method(&self) -> &'static str {
                match self { $(Req::$method(_) => stringify!($method)),* }
            }

            async fn grpc(&self, c: &mut CurveFsServiceClient<Channel>) -> i32 {
                match self {
                    $(Req::$method(r) => {
                        c.$call(r.clone()).await.expect("gRPC call").into_inner().status_code
                    })*
                }
            }

            async fn baidu_std(&self, ch: &curve_brpc::Channel) -> i32 {
                let (payload, decode): (Vec<u8>, fn(Bytes) -> i32) = match self {
                    $(Req::$method(r) => (r.encode_to_vec(), |b| {
                        $resp::decode(b).expect("decodes").status_code
                    })),*
                };
                let reply = ch
                    .call(CURVEFS, self.method(), payload.into(), Bytes::new(), Duration::from_secs(10))
                    .await
                    .expect("baidu_std call");
                decode(reply.payload)
            }
        }
    };
}

requests! {
    CreateFile(CreateFileRequest, CreateFileResponse) => create_file,
    DeleteFile(DeleteFileRequest, DeleteFileResponse) => delete_file,
    RecoverFile(RecoverFileRequest, RecoverFileResponse) => recover_file,
    GetFileInfo(GetFileInfoRequest, GetFileInfoResponse) => get_file_info,
    GetOrAllocateSegment(GetOrAllocateSegmentRequest, GetOrAllocateSegmentResponse)
        => get_or_allocate_segment,
    DeAllocateSegment(DeAllocateSegmentRequest, DeAllocateSegmentResponse) => de_allocate_segment,
    RenameFile(RenameFileRequest, RenameFileResponse) => rename_file,
    ExtendFile(ExtendFileRequest, ExtendFileResponse) => extend_file,
    ChangeOwner(ChangeOwnerRequest, ChangeOwnerResponse) => change_owner,
    ListDir(ListDirRequest, ListDirResponse) => list_dir,
    OpenFile(OpenFileRequest, OpenFileResponse) => open_file,
    CloseFile(CloseFileRequest, CloseFileResponse) => close_file,
    RefreshSession(ReFreshSessionRequest, ReFreshSessionResponse) => refresh_session,
    IncreaseFileEpoch(IncreaseFileEpochRequest, IncreaseFileEpochResponse) => increase_file_epoch,
    CreateCloneFile(CreateCloneFileRequest, CreateCloneFileResponse) => create_clone_file,
    SetCloneFileStatus(SetCloneFileStatusRequest, SetCloneFileStatusResponse)
        => set_clone_file_status,
    CreateSnapShot(CreateSnapShotRequest, CreateSnapShotResponse) => create_snap_shot,
    ListSnapShot(ListSnapShotFileInfoRequest, ListSnapShotFileInfoResponse) => list_snap_shot,
    DeleteSnapShot(DeleteSnapShotRequest, DeleteSnapShotResponse) => delete_snap_shot,
    CheckSnapShotStatus(CheckSnapShotStatusRequest, CheckSnapShotStatusResponse)
        => check_snap_shot_status,
    GetSnapShotFileSegment(GetOrAllocateSegmentRequest, GetOrAllocateSegmentResponse)
        => get_snap_shot_file_segment,
}

/// One method's request on the fixture under `dir` ("/alice" or "/alice2"), as `c`. With
/// `path`, that path replaces the one the method names (for RenameFile, `rename_new` says
/// which side).
fn request(method: &str, dir: &str, c: &Cred, path: Option<&str>, rename_new: bool) -> Req {
    let vol = path.map_or_else(|| format!("{dir}/vol"), str::to_owned);
    let (owner, signature, date) = (c.owner.clone(), c.signature.clone(), c.date);
    match method {
        "CreateFile" => Req::CreateFile(CreateFileRequest {
            file_name: path.map_or_else(|| format!("{dir}/new"), str::to_owned),
            owner,
            file_type: FileType::InodePagefile as i32,
            file_length: Some(10 * GIB),
            signature,
            date,
            ..Default::default()
        }),
        "DeleteFile" => Req::DeleteFile(DeleteFileRequest {
            file_name: vol,
            owner,
            signature,
            date,
            file_id: None,
            force_delete: Some(false),
        }),
        "RecoverFile" => Req::RecoverFile(RecoverFileRequest {
            file_name: path.map_or_else(|| format!("{dir}/gone"), str::to_owned),
            owner,
            signature,
            date,
            file_id: None,
        }),
        "GetFileInfo" => Req::GetFileInfo(GetFileInfoRequest {
            file_name: vol,
            owner,
            signature,
            date,
        }),
        "GetOrAllocateSegment" => Req::GetOrAllocateSegment(GetOrAllocateSegmentRequest {
            file_name: vol,
            owner,
            offset: GIB,
            allocate_if_not_exist: true,
            seq_num: None,
            signature,
            date,
            epoch: None,
        }),
        "DeAllocateSegment" => Req::DeAllocateSegment(DeAllocateSegmentRequest {
            file_name: vol,
            owner,
            offset: 0,
            signature,
            date,
        }),
        "RenameFile" => {
            let (old, new) = match (path, rename_new) {
                (Some(p), true) => (format!("{dir}/vol"), p.to_owned()),
                (Some(p), false) => (p.to_owned(), format!("{dir}/vol2")),
                (None, _) => (format!("{dir}/vol"), format!("{dir}/vol2")),
            };
            Req::RenameFile(RenameFileRequest {
                old_file_name: old,
                new_file_name: new,
                owner,
                signature,
                old_file_id: None,
                new_file_id: None,
                date,
            })
        }
        "ExtendFile" => Req::ExtendFile(ExtendFileRequest {
            file_name: vol,
            owner,
            new_size: 20 * GIB,
            signature,
            date,
        }),
        "ChangeOwner" => Req::ChangeOwner(ChangeOwnerRequest {
            file_name: vol,
            new_owner: "bob".into(),
            root_owner: owner,
            // A required field: "missing" is the empty string on this method.
            signature: signature.unwrap_or_default(),
            date,
        }),
        "ListDir" => Req::ListDir(ListDirRequest {
            file_name: path.map_or_else(|| dir.to_owned(), str::to_owned),
            owner,
            signature,
            date,
        }),
        "OpenFile" => Req::OpenFile(OpenFileRequest {
            file_name: vol,
            owner,
            signature,
            date,
            client_version: None,
        }),
        "CloseFile" => Req::CloseFile(CloseFileRequest {
            file_name: vol,
            session_id: String::new(),
            owner,
            signature,
            date,
            client_ip: None,
            client_port: None,
        }),
        "RefreshSession" => Req::RefreshSession(ReFreshSessionRequest {
            file_name: vol,
            session_id: String::new(),
            owner,
            date,
            signature,
            client_version: None,
            client_ip: None,
            client_port: None,
        }),
        "IncreaseFileEpoch" => Req::IncreaseFileEpoch(IncreaseFileEpochRequest {
            file_name: vol,
            owner,
            signature,
            date,
        }),
        "CreateCloneFile" => Req::CreateCloneFile(CreateCloneFileRequest {
            file_name: path.map_or_else(|| format!("{dir}/clone"), str::to_owned),
            file_type: FileType::InodePagefile as i32,
            file_length: 10 * GIB,
            seq: 1,
            chunksize: 16 << 20,
            owner,
            signature,
            date,
            clone_source: format!("{dir}/vol"),
            ..Default::default()
        }),
        "SetCloneFileStatus" => Req::SetCloneFileStatus(SetCloneFileStatusRequest {
            file_name: vol,
            file_id: None,
            // Created -> Created: allowed, so only the credentials decide.
            file_status: FileStatus::KFileCreated as i32,
            owner,
            signature,
            date,
        }),
        "CreateSnapShot" => Req::CreateSnapShot(CreateSnapShotRequest {
            file_name: vol,
            owner,
            signature,
            date,
        }),
        "ListSnapShot" => Req::ListSnapShot(ListSnapShotFileInfoRequest {
            file_name: vol,
            seq: vec![1],
            owner,
            signature,
            date,
        }),
        // The fixture's `snapped` volume has snapshot 1.
        "DeleteSnapShot" => Req::DeleteSnapShot(DeleteSnapShotRequest {
            file_name: path.map_or_else(|| format!("{dir}/snapped"), str::to_owned),
            seq: 1,
            owner,
            signature,
            date,
        }),
        "CheckSnapShotStatus" => Req::CheckSnapShotStatus(CheckSnapShotStatusRequest {
            file_name: path.map_or_else(|| format!("{dir}/snapped"), str::to_owned),
            seq: 1,
            owner,
            signature,
            date,
        }),
        "GetSnapShotFileSegment" => Req::GetSnapShotFileSegment(GetOrAllocateSegmentRequest {
            file_name: path.map_or_else(|| format!("{dir}/snapped"), str::to_owned),
            owner,
            offset: 0,
            allocate_if_not_exist: false,
            seq_num: Some(1),
            signature,
            date,
            epoch: None,
        }),
        m => panic!("no request for {m}: add one to this test"),
    }
}

#[derive(Clone, Copy, Debug)]
enum WireKind {
    Grpc,
    BaiduStd,
}

enum Wire {
    Grpc(CurveFsServiceClient<Channel>),
    BaiduStd(curve_brpc::Channel),
}

impl Wire {
    async fn connect(kind: WireKind, mds: &Mds) -> Wire {
        match kind {
            WireKind::Grpc => Wire::Grpc(mds.fs().await.0),
            WireKind::BaiduStd => Wire::BaiduStd(brpc(mds).await),
        }
    }

    async fn send(&mut self, req: &Req) -> StatusCode {
        code(match self {
            Wire::Grpc(c) => req.grpc(c).await,
            Wire::BaiduStd(ch) => req.baidu_std(ch).await,
        })
    }
}

async fn brpc(mds: &Mds) -> curve_brpc::Channel {
    curve_brpc::Channel::connect(
        &mds.addr.to_string(),
        Duration::from_secs(2),
        curve_brpc::DEFAULT_MAX_BODY,
    )
    .await
    .expect("connects")
}

/// Two identical trees, each alice's: a directory, a volume with its first segment, a
/// volume `snapped` with its first segment and snapshot 1, and a deleted volume in the
/// recycle bin. The owner's accepted requests use "/alice", root's
/// "/alice2".
async fn fixture(fs: &mut Fs) {
    for dir in ["/alice", "/alice2"] {
        assert_eq!(fs.mkdir(dir, ALICE).await, StatusCode::KOk);
        let vol = format!("{dir}/vol");
        assert_eq!(fs.create(&vol, ALICE, 10 * GIB).await, StatusCode::KOk);
        let (status, _) = fs.segment(&vol, ALICE, 0, true, None).await;
        assert_eq!(status, StatusCode::KOk);
        let snapped = format!("{dir}/snapped");
        assert_eq!(fs.create(&snapped, ALICE, 10 * GIB).await, StatusCode::KOk);
        let (status, _) = fs.segment(&snapped, ALICE, 0, true, None).await;
        assert_eq!(status, StatusCode::KOk);
        let (owner, signature, date) = cred(ALICE);
        let taken =
            fs.0.create_snap_shot(CreateSnapShotRequest {
                file_name: snapped,
                owner,
                signature,
                date,
            })
            .await
            .expect("CreateSnapShot")
            .into_inner();
        assert_eq!(taken.status_code, StatusCode::KOk as i32);
        let gone = format!("{dir}/gone");
        assert_eq!(fs.create(&gone, ALICE, 10 * GIB).await, StatusCode::KOk);
        assert_eq!(fs.unlink(&gone, ALICE).await, StatusCode::KOk);
    }
}

/// Every entry of the namespace as root sees it, with every allocated segment.
async fn snapshot(fs: &mut Fs) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![String::from("/")];
    while let Some(dir) = dirs.pop() {
        let (status, entries) = fs.list(&dir, ROOT).await;
        assert_eq!(status, StatusCode::KOk, "{dir}");
        for info in entries {
            let name = info.file_name.clone().unwrap_or_default();
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            if info.file_type == Some(FileType::InodeDirectory as i32) {
                dirs.push(path.clone());
            } else {
                let step = u64::from(info.segment_size.unwrap_or(1 << 30));
                for offset in (0..info.length.unwrap_or(0)).step_by(step as usize) {
                    let (s, seg) = fs.segment(&path, ROOT, offset, false, None).await;
                    out.push(format!("{path}@{offset}: {s:?} {seg:?}"));
                }
            }
            out.push(format!("{path}: {info:?}"));
        }
    }
    out.sort();
    out
}

async fn refusals_on_every_method(kind: WireKind) {
    let authenticated: Vec<_> = METHODS
        .iter()
        .filter(|(service, _, check)| *service == CURVEFS && *check != Check::None)
        .collect();
    assert_eq!(authenticated.len(), 21);
    for (_, method, check) in authenticated {
        let dir = tempfile::tempdir().expect("tempdir");
        let mds = Mds::start_settled(dir.path()).await;
        let mut fs = mds.fs().await;
        fixture(&mut fs).await;
        let before = snapshot(&mut fs).await;
        let mut wire = Wire::connect(kind, &mds).await;
        for (what, cred) in REFUSALS {
            let req = request(method, "/alice", &cred(now_us()), None, false);
            let status = wire.send(&req).await;
            assert_eq!(status, StatusCode::KOwnerAuthFail, "{method}, {what}");
        }
        if *check == Check::RootOwner {
            // Only root may: the owner of the path is refused too.
            let req = request(method, "/alice", &user(ALICE, now_us()), None, false);
            assert_eq!(
                wire.send(&req).await,
                StatusCode::KOwnerAuthFail,
                "{method}"
            );
        }
        assert_eq!(
            snapshot(&mut fs).await,
            before,
            "{method}: refusals changed nothing"
        );

        // The same request with good credentials goes through: the owner's unsigned (users
        // are never signed upstream, and a signature they send is not looked at), root's
        // signed.
        if *check != Check::RootOwner {
            let mut owner = user(ALICE, now_us());
            owner.signature = None;
            let req = request(method, "/alice", &owner, None, false);
            assert_eq!(wire.send(&req).await, StatusCode::KOk, "{method} as owner");
        }
        let req = request(method, "/alice2", &root_signed(now_us()), None, false);
        assert_eq!(wire.send(&req).await, StatusCode::KOk, "{method} as root");
        mds.stop().await;
    }
}

async fn bad_paths_on_every_method(kind: WireKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    fixture(&mut fs).await;
    let before = snapshot(&mut fs).await;
    let mut wire = Wire::connect(kind, &mds).await;
    for (service, method, check) in METHODS {
        if *service != CURVEFS || *check == Check::None {
            continue;
        }
        for path in bad_paths() {
            for rename_new in [false, true] {
                if rename_new && *method != "RenameFile" {
                    continue;
                }
                // Root, signed, so that only the path can be at fault.
                for cred in [root_signed(now_us()), user(ALICE, now_us())] {
                    let req = request(method, "/alice", &cred, Some(&path), rename_new);
                    assert_eq!(
                        wire.send(&req).await,
                        StatusCode::KParaError,
                        "{method} {path:?} as {}",
                        cred.owner
                    );
                }
            }
        }
    }
    assert_eq!(snapshot(&mut fs).await, before, "bad paths changed nothing");
    mds.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_over_grpc() {
    tokio::time::timeout(BOUND, refusals_on_every_method(WireKind::Grpc))
        .await
        .expect("within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_over_baidu_std() {
    tokio::time::timeout(BOUND, refusals_on_every_method(WireKind::BaiduStd))
        .await
        .expect("within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_over_grpc() {
    tokio::time::timeout(BOUND, bad_paths_on_every_method(WireKind::Grpc))
        .await
        .expect("within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_over_baidu_std() {
    tokio::time::timeout(BOUND, bad_paths_on_every_method(WireKind::BaiduStd))
        .await
        .expect("within its bound");
}

/// The table names exactly what the server routes: each of its methods is found (an empty
/// request is answered, not ENOMETHOD), and a method outside it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_what_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mds = Mds::start(dir.path(), options()).await;
    let ch = brpc(&mds).await;
    let call = |service: &'static str, method: &'static str| {
        let ch = &ch;
        async move {
            ch.call(
                service,
                method,
                Bytes::new(),
                Bytes::new(),
                Duration::from_secs(10),
            )
            .await
        }
    };
    for (service, method, _) in METHODS {
        let r = call(service, method).await;
        let routed = !matches!(
            r,
            Err(curve_brpc::CallError::Remote { code, .. }) if code == curve_brpc::errors::ENOMETHOD
        );
        assert!(routed, "{service}.{method}: {r:?}");
    }
    for method in ["UpdateFileThrottleParams", "GetAllocatedSize", "ListClient"] {
        let r = call(CURVEFS, method).await;
        assert!(
            matches!(r, Err(curve_brpc::CallError::Remote { code, .. }) if code == curve_brpc::errors::ENOMETHOD),
            "{method}: {r:?}"
        );
    }
    mds.stop().await;
}
