//! The namespace service end to end over tonic: create/stat/extend, directories, the recycle
//! bin, rename, chown, authentication, segments and file records (reference §3, §9, §10, §13).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use curve_proto::mds::{
    CreateFileRequest, FileStatus, FileType, GetFileInfoRequest, SessionStatus, StatusCode as S,
};

#[tokio::test]
async fn create_and_stat() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;

    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    let (status, info) = fs.stat("/vol", "alice").await;
    assert_eq!(status, S::KOk);
    let info = info.unwrap();
    assert_eq!(info.file_name.as_deref(), Some("vol"));
    assert_eq!(info.parent_id, Some(0));
    assert_eq!(info.file_type, Some(FileType::InodePagefile as i32));
    assert_eq!(info.owner.as_deref(), Some("alice"));
    assert_eq!(info.length, Some(10 * GIB));
    assert_eq!(info.chunk_size, Some(16 << 20));
    assert_eq!(info.segment_size, Some(1 << 30));
    assert_eq!(info.blocksize, Some(4096));
    assert_eq!(info.seq_num, Some(1));
    assert_eq!(info.file_status, Some(FileStatus::KFileCreated as i32));
    assert_eq!(info.poolset.as_deref(), Some("default"));
    assert_eq!(info.stripe_unit, Some(0));
    assert_eq!(info.stripe_count, Some(0));
    assert_eq!(info.epoch.unwrap_or(0), 0);
    assert!(info.id.unwrap() >= 2);
    let ctime = info.ctime.unwrap();
    assert!(ctime.abs_diff(now_us()) < 60_000_000, "ctime is in µs");

    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KFileExists);
    assert_eq!(fs.create("/", ROOT, 10 * GIB).await, S::KFileExists);
    assert_eq!(fs.create("/", "alice", 10 * GIB).await, S::KOwnerAuthFail);
    assert_eq!(fs.stat("/nope", "alice").await.0, S::KFileNotExists);
    assert_eq!(
        fs.create("/no/such", "alice", 10 * GIB).await,
        S::KFileNotExists
    );
    assert_eq!(
        fs.create("/vol/x", "alice", 10 * GIB).await,
        S::KNotDirectory
    );
    assert_eq!(fs.create("/vol/x", ROOT, 10 * GIB).await, S::KNotDirectory);
    // A file in the middle of a path: root looks it up like GetFileInfo ("no such file"),
    // users fail the ownership walk on it.
    assert_eq!(fs.stat("/vol/x/y", ROOT).await.0, S::KFileNotExists);
    assert_eq!(fs.stat("/vol/x/y", "alice").await.0, S::KNotDirectory);
    assert_eq!(fs.list("/vol/x/y", ROOT).await.0, S::KDirNotExist);
    mds.stop().await;
}

#[tokio::test]
async fn create_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;

    for bad in ["vol", "/vol/", "//vol", "/a//b", "/.", "/a/..", ""] {
        assert_eq!(
            fs.create(bad, "alice", 10 * GIB).await,
            S::KParaError,
            "{bad:?}"
        );
    }
    let long = format!("/{}", "x".repeat(256));
    assert_eq!(fs.create(&long, "alice", 10 * GIB).await, S::KParaError);
    for bad in [GIB, 9 * GIB, 10 * GIB + 4096, 21_990_232_555_520 + GIB] {
        assert_eq!(
            fs.create("/v", "alice", bad).await,
            S::KFileLengthNotSupported,
            "{bad}"
        );
    }
    let (owner, signature, date) = cred("alice");
    let base = CreateFileRequest {
        file_name: "/p".into(),
        owner,
        file_type: FileType::InodePagefile as i32,
        file_length: Some(10 * GIB),
        signature,
        date,
        stripe_unit: Some(0),
        stripe_count: Some(0),
        poolset: Some("nope".into()),
    };
    assert_eq!(fs.create_req(base.clone()).await, S::KPoolsetNotExist);
    let striped = |unit, count| CreateFileRequest {
        stripe_unit: Some(unit),
        stripe_count: Some(count),
        poolset: None,
        ..base.clone()
    };
    assert_eq!(fs.create_req(striped(1 << 20, 0)).await, S::KParaError);
    assert_eq!(fs.create_req(striped(1000, 4)).await, S::KParaError);
    assert_eq!(fs.create_req(striped(32 << 20, 2)).await, S::KParaError);
    let other_type = CreateFileRequest {
        file_type: FileType::InodeAppendfile as i32,
        poolset: None,
        ..base.clone()
    };
    assert_eq!(fs.create_req(other_type).await, S::KNotSupported);

    // The pool holds 100 GiB: 60 + 40 fit, one more does not.
    assert_eq!(fs.create("/a", "alice", 60 * GIB).await, S::KOk);
    assert_eq!(
        fs.create("/b", "alice", 50 * GIB).await,
        S::KFileLengthNotSupported
    );
    assert_eq!(fs.create("/b", "alice", 40 * GIB).await, S::KOk);
    assert_eq!(
        fs.create("/c", "alice", 10 * GIB).await,
        S::KFileLengthNotSupported
    );
    mds.stop().await;
}

