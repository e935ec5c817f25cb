//! Starts a real MDS on 127.0.0.1:0 over a temp dir and builds authenticated requests, so the
//! integration tests speak to it exactly as a Curve client would: through tonic clients.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use curve_mds::{
    ChunkServerEntry, CopysetEntry, MdsConfig, MdsOptions, TopologyConfig, serve_with_listener,
};
use curve_proto::mds::curve_fs_service_client::CurveFsServiceClient;
use curve_proto::mds::topology::topology_service_client::TopologyServiceClient;
use curve_proto::mds::*;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const GIB: u64 = 1 << 30;
pub const ROOT: &str = "root";
pub const PASSWORD: &str = "root_password";
/// Test file records expire fast so tests need not wait upstream's 5 s.
pub const RECORD_EXPIRE_US: u64 = 300_000;
/// Every call a test makes has this deadline (tonic's per-request timeout), so a server
/// that hangs fails the test with `DeadlineExceeded`/`Cancelled` instead of hanging CI;
/// far above any answer's time on a loaded machine.
pub const RPC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub fn topology() -> TopologyConfig {
    TopologyConfig {
        poolset: "default".into(),
        logical_pool_id: 1,
        pool_capacity: 100 * GIB,
        chunkservers: (1..=3)
            .map(|id| ChunkServerEntry {
                id,
                host: "127.0.0.1".into(),
                port: 8200 + id as u16,
                external_ip: None,
            })
            .collect(),
        copysets: (1..=4)
            .map(|id| CopysetEntry {
                id,
                members: vec![1 + id % 3, 1 + (id + 1) % 3, 1 + (id + 2) % 3],
            })
            .collect(),
    }
}

pub fn options() -> MdsOptions {
    MdsOptions {
        file_record_expire_us: RECORD_EXPIRE_US,
        snapshot_frozen_us: 0,
        ..MdsOptions::default()
    }
}

pub struct Mds {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), curve_mds::Error>>,
}

