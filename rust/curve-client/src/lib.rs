//! The curvefs client core: `client.conf`, authentication, the RPC transport, the MDS client
//! with failover, sessions and leases, the metadata cache and chunk IO. It knows nothing of
//! Python; `curvefs-python` wraps [`Client`] call for call.

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