#[tokio::test]
async fn striped_and_named_poolset_create() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    let (owner, signature, date) = cred("alice");
    let req = CreateFileRequest {
        file_name: "/s".into(),
        owner,
        file_type: FileType::InodePagefile as i32,
        file_length: Some(10 * GIB),
        signature,
        date,
        stripe_unit: Some(1 << 20),
        stripe_count: Some(4),
        poolset: Some("default".into()),
    };
    assert_eq!(fs.create_req(req).await, S::KOk);
    let info = fs.stat("/s", "alice").await.1.unwrap();
    assert_eq!(
        (info.stripe_unit, info.stripe_count),
        (Some(1 << 20), Some(4))
    );
    mds.stop().await;
}

#[tokio::test]
async fn extend() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);

    assert_eq!(fs.extend("/vol", "alice", 12 * GIB).await, S::KOk);
    assert_eq!(
        fs.stat("/vol", "alice").await.1.unwrap().length,
        Some(12 * GIB)
    );
    assert_eq!(fs.extend("/vol", "alice", 12 * GIB).await, S::KOk);
    assert_eq!(
        fs.extend("/vol", "alice", 11 * GIB).await,
        S::KShrinkBiggerFile
    );
    assert_eq!(
        fs.extend("/vol", "alice", 12 * GIB + 4096).await,
        S::KExtentUnitError
    );
    assert_eq!(
        fs.extend("/vol", "alice", 30_000 * GIB).await,
        S::KFileLengthNotSupported
    );
    assert_eq!(
        fs.extend("/vol", "alice", 200 * GIB).await,
        S::KFileLengthNotSupported
    );
    assert_eq!(fs.extend("/d", "alice", 20 * GIB).await, S::KNotSupported);
    assert_eq!(fs.extend("/vol", "bob", 20 * GIB).await, S::KOwnerAuthFail);
    assert_eq!(
        fs.extend("/nope", "alice", 20 * GIB).await,
        S::KFileNotExists
    );
    mds.stop().await;
}

