//! The facade the Python binding holds: one method per SDK call, each validating its
//! arguments before any RPC.
//!
//! Deviations from upstream's SDK, on purpose (see also `mds` and `file`):
//! - Open returns the precise code of the MDS refusal (NotExist, AuthFail, …), not FAILED.
//! - An empty owner is AUTHFAIL for every call, Open included (upstream's Open: -1).
//! - Paths are checked locally (absolute, no trailing '/', no empty/'.'/'..' component,
//!   ≤ 4096 bytes, components ≤ 255 bytes) → PARAM_ERROR without an RPC.
//! - Close of an unknown fd is BAD_FD (upstream: FAILED); a failing CloseFile still
//!   releases the fd (upstream keeps it registered) and reports the error.
//! - kNotSupported from Rename/Unlink/ChangeOwner is retried only while it can change:
//!   when the target is a page file, the refusal is the MDS's start-up window and is
//!   retried within `mds.maxRetryMS` as upstream does; otherwise (a directory rename, a
//!   DeleteForce outside /RecycleBin) it comes back at once as NOT_SUPPORT, where
//!   upstream spends 8 s retrying an answer that cannot change.
//! - Open registers the client's endpoint with a first RefreshSession before returning,
//!   so an open file is FILE_OCCUPIED for others at once (upstream: after 1.25 s).
//! - Listdir of a file: UNKNOWN (kNotDirectory maps to -100 upstream; kept).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use curve_proto::mds::FileInfo;
use curve_proto::mds::FileType;

use crate::conf::ClientConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::file::{FdTable, OpenFile};
use crate::mds::{ClientEndpoint, MdsClient};
use crate::metacache::CopysetCache;
use crate::transport::{BaiduStdTransport, GrpcTransport, Protocol, RoutedTransport, Transport};

#[derive(Debug, Clone, Default)]
pub struct UserInfo {
    pub owner: String,
    pub password: String,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub stripe_unit: u64,
    pub stripe_count: u64,
    pub poolset: String,
}

/// Everything a Client shares with its open files and background tasks.
pub struct Core {
    pub conf: Arc<ClientConfig>,
    pub transport: Arc<dyn Transport>,
    pub mds: Arc<MdsClient>,
    pub copysets: CopysetCache,
    pub files: FdTable,
    /// Held open so the port reported to the MDS stays ours (`mds.registerToMDS`).
    _registration: Option<TcpListener>,
}

impl Core {
    /// Wall time one user IO may spend waiting and retrying (`chunkserver.maxRetryTimeMS`).
    pub fn io_budget(&self) -> Duration {
        Duration::from_millis(self.conf.chunkserver_max_retry_time_ms)
    }

    /// Largest chunk sub-request in bytes.
    pub fn split_size(&self) -> u64 {
        u64::from(self.conf.file_io_split_max_size_kb) * 1024
    }
}

#[derive(Clone)]
pub struct Client {
    core: Arc<Core>,
}

const MAX_PATH_BYTES: usize = 4096;
const RECYCLE_BIN_PREFIX: &str = "/RecycleBin/";
const MAX_NAME_BYTES: usize = 255;

fn check_path(path: &str) -> Result<()> {
    if path == "/" {
        return Ok(());
    }
    let bad = |why: &str| Err(Error::param(format!("path {path:?} {why}")));
    if !path.starts_with('/') {
        return bad("is not absolute");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("is longer than 4096 bytes");
    }
    if path.ends_with('/') {
        return bad("ends with '/'");
    }
    for name in path[1..].split('/') {
        match name {
            "" => return bad("has an empty component"),
            "." | ".." => return bad("has a '.' or '..' component"),
            n if n.len() > MAX_NAME_BYTES => return bad("has a component over 255 bytes"),
            n if n.contains('\0') => return bad("contains NUL"),
            _ => {}
        }
    }
    Ok(())
}

fn check_user(user: &UserInfo) -> Result<()> {
    if user.owner.is_empty() {
        return Err(Error::new(ErrorCode::AuthFail, "owner is empty"));
    }
    Ok(())
}

fn check(path: &str, user: &UserInfo) -> Result<()> {
    check_path(path)?;
    check_user(user)
}

impl Client {
    /// Init: parses nothing further and sends no RPC, so it succeeds with the MDS down.
    pub fn new(config: ClientConfig) -> Result<Client> {
        let connect_timeout = Duration::from_millis(config.rpc_connect_timeout_ms);
        let over = |protocol: Protocol, channels: usize| -> Arc<dyn Transport> {
            match protocol {
                Protocol::BaiduStd => Arc::new(BaiduStdTransport::new(
                    connect_timeout,
                    config.max_body_size,
                )),
                Protocol::Grpc => Arc::new(GrpcTransport::new(connect_timeout, channels)),
            }
        };
        let transport = RoutedTransport::new(
            over(config.mds_transport, 1),
            over(
                config.chunkserver_transport,
                config.channels_per_chunkserver as usize,
            ),
            config.chunkserver_transport,
        );
        Self::with_transport(config, Arc::new(transport))
    }

