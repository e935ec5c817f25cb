//! Reading the origin of a clone chunk: the bytes of the source volume it was cloned from
//! (upstream's `OriginCopyer` for `@cs` locations), or of the snapshot's chunk in the
//! snapshot data store (`@s3`). The chunkserver sees only the [`Origin`] trait; the local
//! cluster gives it one over curvefs's own client (`curve_client`, the source opened
//! read-only as root, one handle per source) and its snapshot data store, tests may give
//! it another.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use curve_client::{Client, ClientConfig, ReadOnlyFile, UserInfo};
use futures::future::BoxFuture;

/// How long one origin read may take before its chunk request fails. Long enough for the
/// source's client to ride out a chunkserver failover (~3 s), short enough that the
/// requesting client's own retries (up to 8 s per RPC) are not spent waiting on it.
pub const ORIGIN_DEADLINE: Duration = Duration::from_secs(5);

/// Why an origin read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OriginError(pub String);

/// Reads the source volumes of clone chunks.
pub trait Origin: Send + Sync + fmt::Debug {
    /// Exactly `len` bytes at byte `offset` of the volume at `source`, or an error;
    /// never fewer bytes, never zeros in place of data it could not read.
    fn read(
        &self,
        source: &str,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'_, Result<Vec<u8>, OriginError>>;

    /// Exactly `len` bytes at byte `offset` of the snapshot data store's object `key`
    /// (an `@s3` location's), or an error. Without a data store, always an error.
    fn read_object(
        &self,
        key: &str,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'_, Result<Vec<u8>, OriginError>> {
        let what = format!("{key} at {offset}+{len}");
        Box::pin(async move {
            Err(OriginError(format!(
                "no snapshot data store to read {what} from"
            )))
        })
    }
}

/// Upstream's `curve.curve_file_timeout_s`: a source handle unused this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(30);

/// Origins read through curvefs's own client, as upstream's OriginCopyer reads them with
/// libcurve: each source volume opened read-only (GetFileInfo only: no session, nothing
/// the MDS keeps) with striping off, since a clone chunk's origin offset is chunk index ×
/// chunk size; one handle per source, shared by every read and closed after
/// 30 s unused (`IDLE_CLOSE`); the user the configuration names (the cluster's root user, as
/// upstream's `curve.root_username`). The client is built from the client.conf at
/// `conf_path` on first use, so a chunkserver without clones never reads it.
pub struct CurveVolumes {
    conf_path: PathBuf,
    user: UserInfo,
    client: tokio::sync::OnceCell<Client>,
    sources: Mutex<HashMap<String, Arc<Source>>>,
}

/// One source volume's handle, opened by the first read that needs it.
struct Source {
    file: tokio::sync::OnceCell<Arc<ReadOnlyFile>>,
    last_used: Mutex<Instant>,
}

impl fmt::Debug for CurveVolumes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurveVolumes")
            .field("conf_path", &self.conf_path)
            .field("user", &self.user.owner)
            .finish_non_exhaustive()
    }
}

impl CurveVolumes {
    pub fn new(conf_path: PathBuf, user: UserInfo) -> Self {
        CurveVolumes {
            conf_path,
            user,
            client: tokio::sync::OnceCell::new(),
            sources: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self) -> Result<&Client, OriginError> {
        self.client
            .get_or_try_init(|| async {
                let config = ClientConfig::from_file(&self.conf_path).map_err(|e| {
                    OriginError(format!("client conf {}: {e}", self.conf_path.display()))
                })?;
                Client::new(config).map_err(|e| OriginError(format!("origin client: {e}")))
            })
            .await
    }

    /// The source's handle, opening it on first use; closes handles idle too long.
    async fn open(&self, source: &str) -> Result<Arc<ReadOnlyFile>, OriginError> {
        let entry = {
            let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            sources.retain(|name, s| {
                name == source
                    || s.last_used
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .elapsed()
                        < IDLE_CLOSE
            });
            sources
                .entry(source.to_string())
                .or_insert_with(|| {
                    Arc::new(Source {
                        file: tokio::sync::OnceCell::new(),
                        last_used: Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        *entry
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let client = self.client().await?;
        // A failed open leaves the cell empty: the next read tries again.
        let file = entry
            .file
            .get_or_try_init(|| async {
                client
                    .open_readonly(source, &self.user, true)
                    .await
                    .map_err(|e| OriginError(format!("cannot open {source} read-only: {e}")))
            })
            .await?;
        Ok(file.clone())
    }
}

impl Origin for CurveVolumes {
    fn read(
        &self,
        source: &str,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'_, Result<Vec<u8>, OriginError>> {
        let source = source.to_string();
        Box::pin(async move {
            let deadline = Instant::now() + ORIGIN_DEADLINE;
            let file = self.open(&source).await?;
            let mut buf = vec![0u8; len];
            file.read_by(offset, &mut buf, deadline)
                .await
                .map_err(|e| OriginError(format!("read of {source} at {offset}+{len}: {e}")))?;
            Ok(buf)
        })
    }
}