#[tokio::test]
async fn directories() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;

    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KFileExists);
    assert_eq!(fs.mkdir("/d/sub", "alice").await, S::KOk);
    assert_eq!(fs.create("/d/b", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.create("/d/a", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.names("/d", "alice").await, ["a", "b", "sub"]);
    let (_, infos) = fs.list("/d", "alice").await;
    assert!(infos.iter().all(|f| f.owner.as_deref() == Some("alice")));
    let d = fs.stat("/d", "alice").await.1.unwrap();
    assert_eq!(d.file_type, Some(FileType::InodeDirectory as i32));
    assert!(infos.iter().all(|f| f.parent_id == d.id));

    assert_eq!(fs.list("/nope", "alice").await.0, S::KDirNotExist);
    assert_eq!(fs.list("/d/a", "alice").await.0, S::KNotDirectory);
    assert_eq!(fs.list("/", "alice").await.0, S::KOwnerAuthFail);
    assert_eq!(fs.list("/d", "bob").await.0, S::KOwnerAuthFail);
    assert_eq!(fs.names("/", ROOT).await, ["RecycleBin", "d"]);
    assert!(fs.names("/RecycleBin", ROOT).await.is_empty());

    assert_eq!(fs.unlink("/d", "alice").await, S::KDirNotEmpty);
    assert_eq!(fs.unlink("/d/sub", "alice").await, S::KOk);
    assert_eq!(fs.unlink("/d/a", "alice").await, S::KOk);
    assert_eq!(fs.unlink("/d/b", "alice").await, S::KOk);
    assert_eq!(fs.unlink("/d", "alice").await, S::KOk);
    assert_eq!(fs.stat("/d", "alice").await.0, S::KFileNotExists);
    assert_eq!(fs.unlink("/", ROOT).await, S::KParaError);
    assert_eq!(fs.unlink("/", "alice").await, S::KOwnerAuthFail);
    assert_eq!(fs.names("/RecycleBin", ROOT).await.len(), 2);
    mds.stop().await;
}

#[tokio::test]
async fn authentication() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.mkdir("/alice", "alice").await, S::KOk);
    assert_eq!(fs.create("/alice/vol", "alice", 10 * GIB).await, S::KOk);

    // A stale or future date fails, both directions.
    for date in [now_us() - 20_000_000, now_us() + 20_000_000] {
        let r =
            fs.0.get_file_info(GetFileInfoRequest {
                file_name: "/alice/vol".into(),
                owner: "alice".into(),
                signature: Some(String::new()),
                date,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(r.status_code), S::KOwnerAuthFail);
    }
    assert_eq!(fs.stat("/alice/vol", "").await.0, S::KOwnerAuthFail);
    // Root with a wrong signature fails; with the right one it sees everything.
    let r =
        fs.0.get_file_info(GetFileInfoRequest {
            file_name: "/alice/vol".into(),
            owner: ROOT.into(),
            signature: Some(curve_mds::sign("wrong", 1, ROOT)),
            date: now_us(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(r.status_code), S::KOwnerAuthFail);
    assert_eq!(fs.stat("/alice/vol", ROOT).await.0, S::KOk);
    assert_eq!(fs.stat("/", ROOT).await.1.unwrap().id, Some(0));
    assert_eq!(fs.stat("/RecycleBin", ROOT).await.1.unwrap().id, Some(1));
    // Other users: neither the target nor anything under an ancestor they do not own.
    assert_eq!(fs.stat("/alice/vol", "bob").await.0, S::KOwnerAuthFail);
    assert_eq!(fs.stat("/alice", "bob").await.0, S::KOwnerAuthFail);
    assert_eq!(
        fs.create("/alice/bobs", "bob", 10 * GIB).await,
        S::KOwnerAuthFail
    );
    assert_eq!(fs.stat("/", "alice").await.0, S::KOwnerAuthFail);
    // Authentication comes before the request's own checks.
    assert_eq!(fs.create("/alice/bad", "bob", GIB).await, S::KOwnerAuthFail);
    assert_eq!(fs.create("/nodir/bad", "bob", GIB).await, S::KFileNotExists);
    assert_eq!(
        fs.create("/nodir/bad", ROOT, GIB).await,
        S::KFileLengthNotSupported
    );
    // ...but anyone may create at the top level.
    assert_eq!(fs.create("/bobs", "bob", 10 * GIB).await, S::KOk);
    // Root may create inside anyone's directory; the entry is root's.
    assert_eq!(fs.create("/alice/roots", ROOT, 10 * GIB).await, S::KOk);
    assert_eq!(fs.stat("/alice/roots", "alice").await.0, S::KOwnerAuthFail);
    mds.stop().await;
}

#[tokio::test]
async fn recycle_bin_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    let id = fs.stat("/vol", "alice").await.1.unwrap().id.unwrap();

    assert_eq!(
        fs.delete("/vol", "alice", Some(id + 100), false).await,
        S::KFileIdNotMatch
    );
    assert_eq!(
        fs.delete("/vol", "alice", None, true).await,
        S::KNotSupported
    );
    assert_eq!(
        fs.delete("/vol", "bob", None, false).await,
        S::KOwnerAuthFail
    );
    let before = now_us() / 1_000_000;
    assert_eq!(fs.unlink("/vol", "alice").await, S::KOk);
    let after = now_us() / 1_000_000;
    assert_eq!(fs.stat("/vol", "alice").await.0, S::KFileNotExists);
    assert_eq!(fs.list("/RecycleBin", "alice").await.0, S::KOwnerAuthFail);
    let (_, bin) = fs.list("/RecycleBin", ROOT).await;
    assert_eq!(bin.len(), 1);
    let recycled = &bin[0];
    let name = recycled.file_name.clone().unwrap();
    let prefix = format!("vol-{id}-");
    assert!(name.starts_with(&prefix), "{name}");
    let secs: u64 = name[prefix.len()..].parse().unwrap();
    assert!((before..=after).contains(&secs));
    assert_eq!(recycled.id, Some(id));
    assert_eq!(recycled.parent_id, Some(1));
    assert_eq!(recycled.owner.as_deref(), Some("alice"));
    assert_eq!(recycled.original_full_path_name.as_deref(), Some("/vol"));

    // Recover by path, to the original path.
    assert_eq!(fs.recover("/other", "alice", 0).await, S::KFileNotExists);
    assert_eq!(fs.recover("/vol", "bob", 0).await, S::KOwnerAuthFail);
    assert_eq!(
        fs.recover("/vol", "alice", id + 100).await,
        S::KFileIdNotMatch
    );
    assert_eq!(fs.recover("/vol", "alice", 0).await, S::KOk);
    let info = fs.stat("/vol", "alice").await.1.unwrap();
    assert_eq!((info.id, info.parent_id), (Some(id), Some(0)));
    assert_eq!(info.file_name.as_deref(), Some("vol"));
    assert_eq!(info.original_full_path_name, None);
    assert!(fs.names("/RecycleBin", ROOT).await.is_empty());

    // Recover by id, to another path; refused onto an existing name.
    assert_eq!(fs.unlink("/vol", "alice").await, S::KOk);
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.recover("/vol", "alice", id).await, S::KFileExists);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
    assert_eq!(fs.recover("/d/restored", "alice", id).await, S::KOk);
    let info = fs.stat("/d/restored", "alice").await.1.unwrap();
    assert_eq!(info.id, Some(id));
    assert_eq!(fs.recover("/nodir/x", "alice", 0).await, S::KFileNotExists);

    // Of two recycled copies of one path, the newest-created is recovered.
    assert_eq!(fs.unlink("/vol", "alice").await, S::KOk);
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    let newest = fs.stat("/vol", "alice").await.1.unwrap().id.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fs.unlink("/vol", "alice").await, S::KOk);
    assert_eq!(fs.names("/RecycleBin", ROOT).await.len(), 2);
    assert_eq!(fs.recover("/vol", "alice", 0).await, S::KOk);
    assert_eq!(fs.stat("/vol", "alice").await.1.unwrap().id, Some(newest));

    // DeleteForce: only on recycle bin entries, and only root owns the recycle bin.
    let leftover = fs.names("/RecycleBin", ROOT).await.remove(0);
    let path = format!("/RecycleBin/{leftover}");
    assert_eq!(
        fs.delete(&path, "alice", None, true).await,
        S::KOwnerAuthFail
    );
    assert_eq!(fs.delete(&path, ROOT, None, true).await, S::KOk);
    assert!(fs.names("/RecycleBin", ROOT).await.is_empty());
    assert_eq!(fs.unlink("/RecycleBin", ROOT).await, S::KNotSupported);
    mds.stop().await;
}

