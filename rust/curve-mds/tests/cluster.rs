//! The topology service, restarts on the same data dir (nothing acknowledged is lost, the
//! cluster id is kept) and startup failures.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use curve_proto::mds::StatusCode as S;
use curve_proto::mds::topology::{
    ChunkServerStatus, DiskState, GetChunkServerInfoRequest, GetChunkServerListInCopySetsRequest,
    GetClusterInfoRequest, ListChunkServerRequest, ListPoolsetRequest, OnlineState,
};

#[tokio::test]
async fn topology_service() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start(dir.path(), options()).await;
    let mut topo = mds.topo().await;
    let layout = topology();

    let r = topo
        .get_chunk_server_list_in_copy_sets(GetChunkServerListInCopySetsRequest {
            logical_pool_id: 1,
            copyset_id: vec![3, 1, 3],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 0);
    let ids: Vec<u32> = r.cs_info.iter().map(|c| c.copyset_id).collect();
    assert_eq!(ids, [3, 1, 3]);
    let members: Vec<u32> = r.cs_info[0]
        .cs_locs
        .iter()
        .map(|l| l.chunk_server_id)
        .collect();
    assert_eq!(members, layout.copysets[2].members);
    for loc in &r.cs_info[1].cs_locs {
        let cs = layout
            .chunkservers
            .iter()
            .find(|c| c.id == loc.chunk_server_id)
            .unwrap();
        assert_eq!(loc.host_ip, cs.host);
        assert_eq!(loc.port, u32::from(cs.port));
        assert_eq!(loc.external_ip.as_deref(), Some(cs.host.as_str()));
    }
    let r = topo
        .get_chunk_server_list_in_copy_sets(GetChunkServerListInCopySetsRequest {
            logical_pool_id: 1,
            copyset_id: vec![1, 99],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, -11);
    let r = topo
        .get_chunk_server_list_in_copy_sets(GetChunkServerListInCopySetsRequest {
            logical_pool_id: 7,
            copyset_id: vec![1],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, -11);

    let r = topo
        .get_cluster_info(GetClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 0);
    let id = r.cluster_id.unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id.chars().nth(14), Some('4'), "a v4 UUID: {id}");

    let r = topo
        .get_chunk_server(GetChunkServerInfoRequest {
            chunk_server_id: None,
            host_ip: Some("127.0.0.1".into()),
            port: Some(8202),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 0);
    let info = r.chunk_server_info.unwrap();
    assert_eq!(info.chunk_server_id, 2);
    assert_eq!(info.status, ChunkServerStatus::Readwrite as i32);
    assert_eq!(info.disk_status, DiskState::Disknormal as i32);
    assert_eq!(info.online_state, OnlineState::Online as i32);
    assert_eq!(info.mount_point, "local://chunkserver-2");
    assert_eq!(info.disk_capacity, layout.pool_capacity / 3);
    assert_eq!(info.disk_used, 0);
    assert_eq!(info.external_ip.as_deref(), Some("127.0.0.1"));
    let r = topo
        .get_chunk_server(GetChunkServerInfoRequest {
            chunk_server_id: Some(3),
            host_ip: None,
            port: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.chunk_server_info.unwrap().port, 8203);
    for req in [
        GetChunkServerInfoRequest {
            chunk_server_id: Some(42),
            host_ip: None,
            port: None,
        },
        GetChunkServerInfoRequest {
            chunk_server_id: None,
            host_ip: Some("127.0.0.1".into()),
            port: Some(1),
        },
    ] {
        let r = topo.get_chunk_server(req).await.unwrap().into_inner();
        assert_eq!(r.status_code, -6);
        assert!(r.chunk_server_info.is_none());
    }
    let r = topo
        .get_chunk_server(GetChunkServerInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, -2);

    let r = topo
        .list_chunk_server(ListChunkServerRequest {
            ip: Some("127.0.0.1".into()),
            port: None,
            server_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 0);
    assert_eq!(r.chunk_server_infos.len(), 3);
    let r = topo
        .list_chunk_server(ListChunkServerRequest {
            ip: Some("10.9.9.9".into()),
            port: None,
            server_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, -7);
    assert!(r.chunk_server_infos.is_empty());
    let r = topo
        .list_chunk_server(ListChunkServerRequest {
            ip: None,
            port: None,
            server_id: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.status_code, r.chunk_server_infos.len()), (0, 3));
    let r = topo
        .list_chunk_server(ListChunkServerRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, -2);

    let r = topo
        .list_poolset(ListPoolsetRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status_code, 0);
    assert_eq!(r.poolset_infos.len(), 1);
    assert_eq!(r.poolset_infos[0].poolset_id, 1);
    assert_eq!(r.poolset_infos[0].poolset_name, "default");
    assert_eq!(r.poolset_infos[0].r#type, "SSD");
    mds.stop().await;
}

async fn cluster_id(mds: &Mds) -> String {
    mds.topo()
        .await
        .get_cluster_info(GetClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .cluster_id
        .unwrap()
}

#[tokio::test]
async fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mds = Mds::start_settled(dir.path()).await;
    let id = cluster_id(&mds).await;
    let (vol_id, seg) = {
        let mut fs = mds.fs().await;
        assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
        assert_eq!(fs.create("/d/vol", "alice", 10 * GIB).await, S::KOk);
        assert_eq!(fs.extend("/d/vol", "alice", 12 * GIB).await, S::KOk);
        assert_eq!(fs.create("/gone", "alice", 10 * GIB).await, S::KOk);
        assert_eq!(fs.unlink("/gone", "alice").await, S::KOk);
        let (status, seg) = fs.segment("/d/vol", "alice", 11 * GIB, true, None).await;
        assert_eq!(status, S::KOk);
        let vol_id = fs.stat("/d/vol", "alice").await.1.unwrap().id.unwrap();
        (vol_id, seg.unwrap())
    };
    mds.stop().await;

    let mds = Mds::start(dir.path(), options()).await;
    assert_eq!(cluster_id(&mds).await, id);
    let mut fs = mds.fs().await;
    let info = fs.stat("/d/vol", "alice").await.1.unwrap();
    assert_eq!((info.id, info.length), (Some(vol_id), Some(12 * GIB)));
    let (status, again) = fs.segment("/d/vol", "alice", 11 * GIB, false, None).await;
    assert_eq!((status, again), (S::KOk, Some(seg.clone())));
    let bin = fs.names("/RecycleBin", ROOT).await;
    assert_eq!(bin.len(), 1);
    assert!(bin[0].starts_with("gone-"));
    assert_eq!(fs.names("/", ROOT).await, ["RecycleBin", "d"]);

    // Counters continue: no inode or chunk id is handed out twice.
    assert_eq!(fs.create("/new", "alice", 10 * GIB).await, S::KOk);
    let new_id = fs.stat("/new", "alice").await.1.unwrap().id.unwrap();
    assert!(new_id > vol_id);
    let (_, fresh) = fs.segment("/new", "alice", 0, true, None).await;
    let max_old = seg.chunks.iter().map(|c| c.chunk_id).max().unwrap();
    assert!(fresh.unwrap().chunks.iter().all(|c| c.chunk_id > max_old));
    // The recycle bin entry is still recoverable.
    assert_eq!(fs.recover("/gone", "alice", 0).await, S::KOk);
    mds.stop().await;
}

#[tokio::test]
async fn bind_failure_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = curve_mds::MdsConfig {
        listen: taken.local_addr().unwrap(),
        data_dir: dir.path().to_owned(),
        options: options(),
        topology: topology(),
    };
    let err = curve_mds::serve(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, curve_mds::Error::Bind { .. }), "{err}");
    assert!(err.to_string().contains("cannot bind"));
}

#[tokio::test]
async fn bad_geometry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = curve_mds::MdsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        options: curve_mds::MdsOptions {
            chunk_size: 0,
            ..options()
        },
        topology: topology(),
    };
    let err = curve_mds::serve(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, curve_mds::Error::Config(_)), "{err}");
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = curve_mds::MdsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        options: options(),
        topology: topology(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(curve_mds::serve(config, async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Env var naming the dir a child MDS process serves from (see `child_mds`).
const CHILD_DIR: &str = "CURVE_MDS_TEST_CHILD_DIR";

/// Not a test on its own: the MDS process `sigkill_loses_nothing_acknowledged` kills.
#[tokio::test]
#[ignore = "started as a child process by sigkill_loses_nothing_acknowledged"]
async fn child_mds() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    // Exit with the parent test: its end (or crash) closes our stdin.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = curve_mds::MdsConfig {
        listen: listener.local_addr().unwrap(),
        data_dir: dir.join("mds"),
        options: options(),
        topology: topology(),
    };
    let tmp = dir.join("port.tmp");
    std::fs::write(&tmp, port.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("port")).unwrap();
    curve_mds::serve_with_listener(config, listener, std::future::pending())
        .await
        .unwrap();
}

#[tokio::test]
async fn sigkill_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["child_mds", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port_file = dir.path().join("port");
    let mut port = None;
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            port = Some(text.parse::<u16>().unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let port = port.expect("child MDS never reported its port");
    let url = format!("http://127.0.0.1:{port}");
    let mut fs = None;
    for _ in 0..250 {
        let endpoint = tonic::transport::Channel::from_shared(url.clone())
            .unwrap()
            .timeout(RPC_DEADLINE)
            .connect_timeout(RPC_DEADLINE);
        if let Ok(ch) = endpoint.connect().await {
            fs = Some(Fs(
                curve_proto::mds::curve_fs_service_client::CurveFsServiceClient::new(ch),
            ));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut fs = fs.unwrap();
    assert_eq!(fs.mkdir("/d", "alice").await, S::KOk);
    assert_eq!(fs.create("/d/vol", "alice", 10 * GIB).await, S::KOk);
    let (status, seg) = fs.segment("/d/vol", "alice", 0, true, None).await;
    assert_eq!(status, S::KOk);
    assert_eq!(fs.extend("/d/vol", "alice", 12 * GIB).await, S::KOk);
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let mds = Mds::start(&dir.path().join("mds"), options()).await;
    let mut fs = mds.fs().await;
    let info = fs.stat("/d/vol", ROOT).await.1.unwrap();
    assert_eq!(info.length, Some(12 * GIB));
    assert_eq!(fs.segment("/d/vol", ROOT, 0, false, None).await.1, seg);
    mds.stop().await;
}

/// Kills the child MDS if the test fails before killing it on purpose.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
