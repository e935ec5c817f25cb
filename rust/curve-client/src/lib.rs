//! The curvefs client core: `client.conf`, authentication, the RPC transport, the MDS client
//! with failover, sessions and leases, the metadata cache and chunk IO. It knows nothing of
//! Python; `curvefs-python` wraps [`Client`] call for call.
//!
//! Module map, bottom up (each module uses only those before it): [`error`], [`conf`]
//! (client.conf), [`auth`] (credentials, date and signature), [`transport`] (the one RPC
//! interface: baidu_std and gRPC), [`io`] (file ranges to chunks, striping included),
//! [`location`] (a clone chunk's origin), [`events`] (log levels, rate limits) and
//! [`metrics`] (lock-free counters and histograms), [`mds`] (every MDS call with failover and status mapping), [`metacache`] (segments,
//! copysets, leaders), [`context`] (what a client's files share; no fds), [`chunk`] (one
//! chunk request with retries, speaking to its file through [`chunk::ChunkTarget`]),
//! `fanout` (an IO's pieces under the in-flight limit), [`readonly`] (upstream's Open4ReadOnly: GetFileInfo only, no session), [`clone`] (a lazy
//! clone's source: per-chunk source info, the SourceReader), [`file`](mod@file) (an open
//! file: lease, read/write fan-out, read-modify-write of partial blocks), and on top
//! [`client`], the SDK's facade with its fd table.
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
//! - Lazy clones: a state the client cannot serve right (an unknown file status, Cloning,
//!   CloneMetaInstalled naming a source volume without OpenFile's list of its segments) or
//!   a source it cannot open fails the IO with STATUS_NOT_MATCH or the source's error,
//!   naming the volume and its source; upstream logs and reads zeros. Idle source handles
//!   are dropped by the reads that find them (`closefd.timeout` / `closefd.timeInterval`)
//!   instead of by a thread. write_zeroes and discard write zeros over a clone's segments
//!   whose source has data instead of skipping or releasing them (which would make them
//!   read the source again).
//! - Not implemented: client-side throttling (`throttle.enable` is parsed and ignored),
//!   chunkserver health probes and "unstable" marking (the timeout backoff restarts
//!   whenever the leader changes instead).
//!   Kept as upstream: Listdir of a file is UNKNOWN (kNotDirectory → -100).
//! - Metrics ([`metrics`]) are totals since a file's open (or the client's start), with
//!   p50/p99/p999/max from a histogram, not bvar's per-second windows; no dummy HTTP
//!   server exposes them (the binding hands them to Python and Prometheus).

pub mod auth;
mod blocks;
pub mod chunk;
pub mod client;
pub mod clone;
pub mod conf;
pub mod context;
pub mod error;
pub mod events;
mod fanout;
pub mod file;
pub mod io;
pub mod location;
pub mod mds;
pub mod metacache;
pub mod metrics;
pub mod readonly;
pub mod stat;
pub mod transport;

pub use auth::UserInfo;
pub use client::Client;
pub use conf::ClientConfig;
pub use context::Context;
pub use error::{Error, ErrorCode, Result};
pub use file::OpenFile;
pub use mds::CreateOptions;
pub use readonly::ReadOnlyFile;
pub use stat::FileStat;

/// Locks a std mutex, ignoring poisoning: every critical section here leaves its data
/// consistent, so a panic elsewhere must not turn into a panic in every later call.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads a std RwLock, ignoring poisoning (as [`lock`]).
pub(crate) fn read_lock<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a std RwLock, ignoring poisoning (as [`lock`]).
pub(crate) fn write_lock<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `budget` from now, saturating: budgets come from client.conf, and a huge one must mean
/// "practically forever", not an overflow panic.
pub(crate) fn deadline_after(budget: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(budget)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}
