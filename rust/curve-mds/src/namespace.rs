//! The namespace of `curve.mds.CurveFSService` (reference §3, §13): path walks with owner
//! checks, the recycle bin, segment allocation and file records. Each call is synchronous and
//! runs on a blocking thread; each mutating call is one redb write transaction committed
//! before it returns, so a call either happens entirely and durably or not at all.
//! Each call authenticates as its row of [`crate::auth::METHODS`] says (the caller first,
//! then the ownership walks), and `tests/authentication.rs` holds every row to it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use curve_proto::common::ChunkServerLocation;
use curve_proto::mds::{
    ChangeOwnerRequest, CloneSourceSegment, CloseFileRequest, CreateCloneFileRequest,
    CreateFileRequest, DeAllocateSegmentRequest, DeleteFileRequest, ExtendFileRequest, FileInfo,
    FileStatus, FileType, GetFileInfoRequest, GetOrAllocateSegmentRequest,
    IncreaseFileEpochRequest, ListDirRequest, OpenFileRequest, PageFileChunkInfo, PageFileSegment,
    ProtoSession, ReFreshSessionRequest, RecoverFileRequest, RenameFileRequest, SessionStatus,
    SetCloneFileStatusRequest, StatusCode as S,
};
use redb::ReadableTable;

use crate::auth::{Authenticator, Caller};
use crate::path;
use crate::records::{Endpoint, FileRecords};
use crate::rules::{self, Extension};
use crate::store::{
    self, RECYCLEBIN_ID, ROOT_ID, Refusal, Store, Tables, WriteTables, is_directory, is_page_file,
};
use crate::topology::Topology;
use crate::{MdsOptions, TopologyConfig};

mod snapshot;

pub(crate) use snapshot::CleanPlan;

pub(crate) type NsResult<T> = Result<T, Refusal>;

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn components(p: &str) -> NsResult<Vec<&str>> {
    path::components(p).ok_or(Refusal(S::KParaError))
}

/// Both sides of a walk that ends at an entry: its parent directory and the entry, if any.
struct Walked<'p> {
    parent: FileInfo,
    name: &'p str,
    target: Option<FileInfo>,
}

pub(crate) struct Namespace {
    store: Store,
    auth: Authenticator,
    options: MdsOptions,
    topology: std::sync::Arc<Topology>,
    records: FileRecords,
    started: Instant,
    /// Where the next segment's round robin over the copysets begins.
    copyset_cursor: AtomicUsize,
}

impl Namespace {
    pub(crate) fn new(
        store: Store,
        options: MdsOptions,
        topology: std::sync::Arc<Topology>,
    ) -> Self {
        let copysets = topology.config.copysets.len().max(1);
        Self {
            auth: Authenticator {
                root_user: options.root_user.clone(),
                root_password: options.root_password.clone(),
                date_tolerance_us: options.auth_date_tolerance_us,
            },
            records: FileRecords::new(Duration::from_micros(options.file_record_expire_us)),
            started: Instant::now(),
            copyset_cursor: AtomicUsize::new(rand::random::<usize>() % copysets),
            store,
            options,
            topology,
        }
    }

    fn pool(&self) -> &TopologyConfig {
        &self.topology.config
    }

    fn caller(&self, owner: &str, signature: Option<&str>, date: u64) -> NsResult<Caller> {
        Ok(self.auth.authenticate(owner, signature, date, now_us())?)
    }

    fn record_expiry(&self) -> Duration {
        Duration::from_micros(self.options.file_record_expire_us)
    }

