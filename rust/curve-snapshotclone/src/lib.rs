//! Curve's snapshot/clone service (`snapshotcloneserver`) over the curvefs client: the clone
//! task of a clone of a volume (an "image clone") or of a snapshot, a recover of a volume
//! from its snapshot, and their flatten (`clone`), in upstream's calls, order, users and
//! constants (`src/snapshotcloneserver/clone/clone_core.cpp`); the
//! service's HTTP API with upstream's actions, parameters, JSON bodies and codes
//! (`service`, `codes`); its task records (`tasks`); snapshots of volumes, dumped to the
//! snapshot data store (`snapshot`, `snapshots`, `datastore`).
//!
//! Where this differs from upstream's service is listed once, in the docs
//! (`docs/compatibility.md`, "The snapshot/clone service").

mod clone;
pub mod codes;
pub mod datastore;
pub mod service;
pub mod snapshot;
pub mod snapshots;
pub mod tasks;

pub use clone::{CloneError, CloneOptions, CloneTasks};
pub use service::{ServiceConfig, ServiceError, serve};
pub use snapshot::{SnapshotOptions, Snapshots};
pub use tasks::Fence;
