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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use curve_proto::mds::FileType;

pub use crate::auth::UserInfo;
use crate::chunk::{self, ChunkOp, NoFile};
use crate::clone::SourceReader;
use crate::conf::ClientConfig;
use crate::context::Context;
use crate::error::{Error, ErrorCode, Result};
use crate::file::OpenFile;
use crate::lock;
pub use crate::mds::CreateOptions;
use crate::metacache::ChunkAddr;
use crate::readonly::ReadOnlyFile;
use crate::stat::FileStat;
use crate::transport::Transport;

/// The SDK's client: the shared context and the fd table over it.
#[derive(Clone)]
pub struct Client {
    core: Arc<Core>,
}

struct Core {
    ctx: Arc<Context>,
    files: FdTable,
    /// Lazy clones' sources, opened read-only, shared by every file of this client.
    sources: Arc<SourceReader>,
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
        Ok(Self::over(Context::new(config)?))
    }

    /// A client over another transport (a fake in tests).
    pub fn with_transport(config: ClientConfig, transport: Arc<dyn Transport>) -> Result<Client> {
        Ok(Self::over(Context::with_transport(config, transport)?))
    }

    fn over(ctx: Context) -> Client {
        let ctx = Arc::new(ctx);
        let sources = Arc::new(SourceReader::new(ctx.clone()));
        Client {
            core: Arc::new(Core {
                ctx,
                files: FdTable::default(),
                sources,
            }),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.core.ctx.conf
    }

    /// The IO metrics of every file this client opened, and its MDS client's.
    pub fn metrics(&self) -> (crate::metrics::IoSnapshot, crate::metrics::MdsSnapshot) {
        let ctx = &self.core.ctx;
        (
            ctx.metrics.snapshot(),
            ctx.mds.metrics.snapshot(ctx.mds.current_addr()),
        )
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
        self.core
            .ctx
            .mds
            .create_file(path, user, FileType::InodePagefile, Some(size), Some(opts))
            .await
    }

    pub async fn mkdir(&self, path: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core
            .ctx
            .mds
            .create_file(path, user, FileType::InodeDirectory, None, None)
            .await
    }

    pub async fn stat(&self, path: &str, user: &UserInfo) -> Result<FileStat> {
        self.alive()?;
        check(path, user)?;
        let info = self.core.ctx.mds.get_file_info(path, user).await?;
        Ok(FileStat::from(&info))
    }

    pub async fn extend(&self, path: &str, user: &UserInfo, new_size: u64) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core.ctx.mds.extend_file(path, user, new_size).await
    }

    /// Unlink and Rmdir: DeleteFile(forceDelete=false), which moves page files to
    /// /RecycleBin and removes empty directories.
    pub async fn unlink(&self, path: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.while_mds_starts(path, user, || {
            self.core.ctx.mds.delete_file(path, user, false)
        })
        .await
    }

    /// DeleteFile(forceDelete=true): real deletion of a /RecycleBin entry.
    pub async fn delete_force(&self, path: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        if !path.starts_with(RECYCLE_BIN_PREFIX) {
            // Only /RecycleBin entries can be purged: the MDS's NOT_SUPPORT is final.
            return self.core.ctx.mds.delete_file(path, user, true).await;
        }
        self.while_mds_starts(path, user, || {
            self.core.ctx.mds.delete_file(path, user, true)
        })
        .await
    }

    pub async fn recover(&self, path: &str, user: &UserInfo, file_id: u64) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core.ctx.mds.recover_file(path, user, file_id).await
    }

    pub async fn rename(&self, user: &UserInfo, old: &str, new: &str) -> Result<()> {
        self.alive()?;
        check_path(old)?;
        check(new, user)?;
        self.while_mds_starts(old, user, || self.core.ctx.mds.rename_file(user, old, new))
            .await
    }

    pub async fn list_dir(&self, path: &str, user: &UserInfo) -> Result<Vec<FileStat>> {
        self.alive()?;
        check(path, user)?;
        let infos = self.core.ctx.mds.list_dir(path, user).await?;
        Ok(infos.iter().map(FileStat::from).collect())
    }

    pub async fn change_owner(&self, path: &str, new_owner: &str, user: &UserInfo) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        if new_owner.is_empty() {
            return Err(Error::param("new owner is empty"));
        }
        self.while_mds_starts(path, user, || {
            self.core.ctx.mds.change_owner(path, new_owner, user)
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
        let conf = &self.core.ctx.conf;
        let deadline = Instant::now() + Duration::from_millis(conf.mds_max_retry_ms);
        let pause = Duration::from_micros(conf.mds_rpc_retry_interval_us.max(10_000));
        loop {
            match call().await {
                Err(e) if e.code == ErrorCode::NotSupport => {
                    let page_file = self
                        .core
                        .ctx
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
        self.core.ctx.mds.get_cluster_info().await
    }

    pub async fn list_poolsets(&self) -> Result<Vec<String>> {
        self.alive()?;
        self.core.ctx.mds.list_poolsets().await
    }

    /// Opens a file and gives it the next fd (from 0, never reused).
    pub async fn open(&self, path: &str, user: &UserInfo) -> Result<i32> {
        let file = self.open_file(path, user).await?;
        let fd = self.core.files.next_fd()?;
        if let Err(e) = self.core.files.insert(fd, file.clone()) {
            file.abort_refresher();
            return Err(e);
        }
        Ok(fd)
    }

    /// Opens a file without an fd: the handle is the caller's (the Python `Volume`), and
    /// closing it is too. [`Client::shutdown`] does not reach it.
    pub async fn open_file(&self, path: &str, user: &UserInfo) -> Result<Arc<OpenFile>> {
        self.alive()?;
        check(path, user)?;
        OpenFile::open(self.core.ctx.clone(), path, user, self.core.sources.clone()).await
    }

    /// Upstream's Open4ReadOnly: GetFileInfo only (no session, no lease, nothing to close);
    /// see [`ReadOnlyFile`]. With `disable_stripe` a striped file is read in chunk order.
    pub async fn open_readonly(
        &self,
        path: &str,
        user: &UserInfo,
        disable_stripe: bool,
    ) -> Result<Arc<ReadOnlyFile>> {
        self.alive()?;
        check(path, user)?;
        ReadOnlyFile::open(self.core.ctx.clone(), path, user, disable_stripe).await
    }

    /// Sends one chunk operation that belongs to no open file (CreateCloneChunk and
    /// RecoverChunk of a clone or a flatten, ReadChunkSnapshot of a snapshot's dump,
    /// DeleteChunkSnapshotOrCorrectSn of its clean) to the leader of `addr`'s copyset, with the
    /// retries of any chunk IO, until `deadline`. Reads answer their data (`None`: never
    /// written); the rest answer `None`. Writes need an open file and are refused here.
    pub async fn send_chunk_op(
        &self,
        addr: ChunkAddr,
        offset: u32,
        size: u32,
        op: ChunkOp,
        deadline: Instant,
    ) -> Result<Option<Bytes>> {
        self.alive()?;
        if matches!(op, ChunkOp::Write(_)) {
            return Err(Error::param(
                "WriteChunk needs an open file (its sn, id and epoch)",
            ));
        }
        chunk::send(
            &self.core.ctx,
            &NoFile,
            addr,
            offset,
            size,
            op,
            None,
            deadline,
        )
        .await
    }

    /// GetChunkInfo of the chunk at `addr` (see [`chunk::chunk_info`]): its `[sn]`, or
    /// `[sn, snapshot sn]`, or nothing for a chunk never written.
    pub async fn chunk_info(&self, addr: ChunkAddr, deadline: Instant) -> Result<Vec<u64>> {
        self.alive()?;
        chunk::chunk_info(&self.core.ctx, addr, deadline).await
    }

    /// CreateCloneFile: see [`crate::mds::MdsClient::create_clone_file`].
    #[allow(clippy::too_many_arguments)]
    pub async fn create_clone_file(
        &self,
        path: &str,
        user: &UserInfo,
        length: u64,
        seq: u64,
        chunk_size: u32,
        clone_source: &str,
        layout: &CreateOptions,
    ) -> Result<FileStat> {
        self.alive()?;
        check(path, user)?;
        if !clone_source.is_empty() {
            check_path(clone_source)?;
        }
        let info = self
            .core
            .ctx
            .mds
            .create_clone_file(path, user, length, seq, chunk_size, clone_source, layout)
            .await?;
        Ok(FileStat::from(&info))
    }

    /// SetCloneFileStatus: see [`crate::mds::MdsClient::set_clone_file_status`].
    pub async fn set_clone_file_status(
        &self,
        path: &str,
        user: &UserInfo,
        file_id: Option<u64>,
        status: curve_proto::mds::FileStatus,
    ) -> Result<()> {
        self.alive()?;
        check(path, user)?;
        self.core
            .ctx
            .mds
            .set_clone_file_status(path, user, file_id, status)
            .await
    }

    /// The MDS client, for the calls that have no SDK facade (CreateCloneFile,
    /// SetCloneFileStatus, …).
    pub fn mds(&self) -> &crate::mds::MdsClient {
        &self.core.ctx.mds
    }

    /// Releases the fd, then closes its file (see [`OpenFile::close`]).
    pub async fn close(&self, fd: i32) -> Result<()> {
        let file = self
            .core
            .files
            .remove(fd)
            .ok_or_else(|| Error::bad_fd(fd))?;
        file.close().await
    }

    /// The open file behind an fd.
    pub fn file(&self, fd: i32) -> Result<Arc<OpenFile>> {
        self.core.files.get(fd)
    }

    /// Fills `buf` from `offset`. Holes and never-written chunks read as zeros.
    /// Refuses a read that cannot succeed (bad fd, unaligned, past the file's end) before
    /// any buffer exists, so a caller never allocates `len` bytes for a read that fails.
    pub async fn check_read(&self, fd: i32, offset: u64, len: u64) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if len == 0 {
            return Ok(());
        }
        file.check_bounds(offset, len).await
    }

    pub async fn read(&self, fd: i32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if buf.is_empty() {
            return Ok(());
        }
        file.read(offset, buf).await
    }

    /// [`Client::read`] into memory that need not be initialised; `Ok` means every byte
    /// of `buf` was written (see [`OpenFile::read_uninit`]).
    pub async fn read_uninit(
        &self,
        fd: i32,
        offset: u64,
        buf: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if buf.is_empty() {
            return Ok(());
        }
        file.read_uninit(offset, buf).await
    }

    /// Writes `data` at `offset`: copied once into a buffer the sub-requests share.
    pub async fn write(&self, fd: i32, offset: u64, data: &[u8]) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if data.is_empty() {
            return Ok(());
        }
        file.write(offset, Bytes::copy_from_slice(data)).await
    }

    /// Writes a buffer the caller hands over: not copied at all.
    pub async fn write_bytes(&self, fd: i32, offset: u64, data: Bytes) -> Result<()> {
        let file = self.core.files.get(fd)?;
        if data.is_empty() {
            return Ok(());
        }
        file.write(offset, data).await
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

/// fds from 0, increasing, never reused.
#[derive(Default)]
struct FdTable {
    files: Mutex<HashMap<i32, Arc<OpenFile>>>,
    next: AtomicI32,
    closed: AtomicBool,
}

impl FdTable {
    /// The next fd; an error once 2^31 fds were handed out, because a wrapped fd would
    /// be negative (an error code to the SDK's caller, who could never close it).
    fn next_fd(&self) -> Result<i32> {
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| Error::failed("this client has handed out every fd"))
    }

    /// Registers an open file under `fd`; refused after shutdown.
    fn insert(&self, fd: i32, file: Arc<OpenFile>) -> Result<()> {
        let mut files = lock(&self.files);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::failed("client is shut down"));
        }
        files.insert(fd, file);
        Ok(())
    }

    fn get(&self, fd: i32) -> Result<Arc<OpenFile>> {
        lock(&self.files)
            .get(&fd)
            .cloned()
            .ok_or_else(|| Error::bad_fd(fd))
    }

    fn remove(&self, fd: i32) -> Option<Arc<OpenFile>> {
        lock(&self.files).remove(&fd)
    }

    /// Empties the table for good and returns what was open.
    fn close_all(&self) -> Vec<Arc<OpenFile>> {
        let mut files = lock(&self.files);
        self.closed.store(true, Ordering::Release);
        files.drain().map(|(_, f)| f).collect()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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

    #[test]
    fn fds_never_wrap_to_negative() {
        let t = FdTable::default();
        assert_eq!(t.next_fd().unwrap(), 0);
        assert_eq!(t.next_fd().unwrap(), 1);
        t.next.store(i32::MAX - 1, Ordering::Relaxed);
        assert_eq!(t.next_fd().unwrap(), i32::MAX - 1);
        assert_eq!(t.next_fd().unwrap_err().code, ErrorCode::Failed);
        assert_eq!(t.next_fd().unwrap_err().code, ErrorCode::Failed);
    }
}