impl Mds {
    pub async fn start(dir: &Path, options: MdsOptions) -> Mds {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = MdsConfig {
            listen: addr,
            data_dir: dir.to_owned(),
            options,
            topology: topology(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_listener(config, listener, async move {
            let _ = rx.await;
        }));
        Mds {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Starts, then waits out the young-MDS window in which DeleteFile is refused.
    pub async fn start_settled(dir: &Path) -> Mds {
        let mds = Mds::start(dir, options()).await;
        // The window starts when the store is open, which the first answer proves.
        let (status, _) = mds.fs().await.stat("/", ROOT).await;
        assert_eq!(status, StatusCode::KOk);
        tokio::time::sleep(std::time::Duration::from_micros(RECORD_EXPIRE_US + 50_000)).await;
        mds
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }

    async fn channel(&self) -> Channel {
        let url = format!("http://{}", self.addr);
        for _ in 0..100 {
            let endpoint = Channel::from_shared(url.clone())
                .unwrap()
                .timeout(RPC_DEADLINE)
                .connect_timeout(RPC_DEADLINE);
            if let Ok(ch) = endpoint.connect().await {
                return ch;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("MDS at {url} never accepted");
    }

    pub async fn fs(&self) -> Fs {
        Fs(CurveFsServiceClient::new(self.channel().await))
    }

    pub async fn topo(&self) -> TopologyServiceClient<Channel> {
        TopologyServiceClient::new(self.channel().await)
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// (owner, signature, date) as the C++ client fills them.
pub fn cred(owner: &str) -> (String, Option<String>, u64) {
    let date = now_us();
    let signature = if owner == ROOT {
        curve_mds::sign(PASSWORD, date, owner)
    } else {
        String::new()
    };
    (owner.to_owned(), Some(signature), date)
}

pub fn code(c: i32) -> StatusCode {
    StatusCode::try_from(c).unwrap()
}

/// A namespace client with one helper per call, each returning the status (and payload).
pub struct Fs(pub CurveFsServiceClient<Channel>);

impl Fs {
    pub async fn create(&mut self, path: &str, owner: &str, length: u64) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        self.create_req(CreateFileRequest {
            file_name: path.into(),
            owner,
            file_type: FileType::InodePagefile as i32,
            file_length: Some(length),
            signature,
            date,
            stripe_unit: Some(0),
            stripe_count: Some(0),
            poolset: Some(String::new()),
        })
        .await
    }

    pub async fn create_req(&mut self, req: CreateFileRequest) -> StatusCode {
        code(
            self.0
                .create_file(req)
                .await
                .unwrap()
                .into_inner()
                .status_code,
        )
    }

    pub async fn mkdir(&mut self, path: &str, owner: &str) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        self.create_req(CreateFileRequest {
            file_name: path.into(),
            owner,
            file_type: FileType::InodeDirectory as i32,
            file_length: None,
            signature,
            date,
            stripe_unit: None,
            stripe_count: None,
            poolset: None,
        })
        .await
    }

    pub async fn stat(&mut self, path: &str, owner: &str) -> (StatusCode, Option<FileInfo>) {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .get_file_info(GetFileInfoRequest {
                file_name: path.into(),
                owner,
                signature,
                date,
            })
            .await
            .unwrap()
            .into_inner();
        (code(r.status_code), r.file_info)
    }

    pub async fn extend(&mut self, path: &str, owner: &str, new_size: u64) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .extend_file(ExtendFileRequest {
                file_name: path.into(),
                owner,
                new_size,
                signature,
                date,
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn delete(
        &mut self,
        path: &str,
        owner: &str,
        file_id: Option<u64>,
        force: bool,
    ) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .delete_file(DeleteFileRequest {
                file_name: path.into(),
                owner,
                signature,
                date,
                file_id,
                force_delete: Some(force),
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn unlink(&mut self, path: &str, owner: &str) -> StatusCode {
        self.delete(path, owner, None, false).await
    }

    pub async fn recover(&mut self, path: &str, owner: &str, file_id: u64) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .recover_file(RecoverFileRequest {
                file_name: path.into(),
                owner,
                signature,
                date,
                file_id: Some(file_id),
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn rename(&mut self, old: &str, new: &str, owner: &str) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .rename_file(RenameFileRequest {
                old_file_name: old.into(),
                new_file_name: new.into(),
                owner,
                signature,
                old_file_id: None,
                new_file_id: None,
                date,
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn list(&mut self, path: &str, owner: &str) -> (StatusCode, Vec<FileInfo>) {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .list_dir(ListDirRequest {
                file_name: path.into(),
                owner,
                signature,
                date,
            })
            .await
            .unwrap()
            .into_inner();
        (code(r.status_code), r.file_info)
    }

    pub async fn names(&mut self, path: &str, owner: &str) -> Vec<String> {
        let (status, infos) = self.list(path, owner).await;
        assert_eq!(status, StatusCode::KOk, "ListDir {path}");
        infos.into_iter().map(|f| f.file_name.unwrap()).collect()
    }

    pub async fn chown(&mut self, path: &str, new_owner: &str, caller: &str) -> StatusCode {
        let (root_owner, signature, date) = cred(caller);
        let r = self
            .0
            .change_owner(ChangeOwnerRequest {
                file_name: path.into(),
                new_owner: new_owner.into(),
                root_owner,
                signature: signature.unwrap(),
                date,
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn open(&mut self, path: &str, owner: &str) -> OpenFileResponse {
        let (owner, signature, date) = cred(owner);
        self.0
            .open_file(OpenFileRequest {
                file_name: path.into(),
                owner,
                signature,
                date,
                client_version: Some("test".into()),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn refresh(
        &mut self,
        path: &str,
        owner: &str,
        endpoint: Option<(&str, u32)>,
    ) -> ReFreshSessionResponse {
        let (owner, signature, date) = cred(owner);
        self.0
            .refresh_session(ReFreshSessionRequest {
                file_name: path.into(),
                session_id: "sid".into(),
                owner,
                date,
                signature,
                client_version: Some("test".into()),
                client_ip: endpoint.map(|e| e.0.to_owned()),
                client_port: endpoint.map(|e| e.1),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn close(
        &mut self,
        path: &str,
        owner: &str,
        endpoint: Option<(&str, u32)>,
    ) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .close_file(CloseFileRequest {
                file_name: path.into(),
                session_id: String::new(),
                owner,
                signature,
                date,
                client_ip: endpoint.map(|e| e.0.to_owned()),
                client_port: endpoint.map(|e| e.1),
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn segment(
        &mut self,
        path: &str,
        owner: &str,
        offset: u64,
        allocate: bool,
        epoch: Option<u64>,
    ) -> (StatusCode, Option<PageFileSegment>) {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .get_or_allocate_segment(GetOrAllocateSegmentRequest {
                file_name: path.into(),
                owner,
                offset,
                allocate_if_not_exist: allocate,
                seq_num: None,
                signature,
                date,
                epoch,
            })
            .await
            .unwrap()
            .into_inner();
        (code(r.status_code), r.page_file_segment)
    }

    pub async fn deallocate(&mut self, path: &str, owner: &str, offset: u64) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .de_allocate_segment(DeAllocateSegmentRequest {
                file_name: path.into(),
                owner,
                offset,
                signature,
                date,
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    /// CreateCloneFile of `path` as a lazy clone of `source` (`length` bytes, 16 MiB chunks).
    pub async fn create_clone(
        &mut self,
        path: &str,
        source: &str,
        owner: &str,
        length: u64,
    ) -> (StatusCode, Option<FileInfo>) {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .create_clone_file(CreateCloneFileRequest {
                file_name: path.into(),
                file_type: FileType::InodePagefile as i32,
                file_length: length,
                seq: 1,
                chunksize: 16 << 20,
                owner,
                signature,
                date,
                clone_source: source.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (code(r.status_code), r.file_info)
    }

    pub async fn set_clone_status(
        &mut self,
        path: &str,
        owner: &str,
        file_id: Option<u64>,
        status: FileStatus,
    ) -> StatusCode {
        let (owner, signature, date) = cred(owner);
        let r = self
            .0
            .set_clone_file_status(SetCloneFileStatusRequest {
                file_name: path.into(),
                file_id,
                file_status: status as i32,
                owner,
                signature,
                date,
            })
            .await
            .unwrap()
            .into_inner();
        code(r.status_code)
    }

    pub async fn bump_epoch(&mut self, path: &str, owner: &str) -> IncreaseFileEpochResponse {
        let (owner, signature, date) = cred(owner);
        self.0
            .increase_file_epoch(IncreaseFileEpochRequest {
                file_name: path.into(),
                owner,
                signature,
                date,
            })
            .await
            .unwrap()
            .into_inner()
    }
}

/// The fuzz tests' source of cases: deterministic by default (CI draws the same 200 cases
/// every run), `CURVEFS_FUZZ_SEED=<u64>` replays a run, `CURVEFS_FUZZ_SEED=random` draws a
/// fresh one, and `CURVEFS_FUZZ_CASES=<n>` runs longer. The seed is printed (shown by
/// cargo test with a failure), so any run can be replayed.
pub fn fuzz_runner() -> (proptest::test_runner::TestRunner, usize) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    const DEFAULT_SEED: u64 = 20;
    let seed = match std::env::var("CURVEFS_FUZZ_SEED").as_deref() {
        Err(_) | Ok("") => DEFAULT_SEED,
        Ok("random") => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CURVEFS_FUZZ_SEED={s:?}: a u64 or \"random\"")),
    };
    let cases = match std::env::var("CURVEFS_FUZZ_CASES").as_deref() {
        Err(_) | Ok("") => 200,
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CURVEFS_FUZZ_CASES={s:?}: a count")),
    };
    println!("fuzz: CURVEFS_FUZZ_SEED={seed} CURVEFS_FUZZ_CASES={cases}");
    let bytes: Vec<u8> = std::iter::repeat_n(seed.to_le_bytes(), 4)
        .flatten()
        .collect();
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    (TestRunner::new_with_rng(Config::default(), rng), cases)
}
