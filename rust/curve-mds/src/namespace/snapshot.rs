//! The MDS side of snapshots (reference §2.1, upstream's CurveFS snapshot calls): one
//! snapshot inode per file at a time, named `<file>-<seq>`, holding the file's seqNum of
//! the moment; taking it bumps the file's seqNum in the same transaction, so clients that
//! pick the new seqNum up through RefreshSession make the chunkservers copy old data aside.
//! The snapshot has no segments of its own: its chunks are the file's (upstream answers
//! GetSnapShotFileSegment with the file's segment too). Deleting it marks it kFileDeleting;
//! `crate::clean` then corrects every chunk's sn and removes the record.

use std::time::{Duration, Instant};

use curve_proto::mds::{
    CheckSnapShotStatusRequest, CreateSnapShotRequest, DeleteSnapShotRequest, FileInfo, FileStatus,
    FileType, GetOrAllocateSegmentRequest, ListSnapShotFileInfoRequest, PageFileSegment,
    StatusCode as S,
};

use super::{Namespace, NsResult, components, id_of, now_us};
use crate::auth::Caller;
use crate::store::{self, Refusal, is_page_file};

/// Upstream's kLeastSupportSnapshotClientVersion: clients below it (as strings compare)
/// do not follow seqNum changes.
const LEAST_SNAPSHOT_CLIENT_VERSION: &str = "0.0.5.3";

/// What CreateSnapShot answers: the new snapshot, or the one already in flight.
pub(crate) type SnapshotCreated = Result<FileInfo, (Refusal, Option<Box<FileInfo>>)>;

/// The chunks a snapshot's clean must correct: (logical pool, copyset, chunk id).
pub(crate) struct CleanPlan {
    pub file_id: u64,
    pub seq: u64,
    pub chunks: Vec<(u32, u32, u64)>,
}

impl Namespace {
    /// The page file at `path`, as the snapshot calls find it (owner checked).
    fn snapshot_parent(
        &self,
        path: &str,
        owner: &str,
        sig: Option<&str>,
        date: u64,
    ) -> NsResult<FileInfo> {
        let comps = components(path)?;
        let caller = self.caller(owner, sig, date)?;
        if comps.is_empty() {
            return Err(match caller {
                Caller::Root => S::KNotSupported,
                Caller::User(_) => S::KOwnerAuthFail,
            }
            .into());
        }
        let t = self.store.read()?;
        let info = self.target(&t, &comps, &caller)?;
        if !is_page_file(&info) {
            return Err(S::KNotSupported.into());
        }
        Ok(info)
    }

    /// The snapshot of `file` with `seq`; kSnapshotFileNotExists without one.
    fn snapshot_of(&self, file: &FileInfo, seq: u64) -> NsResult<FileInfo> {
        self.store
            .snapshots(id_of(file)?)?
            .into_iter()
            .find(|s| s.seq_num == Some(seq))
            .ok_or(Refusal(S::KSnapshotFileNotExists))
    }

