//! Every namespace call against a real local MDS: success, and the error codes Python sees.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use curve_client::{Client, ClientConfig, CreateOptions, ErrorCode};
use curve_proto::mds::FileType;

const SEG: u64 = SEGMENT_SIZE as u64;

fn code<T: std::fmt::Debug>(r: curve_client::Result<T>) -> ErrorCode {
    r.unwrap_err().code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stat_extend_list() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("alice");
    let none = CreateOptions::default();

    c.mkdir("/alice", &u).await.unwrap();
    assert_eq!(code(c.mkdir("/alice", &u).await), ErrorCode::Exists);
    c.create("/alice/vol", &u, 2 * SEG, &none).await.unwrap();
    assert_eq!(
        code(c.create("/alice/vol", &u, 2 * SEG, &none).await),
        ErrorCode::Exists
    );
    assert_eq!(
        code(c.create("/missing/vol", &u, 2 * SEG, &none).await),
        ErrorCode::NotExist
    );
    assert_eq!(
        code(c.create("/alice/odd", &u, SEG + 4096, &none).await),
        ErrorCode::LengthNotSupport
    );

    let info = c.stat("/alice/vol", &u).await.unwrap();
    assert_eq!(info.name, "vol");
    assert_eq!(info.length, 2 * SEG);
    assert_eq!(info.owner, "alice");
    assert_eq!(info.file_type, FileType::InodePagefile as i32);
    assert_eq!(info.seq_num, 1);
    assert_eq!(info.block_size, BLOCK_SIZE);
    assert!(info.ctime_us > 1_600_000_000_000_000, "ctime in µs");
    assert_eq!(code(c.stat("/alice/nope", &u).await), ErrorCode::NotExist);
    assert_eq!(
        code(c.stat("/alice/vol", &user("bob")).await),
        ErrorCode::AuthFail
    );

    c.extend("/alice/vol", &u, 3 * SEG).await.unwrap();
    assert_eq!(c.stat("/alice/vol", &u).await.unwrap().length, 3 * SEG);
    assert_eq!(
        code(c.extend("/alice/vol", &u, SEG).await),
        ErrorCode::NoShrinkBiggerFile
    );
    assert_eq!(
        code(c.extend("/alice/nope", &u, SEG).await),
        ErrorCode::NotExist
    );

    c.create("/alice/vol2", &u, SEG, &none).await.unwrap();
    let mut names: Vec<String> = c
        .list_dir("/alice", &u)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    names.sort();
    assert_eq!(names, ["vol", "vol2"]);
    assert_eq!(code(c.list_dir("/nodir", &u).await), ErrorCode::NotExist);
    // kNotDirectory maps to UNKNOWN, as upstream.
    assert_eq!(code(c.list_dir("/alice/vol", &u).await), ErrorCode::Unknown);
    // Root lists "/" (signature verified), including the recycle bin.
    let top: Vec<String> = c
        .list_dir("/", &root())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(top.contains(&"alice".to_string()), "{top:?}");
    let wrong_root = curve_client::UserInfo {
        owner: "root".into(),
        password: "wrong".into(),
    };
    assert_eq!(
        code(c.list_dir("/", &wrong_root).await),
        ErrorCode::AuthFail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_validation_needs_no_rpc() {
    // No MDS at all: these must fail before any RPC, i.e. at once.
    let conf = ClientConfig {
        mds_addrs: vec!["127.0.0.1:1".into()],
        ..ClientConfig::default()
    };
    let c = Client::new(conf).unwrap();
    let u = user("alice");
    let start = Instant::now();
    for p in [
        "relative",
        "/trailing/",
        "//double",
        "/a/../b",
        "/a/./b",
        "",
    ] {
        assert_eq!(code(c.stat(p, &u).await), ErrorCode::ParamError, "{p}");
    }
    let long = format!("/{}", "n".repeat(256));
    assert_eq!(code(c.mkdir(&long, &u).await), ErrorCode::ParamError);
    assert_eq!(code(c.stat("/a", &user("")).await), ErrorCode::AuthFail);
    assert_eq!(code(c.open("/a", &user("")).await), ErrorCode::AuthFail);
    // The codes prove no RPC went out (one would fail to connect); the bound, a guard
    // with a loaded machine's margin, that none was retried either.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "local validation took {:?}",
        start.elapsed()
    );
    assert_eq!(code(c.read(7, 0, &mut [0u8; 4096]).await), ErrorCode::BadFd);
    assert_eq!(code(c.close(7).await), ErrorCode::BadFd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_unlink_recover_delete() {
    let cluster = Cluster::start().await;
    cluster.settle().await;
    let c = cluster.client();
    let u = user("bob");
    let none = CreateOptions::default();
    c.mkdir("/bob", &u).await.unwrap();
    c.mkdir("/bob/dir", &u).await.unwrap();
    c.create("/bob/a", &u, SEG, &none).await.unwrap();
    let id = c.stat("/bob/a", &u).await.unwrap().id;

    c.rename(&u, "/bob/a", "/bob/b").await.unwrap();
    assert_eq!(code(c.stat("/bob/a", &u).await), ErrorCode::NotExist);
    assert_eq!(c.stat("/bob/b", &u).await.unwrap().id, id);
    assert_eq!(
        code(c.rename(&u, "/bob/b", "/bob/b").await),
        ErrorCode::Exists
    );
    assert_eq!(
        code(c.rename(&u, "/bob/zz", "/bob/y").await),
        ErrorCode::NotExist
    );
    // Renaming a directory: NOT_SUPPORT at once, not after upstream's 8 s of retries.
    let start = Instant::now();
    assert_eq!(
        code(c.rename(&u, "/bob/dir", "/bob/dir2").await),
        ErrorCode::NotSupport
    );
    assert!(start.elapsed() < Duration::from_secs(2));

    // Unlink moves the file to /RecycleBin; Recover with its id brings it back.
    c.unlink("/bob/b", &u).await.unwrap();
    assert_eq!(code(c.stat("/bob/b", &u).await), ErrorCode::NotExist);
    c.recover("/bob/b", &u, id).await.unwrap();
    assert_eq!(c.stat("/bob/b", &u).await.unwrap().id, id);
    // Recover by path (id 0) picks the entry whose original path matches.
    c.unlink("/bob/b", &u).await.unwrap();
    c.recover("/bob/b", &u, 0).await.unwrap();
    assert_eq!(c.stat("/bob/b", &u).await.unwrap().id, id);
    assert_eq!(
        code(c.recover("/bob/never", &u, 0).await),
        ErrorCode::NotExist
    );

    // Non-empty directory; then empty directory removal (Rmdir).
    c.create("/bob/dir/f", &u, SEG, &none).await.unwrap();
    assert_eq!(code(c.unlink("/bob/dir", &u).await), ErrorCode::NotEmpty);
    c.unlink("/bob/dir/f", &u).await.unwrap();
    c.unlink("/bob/dir", &u).await.unwrap();
    assert_eq!(code(c.unlink("/bob/dir", &u).await), ErrorCode::NotExist);

    // DeleteForce only works inside /RecycleBin.
    let recycled: Vec<String> = c
        .list_dir("/RecycleBin", &root())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    let f = recycled
        .iter()
        .find(|n| n.starts_with("f-"))
        .expect("unlinked file is in the recycle bin");
    assert_eq!(
        code(c.delete_force("/bob/b", &u).await),
        ErrorCode::NotSupport
    );
    c.delete_force(&format!("/RecycleBin/{f}"), &root())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_owner_cluster_id_poolsets() {
    let cluster = Cluster::start().await;
    // A young MDS refuses ownership changes of files as it refuses deletions.
    cluster.settle().await;
    let c = cluster.client();
    let u = user("carol");
    c.mkdir("/carol", &u).await.unwrap();
    c.create("/carol/v", &u, SEG, &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(
        code(c.change_owner("/carol/v", "dave", &u).await),
        ErrorCode::AuthFail
    );
    c.change_owner("/carol/v", "dave", &root()).await.unwrap();
    assert_eq!(c.stat("/carol/v", &root()).await.unwrap().owner, "dave");
    // Non-empty directory.
    assert_eq!(
        code(c.change_owner("/carol", "dave", &root()).await),
        ErrorCode::NotEmpty
    );

    let id = c.cluster_id().await.unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(c.cluster_id().await.unwrap(), id);
    assert_eq!(c.list_poolsets().await.unwrap(), ["default"]);

    let opts = CreateOptions {
        poolset: "nosuch".into(),
        ..CreateOptions::default()
    };
    assert_eq!(
        code(c.create("/carol/w", &u, SEG, &opts).await),
        ErrorCode::NotExist
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mds_failover_skips_a_dead_first_address() {
    let cluster = Cluster::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let conf = ClientConfig {
        mds_addrs: vec![dead.to_string(), cluster.mds_addr.to_string()],
        ..cluster.config()
    };
    let c = Client::new(conf).unwrap();
    let start = Instant::now();
    c.mkdir("/fo", &user("fo")).await.unwrap();
    // Refused connections switch at once: no timeouts, no long sleeps.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // The working address is remembered.
    let start = Instant::now();
    for i in 0..20 {
        c.mkdir(&format!("/fo/{i}"), &user("fo")).await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_mds_fails_within_the_budget() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let conf = ClientConfig {
        mds_addrs: vec![dead.to_string()],
        mds_max_retry_ms: 800,
        ..ClientConfig::default()
    };
    // Init needs no MDS.
    let c = Client::new(conf).unwrap();
    let start = Instant::now();
    assert_eq!(code(c.stat("/x", &user("u")).await), ErrorCode::Failed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(code(c.cluster_id().await), ErrorCode::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_later_calls() {
    let cluster = Cluster::start().await;
    let c = cluster.client();
    let u = user("erin");
    c.mkdir("/erin", &u).await.unwrap();
    c.create("/erin/v", &u, SEG, &CreateOptions::default())
        .await
        .unwrap();
    let fd = c.open("/erin/v", &u).await.unwrap();
    c.shutdown();
    assert_eq!(
        code(c.read(fd, 0, &mut [0u8; 4096]).await),
        ErrorCode::BadFd
    );
    assert_eq!(code(c.close(fd).await), ErrorCode::BadFd);
    assert_eq!(code(c.stat("/erin/v", &u).await), ErrorCode::Failed);
    assert_eq!(code(c.open("/erin/v", &u).await), ErrorCode::Failed);
}