#[tokio::test]
async fn rename() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/a", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
    let id = fs.stat("/a", "alice").await.1.unwrap().id;

    assert_eq!(fs.rename("/a", "/a", "alice").await, S::KFileExists);
    assert_eq!(fs.rename("/a", "/", "alice").await, S::KParaError);
    assert_eq!(fs.rename("/", "/x", ROOT).await, S::KParaError);
    assert_eq!(fs.rename("/d", "/d/x", "alice").await, S::KParaError);
    assert_eq!(fs.rename("/d/x", "/d", "alice").await, S::KParaError);
    assert_eq!(fs.rename("/a/", "/b", "alice").await, S::KParaError);
    assert_eq!(fs.rename("/d", "/e", "alice").await, S::KNotSupported);
    assert_eq!(fs.rename("/nope", "/b", "alice").await, S::KFileNotExists);
    assert_eq!(
        fs.rename("/a", "/nodir/b", "alice").await,
        S::KFileNotExists
    );
    assert_eq!(fs.rename("/a", "/b", "bob").await, S::KOwnerAuthFail);

    assert_eq!(fs.rename("/a", "/d/b", "alice").await, S::KOk);
    assert_eq!(fs.stat("/a", "alice").await.0, S::KFileNotExists);
    let moved = fs.stat("/d/b", "alice").await.1.unwrap();
    assert_eq!(moved.id, id);
    assert_eq!(moved.file_name.as_deref(), Some("b"));

    // Replacing an existing page file sends it to the recycle bin as <name>-<id>.
    assert_eq!(fs.create("/c", "alice", 10 * GIB).await, S::KOk);
    let replaced = fs.stat("/c", "alice").await.1.unwrap().id.unwrap();
    assert_eq!(fs.rename("/d/b", "/c", "alice").await, S::KOk);
    assert_eq!(fs.stat("/c", "alice").await.1.unwrap().id, id);
    let (_, bin) = fs.list("/RecycleBin", ROOT).await;
    assert_eq!(bin.len(), 1);
    assert_eq!(bin[0].file_name.clone().unwrap(), format!("c-{replaced}"));
    assert_eq!(bin[0].original_full_path_name.as_deref(), Some("/c"));
    // A directory destination is not replaced; nor is someone else's file.
    assert_eq!(fs.rename("/c", "/d", "alice").await, S::KFileExists);
    assert_eq!(fs.create("/bobs", "bob", 10 * GIB).await, S::KOk);
    assert_eq!(fs.rename("/c", "/bobs", "alice").await, S::KOwnerAuthFail);
    mds.stop().await;
}

