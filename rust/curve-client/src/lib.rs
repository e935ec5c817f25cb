//! The curvefs client core: `client.conf`, authentication, the RPC transport, the MDS client
//! with failover, sessions and leases, the metadata cache and chunk IO. It knows nothing of
//! Python; `curvefs-python` wraps [`Client`] call for call.
//!
//! Module map: [`conf`] parses client.conf; [`auth`] computes date and signature;
//! [`transport`] is the one RPC interface (gRPC here); [`mds`] makes every MDS call with
//! failover and maps status codes; [`metacache`] remembers segments, copysets and leaders;
//! [`io`] maps file ranges to chunks (striping included); [`chunk`] sends one chunk
//! request with retries; [`file`](mod@file) holds open files, leases and the read/write fan-out;
//! [`client`] is the facade.
//!
//! Where this client behaves differently from upstream's libcurve on purpose:
//! - IO never hangs: one user IO has `chunkserver.maxRetryTimeMS` (60 s) for lease waits
//!   and chunk retries, IO-path MDS calls have `mds.maxRetryMsInIOPath` (60 s); upstream
//!   retries ~forever.
//! - An open file deleted, renamed away or replaced by another inode makes IO on its fd
//!   fail with DISABLEIO (upstream: IO blocks until Close).
//! - Open returns the MDS's mapped code (NOTEXIST, AUTHFAIL, …) instead of FAILED; an empty
//!   owner is AUTHFAIL for every call, Open included (upstream's Open: EXISTS).
//! - kNotSupported from Rename/Unlink/ChangeOwner is retried (within `mds.maxRetryMS`)
//!   only while it can change: on a page file, during the MDS's start-up window. Any other
//!   (a directory rename, DeleteForce outside /RecycleBin) is answered at once, not after
//!   8 s of retries.
//! - Paths are checked before any RPC (absolute, no trailing '/', no empty, '.' or '..'
//!   component, ≤ 4096 bytes, components ≤ 255 bytes) → PARAM_ERROR.
//! - Close of an unknown fd is BAD_FD (upstream: FAILED); Close of a file that no longer
//!   exists succeeds; a failing CloseFile still releases the fd and reports the error.
//! - Segment allocation refused for lack of space (kSegmentAllocateError) and chunk NOSPACE
//!   fail at once with NO_SPACE instead of being retried.
//! - IO past the known length re-reads the file's length once (an Extend by anyone is seen
//!   at once), then fails with FAILED.
//! - Not implemented: client-side throttling (`throttle.enable` is parsed and ignored),
//!   chunkserver health probes and "unstable" marking (the timeout backoff restarts
//!   whenever the leader changes instead), lazily cloned files (cloneFileSource), discard.
//!   Kept as upstream: Listdir of a file is UNKNOWN (kNotDirectory → -100).

pub mod auth;
pub mod chunk;
pub mod client;
pub mod conf;
pub mod error;
pub mod file;
pub mod io;
pub mod mds;
pub mod metacache;
pub mod transport;

pub use client::{Client, CreateOptions, FileInfo, UserInfo};
pub use conf::ClientConfig;
pub use error::{Error, ErrorCode, Result};

/// Locks a std mutex, ignoring poisoning: every critical section here leaves its data
/// consistent, so a panic elsewhere must not turn into a panic in every later call.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `budget` from now, saturating: budgets come from client.conf, and a huge one must mean
/// "practically forever", not an overflow panic.
pub(crate) fn deadline_after(budget: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(budget)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}
