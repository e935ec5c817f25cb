//! Curve's snapshot/clone service (`snapshotcloneserver`) over the curvefs client: the clone
//! task of a clone of a volume (an "image clone") or of a snapshot, a recover of a volume
//! from its snapshot, and their flatten (`clone`), in upstream's calls, order, users and
//! constants (`src/snapshotcloneserver/clone/clone_core.cpp`); the
//! service's HTTP API with upstream's actions, parameters, JSON bodies and codes
//! (`service`, `codes`); its task records (`tasks`); snapshots of volumes, dumped to the
//! snapshot data store (`snapshot`, `snapshots`, `datastore`).
//!
//! Where this differs from upstream's service:
//! - Clones and recovers from snapshots are made lazy first, as clones of volumes (below);
//!   a Recover of a volume that is not there answers -8 before its source is looked at.
//! - The service calls the MDS as the cluster's root user and checks that a snapshot's
//!   user owns the volume itself (-7); upstream calls as the user and lets the MDS check.
//! - Each chunk of a snapshot is put to the data store whole, once read; upstream uploads
//!   it in parts (S3 multipart).
//! - A clone (or recover) that is not lazy is made as a lazy one and flattened in the background, so
//!   its destination exists (CloneMetaInstalled) before the task is done; upstream
//!   renames it into place only once every chunk is copied.
//! - A clone stopped by a restart of the service before its destination existed is marked
//!   failed (CleanCloneTask removes its temporary file); upstream retries it.
//! - One service process: no leader election among several.
//! - No reference count of clones per source: after a flatten the source keeps its
//!   BeingCloned status (upstream sets it back to Created once no task refers to it).
//!   The local MDS decides DELETE_BEING_CLONED from the clones that still read the source,
//!   so the source can be deleted once every clone of it is flattened.

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