#[tokio::test]
async fn change_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
    assert_eq!(fs.mkdir("/d/e", "alice").await, S::KOk);

    assert_eq!(fs.chown("/vol", "bob", "alice").await, S::KOwnerAuthFail);
    assert_eq!(fs.chown("/vol", "alice", ROOT).await, S::KOk);
    assert_eq!(fs.chown("/vol", "bob", ROOT).await, S::KOk);
    assert_eq!(fs.stat("/vol", "bob").await.0, S::KOk);
    assert_eq!(fs.stat("/vol", "alice").await.0, S::KOwnerAuthFail);
    assert_eq!(fs.chown("/d", "bob", ROOT).await, S::KDirNotEmpty);
    assert_eq!(fs.chown("/d/e", "bob", ROOT).await, S::KOk);
    assert_eq!(fs.chown("/nope", "bob", ROOT).await, S::KFileNotExists);
    assert_eq!(fs.chown("bad", "bob", ROOT).await, S::KParaError);
    assert_eq!(fs.chown("/", "bob", ROOT).await, S::KDirNotEmpty);
    mds.stop().await;
}

#[tokio::test]
async fn segments_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);

    let (status, seg) = fs.segment("/vol", "alice", GIB, false, None).await;
    assert_eq!((status, seg), (S::KSegmentNotAllocated, None));
    let (status, seg) = fs.segment("/vol", "alice", GIB, true, None).await;
    assert_eq!(status, S::KOk);
    let seg = seg.unwrap();
    assert_eq!(seg.logical_pool_id, 1);
    assert_eq!(seg.start_offset, GIB);
    assert_eq!(seg.segment_size, 1 << 30);
    assert_eq!(seg.chunk_size, 16 << 20);
    assert_eq!(seg.chunks.len(), 64);
    let mut ids: Vec<u64> = seg.chunks.iter().map(|c| c.chunk_id).collect();
    assert!(ids.iter().all(|&id| id != 0));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    assert!(seg.chunks.iter().all(|c| (1..=4).contains(&c.copyset_id)));
    let used: std::collections::HashSet<u32> = seg.chunks.iter().map(|c| c.copyset_id).collect();
    assert_eq!(used.len(), 4, "chunks spread over every copyset");

    let (status, again) = fs.segment("/vol", "alice", GIB, false, None).await;
    assert_eq!((status, again.as_ref()), (S::KOk, Some(&seg)));
    let (_, other) = fs.segment("/vol", "alice", 0, true, None).await;
    let other = other.unwrap();
    assert!(other.chunks.iter().all(|c| !ids.contains(&c.chunk_id)));

    for bad in [GIB / 2, 10 * GIB, 11 * GIB] {
        assert_eq!(
            fs.segment("/vol", "alice", bad, true, None).await.0,
            S::KParaError
        );
    }
    assert_eq!(
        fs.segment("/d", "alice", 0, true, None).await.0,
        S::KParaError
    );
    assert_eq!(
        fs.segment("/vol", "bob", 0, true, None).await.0,
        S::KOwnerAuthFail
    );
    assert_eq!(
        fs.segment("/nope", "alice", 0, true, None).await.0,
        S::KFileNotExists
    );

    // Extending makes later segments addressable at once.
    assert_eq!(fs.extend("/vol", "alice", 11 * GIB).await, S::KOk);
    assert_eq!(
        fs.segment("/vol", "alice", 10 * GIB, true, None).await.0,
        S::KOk
    );

    assert_eq!(fs.deallocate("/vol", "alice", GIB).await, S::KOk);
    assert_eq!(
        fs.deallocate("/vol", "alice", GIB).await,
        S::KSegmentNotAllocated
    );
    assert_eq!(
        fs.segment("/vol", "alice", GIB, false, None).await.0,
        S::KSegmentNotAllocated
    );

    let r = fs.bump_epoch("/vol", "alice").await;
    assert_eq!(code(r.status_code), S::KOk);
    assert_eq!(r.file_info.unwrap().epoch, Some(1));
    assert_eq!(r.cs_locs.len(), 3);
    assert_eq!(
        code(fs.bump_epoch("/", ROOT).await.status_code),
        S::KParaError
    );
    assert_eq!(
        code(fs.bump_epoch("/", "alice").await.status_code),
        S::KOwnerAuthFail
    );
    assert_eq!(fs.stat("/vol", "alice").await.1.unwrap().epoch, Some(1));
    let (status, _) = fs.segment("/vol", "alice", 2 * GIB, true, Some(0)).await;
    assert_eq!(status, S::KEpochTooOld);
    // A stale writer is fenced even where the segment exists; readers are not checked.
    let (status, _) = fs.segment("/vol", "alice", 0, true, Some(0)).await;
    assert_eq!(status, S::KEpochTooOld);
    let (status, _) = fs.segment("/vol", "alice", 0, false, Some(0)).await;
    assert_eq!(status, S::KOk);
    let (status, _) = fs.segment("/vol", "alice", 2 * GIB, true, Some(1)).await;
    assert_eq!(status, S::KOk);
    mds.stop().await;
}

