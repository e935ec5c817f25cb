//! The snapshot data store: where the service puts a snapshot's chunks when it dumps the
//! snapshot, and where clones of that snapshot read them from (chunks whose location is
//! `<key>@s3`). Upstream keeps them in S3 (`snapshot_data_store_s3.cpp`); here they go
//! through `object_store`: a local folder by default, S3 when an upstream `s3.conf` names
//! an endpoint.
//!
//! Objects are named as upstream names them (`snapshot_data_store.h`): a chunk's bytes
//! at `<file>-<chunkIndex>-<seq>`, a snapshot's chunk index at `<file>-<seq>` (a
//! `ChunkMap` message, see protos/snapshotcloneserver.proto). The file name keeps its
//! slashes, so a local store holds `/vol`'s objects under `<folder>/vol-…` and
//! `/dir/vol`'s under `<folder>/dir/vol-…`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use curve_proto::snapshotclone::ChunkMap;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use prost::Message;

/// Why the data store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DataStoreError {
    /// The `s3.conf` or the local folder cannot make a store.
    #[error("snapshot data store: {0}")]
    Config(String),
    /// The store refused or failed a request.
    #[error("snapshot data store: {0}")]
    Store(#[from] object_store::Error),
    /// An object is not what this service wrote there.
    #[error("snapshot data store: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, DataStoreError>;

/// S3 as an upstream `s3.conf` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// `s3.endpoint` (upstream's older `s3.nos_address` if that is empty): `host:port` or
    /// a URL.
    pub endpoint: String,
    /// `s3.bucket_name` (else `s3.snapshot_bucket_name`).
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// `s3.region`, default `us-east-1`.
    pub region: String,
    /// `s3.http_scheme`: 0 http (upstream's default), 1 https.
    pub https: bool,
}

impl S3Options {
    /// The options of an upstream `s3.conf` (`key=value` lines, `#` comments); `None` when
    /// it names no endpoint, as upstream's shipped conf does (the local folder is used).
    pub fn from_conf(text: &str) -> Result<Option<Self>> {
        let mut keys: BTreeMap<&str, &str> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                keys.insert(k.trim(), v.trim());
            }
        }
        let first = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| keys.get(n).copied())
                .find(|v| !v.is_empty())
                .unwrap_or("")
                .to_string()
        };
        let endpoint = first(&["s3.endpoint", "s3.nos_address"]);
        if endpoint.is_empty() {
            return Ok(None);
        }
        let bucket = first(&["s3.bucket_name", "s3.snapshot_bucket_name"]);
        if bucket.is_empty() {
            return Err(DataStoreError::Config(
                "s3.conf names an endpoint but no s3.bucket_name".into(),
            ));
        }
        let https = match first(&["s3.http_scheme"]).as_str() {
            "" | "0" => false,
            "1" => true,
            other => {
                return Err(DataStoreError::Config(format!(
                    "s3.http_scheme is 0 (http) or 1 (https), not {other:?}"
                )));
            }
        };
        let region = match first(&["s3.region"]) {
            r if r.is_empty() => "us-east-1".to_string(),
            r => r,
        };
        Ok(Some(S3Options {
            endpoint,
            bucket,
            access_key: first(&["s3.ak"]),
            secret_key: first(&["s3.sk"]),
            region,
            https,
        }))
    }

    fn url(&self) -> String {
        if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            let scheme = if self.https { "https" } else { "http" };
            format!("{scheme}://{}", self.endpoint)
        }
    }
}

/// Where one chunk's bytes of one snapshot are: upstream's `ChunkDataName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkDataName {
    pub file: String,
    pub chunk_index: u32,
    /// The chunk's sn when its bytes were read (GetChunkInfo's, not always the
    /// snapshot's own seq: a chunk unchanged since an earlier snapshot keeps its sn).
    pub seq: u64,
}

impl ChunkDataName {
    /// The object key, `<file>-<chunkIndex>-<seq>`.
    pub fn key(&self) -> String {
        format!("{}-{}-{}", self.file, self.chunk_index, self.seq)
    }

