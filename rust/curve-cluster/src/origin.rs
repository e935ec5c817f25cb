//! What the local cluster's chunkservers read clone chunks from: volumes of the cluster
//! (`@cs` locations, through [`CurveVolumes`]) and the snapshot/clone service's data store
//! (`@s3` locations: chunks of a snapshot a volume was cloned or recovered from).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use curve_chunkserver::{CurveVolumes, Origin, OriginError};
use curve_snapshotclone::datastore::DataStore;

type Read<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, OriginError>> + Send + 'a>>;

/// The cluster's origins. The data store is opened at the first `@s3` read, as the
/// service opens it: an upstream `s3.conf` in the service's folder if there is one, else
/// the service's local store folder.
pub struct ClusterOrigins {
    volumes: CurveVolumes,
    s3_conf: PathBuf,
    store_dir: PathBuf,
    store: tokio::sync::OnceCell<DataStore>,
}

impl fmt::Debug for ClusterOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterOrigins")
            .field("volumes", &self.volumes)
            .field("store_dir", &self.store_dir)
            .finish_non_exhaustive()
    }
}

impl ClusterOrigins {
    pub fn new(volumes: CurveVolumes, s3_conf: PathBuf, store_dir: PathBuf) -> Self {
        ClusterOrigins {
            volumes,
            s3_conf,
            store_dir,
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&DataStore, OriginError> {
        self.store
            .get_or_try_init(|| async {
                let conf = Some(self.s3_conf.as_path()).filter(|p| p.is_file());
                DataStore::from_conf_or_local(conf, &self.store_dir)
                    .map_err(|e| OriginError(e.to_string()))
            })
            .await
    }
}

impl Origin for ClusterOrigins {
    fn read(&self, source: &str, offset: u64, len: usize) -> Read<'_> {
        self.volumes.read(source, offset, len)
    }

    fn read_object(&self, key: &str, offset: u64, len: usize) -> Read<'_> {
        let key = key.to_string();
        Box::pin(async move {
            let end = offset
                .checked_add(len as u64)
                .ok_or_else(|| OriginError(format!("{key}: {offset}+{len} overflows")))?;
            let data = self
                .store()
                .await?
                .read_chunk_data(&key, offset..end)
                .await
                .map_err(|e| OriginError(format!("read of {key} at {offset}+{len}: {e}")))?;
            Ok(data.to_vec())
        })
    }
}