#[tokio::test]
async fn sessions_and_file_records() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);

    let r = fs.open("/vol", "alice").await;
    assert_eq!(code(r.status_code), S::KOk);
    let session = r.proto_session.unwrap();
    assert_eq!(session.session_id, "");
    assert_eq!(u64::from(session.lease_time), RECORD_EXPIRE_US);
    assert_eq!(session.session_status, SessionStatus::KSessionOk as i32);
    assert!(session.create_time.abs_diff(now_us()) < 60_000_000);
    assert_eq!(r.file_info.unwrap().file_name.as_deref(), Some("vol"));
    let r = fs.open("/d", "alice").await;
    assert_eq!(code(r.status_code), S::KNotSupported);
    assert!(r.proto_session.is_none() && r.file_info.is_none());
    assert_eq!(
        code(fs.open("/vol", "bob").await.status_code),
        S::KOwnerAuthFail
    );
    assert_eq!(
        code(fs.open("/nope", "alice").await.status_code),
        S::KFileNotExists
    );

    // OpenFile alone leaves no record; a refresh does.
    assert_eq!(fs.rename("/vol", "/vol2", "alice").await, S::KOk);
    assert_eq!(fs.rename("/vol2", "/vol", "alice").await, S::KOk);
    let ep = Some(("10.1.2.3", 9000));
    let r = fs.refresh("/vol", "alice", ep).await;
    assert_eq!(code(r.status_code), S::KOk);
    assert_eq!(r.session_id, "sid");
    assert_eq!(r.file_info.unwrap().file_name.as_deref(), Some("vol"));
    assert_eq!(fs.unlink("/vol", "alice").await, S::KFileOccupied);
    assert_eq!(fs.rename("/vol", "/vol2", "alice").await, S::KFileOccupied);
    assert_eq!(fs.chown("/vol", "bob", ROOT).await, S::KFileOccupied);
    assert_eq!(fs.create("/other", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.rename("/other", "/vol", "alice").await, S::KFileOccupied);

    // Closing from another endpoint does not release it; the same endpoint does.
    assert_eq!(
        fs.close("/vol", "alice", Some(("10.1.2.4", 9000))).await,
        S::KOk
    );
    assert_eq!(fs.unlink("/vol", "alice").await, S::KFileOccupied);
    assert_eq!(fs.close("/vol", "alice", ep).await, S::KOk);
    assert_eq!(fs.rename("/vol", "/vol2", "alice").await, S::KOk);

    // Without a registered endpoint the peer IP with port 0 is the record's key.
    assert_eq!(
        code(fs.refresh("/vol2", "alice", None).await.status_code),
        S::KOk
    );
    assert_eq!(fs.unlink("/vol2", "alice").await, S::KFileOccupied);
    assert_eq!(
        fs.close("/vol2", "alice", Some(("127.0.0.1", 0))).await,
        S::KOk
    );
    assert_eq!(fs.rename("/vol2", "/vol", "alice").await, S::KOk);

    // Records expire without refreshes (timed from before the refresh: the MDS's clock
    // for it starts no earlier).
    let refreshed = std::time::Instant::now();
    assert_eq!(
        code(fs.refresh("/vol", "alice", ep).await.status_code),
        S::KOk
    );
    assert_eq!(fs.unlink("/vol", "alice").await, S::KFileOccupied);
    let deadline = refreshed + Duration::from_secs(10);
    loop {
        match fs.unlink("/vol", "alice").await {
            S::KOk => break,
            S::KFileOccupied => assert!(
                std::time::Instant::now() < deadline,
                "the record outlived its {RECORD_EXPIRE_US} µs lifetime by 10 s"
            ),
            other => panic!("unlink of an expiring record: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refreshed.elapsed() >= Duration::from_micros(RECORD_EXPIRE_US),
        "the record expired {:?} after its refresh, before its lifetime",
        refreshed.elapsed()
    );

    // A refresh of a file gone reports it; the session id is echoed anyway.
    let r = fs.refresh("/vol", "alice", ep).await;
    assert_eq!(code(r.status_code), S::KFileNotExists);
    assert_eq!(r.session_id, "sid");
    assert!(r.file_info.is_none());
    assert_eq!(fs.close("/vol", "alice", ep).await, S::KFileNotExists);
    mds.stop().await;
}

#[tokio::test]
async fn young_mds_refuses_unlink() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(
        dir.path(),
        curve_mds::MdsOptions {
            file_record_expire_us: 3_000_000,
            ..options()
        },
    )
    .await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    assert_eq!(fs.unlink("/vol", "alice").await, S::KNotSupported);
    assert_eq!(fs.rename("/vol", "/vol2", "alice").await, S::KNotSupported);
    assert_eq!(fs.chown("/vol", "bob", ROOT).await, S::KNotSupported);
    // Directories are not guarded: they cannot be open.
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
    assert_eq!(fs.unlink("/d", "alice").await, S::KOk);
    mds.stop().await;
}

#[tokio::test]
async fn malformed_requests_are_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);

    let (owner, signature, date) = cred("alice");
    let weird = CreateFileRequest {
        file_name: "/w".into(),
        owner,
        file_type: 12345,
        file_length: Some(u64::MAX),
        signature,
        date,
        stripe_unit: Some(u64::MAX),
        stripe_count: Some(u64::MAX),
        poolset: None,
    };
    assert_eq!(fs.create_req(weird.clone()).await, S::KNotSupported);
    let huge = CreateFileRequest {
        file_type: FileType::InodePagefile as i32,
        ..weird.clone()
    };
    assert_eq!(fs.create_req(huge).await, S::KFileLengthNotSupported);
    let bad_stripes = CreateFileRequest {
        file_type: FileType::InodePagefile as i32,
        file_length: Some(10 * GIB),
        ..weird
    };
    assert_eq!(fs.create_req(bad_stripes).await, S::KParaError);

    for offset in [u64::MAX, u64::MAX - GIB + 1, 1] {
        assert_eq!(
            fs.segment("/vol", "alice", offset, true, None).await.0,
            S::KParaError
        );
    }
    assert_eq!(
        fs.extend("/vol", "alice", u64::MAX).await,
        S::KFileLengthNotSupported
    );
    let r =
        fs.0.get_file_info(GetFileInfoRequest {
            file_name: "/vol".into(),
            owner: "alice".into(),
            signature: None,
            date: u64::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(r.status_code), S::KOwnerAuthFail);
    // A NUL in a name is refused (upstream stores it; no C client could address it).
    assert_eq!(fs.mkdir("/nul\0byte", "alice").await, S::KParaError);
    assert_eq!(fs.stat("/nul", "alice").await.0, S::KFileNotExists);
    // The server is still there.
    assert_eq!(fs.stat("/vol", "alice").await.0, S::KOk);
    mds.stop().await;
}

