//! Nothing a client sends makes a chunkserver touch a file outside its data folder: chunk
//! files are named from integers only (pool, copyset and chunk ids), copysets the server
//! does not host are refused before the store is reached, and offsets and sizes past the
//! chunk are refused. Checked against three real chunkservers by listing every file under
//! the cluster's folder before and after extreme ids.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use curve_proto::chunkserver::{ChunkOpStatus, ChunkRequest};

/// Every file and folder under `root`, relative to it; symbolic links are listed as such.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            assert!(!kind.is_symlink(), "{path:?} is a link");
            if kind.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    out
}

fn status(code: i32) -> ChunkOpStatus {
    ChunkOpStatus::try_from(code).expect("a known status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_stay_inside_the_data_folder() -> TestResult {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cluster = Cluster::start().await?;
        let root = cluster.configs[0]
            .data_dir
            .parent()
            .expect("a parent")
            .to_path_buf();
        let before = tree(&root);
        let mut leader = cluster.chunk_client(0).await?;
        let data = pattern(BLOCK_SIZE as usize, 7);

        // Copysets this server does not host, in pools it does not serve: refused, and no
        // folder is made for them.
        for (pool, copyset) in [(POOL, 0), (POOL, u32::MAX), (0, CS_A), (u32::MAX, CS_A)] {
            let mut write = write_request(copyset, 1, 0, data.clone(), 1);
            write.logic_pool_id = pool;
            let mut read = read_request(copyset, 1, 0, BLOCK_SIZE);
            read.logic_pool_id = pool;
            let w = write_chunk(&mut leader, write).await?;
            let r = read_chunk(&mut leader, read).await?;
            for answer in [w, r] {
                assert_eq!(answer, ChunkOpStatus::CopysetNotexist, "{pool}-{copyset}");
            }
        }
        // Offsets and sizes past the chunk: refused, whatever the id.
        for (offset, size) in [(CHUNK_SIZE, BLOCK_SIZE), (u32::MAX - 4095, BLOCK_SIZE)] {
            let mut req = write_request(CS_A, 2, 0, data.clone(), 1);
            req.offset = Some(offset);
            req.size = Some(size);
            assert_eq!(
                write_chunk(&mut leader, req).await?,
                ChunkOpStatus::InvalidRequest,
                "{offset}+{size}"
            );
        }
        // Extreme chunk ids on a hosted copyset are just numbers in a file name.
        let ids = [0, 1, u64::MAX, u64::MAX - 1];
        for id in ids {
            let req = write_request(CS_A, id, CHUNK_SIZE - BLOCK_SIZE, data.clone(), 1);
            assert_eq!(
                write_chunk(&mut leader, req).await?,
                ChunkOpStatus::Success,
                "chunk {id}"
            );
        }

        // Only chunk files of the ids written appeared, inside each member's own copyset
        // folder, none longer than a chunk.
        let after = tree(&root);
        let new: BTreeSet<_> = after.difference(&before).cloned().collect();
        assert!(before.is_subset(&after), "nothing went away");
        let mut allowed = BTreeSet::new();
        for i in 0..3 {
            let dir = PathBuf::from(format!("chunkserver-{i}/copysets/{POOL}-{CS_A}"));
            for id in ids {
                allowed.insert(dir.join(format!("chunk_{id}")));
                allowed.insert(dir.join(format!("chunk_{id}.sn")));
            }
        }
        let stray: Vec<_> = new.difference(&allowed).collect();
        assert!(
            stray.is_empty(),
            "files outside the expected places: {stray:?}"
        );
        let chunks: Vec<_> = new
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with(".sn"))
            .collect();
        assert!(!chunks.is_empty(), "the leader wrote its chunk files");
        for p in chunks {
            let len = std::fs::metadata(root.join(p))?.len();
            assert!(len <= u64::from(CHUNK_SIZE), "{p:?} holds {len} bytes");
        }
        Ok(())
    })
    .await
    .expect("within its bound")
}

async fn write_chunk(
    c: &mut curve_proto::chunkserver::chunk_service_client::ChunkServiceClient<
        tonic::transport::Channel,
    >,
    req: ChunkRequest,
) -> Result<ChunkOpStatus, tonic::Status> {
    Ok(status(write(c, req).await?.status))
}

async fn read_chunk(
    c: &mut curve_proto::chunkserver::chunk_service_client::ChunkServiceClient<
        tonic::transport::Channel,
    >,
    req: ChunkRequest,
) -> Result<ChunkOpStatus, tonic::Status> {
    Ok(status(read(c, req).await?.status))
}