    /// Upstream's IsSnapshotAllowed: frozen for a while after start (clients' records live
    /// in memory, so an old client's open would go unseen), and refused while a client
    /// older than the first that follows seqNum changes has the file open.
    fn snapshot_allowed(&self, path: &str) -> NsResult<()> {
        if self.started.elapsed() < Duration::from_micros(self.options.snapshot_frozen_us) {
            return Err(S::KSnapshotFrozen.into());
        }
        match self.records.min_version(path, Instant::now()) {
            Some(v) if v.as_str() < LEAST_SNAPSHOT_CLIENT_VERSION => {
                Err(S::KClientVersionNotMatch.into())
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn create_snapshot(&self, req: &CreateSnapShotRequest) -> SnapshotCreated {
        let plain = |r: Refusal| (r, None);
        let comps = components(&req.file_name).map_err(plain)?;
        let caller = self
            .caller(&req.owner, req.signature.as_deref(), req.date)
            .map_err(plain)?;
        if comps.is_empty() {
            return Err(plain(Refusal(match caller {
                Caller::Root => S::KFileNotExists,
                Caller::User(_) => S::KOwnerAuthFail,
            })));
        }
        let txn = self.store.write().map_err(plain)?;
        let snapshot = {
            let mut t = store::write_tables(&txn).map_err(plain)?;
            let mut file = self.target(&t, &comps, &caller).map_err(plain)?;
            if file.file_type != Some(FileType::InodePagefile as i32) {
                return Err(plain(S::KNotSupported.into()));
            }
            self.snapshot_allowed(&req.file_name).map_err(plain)?;
            let file_id = id_of(&file).map_err(plain)?;
            let mut snapshots = store::snapshot_table(&txn).map_err(plain)?;
            if let Some(existing) = snapshots
                .of_file(file_id)
                .map_err(plain)?
                .into_iter()
                .next()
            {
                return Err((S::KFileUnderSnapShot.into(), Some(Box::new(existing))));
            }
            let id = store::take_inode_id(&txn).map_err(plain)?;
            let seq = file.seq_num.unwrap_or(1);
            let snapshot = FileInfo {
                id: Some(id),
                file_name: Some(format!("{}-{seq}", file.file_name.as_deref().unwrap_or(""))),
                parent_id: Some(file_id),
                file_type: Some(FileType::InodeSnapshotPagefile as i32),
                ctime: Some(now_us()),
                file_status: Some(FileStatus::KFileCreated as i32),
                ..file.clone()
            };
            file.seq_num = Some(seq + 1);
            snapshots.put(&snapshot).map_err(plain)?;
            t.put_inode(&file).map_err(plain)?;
            snapshot
        };
        txn.commit().map_err(|e| plain(e.into()))?;
        Ok(snapshot)
    }

    /// ListSnapShot: the file's snapshots whose seq is listed (none listed: none).
    pub(crate) fn list_snapshots(
        &self,
        req: &ListSnapShotFileInfoRequest,
    ) -> NsResult<Vec<FileInfo>> {
        let file = self.snapshot_parent(
            &req.file_name,
            &req.owner,
            req.signature.as_deref(),
            req.date,
        )?;
        let mut all = self.store.snapshots(id_of(&file)?)?;
        all.retain(|s| s.seq_num.is_some_and(|q| req.seq.contains(&q)));
        Ok(all)
    }

    /// DeleteSnapShot: marks the snapshot kFileDeleting and returns what its clean must do.
    pub(crate) fn delete_snapshot(&self, req: &DeleteSnapShotRequest) -> NsResult<CleanPlan> {
        let file = self.snapshot_parent(
            &req.file_name,
            &req.owner,
            req.signature.as_deref(),
            req.date,
        )?;
        let file_id = id_of(&file)?;
        let txn = self.store.write()?;
        {
            let mut snapshots = store::snapshot_table(&txn)?;
            let mut snapshot = snapshots
                .of_file(file_id)?
                .into_iter()
                .find(|s| s.seq_num == Some(req.seq))
                .ok_or(Refusal(S::KSnapshotFileNotExists))?;
            match snapshot.file_status.map(FileStatus::try_from) {
                Some(Ok(FileStatus::KFileDeleting)) => return Err(S::KSnapshotDeleting.into()),
                Some(Ok(FileStatus::KFileCreated)) => {}
                _ => return Err(S::KInternalError.into()),
            }
            snapshot.file_status = Some(FileStatus::KFileDeleting as i32);
            snapshots.put(&snapshot)?;
        }
        txn.commit()?;
        self.clean_plan(file_id, req.seq)
    }

    /// The chunks of every segment the file has now: a snapshot shares them all.
    pub(crate) fn clean_plan(&self, file_id: u64, seq: u64) -> NsResult<CleanPlan> {
        let t = self.store.read()?;
        let mut chunks = Vec::new();
        for offset in t.segment_offsets(file_id)? {
            if let Some(segment) = t.segment(file_id, offset)? {
                for c in &segment.chunks {
                    chunks.push((segment.logical_pool_id, c.copyset_id, c.chunk_id));
                }
            }
        }
        Ok(CleanPlan {
            file_id,
            seq,
            chunks,
        })
    }

    /// Removes a cleaned snapshot's record.
    pub(crate) fn finish_clean(&self, file_id: u64, seq: u64) -> NsResult<()> {
        let txn = self.store.write()?;
        store::snapshot_table(&txn)?.remove(file_id, seq)?;
        txn.commit()?;
        Ok(())
    }

    /// Snapshots left kFileDeleting by an earlier run, whose clean must resume.
    pub(crate) fn unfinished_cleans(&self) -> NsResult<Vec<(u64, u64)>> {
        self.store.deleting_snapshots()
    }

    /// CheckSnapShotStatus's snapshot: its id (the clean's key) and status.
    pub(crate) fn snapshot_status(
        &self,
        req: &CheckSnapShotStatusRequest,
    ) -> NsResult<(u64, u64, FileStatus)> {
        let file = self.snapshot_parent(
            &req.file_name,
            &req.owner,
            req.signature.as_deref(),
            req.date,
        )?;
        let snapshot = self.snapshot_of(&file, req.seq)?;
        let status = snapshot
            .file_status
            .and_then(|s| FileStatus::try_from(s).ok())
            .unwrap_or(FileStatus::KFileCreated);
        Ok((id_of(&file)?, req.seq, status))
    }

    /// GetSnapShotFileSegment: the file's segment at `offset` (the snapshot's chunks are
    /// the file's), after upstream's checks against both the snapshot and the file.
    pub(crate) fn snapshot_segment(
        &self,
        req: &GetOrAllocateSegmentRequest,
    ) -> NsResult<PageFileSegment> {
        let file = self.snapshot_parent(
            &req.file_name,
            &req.owner,
            req.signature.as_deref(),
            req.date,
        )?;
        let seq = req.seq_num.ok_or(Refusal(S::KParaError))?;
        let snapshot = self.snapshot_of(&file, seq)?;
        for info in [&snapshot, &file] {
            let segment_size = u64::from(info.segment_size.unwrap_or(self.options.segment_size));
            let inside = req
                .offset
                .checked_add(segment_size)
                .is_some_and(|end| end <= info.length.unwrap_or(0));
            if segment_size == 0 || !req.offset.is_multiple_of(segment_size) || !inside {
                return Err(S::KParaError.into());
            }
        }
        let t = self.store.read()?;
        t.segment(id_of(&file)?, req.offset)?
            .ok_or(Refusal(S::KSegmentNotAllocated))
    }
}