#[tokio::test]
async fn concurrent_allocation_hands_out_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/vol", "alice", 10 * GIB).await, S::KOk);
    let mut seg_tasks = Vec::new();
    let mut dir_tasks = Vec::new();
    for i in 0..16u64 {
        let mut seg_fs = Fs(fs.0.clone());
        seg_tasks.push(tokio::spawn(async move {
            let (status, seg) = seg_fs
                .segment("/vol", "alice", (i % 2) * GIB, true, None)
                .await;
            assert_eq!(status, S::KOk);
            seg.unwrap()
        }));
        let mut dir_fs = Fs(fs.0.clone());
        dir_tasks.push(tokio::spawn(async move {
            assert_eq!(dir_fs.mkdir(&format!("/d{i}"), "alice").await, S::KOk);
            dir_fs.stat(&format!("/d{i}"), "alice").await.1.unwrap()
        }));
    }
    let mut segments = Vec::new();
    for task in seg_tasks {
        segments.push(task.await.unwrap());
    }
    let mut dir_ids = std::collections::HashSet::new();
    for task in dir_tasks {
        let dir = task.await.unwrap();
        assert!(dir_ids.insert(dir.id.unwrap()), "inode ids are unique");
    }
    for (i, seg) in segments.iter().enumerate() {
        assert_eq!(seg, &segments[i % 2], "one allocation per segment");
    }
    assert_ne!(
        segments[0].chunks[0].chunk_id,
        segments[1].chunks[0].chunk_id
    );
    mds.stop().await;
}

