//! Reading the origin of a clone chunk: the bytes of the source volume it was cloned from
//! (upstream's `OriginCopyer` for `@cs` locations). The chunkserver sees only the
//! [`Origin`] trait; the local cluster gives it one over curvefs's own client
//! (`curve_client`, the source opened read-only as root, one handle per source), tests
//! may give it another.

use std::fmt;
use std::time::Duration;

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
}