    /// A client over another transport (baidu_std, or a fake in tests).
    pub fn with_transport(config: ClientConfig, transport: Arc<dyn Transport>) -> Result<Client> {
        let conf = Arc::new(config);
        let (registration, endpoint) = if conf.mds_register_to_mds {
            // A port unique to this client, so the MDS tells its file records apart from
            // other clients' on the same host.
            let l = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| Error::failed(format!("cannot reserve a client port: {e}")))?;
            let port = l
                .local_addr()
                .map_err(|e| Error::failed(format!("cannot read the client port: {e}")))?
                .port();
            (
                Some(l),
                Some(ClientEndpoint {
                    ip: "127.0.0.1".to_string(),
                    port: u32::from(port),
                }),
            )
        } else {
            (None, None)
        };
        let mds = Arc::new(MdsClient::new(transport.clone(), conf.clone(), endpoint));
        let copysets = CopysetCache::new(mds.clone(), transport.clone(), &conf);
        Ok(Client {
            core: Arc::new(Core {
                conf,
                transport,
                mds,
                copysets,
                files: FdTable::default(),
                _registration: registration,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.core.conf
    }

    fn alive(&self) -> Result<()> {
        if self.core.files.is_closed() {
            return Err(Error::failed("client is shut down"));
        }
        Ok(())
    }

    /// Create: sends stripeUnit, stripeCount and poolset explicitly, as Python's does.
    pub async fn create(
        &self,
        path: &str,
        user: &UserInfo,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        let stripe = (opts.stripe_unit, opts.stripe_count, opts.poolset.clone());
        self.core
            .mds
            .create_file(
                path,
                user,
                FileType::InodePagefile,
                Some(size),
                Some(stripe),
            )
            .await
    }

    pub async fn mkdir(&self, path: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core
            .mds
            .create_file(path, user, FileType::InodeDirectory, None, None)
            .await
    }

    pub async fn stat(&self, path: &str, user: &UserInfo) -> Result<FileInfo> {
        self.alive()?;
        check(path, user)?;
        self.core.mds.get_file_info(path, user).await
    }

    pub async fn extend(&self, path: &str, user: &UserInfo, new_size: u64) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core.mds.extend_file(path, user, new_size).await
    }

    /// Unlink and Rmdir: DeleteFile(forceDelete=false), which moves page files to
    /// /RecycleBin and removes empty directories.
    pub async fn unlink(&self, path: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.while_mds_starts(path, user, || self.core.mds.delete_file(path, user, false))
            .await
    }

    /// DeleteFile(forceDelete=true): real deletion of a /RecycleBin entry.
    pub async fn delete_force(&self, path: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        if !path.starts_with(RECYCLE_BIN_PREFIX) {
            // Only /RecycleBin entries can be purged: the MDS's NOT_SUPPORT is final.
            return self.core.mds.delete_file(path, user, true).await;
        }
        self.while_mds_starts(path, user, || self.core.mds.delete_file(path, user, true))
            .await
    }

    pub async fn recover(&self, path: &str, user: &UserInfo, file_id: u64) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core.mds.recover_file(path, user, file_id).await
    }

    pub async fn rename(&self, user: &UserInfo, old: &str, new: &str) -> Result<()> {
        self.alive()?;
        check_path(old)?;
        check(new, user)?;
        self.while_mds_starts(old, user, || self.core.mds.rename_file(user, old, new))
            .await
    }

    pub async fn list_dir(&self, path: &str, user: &UserInfo) -> Result<Vec<FileInfo>> {
        self.alive()?;
        check(path, user)?;
        self.core.mds.list_dir(path, user).await
    }

    pub async fn change_owner(&self, path: &str, new_owner: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        if new_owner.is_empty() {
            return Err(Error::param("new owner is empty"));
        }
        self.while_mds_starts(path, user, || {
            self.core.mds.change_owner(path, new_owner, user)
        })
        .await
    }

    /// Runs a call that changes a page file, retrying the one kNotSupported that can
    /// change. Right after it starts, an MDS has lost its in-memory record of which files
    /// are open, so for one record lifetime it refuses to delete, rename or chown any page
    /// file. Any other kNotSupported (wrong file type) is final and returned at once.
    async fn while_mds_starts<F, Fut>(&self, target: &str, user: &UserInfo, call: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let conf = &self.core.conf;
        let deadline = Instant::now() + Duration::from_millis(conf.mds_max_retry_ms);
        let pause = Duration::from_micros(conf.mds_rpc_retry_interval_us.max(10_000));
        loop {
            match call().await {
                Err(e) if e.code == ErrorCode::NotSupport => {
                    let page_file = self
                        .core
                        .mds
                        .get_file_info(target, user)
                        .await
                        .is_ok_and(|info| info.file_type == Some(FileType::InodePagefile as i32));
                    if !page_file || Instant::now() + pause > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                }
                done => return done,
            }
        }
    }

    pub async fn cluster_id(&self) -> Result<String> {
        self.alive()?;
        self.core.mds.get_cluster_info().await
    }

    pub async fn list_poolsets(&self) -> Result<Vec<String>> {
        self.alive()?;
        self.core.mds.list_poolsets().await
    }

    /// OpenFile, then a lease refresher every leaseTime / `mds.refreshTimesPerLease`.
    /// fds start at 0 and are never reused.
    pub async fn open(&self, path: &str, user: &UserInfo) -> Result<i32> {
        self.alive()?;
        check(path, user)?;
        let (session, info) = self.core.mds.open_file(path, user).await?;
        let fd = self.core.files.next_fd()?;
        let file = Arc::new(OpenFile::new(
            fd,
            path,
            user,
            &session,
            &info,
            self.core.conf.file_max_in_flight_rpc_num as usize,
        )?);
        // Register this client with the MDS before Open returns (upstream waits one
        // refresh interval): from here on the file is FILE_OCCUPIED for every other
        // client, with no window in which another one may delete or rename it. Should the
        // file vanish in between, the refresh disables IO on the fd and says why.
        file.refresh_once(&self.core).await;
        file.start_refresher(
            Arc::downgrade(&self.core),
            self.core.conf.mds_refresh_times_per_lease,
        );
        if let Err(e) = self.core.files.insert(file.clone()) {
            file.abort_refresher();
            return Err(e);
        }
        Ok(fd)
    }

    /// Stops the refresher, sends CloseFile, waits for IO in flight, releases the fd.
    pub async fn close(&self, fd: i32) -> Result<()> {
        let file = self
            .core
            .files
            .remove(fd)
            .ok_or_else(|| Error::bad_fd(fd))?;
        file.stop_refresher().await;
        let closed = self.core.mds.close_file(&file.path, &file.user).await;
        file.shut("the fd was closed").await;
        closed
    }

    /// Fills `buf` from `offset`. Holes and never-written chunks read as zeros.
    /// Refuses a read that cannot succeed (bad fd, unaligned, past the file's end) before
    /// any buffer exists, so a caller never allocates `len` bytes for a read that fails.
    pub async fn check_read(&self, fd: i32, offset: u64, len: u64) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if len == 0 {
            return Ok(());
        }
        file.check_bounds(&self.core, offset, len).await
    }

