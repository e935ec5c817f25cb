//! The clone task of a lazy clone of a volume, as upstream's `CloneCoreImpl` runs it for
//! `Action=Clone&Lazy=true` with a volume as `Source`:
//!
//! - stage 1 ([`CloneTasks::lazy_clone`]): the source becomes BeingCloned; CreateCloneFile
//!   of a temporary file under `/clone` naming the source; CompleteCloneMeta
//!   (CloneMetaInstalled); ChangeOwner to the user; RenameCloneFile onto the destination.
//!   No segment and no chunk is made: the clone reads the source until written.
//! - stage 2 ([`CloneTasks::flatten`]): CreateCloneMeta (the destination's segments where
//!   the source has some), CreateCloneChunk for each of their chunks (location
//!   `"<source>:<offset>@cs"`), RecoverChunk over each chunk in `cloneChunkSplitSize`
//!   parts, then CompleteCloneFile (Cloned).
//!
//! and for a clone of a snapshot (`Source` a snapshot's UUID):
//!
//! - stage 1 ([`CloneTasks::lazy_clone_snapshot_through`]): CreateCloneFile of the
//!   temporary file (no clone source); CreateCloneMeta (its segments where the snapshot
//!   has chunks); CreateCloneChunk for each of the snapshot's chunks (location
//!   `"<object key>@s3"`: the chunkservers read the snapshot data store); then
//!   CompleteCloneMeta, ChangeOwner and RenameCloneFile as above. A recover
//!   ([`CloneTasks::lazy_recover_through`]) is the same onto the snapshot's own volume,
//!   replacing it.
//! - stage 2 ([`CloneTasks::flatten_snapshot`]): RecoverChunk over each of those chunks,
//!   then CompleteCloneFile.
//!
//! Every call is made as the cluster's root user, as the service does (`mdsRootUser_`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::{Duration, Instant};

use curve_client::chunk::ChunkOp;
use curve_client::location::{curve_location, s3_location};
use curve_client::metacache::{ChunkAddr, SegmentInfo};
use curve_client::{Client, CreateOptions, Error, ErrorCode, UserInfo};
use curve_proto::mds::{FileInfo, FileStatus};
use futures::{FutureExt, StreamExt};

use crate::datastore::ChunkIndex;
use crate::snapshots::Snapshot;
use crate::tasks::{FENCED, Fence};

/// Upstream's `server.*` settings the clone task uses (`conf/snapshot_clone_server.conf`).
#[derive(Debug, Clone)]
pub struct CloneOptions {
    /// `server.cloneTempDir`: where a clone is made before it is renamed into place.
    pub temp_dir: String,
    /// `server.cloneChunkSplitSize`: the part of a chunk one RecoverChunk fills.
    pub chunk_split_size: u64,
    /// `server.createCloneChunkConcurrency`.
    pub create_clone_chunk_concurrency: usize,
    /// `server.recoverChunkConcurrency`: chunks being recovered at once.
    pub recover_chunk_concurrency: usize,
    /// The deadline of each chunk call, its retries included.
    pub chunk_op_timeout: Duration,
}