/// Lazy clones as upstream's CurveFS keeps them: CreateCloneFile makes a Cloning file that
/// names its source, SetCloneFileStatus walks upstream's transitions, OpenFile of an
/// installed clone lists the source's allocated segments, and the source cannot be deleted,
/// renamed or given away while a clone still reads from it.
#[tokio::test]
async fn lazy_clones() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let mut fs = mds.fs().await;
    assert_eq!(fs.create("/src", ROOT, 20 * GIB).await, S::KOk);
    // The source's second segment only.
    assert_eq!(fs.segment("/src", ROOT, GIB, true, None).await.0, S::KOk);

    // The clone task's order: the source becomes BeingCloned, then the clone is made.
    assert_eq!(
        fs.set_clone_status("/src", ROOT, None, FileStatus::KFileBeingCloned)
            .await,
        S::KOk
    );
    let (status, info) = fs.create_clone("/clone", "/src", ROOT, 20 * GIB).await;
    assert_eq!(status, S::KOk);
    let info = info.unwrap();
    assert_eq!(info.file_status, Some(FileStatus::KFileCloning as i32));
    assert_eq!(info.clone_source.as_deref(), Some("/src"));
    assert_eq!(info.clone_length, Some(20 * GIB));
    assert_eq!(info.seq_num, Some(1));
    let clone_id = info.id.unwrap();
    assert_eq!(
        fs.create_clone("/clone", "/src", ROOT, 20 * GIB).await.0,
        S::KFileExists
    );
    assert_eq!(
        fs.create_clone("/", "/src", ROOT, 20 * GIB).await.0,
        S::KCloneFileNameIllegal
    );
    assert_eq!(
        fs.create_clone("/small", "/src", ROOT, GIB).await.0,
        S::KParaError
    );

    // Not installed yet: OpenFile lists nothing.
    assert!(fs.open("/clone", ROOT).await.clone_source_segment.is_none());
    // Cloning -> Cloned skips a step.
    assert_eq!(
        fs.set_clone_status("/clone", ROOT, None, FileStatus::KFileCloned)
            .await,
        S::KCloneStatusNotMatch
    );
    assert_eq!(
        fs.set_clone_status(
            "/clone",
            ROOT,
            Some(clone_id + 1),
            FileStatus::KFileCloneMetaInstalled
        )
        .await,
        S::KFileIdNotMatch
    );
    assert_eq!(
        fs.set_clone_status(
            "/clone",
            ROOT,
            Some(clone_id),
            FileStatus::KFileCloneMetaInstalled
        )
        .await,
        S::KOk
    );
    assert_eq!(
        fs.set_clone_status("/nothing", ROOT, None, FileStatus::KFileCloned)
            .await,
        S::KFileNotExists
    );

    let opened = fs.open("/clone", ROOT).await;
    assert_eq!(code(opened.status_code), S::KOk);
    let segments = opened.clone_source_segment.unwrap();
    assert_eq!(segments.segment_size, GIB);
    assert_eq!(segments.allocated_segment_offset, vec![GIB]);
    // A clone still reading its source cannot be a source itself.
    assert_eq!(
        fs.set_clone_status("/clone", ROOT, None, FileStatus::KFileBeingCloned)
            .await,
        S::KCloneStatusNotMatch
    );

    // The source while the clone reads from it.
    assert_eq!(fs.unlink("/src", ROOT).await, S::KDeleteFileBeingCloned);
    assert_eq!(
        fs.rename("/src", "/src2", ROOT).await,
        S::KDeleteFileBeingCloned
    );
    assert_eq!(
        fs.chown("/src", "bob", ROOT).await,
        S::KDeleteFileBeingCloned
    );
    assert_eq!(fs.deallocate("/src", ROOT, GIB).await, S::KNotSupported);

    // Flattened: the clone no longer reads from the source, which may then go.
    assert_eq!(
        fs.set_clone_status("/clone", ROOT, None, FileStatus::KFileCloned)
            .await,
        S::KOk
    );
    assert!(fs.open("/clone", ROOT).await.clone_source_segment.is_none());
    assert_eq!(
        fs.set_clone_status("/clone", ROOT, None, FileStatus::KFileCloneMetaInstalled)
            .await,
        S::KCloneStatusNotMatch
    );
    assert_eq!(fs.unlink("/src", ROOT).await, S::KOk);
    // Recovered from the recycle bin, it is a plain file again.
    let recycled = fs.names("/RecycleBin", ROOT).await;
    assert_eq!(recycled.len(), 1, "{recycled:?}");
    assert_eq!(fs.recover("/src", ROOT, 0).await, S::KOk);
    let (_, src) = fs.stat("/src", ROOT).await;
    assert_eq!(
        src.unwrap().file_status,
        Some(FileStatus::KFileCreated as i32)
    );
    mds.stop().await;
}