    /// Walks to the parent of the last component, checking every ancestor's owner for users.
    /// An ancestor that is a file yields kNotDirectory, a missing one kFileNotExists.
    fn walk<'p, I, D, Sg>(
        &self,
        t: &Tables<I, D, Sg>,
        comps: &[&'p str],
        caller: &Caller,
    ) -> NsResult<Walked<'p>>
    where
        I: ReadableTable<u64, &'static [u8]>,
        D: ReadableTable<(u64, &'static str), u64>,
        Sg: ReadableTable<(u64, u64), &'static [u8]>,
    {
        let Some((name, ancestors)) = comps.split_last() else {
            return Err(S::KParaError.into());
        };
        let mut dir = t.inode(ROOT_ID)?.ok_or(Refusal(S::KStorageError))?;
        for comp in ancestors {
            let next = t
                .child(id_of(&dir)?, comp)?
                .ok_or(Refusal(S::KFileNotExists))?;
            // Upstream's ownership walk tests the type before the owner.
            if !is_directory(&next) {
                return Err(S::KNotDirectory.into());
            }
            if let Some(owner) = caller.checked_owner()
                && next.owner.as_deref() != Some(owner)
            {
                return Err(S::KOwnerAuthFail.into());
            }
            dir = next;
        }
        let target = t.child(id_of(&dir)?, name)?;
        Ok(Walked {
            parent: dir,
            name,
            target,
        })
    }

    /// The existing entry at `comps`, owned by the caller unless root. "/" is root's only.
    /// Like upstream's GetFileInfo, a file in the middle of the path reads as "no such file"
    /// for root; users hit the ownership walk's kNotDirectory first.
    fn target<I, D, Sg>(
        &self,
        t: &Tables<I, D, Sg>,
        comps: &[&str],
        caller: &Caller,
    ) -> NsResult<FileInfo>
    where
        I: ReadableTable<u64, &'static [u8]>,
        D: ReadableTable<(u64, &'static str), u64>,
        Sg: ReadableTable<(u64, u64), &'static [u8]>,
    {
        if comps.is_empty() {
            return match caller {
                Caller::Root => t.inode(ROOT_ID)?.ok_or(Refusal(S::KStorageError)),
                Caller::User(_) => Err(S::KOwnerAuthFail.into()),
            };
        }
        let walked = self
            .walk(t, comps, caller)
            .map_err(|r| match (caller, r.0) {
                (Caller::Root, S::KNotDirectory) => Refusal(S::KFileNotExists),
                _ => r,
            })?;
        let target = walked.target.ok_or(Refusal(S::KFileNotExists))?;
        check_owner(&target, caller)?;
        Ok(target)
    }

    /// Upstream's CheckFileCanChange for a page file about to be deleted, renamed or given
    /// away: refused while it has a snapshot (kFileUnderSnapShot), while it is a clone
    /// source (kDeleteFileBeingCloned; DeleteFile then asks whether any clone still reads
    /// from it), while the MDS is younger than one record
    /// expiry (records live in memory, so an open file would look closed) and while some
    /// client holds it open (§10).
    fn check_can_change(&self, path: &str, info: &FileInfo) -> NsResult<()> {
        if !self.store.snapshots(id_of(info)?)?.is_empty() {
            return Err(S::KFileUnderSnapShot.into());
        }
        if info.file_status == Some(FileStatus::KFileBeingCloned as i32) {
            return Err(S::KDeleteFileBeingCloned.into());
        }
        if self.started.elapsed() < self.record_expiry() {
            return Err(S::KNotSupported.into());
        }
        if self.records.is_occupied(path, Instant::now()) {
            return Err(S::KFileOccupied.into());
        }
        Ok(())
    }

    fn pool_free<I, D, Sg>(&self, t: &Tables<I, D, Sg>) -> NsResult<u64>
    where
        I: ReadableTable<u64, &'static [u8]>,
        D: ReadableTable<(u64, &'static str), u64>,
        Sg: ReadableTable<(u64, u64), &'static [u8]>,
    {
        Ok(self.pool().pool_capacity.saturating_sub(t.pool_used()?))
    }

    /// Moves a page file into /RecycleBin under `name`, remembering where it came from.
    fn recycle(
        &self,
        t: &mut WriteTables<'_>,
        mut info: FileInfo,
        from_parent: u64,
        from_name: &str,
        from_path: &str,
        name: String,
    ) -> NsResult<()> {
        if t.child(RECYCLEBIN_ID, &name)?.is_some() {
            tracing::error!("recycle bin already holds {name:?}");
            return Err(S::KInternalError.into());
        }
        let id = id_of(&info)?;
        t.unlink(from_parent, from_name)?;
        t.link(RECYCLEBIN_ID, &name, id)?;
        info.parent_id = Some(RECYCLEBIN_ID);
        info.file_name = Some(name);
        info.original_full_path_name = Some(from_path.to_owned());
        t.put_inode(&info)
    }

    /// A page file's poolset: none or empty (the default), or the pool's own.
    fn check_poolset(&self, poolset: Option<&str>) -> NsResult<()> {
        match poolset {
            Some(p) if !p.is_empty() && p != self.pool().poolset => Err(S::KPoolsetNotExist.into()),
            _ => Ok(()),
        }
    }

    /// Where a new entry goes: the walk a user's call made first, or root's now; an entry
    /// already there is kFileExists.
    fn new_entry<'p, I, D, Sg>(
        &self,
        t: &Tables<I, D, Sg>,
        comps: &[&'p str],
        caller: &Caller,
        user_walk: Option<Walked<'p>>,
    ) -> NsResult<Walked<'p>>
    where
        I: ReadableTable<u64, &'static [u8]>,
        D: ReadableTable<(u64, &'static str), u64>,
        Sg: ReadableTable<(u64, u64), &'static [u8]>,
    {
        let walked = match user_walk {
            Some(walked) => walked,
            None => self.walk(t, comps, caller)?,
        };
        if walked.target.is_some() {
            return Err(S::KFileExists.into());
        }
        Ok(walked)
    }

    pub(crate) fn create_file(&self, req: &CreateFileRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        if comps.is_empty() && caller != Caller::Root {
            return Err(S::KOwnerAuthFail.into());
        }
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            // A user's ownership walk comes first, as upstream authenticates before it looks
            // at the request; root is not walked until the request is known to be sound.
            let user_walk = match caller {
                Caller::User(_) => Some(self.walk(&t, &comps, &caller)?),
                Caller::Root => None,
            };
            let page_file = match FileType::try_from(req.file_type) {
                Ok(FileType::InodePagefile) => true,
                Ok(FileType::InodeDirectory) => false,
                _ => return Err(S::KNotSupported.into()),
            };
            let length = req.file_length.unwrap_or(0);
            let stripe_unit = req.stripe_unit.unwrap_or(0);
            let stripe_count = req.stripe_count.unwrap_or(0);
            if page_file {
                self.check_poolset(req.poolset.as_deref())?;
                rules::check_create_length(&self.options, length, self.pool_free(&t)?)?;
            }
            rules::check_stripe(&self.options, stripe_unit, stripe_count)?;
            if comps.is_empty() {
                return Err(S::KFileExists.into());
            }
            let walked = self.new_entry(&t, &comps, &caller, user_walk)?;
            let id = store::take_inode_id(&txn)?;
            let parent = id_of(&walked.parent)?;
            // Upstream fills directories the same way (geometry included), with the
            // request's poolset as given.
            let poolset = if page_file {
                self.pool().poolset.clone()
            } else {
                req.poolset.clone().unwrap_or_default()
            };
            let info = FileInfo {
                id: Some(id),
                file_name: Some(walked.name.to_owned()),
                parent_id: Some(parent),
                file_type: Some(req.file_type),
                owner: Some(req.owner.clone()),
                chunk_size: Some(self.options.chunk_size),
                segment_size: Some(self.options.segment_size),
                length: Some(length),
                ctime: Some(now_us()),
                seq_num: Some(1),
                file_status: Some(FileStatus::KFileCreated as i32),
                stripe_unit: Some(stripe_unit),
                stripe_count: Some(stripe_count),
                poolset: Some(poolset),
                blocksize: Some(self.options.block_size),
                ..Default::default()
            };
            t.put_inode(&info)?;
            t.link(parent, walked.name, id)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn get_file_info(&self, req: &GetFileInfoRequest) -> NsResult<FileInfo> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let t = self.store.read()?;
        self.target(&t, &comps, &caller)
    }

    pub(crate) fn extend_file(&self, req: &ExtendFileRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            let mut info = self.target(&t, &comps, &caller)?;
            if !is_page_file(&info) {
                return Err(S::KNotSupported.into());
            }
            let length = info.length.unwrap_or(0);
            match rules::check_extend(&self.options, length, req.new_size, self.pool_free(&t)?)? {
                Extension::Unchanged => return Ok(()),
                Extension::Grow(_) => {
                    info.length = Some(req.new_size);
                    t.put_inode(&info)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn delete_file(&self, req: &DeleteFileRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        if comps.is_empty() {
            return Err(match caller {
                Caller::Root => S::KParaError,
                Caller::User(_) => S::KOwnerAuthFail,
            }
            .into());
        }
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            let walked = self.walk(&t, &comps, &caller)?;
            let target = walked.target.ok_or(Refusal(S::KFileNotExists))?;
            check_owner(&target, &caller)?;
            let id = id_of(&target)?;
            check_id(req.file_id, id)?;
            let parent = id_of(&walked.parent)?;
            if is_directory(&target) {
                if id == RECYCLEBIN_ID {
                    // Deleting the recycle bin would leave nowhere to put unlinked files.
                    return Err(S::KNotSupported.into());
                }
                if t.has_children(id)? {
                    return Err(S::KDirNotEmpty.into());
                }
                t.unlink(parent, walked.name)?;
                t.remove_inode(id)?;
            } else if is_page_file(&target) {
                match self.check_can_change(&req.file_name, &target) {
                    // Upstream asks the snapshot/clone service whether a clone still
                    // depends on the file (CheckHasCloneRely); this MDS knows its clones.
                    // With none, the delete goes ahead without the other checks, as there.
                    Err(Refusal(S::KDeleteFileBeingCloned)) => {
                        if !t.clones_reading_from(&req.file_name)?.is_empty() {
                            return Err(S::KDeleteFileBeingCloned.into());
                        }
                    }
                    other => other?,
                }
                if req.force_delete.unwrap_or(false) {
                    if parent != RECYCLEBIN_ID {
                        return Err(S::KNotSupported.into());
                    }
                    // Upstream marks the entry kFileDeleting and has a background job
                    // delete its chunks. This MDS never calls the chunkservers, so the entry
                    // goes at once and its chunk files stay on disk (chunk ids are never
                    // reused, so no later file can read them).
                    t.unlink(parent, walked.name)?;
                    t.remove_inode(id)?;
                    t.remove_segments(id)?;
                } else {
                    let secs = now_us() / 1_000_000;
                    let name = recycled_name(walked.name, &format!("-{id}-{secs}"));
                    self.recycle(&mut t, target, parent, walked.name, &req.file_name, name)?;
                }
            } else {
                return Err(S::KNotSupported.into());
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn recover_file(&self, req: &RecoverFileRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let wanted = req.file_id.unwrap_or(0);
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            // Upstream looks the entry up before authenticating, so a missing entry is
            // reported as such whoever asks.
            let recycled = t.children(RECYCLEBIN_ID)?;
            let by_id = (wanted != 0)
                .then(|| recycled.iter().find(|f| f.id == Some(wanted)))
                .flatten();
            let chosen = match by_id {
                Some(f) => f.clone(),
                None => recycled
                    .iter()
                    .filter(|f| f.original_full_path_name.as_deref() == Some(&req.file_name))
                    .max_by_key(|f| f.ctime.unwrap_or(0))
                    .cloned()
                    .ok_or(Refusal(S::KFileNotExists))?,
            };
            let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
            check_owner(&chosen, &caller)?;
            if caller != Caller::Root {
                // The caller must own where the file was deleted from, as upstream checks.
                let original = chosen.original_full_path_name.as_deref().unwrap_or("");
                let original = path::components(original).ok_or(Refusal(S::KOwnerAuthFail))?;
                if let Some(existing) = self.walk(&t, &original, &caller)?.target {
                    check_owner(&existing, &caller)?;
                }
            }
            let walked = self.walk(&t, &comps, &Caller::Root)?;
            if walked.target.is_some() {
                return Err(S::KFileExists.into());
            }
            let id = id_of(&chosen)?;
            check_id(req.file_id, id)?;
            match chosen.file_status.map(FileStatus::try_from) {
                Some(Ok(FileStatus::KFileDeleting)) => return Err(S::KFileUnderDeleting.into()),
                Some(Ok(FileStatus::KFileCloneMetaInstalled)) => {
                    return Err(S::KRecoverFileCloneMetaInstalled.into());
                }
                Some(Ok(FileStatus::KFileCloning)) => return Err(S::KRecoverFileError.into()),
                _ => {}
            }
            let recycled_name = chosen.file_name.clone().unwrap_or_default();
            let parent = id_of(&walked.parent)?;
            t.unlink(RECYCLEBIN_ID, &recycled_name)?;
            t.link(parent, walked.name, id)?;
            let mut info = chosen;
            info.parent_id = Some(parent);
            info.file_name = Some(walked.name.to_owned());
            info.original_full_path_name = None;
            // A source deleted while no clone read from it comes back as a plain file.
            if info.file_status == Some(FileStatus::KFileBeingCloned as i32) {
                info.file_status = Some(FileStatus::KFileCreated as i32);
            }
            t.put_inode(&info)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn rename_file(&self, req: &RenameFileRequest) -> NsResult<()> {
        let old = components(&req.old_file_name)?;
        let new = components(&req.new_file_name)?;
        if old.is_empty() || new.is_empty() {
            return Err(S::KParaError.into());
        }
        // Neither path may contain the other; identical paths fail later, as upstream.
        if old != new && path::is_component_prefix(&old, &new) {
            return Err(S::KParaError.into());
        }
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            let src_walk = self.walk(&t, &old, &caller);
            let dst_walk = self.walk(&t, &new, &caller);
            if caller != Caller::Root {
                // Upstream authenticates both paths before looking at anything else.
                let src = src_walk.as_ref().map_err(|r| *r)?;
                check_owner(
                    src.target.as_ref().ok_or(Refusal(S::KFileNotExists))?,
                    &caller,
                )?;
                if let Some(dst) = &dst_walk.as_ref().map_err(|r| *r)?.target {
                    check_owner(dst, &caller)?;
                }
            }
            if old == new {
                return Err(S::KFileExists.into());
            }
            let src_walk = src_walk.map_err(|r| match r.0 {
                S::KNotDirectory => Refusal(S::KFileNotExists),
                _ => r,
            })?;
            let mut src = src_walk.target.ok_or(Refusal(S::KFileNotExists))?;
            let src_id = id_of(&src)?;
            check_id(req.old_file_id, src_id)?;
            if !is_page_file(&src) {
                return Err(S::KNotSupported.into());
            }
            self.check_can_change(&req.old_file_name, &src)?;

            let dst_walk = dst_walk.map_err(|_| Refusal(S::KFileNotExists))?;
            let dst_parent = id_of(&dst_walk.parent)?;
            if let Some(dst) = dst_walk.target {
                let dst_id = id_of(&dst)?;
                check_id(req.new_file_id, dst_id)?;
                if !is_page_file(&dst) {
                    return Err(S::KFileExists.into());
                }
                self.check_can_change(&req.new_file_name, &dst)?;
                let name = recycled_name(dst_walk.name, &format!("-{dst_id}"));
                self.recycle(
                    &mut t,
                    dst,
                    dst_parent,
                    dst_walk.name,
                    &req.new_file_name,
                    name,
                )?;
            }
            t.unlink(id_of(&src_walk.parent)?, src_walk.name)?;
            t.link(dst_parent, dst_walk.name, src_id)?;
            src.parent_id = Some(dst_parent);
            src.file_name = Some(dst_walk.name.to_owned());
            t.put_inode(&src)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn list_dir(&self, req: &ListDirRequest) -> NsResult<Vec<FileInfo>> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let t = self.store.read()?;
        let dir = self.target(&t, &comps, &caller).map_err(|r| match r.0 {
            S::KFileNotExists => Refusal(S::KDirNotExist),
            _ => r,
        })?;
        if !is_directory(&dir) {
            return Err(S::KNotDirectory.into());
        }
        t.children(id_of(&dir)?)
    }

    pub(crate) fn change_owner(&self, req: &ChangeOwnerRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        self.auth
            .authenticate_root(&req.root_owner, &req.signature, req.date, now_us())?;
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            let mut info = self.target(&t, &comps, &Caller::Root)?;
            if info.owner.as_deref() == Some(req.new_owner.as_str()) {
                return Ok(());
            }
            if is_page_file(&info) {
                self.check_can_change(&req.file_name, &info)?;
            } else if is_directory(&info) {
                if t.has_children(id_of(&info)?)? {
                    return Err(S::KDirNotEmpty.into());
                }
            } else {
                return Err(S::KNotSupported.into());
            }
            info.owner = Some(req.new_owner.clone());
            t.put_inode(&info)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// OpenFile: the session, the file, and for a lazy clone whose metadata is installed
    /// the source's allocated segments (what the client reads from the source; upstream's
    /// ListCloneSourceFileSegments). A clone in another status gets none.
    pub(crate) fn open_file(
        &self,
        req: &OpenFileRequest,
    ) -> NsResult<(ProtoSession, FileInfo, Option<CloneSourceSegment>)> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let t = self.store.read()?;
        let info = self.target(&t, &comps, &caller)?;
        if !is_page_file(&info) {
            return Err(S::KNotSupported.into());
        }
        let session = ProtoSession {
            session_id: String::new(),
            lease_time: u32::try_from(self.options.file_record_expire_us).unwrap_or(u32::MAX),
            create_time: now_us(),
            session_status: SessionStatus::KSessionOk as i32,
        };
        let source_segments = match info.clone_source.as_deref() {
            Some(source)
                if path::components(source).is_some_and(|c| !c.is_empty())
                    && info.file_status == Some(FileStatus::KFileCloneMetaInstalled as i32) =>
            {
                // Upstream reads the source's info without an owner check.
                let source_comps = components(source)?;
                let source_info = self.target(&t, &source_comps, &Caller::Root)?;
                Some(CloneSourceSegment {
                    segment_size: u64::from(info.segment_size.unwrap_or(self.options.segment_size)),
                    allocated_segment_offset: t.segment_offsets(id_of(&source_info)?)?,
                })
            }
            _ => None,
        };
        Ok((session, info, source_segments))
    }

    /// CreateCloneFile: a page file in status Cloning that names the volume it is a lazy
    /// clone of (`cloneSource`, `cloneLength` = its length). Checked as upstream's CurveFS
    /// does: nothing about the source is checked here (the clone task does that).
    pub(crate) fn create_clone_file(&self, req: &CreateCloneFileRequest) -> NsResult<FileInfo> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        if comps.is_empty() && caller != Caller::Root {
            return Err(S::KOwnerAuthFail.into());
        }
        let txn = self.store.write()?;
        let info = {
            let mut t = store::write_tables(&txn)?;
            let user_walk = match caller {
                Caller::User(_) => Some(self.walk(&t, &comps, &caller)?),
                Caller::Root => None,
            };
            if req.file_type != FileType::InodePagefile as i32
                || req.file_length < self.options.min_file_length
                || req.seq < 1
            {
                return Err(S::KParaError.into());
            }
            // Deviation: upstream takes any chunk size; these chunkservers have one.
            if req.chunksize != self.options.chunk_size {
                return Err(S::KParaError.into());
            }
            let stripe_unit = req.stripe_unit.unwrap_or(0);
            let stripe_count = req.stripe_count.unwrap_or(0);
            rules::check_stripe(&self.options, stripe_unit, stripe_count)?;
            self.check_poolset(req.poolset.as_deref())?;
            if comps.is_empty() {
                return Err(S::KCloneFileNameIllegal.into());
            }
            let walked = self.new_entry(&t, &comps, &caller, user_walk)?;
            let id = store::take_inode_id(&txn)?;
            let parent = id_of(&walked.parent)?;
            let info = FileInfo {
                id: Some(id),
                file_name: Some(walked.name.to_owned()),
                parent_id: Some(parent),
                file_type: Some(req.file_type),
                owner: Some(req.owner.clone()),
                chunk_size: Some(req.chunksize),
                segment_size: Some(self.options.segment_size),
                length: Some(req.file_length),
                ctime: Some(now_us()),
                seq_num: Some(req.seq),
                file_status: Some(FileStatus::KFileCloning as i32),
                clone_source: Some(req.clone_source.clone()),
                clone_length: Some(req.file_length),
                stripe_unit: Some(stripe_unit),
                stripe_count: Some(stripe_count),
                poolset: Some(self.pool().poolset.clone()),
                blocksize: Some(self.options.block_size),
                ..Default::default()
            };
            t.put_inode(&info)?;
            t.link(parent, walked.name, id)?;
            info
        };
        txn.commit()?;
        Ok(info)
    }

    /// SetCloneFileStatus, with upstream's transitions: Cloning → CloneMetaInstalled →
    /// Cloned for a clone; Created ⇄ BeingCloned and Cloned → BeingCloned → Cloned for a
    /// source. A CloneMetaInstalled file can never become BeingCloned, so clones of clones
    /// that still read from their source cannot be made.
    pub(crate) fn set_clone_file_status(&self, req: &SetCloneFileStatusRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            if comps.is_empty() {
                return Err(match caller {
                    Caller::Root => S::KCloneFileNameIllegal,
                    Caller::User(_) => S::KOwnerAuthFail,
                }
                .into());
            }
            let walked = self.walk(&t, &comps, &caller).map_err(|r| match r.0 {
                S::KNotDirectory => Refusal(S::KFileNotExists),
                _ => r,
            })?;
            let mut info = walked.target.ok_or(Refusal(S::KFileNotExists))?;
            if !is_page_file(&info) {
                return Err(S::KNotSupported.into());
            }
            let id = id_of(&info)?;
            if let Some(given) = req.file_id
                && given != 0
                && given != id
            {
                return Err(S::KFileIdNotMatch.into());
            }
            let from = info
                .file_status
                .and_then(|s| FileStatus::try_from(s).ok())
                .unwrap_or(FileStatus::KFileCreated);
            let to = FileStatus::try_from(req.file_status)
                .map_err(|_| Refusal(S::KCloneStatusNotMatch))?;
            if !rules::clone_status_may_change(from, to) {
                return Err(S::KCloneStatusNotMatch.into());
            }
            info.file_status = Some(to as i32);
            t.put_inode(&info)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn refresh_session(
        &self,
        req: &ReFreshSessionRequest,
        peer: Option<IpAddr>,
    ) -> NsResult<FileInfo> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let t = self.store.read()?;
        let info = self.target(&t, &comps, &caller)?;
        let endpoint = endpoint(req.client_ip.as_deref(), req.client_port, peer);
        self.records.refresh(
            &req.file_name,
            endpoint,
            req.client_version.as_deref(),
            Instant::now(),
        );
        Ok(info)
    }

    pub(crate) fn close_file(&self, req: &CloseFileRequest, peer: Option<IpAddr>) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let t = self.store.read()?;
        self.target(&t, &comps, &caller)?;
        let endpoint = endpoint(req.client_ip.as_deref(), req.client_port, peer);
        self.records.close(&req.file_name, &endpoint);
        Ok(())
    }

    /// The file and its segment at `offset`, after the checks every segment call shares.
    /// A writer's `epoch` older than the file's is refused before anything else (IO fencing),
    /// even if the segment exists.
    fn segment_of<I, D, Sg>(
        &self,
        t: &Tables<I, D, Sg>,
        comps: &[&str],
        caller: &Caller,
        offset: u64,
        writer_epoch: Option<u64>,
    ) -> NsResult<(FileInfo, Option<PageFileSegment>)>
    where
        I: ReadableTable<u64, &'static [u8]>,
        D: ReadableTable<(u64, &'static str), u64>,
        Sg: ReadableTable<(u64, u64), &'static [u8]>,
    {
        let info = self.target(t, comps, caller)?;
        if let (Some(epoch), Some(file_epoch)) = (writer_epoch, info.epoch)
            && file_epoch > epoch
        {
            return Err(S::KEpochTooOld.into());
        }
        if !is_page_file(&info) {
            return Err(S::KParaError.into());
        }
        let segment_size = u64::from(info.segment_size.unwrap_or(self.options.segment_size));
        let length = info.length.unwrap_or(0);
        let aligned = segment_size != 0 && offset.is_multiple_of(segment_size);
        let inside = offset
            .checked_add(segment_size)
            .is_some_and(|end| end <= length);
        if !aligned || !inside {
            return Err(S::KParaError.into());
        }
        let id = id_of(&info)?;
        let segment = t.segment(id, offset)?;
        Ok((info, segment))
    }

    pub(crate) fn get_or_allocate_segment(
        &self,
        req: &GetOrAllocateSegmentRequest,
    ) -> NsResult<PageFileSegment> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let writer_epoch = req.epoch.filter(|_| req.allocate_if_not_exist);
        // Most lookups find the segment: answer them from a read transaction so they never
        // wait behind a commit.
        {
            let t = self.store.read()?;
            let (_, segment) = self.segment_of(&t, &comps, &caller, req.offset, writer_epoch)?;
            if let Some(segment) = segment {
                return Ok(segment);
            }
            if !req.allocate_if_not_exist {
                return Err(S::KSegmentNotAllocated.into());
            }
        }
        let txn = self.store.write()?;
        let segment = {
            let mut t = store::write_tables(&txn)?;
            let (info, existing) =
                self.segment_of(&t, &comps, &caller, req.offset, writer_epoch)?;
            if let Some(segment) = existing {
                // Another writer allocated it while this call waited for the write lock.
                return Ok(segment);
            }
            let segment = self.allocate(&txn, &info, req.offset)?;
            t.put_segment(id_of(&info)?, &segment)?;
            segment
        };
        txn.commit()?;
        Ok(segment)
    }

    /// Fresh chunk ids over the pool's copysets, round robin from a moving cursor so that
    /// consecutive segments start on different copysets.
    fn allocate(
        &self,
        txn: &redb::WriteTransaction,
        info: &FileInfo,
        offset: u64,
    ) -> NsResult<PageFileSegment> {
        let chunk_size = info.chunk_size.unwrap_or(self.options.chunk_size);
        let segment_size = info.segment_size.unwrap_or(self.options.segment_size);
        let copysets = &self.pool().copysets;
        if chunk_size == 0 || copysets.is_empty() {
            return Err(S::KSegmentAllocateError.into());
        }
        let count = segment_size / chunk_size;
        let first = store::take_chunk_ids(txn, u64::from(count))?;
        let start = self.copyset_cursor.fetch_add(1, Ordering::Relaxed);
        let chunks = (0..count)
            .map(|i| {
                let i = i as usize;
                PageFileChunkInfo {
                    chunk_id: first + i as u64,
                    copyset_id: copysets[(start + i) % copysets.len()].id,
                }
            })
            .collect();
        Ok(PageFileSegment {
            logical_pool_id: self.pool().logical_pool_id,
            start_offset: offset,
            segment_size,
            chunk_size,
            chunks,
        })
    }

    pub(crate) fn de_allocate_segment(&self, req: &DeAllocateSegmentRequest) -> NsResult<()> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        let txn = self.store.write()?;
        {
            let mut t = store::write_tables(&txn)?;
            let (info, segment) = self.segment_of(&t, &comps, &caller, req.offset, None)?;
            // Clones read a source's segments in place.
            if info.file_status == Some(FileStatus::KFileBeingCloned as i32) {
                return Err(S::KNotSupported.into());
            }
            if segment.is_none() {
                return Err(S::KSegmentNotAllocated.into());
            }
            t.remove_segment(id_of(&info)?, req.offset)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub(crate) fn increase_file_epoch(
        &self,
        req: &IncreaseFileEpochRequest,
    ) -> NsResult<(FileInfo, Vec<ChunkServerLocation>)> {
        let comps = components(&req.file_name)?;
        let caller = self.caller(&req.owner, req.signature.as_deref(), req.date)?;
        if comps.is_empty() && caller == Caller::Root {
            return Err(S::KParaError.into());
        }
        let txn = self.store.write()?;
        let info = {
            let mut t = store::write_tables(&txn)?;
            let mut info = self.target(&t, &comps, &caller)?;
            info.epoch = Some(info.epoch.unwrap_or(0).saturating_add(1));
            t.put_inode(&info)?;
            info
        };
        txn.commit()?;
        Ok((info, self.topology.all_locations()))
    }
}

/// An inode's id; stored inodes always carry one, so a missing id is store corruption.
fn id_of(info: &FileInfo) -> NsResult<u64> {
    info.id.ok_or(Refusal(S::KStorageError))
}

fn check_owner(info: &FileInfo, caller: &Caller) -> NsResult<()> {
    match caller.checked_owner() {
        Some(owner) if info.owner.as_deref() != Some(owner) => Err(S::KOwnerAuthFail.into()),
        _ => Ok(()),
    }
}

/// A fileId given by the client (0 means "not given") must name the entry found.
fn check_id(given: Option<u64>, actual: u64) -> NsResult<()> {
    match given {
        Some(id) if id != 0 && id != actual => Err(S::KFileIdNotMatch.into()),
        _ => Ok(()),
    }
}

/// `<base><suffix>`, cutting `base` so the name stays addressable (≤ 255 bytes).
fn recycled_name(base: &str, suffix: &str) -> String {
    let room = path::MAX_NAME_LEN.saturating_sub(suffix.len());
    let mut cut = base.len().min(room);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

/// The client endpoint of a file record: each registered field if present (even empty, as
/// upstream), else the peer's IP and port 0.
fn endpoint(ip: Option<&str>, port: Option<u32>, peer: Option<IpAddr>) -> Endpoint {
    let ip = match ip {
        Some(ip) => ip.to_owned(),
        None => peer.map(|p| p.to_string()).unwrap_or_default(),
    };
    (ip, port.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_names_fit() {
        assert_eq!(recycled_name("vol", "-7-1700000000"), "vol-7-1700000000");
        let long = "é".repeat(200);
        let name = recycled_name(&long, "-12345-1700000000");
        assert!(name.len() <= path::MAX_NAME_LEN);
        assert!(name.ends_with("-12345-1700000000"));
    }

    #[test]
    fn endpoints_fall_back_to_peer() {
        let peer: IpAddr = [10, 0, 0, 9].into();
        assert_eq!(
            endpoint(Some("1.2.3.4"), Some(9000), Some(peer)),
            ("1.2.3.4".into(), 9000)
        );
        assert_eq!(endpoint(None, None, Some(peer)), ("10.0.0.9".into(), 0));
        assert_eq!(endpoint(None, Some(5), Some(peer)), ("10.0.0.9".into(), 5));
        assert_eq!(endpoint(Some(""), None, Some(peer)), (String::new(), 0));
    }

    #[test]
    fn ids() {
        assert_eq!(check_id(None, 5), Ok(()));
        assert_eq!(check_id(Some(0), 5), Ok(()));
        assert_eq!(check_id(Some(5), 5), Ok(()));
        assert_eq!(check_id(Some(6), 5), Err(Refusal(S::KFileIdNotMatch)));
    }
}