impl Default for CloneOptions {
    fn default() -> Self {
        Self {
            temp_dir: "/clone".into(),
            chunk_split_size: 1 << 20,
            create_clone_chunk_concurrency: 64,
            recover_chunk_concurrency: 64,
            chunk_op_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a clone task failed, with the snapshot/clone service's error code
/// ([`crate::codes`]).
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// -8: the source (or the clone to flatten) does not exist.
    #[error("{0} does not exist")]
    FileNotExist(String),
    /// -9: the source cannot be cloned, or the destination is not a lazy clone.
    #[error("{path} has status {status}: {why}")]
    FileStatusInvalid {
        path: String,
        status: String,
        why: &'static str,
    },
    /// -19: the destination exists.
    #[error("{0} exists")]
    FileExist(String),
    /// -1: a call failed.
    #[error("{step}: {source}")]
    Internal {
        step: &'static str,
        #[source]
        source: Error,
    },
}

impl CloneError {
    /// The service's error code.
    pub fn service_code(&self) -> i32 {
        match self {
            CloneError::FileNotExist(_) => -8,
            CloneError::FileStatusInvalid { .. } => -9,
            CloneError::FileExist(_) => -19,
            CloneError::Internal { .. } => -1,
        }
    }

    /// As a client error, with the SDK code nearest to the service's: NOTEXIST, EXISTS,
    /// STATUS_NOT_MATCH, or the failed call's own.
    pub fn into_client_error(self) -> Error {
        let code = match &self {
            CloneError::FileNotExist(_) => ErrorCode::NotExist,
            CloneError::FileExist(_) => ErrorCode::Exists,
            CloneError::FileStatusInvalid { .. } => ErrorCode::StatusNotMatch,
            CloneError::Internal { source, .. } => {
                let mut e = Error::new(source.code, self.to_string());
                e.cause = source.cause;
                return e;
            }
        };
        Error::new(code, self.to_string())
    }

    /// The client error underneath, if a call failed.
    pub fn client_error(&self) -> Option<&Error> {
        match self {
            CloneError::Internal { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn failed(step: &'static str) -> impl FnOnce(Error) -> CloneError {
    move |source| CloneError::Internal { step, source }
}

fn status_of(info: &FileInfo) -> FileStatus {
    info.file_status
        .and_then(|s| FileStatus::try_from(s).ok())
        .unwrap_or(FileStatus::KFileCreated)
}

fn status_name(status: FileStatus) -> String {
    status.as_str_name().trim_start_matches("kFile").to_string()
}

/// The clone tasks of one cluster, run through `client` as `root`.
pub struct CloneTasks<'c> {
    client: &'c Client,
    root: UserInfo,
    options: CloneOptions,
    fence: Fence,
}

impl<'c> CloneTasks<'c> {
    pub fn new(client: &'c Client, root: UserInfo, options: CloneOptions) -> Self {
        Self {
            client,
            root,
            options,
            fence: Fence::default(),
        }
    }

    /// Takes each step that changes the cluster only while `fence` is open: a service
    /// instance whose lease ran out (stopped past it) must not act after another took
    /// over its tasks.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    fn act(&self) -> Result<(), CloneError> {
        if self.fence.is_open() {
            Ok(())
        } else {
            Err(failed("the service's lease")(Error::new(
                ErrorCode::Failed,
                FENCED,
            )))
        }
    }

    async fn file_info(&self, path: &str) -> Result<Option<FileInfo>, Error> {
        match self.client.mds().get_file_info(path, &self.root).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.code == ErrorCode::NotExist => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stage 1 of a lazy clone of the volume `source` at `dest`, owned by `owner` (by
    /// default the source's owner): when it returns, `dest` exists with status
    /// CloneMetaInstalled and reads as `source`.
    pub async fn lazy_clone(
        &self,
        source: &str,
        dest: &str,
        owner: Option<&str>,
        poolset: Option<&str>,
    ) -> Result<FileInfo, CloneError> {
        let temp = format!(
            "{}/{}",
            self.options.temp_dir.trim_end_matches('/'),
            uuid::Uuid::new_v4()
        );
        self.lazy_clone_through(&temp, source, dest, owner, poolset)
            .await
    }

    /// [`Self::lazy_clone`], made as the temporary file `temp` (in
    /// [`CloneOptions::temp_dir`]; upstream names it after the task) before it is renamed
    /// onto `dest`.
    pub async fn lazy_clone_through(
        &self,
        temp: &str,
        source: &str,
        dest: &str,
        owner: Option<&str>,
        poolset: Option<&str>,
    ) -> Result<FileInfo, CloneError> {
        let src = self
            .file_info(source)
            .await
            .map_err(failed("GetFileInfo of the source"))?
            .ok_or_else(|| CloneError::FileNotExist(source.into()))?;
        let status = status_of(&src);
        if !matches!(
            status,
            FileStatus::KFileCreated | FileStatus::KFileCloned | FileStatus::KFileBeingCloned
        ) {
            return Err(CloneError::FileStatusInvalid {
                path: source.into(),
                status: status_name(status),
                why: "a clone source must be Created, Cloned or BeingCloned",
            });
        }
        if self
            .file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the destination"))?
            .is_some()
        {
            return Err(CloneError::FileExist(dest.into()));
        }
        // Upstream ignores a failure here: every outcome of it is acceptable, and the
        // MDS refuses the clone's later steps if the source is gone.
        self.act()?;
        if let Err(e) = self
            .client
            .set_clone_file_status(source, &self.root, None, FileStatus::KFileBeingCloned)
            .await
        {
            tracing::warn!(source, "SetCloneFileStatus(BeingCloned) failed: {e}");
        }
        self.act()?;
        match self.client.mkdir(&self.options.temp_dir, &self.root).await {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::Exists => {}
            Err(e) => return Err(failed("Mkdir of the clone folder")(e)),
        }
        let layout = CreateOptions {
            stripe_unit: src.stripe_unit.unwrap_or(0),
            stripe_count: src.stripe_count.unwrap_or(0),
            poolset: poolset
                .map(str::to_owned)
                .or_else(|| src.poolset.clone())
                .unwrap_or_default(),
        };
        self.act()?;
        let made = self
            .client
            .create_clone_file(
                temp,
                &self.root,
                src.length.unwrap_or(0),
                1,
                src.chunk_size.unwrap_or(0),
                source,
                &layout,
            )
            .await
            .map_err(failed("CreateCloneFile"))?;
        self.act()?;
        self.client
            .set_clone_file_status(
                temp,
                &self.root,
                Some(made.id),
                FileStatus::KFileCloneMetaInstalled,
            )
            .await
            .map_err(failed("CompleteCloneMeta"))?;
        let owner = owner.or(src.owner.as_deref()).unwrap_or(&self.root.owner);
        self.act()?;
        self.client
            .change_owner(temp, owner, &self.root)
            .await
            .map_err(failed("ChangeOwner"))?;
        self.act()?;
        self.client
            .rename(&self.root, temp, dest)
            .await
            .map_err(failed("RenameCloneFile"))?;
        self.file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the clone"))?
            .ok_or_else(|| CloneError::FileNotExist(dest.into()))
    }

    /// Stage 2 of a lazy clone: copies every chunk of the source that `dest` still reads
    /// from into `dest`, then marks it Cloned. A clone that is already Cloned succeeds at
    /// once. IO to `dest` may go on meanwhile: RecoverChunk fills only pages no write has
    /// touched.
    pub async fn flatten(&self, dest: &str) -> Result<(), CloneError> {
        let info = self
            .file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the clone"))?
            .ok_or_else(|| CloneError::FileNotExist(dest.into()))?;
        let status = status_of(&info);
        if status == FileStatus::KFileCloned {
            return Ok(());
        }
        let source = info.clone_source.clone().unwrap_or_default();
        if status != FileStatus::KFileCloneMetaInstalled || source.is_empty() {
            return Err(CloneError::FileStatusInvalid {
                path: dest.into(),
                status: status_name(status),
                why: "only a lazy clone of a volume whose metadata is installed is flattened",
            });
        }
        let src = self
            .file_info(&source)
            .await
            .map_err(failed("GetFileInfo of the source"))?
            .ok_or_else(|| CloneError::FileNotExist(source.clone()))?;
        let mds = self.client.mds();
        let segment_size = u64::from(src.segment_size.unwrap_or(0));
        let chunk_size = u64::from(info.chunk_size.unwrap_or(0));
        if segment_size == 0 || chunk_size == 0 {
            return Err(failed("GetFileInfo of the source")(Error::new(
                ErrorCode::Failed,
                format!(
                    "{source} has segment size {segment_size} and {dest} chunk size {chunk_size}"
                ),
            )));
        }
        // CreateCloneMeta: the clone's segments where the source has some.
        let epoch = info.epoch.unwrap_or(0);
        let mut chunks = Vec::new();
        let mut offset = 0;
        while offset < src.length.unwrap_or(0) {
            let allocated = mds
                .get_or_allocate_segment(&source, &self.root, offset, false, 0)
                .await
                .map_err(failed("GetOrAllocateSegment of the source"))?;
            if allocated.is_some() {
                let seg = mds
                    .get_or_allocate_segment(dest, &self.root, offset, true, epoch)
                    .await
                    .map_err(failed("CreateCloneMeta"))?
                    .ok_or_else(|| {
                        failed("CreateCloneMeta")(Error::new(
                            ErrorCode::Failed,
                            format!("the MDS allocated no segment at {offset} of {dest}"),
                        ))
                    })?;
                let seg = SegmentInfo::from_proto(&seg);
                for i in 0..segment_size / chunk_size {
                    let addr = seg.chunk(i).ok_or_else(|| {
                        failed("CreateCloneMeta")(Error::new(
                            ErrorCode::Failed,
                            format!("segment {offset} of {dest} has no chunk {i}"),
                        ))
                    })?;
                    chunks.push((addr, offset + i * chunk_size));
                }
            }
            offset += segment_size;
        }
        let located = chunks
            .iter()
            .map(|&(addr, at)| (addr, curve_location(&source, at)))
            .collect();
        self.create_clone_chunks(located, chunk_size).await?;
        let addrs: Vec<ChunkAddr> = chunks.iter().map(|&(addr, _)| addr).collect();
        self.recover_chunks(&addrs, chunk_size).await?;
        // CompleteCloneFile.
        self.act()?;
        self.client
            .set_clone_file_status(dest, &self.root, info.id, FileStatus::KFileCloned)
            .await
            .map_err(failed("CompleteCloneFile"))?;
        Ok(())
    }

    /// CreateCloneChunk of each chunk at its location, as a clone's (sn 1, correctedSn
    /// 0). A chunk that exists already (written since the clone was made, or by an
    /// earlier attempt) is left as it is, as upstream's task does.
    async fn create_clone_chunks(
        &self,
        chunks: Vec<(ChunkAddr, String)>,
        chunk_size: u64,
    ) -> Result<(), CloneError> {
        let chunks = chunks
            .into_iter()
            .map(|(addr, location)| (addr, location, 1))
            .collect();
        self.create_clone_chunks_at(chunks, 0, chunk_size).await
    }

    /// CreateCloneChunk of each chunk at its location with its sn, and `corrected_sn`
    /// (a recover's new seqNum: writes at it do not copy the chunk aside).
    async fn create_clone_chunks_at(
        &self,
        chunks: Vec<(ChunkAddr, String, u64)>,
        corrected_sn: u64,
        chunk_size: u64,
    ) -> Result<(), CloneError> {
        let size = u32::try_from(chunk_size).map_err(|_| {
            failed("CreateCloneChunk")(Error::new(ErrorCode::Failed, "chunk size over 4 GiB"))
        })?;
        let timeout = self.options.chunk_op_timeout;
        let create = chunks.into_iter().map(|(addr, location, sn)| {
            async move {
                let op = ChunkOp::CreateClone {
                    location,
                    sn,
                    corrected_sn,
                };
                let deadline = Instant::now() + timeout;
                self.act()?;
                match self.client.send_chunk_op(addr, 0, size, op, deadline).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == ErrorCode::Exists => Ok(()),
                    Err(e) => Err(failed("CreateCloneChunk")(e)),
                }
            }
            .boxed()
        });
        run_bounded(create, self.options.create_clone_chunk_concurrency).await
    }

    /// RecoverChunk over each chunk, part by part within a chunk, chunks side by side.
    async fn recover_chunks(
        &self,
        chunks: &[ChunkAddr],
        chunk_size: u64,
    ) -> Result<(), CloneError> {
        let timeout = self.options.chunk_op_timeout;
        let part = self.options.chunk_split_size.clamp(1, chunk_size.max(1));
        let recover = chunks.iter().copied().map(|addr| {
            async move {
                let mut at = 0;
                while at < chunk_size {
                    let len = part.min(chunk_size - at);
                    let deadline = Instant::now() + timeout;
                    // Both fit in u32: they are inside one chunk, whose size does.
                    let (off, len32) = (at as u32, len as u32);
                    self.act()?;
                    self.client
                        .send_chunk_op(addr, off, len32, ChunkOp::Recover, deadline)
                        .await
                        .map_err(failed("RecoverChunk"))?;
                    at += len;
                }
                Ok(())
            }
            .boxed()
        });
        run_bounded(recover, self.options.recover_chunk_concurrency).await
    }

    /// Where each chunk of `index` is in `path` (its segments allocated if `allocate`,
    /// with the file's `epoch`): upstream's CreateCloneMeta for a clone of a snapshot.
    async fn chunks_of(
        &self,
        path: &str,
        index: &ChunkIndex,
        segment_size: u64,
        chunk_size: u64,
        allocate: bool,
        epoch: u64,
    ) -> Result<Vec<(u32, ChunkAddr)>, CloneError> {
        let step = if allocate {
            "CreateCloneMeta"
        } else {
            "GetOrAllocateSegment of the clone"
        };
        let bad = |what: String| failed(step)(Error::new(ErrorCode::Failed, what));
        if segment_size == 0 || chunk_size == 0 || !segment_size.is_multiple_of(chunk_size) {
            return Err(bad(format!(
                "segment size {segment_size} and chunk size {chunk_size}"
            )));
        }
        let per_segment = segment_size / chunk_size;
        let mut segments: BTreeMap<u64, SegmentInfo> = BTreeMap::new();
        let mut out = Vec::new();
        for &chunk in index.chunks.keys() {
            let at = u64::from(chunk);
            let segment = at / per_segment;
            let seg = match segments.entry(segment) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(slot) => {
                    let offset = segment * segment_size;
                    let seg = self
                        .client
                        .mds()
                        .get_or_allocate_segment(path, &self.root, offset, allocate, epoch)
                        .await
                        .map_err(failed(step))?
                        .ok_or_else(|| bad(format!("no segment at {offset} of {path}")))?;
                    slot.insert(SegmentInfo::from_proto(&seg))
                }
            };
            let addr = seg
                .chunk(at % per_segment)
                .ok_or_else(|| bad(format!("segment {segment} of {path} has no chunk {at}")))?;
            out.push((chunk, addr));
        }
        Ok(out)
    }

    /// Stage 1 of a lazy clone of the snapshot `snap` (whose chunk index is `index`) at
    /// `dest`, owned by `owner`, made as `temp` and renamed: when it returns, `dest` exists
    /// with status CloneMetaInstalled, every chunk the snapshot has data in a clone chunk
    /// whose unwritten pages read from the snapshot's object (`<key>@s3`), the rest
    /// unallocated (zeros).
    pub async fn lazy_clone_snapshot_through(
        &self,
        temp: &str,
        snap: &Snapshot,
        index: &ChunkIndex,
        dest: &str,
        owner: &str,
        poolset: Option<&str>,
    ) -> Result<FileInfo, CloneError> {
        if self
            .file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the destination"))?
            .is_some()
        {
            return Err(CloneError::FileExist(dest.into()));
        }
        self.stage1_from_snapshot(temp, snap, index, dest, owner, poolset, None)
            .await
    }

    /// Stage 1 of a lazy recover of the volume `dest` from its snapshot `snap`: as
    /// [`Self::lazy_clone_snapshot_through`], but the new file takes the seqNum after
    /// `dest`'s and the poolset of `dest`, each chunk the sn of its data in the snapshot
    /// and that seqNum as correctedSn (upstream's recover), and the rename replaces `dest`
    /// (which goes to the recycle bin).
    pub async fn lazy_recover_through(
        &self,
        temp: &str,
        snap: &Snapshot,
        index: &ChunkIndex,
        dest: &str,
        owner: &str,
    ) -> Result<FileInfo, CloneError> {
        let old = self
            .file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the destination"))?
            .ok_or_else(|| CloneError::FileNotExist(dest.into()))?;
        let seq = old.seq_num.unwrap_or(1) + 1;
        self.stage1_from_snapshot(
            temp,
            snap,
            index,
            dest,
            owner,
            old.poolset.as_deref(),
            Some(seq),
        )
        .await
    }

    /// Stage 1 from a snapshot: a clone (`recover_seq` None, sn 1, correctedSn 0) or a
    /// recover (the new file's seqNum).
    #[allow(clippy::too_many_arguments)]
    async fn stage1_from_snapshot(
        &self,
        temp: &str,
        snap: &Snapshot,
        index: &ChunkIndex,
        dest: &str,
        owner: &str,
        poolset: Option<&str>,
        recover_seq: Option<u64>,
    ) -> Result<FileInfo, CloneError> {
        self.act()?;
        match self.client.mkdir(&self.options.temp_dir, &self.root).await {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::Exists => {}
            Err(e) => return Err(failed("Mkdir of the clone folder")(e)),
        }
        let layout = CreateOptions {
            stripe_unit: snap.stripe_unit,
            stripe_count: snap.stripe_count,
            poolset: poolset.unwrap_or(&snap.poolset).to_string(),
        };
        self.act()?;
        self.client
            .create_clone_file(
                temp,
                &self.root,
                snap.file_length,
                recover_seq.unwrap_or(1),
                snap.chunk_size,
                "",
                &layout,
            )
            .await
            .map_err(failed("CreateCloneFile"))?;
        let made = self
            .file_info(temp)
            .await
            .map_err(failed("GetFileInfo of the clone"))?
            .ok_or_else(|| CloneError::FileNotExist(temp.into()))?;
        let chunk_size = u64::from(snap.chunk_size);
        let chunks = self
            .chunks_of(
                temp,
                index,
                snap.segment_size,
                chunk_size,
                true,
                made.epoch.unwrap_or(0),
            )
            .await?;
        let located = chunks
            .iter()
            .filter_map(|&(chunk, addr)| {
                let name = index.chunk(chunk)?;
                let sn = if recover_seq.is_some() { name.seq } else { 1 };
                Some((addr, s3_location(&name.key()), sn))
            })
            .collect();
        self.create_clone_chunks_at(located, recover_seq.unwrap_or(0), chunk_size)
            .await?;
        self.act()?;
        self.client
            .set_clone_file_status(
                temp,
                &self.root,
                made.id,
                FileStatus::KFileCloneMetaInstalled,
            )
            .await
            .map_err(failed("CompleteCloneMeta"))?;
        self.act()?;
        self.client
            .change_owner(temp, owner, &self.root)
            .await
            .map_err(failed("ChangeOwner"))?;
        self.act()?;
        self.client
            .rename(&self.root, temp, dest)
            .await
            .map_err(failed("RenameCloneFile"))?;
        self.file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the clone"))?
            .ok_or_else(|| CloneError::FileNotExist(dest.into()))
    }

    /// Stage 2 of a lazy clone of a snapshot: RecoverChunk over every chunk of `index`
    /// in `dest`, then CompleteCloneFile (Cloned). A clone already Cloned succeeds at once.
    pub async fn flatten_snapshot(
        &self,
        dest: &str,
        snap: &Snapshot,
        index: &ChunkIndex,
    ) -> Result<(), CloneError> {
        let info = self
            .file_info(dest)
            .await
            .map_err(failed("GetFileInfo of the clone"))?
            .ok_or_else(|| CloneError::FileNotExist(dest.into()))?;
        let status = status_of(&info);
        if status == FileStatus::KFileCloned {
            return Ok(());
        }
        if status != FileStatus::KFileCloneMetaInstalled {
            return Err(CloneError::FileStatusInvalid {
                path: dest.into(),
                status: status_name(status),
                why: "only a lazy clone whose metadata is installed is flattened",
            });
        }
        let chunk_size = u64::from(snap.chunk_size);
        let chunks = self
            .chunks_of(dest, index, snap.segment_size, chunk_size, false, 0)
            .await?;
        let addrs: Vec<ChunkAddr> = chunks.iter().map(|&(_, addr)| addr).collect();
        self.recover_chunks(&addrs, chunk_size).await?;
        self.act()?;
        self.client
            .set_clone_file_status(dest, &self.root, info.id, FileStatus::KFileCloned)
            .await
            .map_err(failed("CompleteCloneFile"))?;
        Ok(())
    }
}

/// Runs `jobs` with at most `limit` at once; the first error ends the rest.
async fn run_bounded<F>(jobs: impl Iterator<Item = F>, limit: usize) -> Result<(), CloneError>
where
    F: std::future::Future<Output = Result<(), CloneError>>,
{
    let mut running = futures::stream::iter(jobs).buffer_unordered(limit.max(1));
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(())
}