    pub async fn read(&self, fd: i32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if buf.is_empty() {
            return Ok(());
        }
        file.read(&self.core, offset, buf).await
    }

    pub async fn write(&self, fd: i32, offset: u64, data: &[u8]) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if data.is_empty() {
            return Ok(());
        }
        file.write(&self.core, offset, data).await
    }

    /// UnInit: stops every refresher and drops every fd without CloseFile (the MDS's
    /// records expire by themselves). Later calls fail: FAILED, or BAD_FD for fds.
    pub fn shutdown(&self) {
        for file in self.core.files.close_all() {
            file.abort_refresher();
            // IO still running on another thread fails at its next retry.
            file.disable("the client was shut down");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        for ok in ["/", "/a", "/a/b", "/RecycleBin/x-1-2", "/a b/c"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        let long_name = format!("/{}", "x".repeat(256));
        let long_path = "/abc".repeat(1100);
        for bad in [
            "", "a", "a/b", "/a/", "//a", "/a//b", "/./a", "/a/..", &long_name, &long_path,
        ] {
            let e = check_path(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ParamError, "{bad}");
        }
        assert!(check_path(&format!("/{}", "x".repeat(255))).is_ok());
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send_and_client_is_sync() {
        fn assert_sync<T: Send + Sync + Clone>() {}
        assert_sync::<Client>();
        let c = Client::new(ClientConfig::default()).expect("init needs no MDS");
        let mut buf = vec![0u8; 4096];
        let user = UserInfo::default();
        assert_send(&c.read(0, 0, &mut buf));
        assert_send(&c.write(0, 0, &buf));
        assert_send(&c.open("/a", &user));
        assert_send(&c.close(0));
        assert_send(&c.list_dir("/", &user));
    }

    #[test]
    fn empty_owner_is_authfail() {
        let e = check("/a", &UserInfo::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthFail);
    }
}