    /// A key back into its parts, read from the end as upstream's `ToChunkDataName` does,
    /// so file names with dashes survive.
    pub fn parse(key: &str) -> Option<Self> {
        let (rest, seq) = key.rsplit_once('-')?;
        let (file, index) = rest.rsplit_once('-')?;
        if file.is_empty() {
            return None;
        }
        Some(ChunkDataName {
            file: file.to_string(),
            chunk_index: index.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// A snapshot's chunk index: for each chunk of the volume that held data at the snapshot,
/// the sn of the object that holds its bytes (upstream's `ChunkIndexData`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkIndex {
    pub file: String,
    pub chunks: BTreeMap<u32, u64>,
}

impl ChunkIndex {
    pub fn new(file: &str) -> Self {
        ChunkIndex {
            file: file.to_string(),
            chunks: BTreeMap::new(),
        }
    }

    /// The object of chunk `index`, if the snapshot has data there.
    pub fn chunk(&self, index: u32) -> Option<ChunkDataName> {
        self.chunks.get(&index).map(|&seq| ChunkDataName {
            file: self.file.clone(),
            chunk_index: index,
            seq,
        })
    }

    /// Whether this index refers to `name` (an earlier snapshot's chunk object still in
    /// use, so deleting a snapshot must keep it).
    pub fn refers_to(&self, name: &ChunkDataName) -> bool {
        self.file == name.file && self.chunks.get(&name.chunk_index) == Some(&name.seq)
    }

    fn encode(&self) -> Vec<u8> {
        ChunkMap {
            indexmap: self
                .chunks
                .keys()
                .filter_map(|&i| self.chunk(i).map(|n| (i, n.key())))
                .collect(),
        }
        .encode_to_vec()
    }

    fn decode(file: &str, bytes: &[u8]) -> Result<Self> {
        let map = ChunkMap::decode(bytes)
            .map_err(|e| DataStoreError::Corrupt(format!("chunk index of {file}: {e}")))?;
        let mut index = ChunkIndex::new(file);
        for (i, key) in map.indexmap {
            let name = ChunkDataName::parse(&key).filter(|n| n.chunk_index == i && n.file == file);
            let Some(name) = name else {
                return Err(DataStoreError::Corrupt(format!(
                    "chunk index of {file}: chunk {i} names {key:?}"
                )));
            };
            index.chunks.insert(i, name.seq);
        }
        Ok(index)
    }
}

/// The data store: a local folder or an S3 bucket.
#[derive(Clone)]
pub struct DataStore {
    store: Arc<dyn ObjectStore>,
    described: String,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

fn object_path(key: &str) -> ObjectPath {
    ObjectPath::from(key)
}

/// Removes below `dir` what puts cut short left: object_store's local store writes an
/// object to `<name>#<digits>` and renames it into place, so a service killed mid-put
/// leaves that file behind. The store never lists such names as objects (they are not
/// valid object paths to it), so only the disk would ever see them.
fn remove_staged_uploads(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_staged_uploads(&path)?;
            continue;
        }
        let name = entry.file_name();
        let staged = name
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, suffix)| {
                !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
            });
        if staged {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

impl DataStore {
    /// A store in the local folder `dir` (created if missing); what puts cut short by a
    /// killed service left is removed.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DataStoreError::Config(format!("{}: {e}", dir.display())))?;
        remove_staged_uploads(dir)
            .map_err(|e| DataStoreError::Config(format!("{}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)?;
        Ok(DataStore {
            store: Arc::new(fs),
            described: format!("local folder {}", dir.display()),
        })
    }

    /// A store in the S3 bucket `options` name.
    pub fn s3(options: &S3Options) -> Result<Self> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(options.url())
            .with_bucket_name(&options.bucket)
            .with_access_key_id(&options.access_key)
            .with_secret_access_key(&options.secret_key)
            .with_region(&options.region)
            .with_allow_http(!options.https)
            // Upstream's default (`s3.useVirtualAddressing=false`): path-style requests,
            // as MinIO and most private S3 servers want.
            .with_virtual_hosted_style_request(false)
            .build()?;
        Ok(DataStore {
            store: Arc::new(s3),
            described: format!("S3 bucket {} at {}", options.bucket, options.url()),
        })
    }

    /// The store an upstream `s3.conf` at `conf` names, else the local folder `dir`.
    pub fn from_conf_or_local(
        conf: Option<&std::path::Path>,
        dir: &std::path::Path,
    ) -> Result<Self> {
        if let Some(conf) = conf {
            let text = std::fs::read_to_string(conf)
                .map_err(|e| DataStoreError::Config(format!("{}: {e}", conf.display())))?;
            if let Some(options) = S3Options::from_conf(&text)? {
                return Self::s3(&options);
            }
        }
        Self::local(dir)
    }

    /// Stores one chunk's bytes of a snapshot (replacing any earlier copy whole).
    pub async fn put_chunk_data(&self, name: &ChunkDataName, data: Bytes) -> Result<()> {
        self.store
            .put(&object_path(&name.key()), PutPayload::from_bytes(data))
            .await?;
        Ok(())
    }

    /// `range` of the object `key` (a chunk's bytes, as an `@s3` location names them).
    pub async fn read_chunk_data(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let data = self.store.get_range(&object_path(key), range).await?;
        if data.len() as u64 != want {
            return Err(DataStoreError::Corrupt(format!(
                "{key}: {} bytes where {want} were asked",
                data.len()
            )));
        }
        Ok(data)
    }

    pub async fn chunk_data_exists(&self, name: &ChunkDataName) -> Result<bool> {
        exists(self.store.as_ref(), &name.key()).await
    }

    /// Removes one chunk's bytes; an object already gone is not an error.
    pub async fn delete_chunk_data(&self, name: &ChunkDataName) -> Result<()> {
        delete(self.store.as_ref(), &name.key()).await
    }

    fn index_key(file: &str, seq: u64) -> String {
        format!("{file}-{seq}")
    }

    pub async fn put_chunk_index(&self, seq: u64, index: &ChunkIndex) -> Result<()> {
        let key = Self::index_key(&index.file, seq);
        self.store
            .put(&object_path(&key), PutPayload::from(index.encode()))
            .await?;
        Ok(())
    }

    /// The chunk index of snapshot `seq` of `file`; `None` if it was never stored.
    pub async fn chunk_index(&self, file: &str, seq: u64) -> Result<Option<ChunkIndex>> {
        let key = Self::index_key(file, seq);
        match self.store.get(&object_path(&key)).await {
            Ok(got) => Ok(Some(ChunkIndex::decode(file, &got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_chunk_index(&self, file: &str, seq: u64) -> Result<()> {
        delete(self.store.as_ref(), &Self::index_key(file, seq)).await
    }
}

async fn exists(store: &dyn ObjectStore, key: &str) -> Result<bool> {
    match store.head(&object_path(key)).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn delete(store: &dyn ObjectStore, key: &str) -> Result<()> {
    match store.delete(&object_path(key)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_local_store_removes_what_cut_puts_left() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("vols");
        std::fs::create_dir_all(&nested)?;
        for name in ["a-0-3", "a-0-3#1", "a#b-1-2", "a-2-3#"] {
            std::fs::write(dir.path().join(name), b"x")?;
        }
        std::fs::write(nested.join("b-0-1#17"), b"x")?;
        std::fs::write(nested.join("b-0-1"), b"x")?;
        DataStore::local(dir.path()).map_err(std::io::Error::other)?;
        let names = |d: &std::path::Path| -> std::io::Result<Vec<String>> {
            let mut v: Vec<String> = std::fs::read_dir(d)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()?;
            v.sort();
            Ok(v)
        };
        // Staged uploads (`#` and digits) go; names that only hold a `#` stay.
        assert_eq!(names(dir.path())?, ["a#b-1-2", "a-0-3", "a-2-3#", "vols"]);
        assert_eq!(names(&nested)?, ["b-0-1"]);
        Ok(())
    }

    #[test]
    fn s3_conf_keys_are_upstreams() -> Result<()> {
        // Upstream's shipped conf: no endpoint, so the local folder.
        let shipped = "s3.nos_address=\ns3.endpoint=\ns3.snapshot_bucket_name=curve\n\
                       s3.bucket_name=curve\ns3.ak=admin\ns3.sk=password\n";
        assert_eq!(S3Options::from_conf(shipped)?, None);
        let conf = "# S3\ns3.nos_address=\ns3.endpoint = 10.0.0.1:9000\n\
                    s3.snapshot_bucket_name=old\ns3.bucket_name=snaps\ns3.ak=AK\ns3.sk=SK\n\
                    s3.http_scheme=1\n";
        let options = S3Options::from_conf(conf)?;
        assert_eq!(
            options,
            Some(S3Options {
                endpoint: "10.0.0.1:9000".into(),
                bucket: "snaps".into(),
                access_key: "AK".into(),
                secret_key: "SK".into(),
                region: "us-east-1".into(),
                https: true,
            })
        );
        assert_eq!(
            options.map(|o| o.url()).as_deref(),
            Some("https://10.0.0.1:9000")
        );
        // The older key names still count.
        let old = S3Options::from_conf("s3.nos_address=h:1\ns3.snapshot_bucket_name=b\n")?;
        assert_eq!(
            old.map(|o| (o.endpoint, o.bucket)),
            Some(("h:1".into(), "b".into()))
        );
        assert!(S3Options::from_conf("s3.endpoint=h:1\n").is_err());
        assert!(
            S3Options::from_conf("s3.endpoint=h:1\ns3.bucket_name=b\ns3.http_scheme=2").is_err()
        );
        // A conf naming S3 makes an S3 store (no request is made until it is used).
        let store = DataStore::s3(
            &S3Options::from_conf("s3.endpoint=h:1\ns3.bucket_name=b")?
                .ok_or_else(|| DataStoreError::Config("none".into()))?,
        )?;
        assert_eq!(format!("{store:?}"), "S3 bucket b at http://h:1");
        Ok(())
    }

    #[test]
    fn chunk_data_names_read_back_from_the_end() {
        let name = ChunkDataName {
            file: "/dir/my-vol-2".into(),
            chunk_index: 17,
            seq: 3,
        };
        assert_eq!(name.key(), "/dir/my-vol-2-17-3");
        assert_eq!(ChunkDataName::parse(&name.key()), Some(name));
        for bad in ["", "x", "-1-2", "/v-a-1", "/v-1-b"] {
            assert_eq!(ChunkDataName::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_local_store_keeps_chunks_and_indexes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| DataStoreError::Config(e.to_string()))?;
        let store = DataStore::local(&dir.path().join("snapshots"))?;
        let name = ChunkDataName {
            file: "/dir/vol".into(),
            chunk_index: 2,
            seq: 1,
        };
        assert!(!store.chunk_data_exists(&name).await?);
        let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        store
            .put_chunk_data(&name, Bytes::from(data.clone()))
            .await?;
        assert!(store.chunk_data_exists(&name).await?);
        assert!(dir.path().join("snapshots/dir/vol-2-1").is_file());
        let piece = store.read_chunk_data(&name.key(), 4096..8192).await?;
        assert_eq!(&piece[..], &data[4096..8192]);
        assert!(
            store
                .read_chunk_data(&name.key(), 16000..20000)
                .await
                .is_err()
        );

        let mut index = ChunkIndex::new("/dir/vol");
        index.chunks.insert(2, 1);
        index.chunks.insert(9, 4);
        store.put_chunk_index(4, &index).await?;
        let back = store.chunk_index("/dir/vol", 4).await?;
        assert_eq!(back.as_ref(), Some(&index));
        assert!(back.is_some_and(|i| i.refers_to(&name)));
        assert_eq!(store.chunk_index("/dir/vol", 5).await?, None);

        store.delete_chunk_data(&name).await?;
        store.delete_chunk_data(&name).await?;
        assert!(!store.chunk_data_exists(&name).await?);
        store.delete_chunk_index("/dir/vol", 4).await?;
        assert_eq!(store.chunk_index("/dir/vol", 4).await?, None);
        Ok(())
    }
}
