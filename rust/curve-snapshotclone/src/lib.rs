//! What Curve's snapshot/clone service (`snapshotcloneserver`) does to a cluster, over the
//! curvefs client: for now the clone task of a lazy clone of a volume (an "image clone")
//! and its flatten. The calls, their order, the users they are made as and the constants
//! are upstream's (`src/snapshotcloneserver/clone/clone_core.cpp`); the service's task
//! store, HTTP API and snapshots are not here yet.
//!
//! Where this differs from upstream's service:
//! - No task record: a clone that fails half-way is not resumed or cleaned up by a
//!   background scan; the caller sees the error and the temporary file stays in
//!   [`CloneOptions::temp_dir`].
//! - No reference count of clones per source: after a flatten the source keeps its
//!   BeingCloned status (upstream sets it back to Created once no task refers to it).
//!   The local MDS decides DELETE_BEING_CLONED from the clones that still read the source,
//!   so the source can be deleted once every clone of it is flattened.

mod clone;

pub use clone::{CloneError, CloneOptions, CloneTasks};
