//! The clone tasks of `curve-snapshotclone` for Python (`LocalCluster.clone_volume`,
//! `flatten`, `curvefs clone`/`flatten`): a client of the cluster's `client.conf`, run as
//! root with the GIL released, failures raised as `curvefs.exceptions.CurveError`.

use std::path::Path;

use curve_client::{Client, ClientConfig, ErrorCode, UserInfo};
use curve_snapshotclone::{CloneError, CloneOptions, CloneTasks};
use pyo3::prelude::*;

use crate::errors::curve_error_because;

fn raise(py: Python<'_>, e: &CloneError) -> PyErr {
    // The SDK code nearest to each of the service's codes.
    let (code, cause) = match e {
        CloneError::FileNotExist(_) => (ErrorCode::NotExist as i32, Default::default()),
        CloneError::FileExist(_) => (ErrorCode::Exists as i32, Default::default()),
        CloneError::FileStatusInvalid { .. } => {
            (ErrorCode::StatusNotMatch as i32, Default::default())
        }
        CloneError::Internal { source, .. } => (source.code as i32, source.cause),
    };
    curve_error_because(py, -code, &e.to_string(), cause)
}

fn client(py: Python<'_>, conf_path: &str) -> PyResult<Client> {
    let made = ClientConfig::from_file(Path::new(conf_path)).and_then(Client::new);
    made.map_err(|e| curve_error_because(py, e.sdk_code(), &e.message, e.cause))
}

fn root(user: String, password: String) -> UserInfo {
    UserInfo {
        owner: user,
        password,
    }
}

/// Stage 1 of a lazy clone of the volume `source` at `dest`, owned by `owner`, made as
/// `root_user`: `dest` then has status CloneMetaInstalled and reads as `source`.
#[pyfunction]
#[pyo3(signature = (conf_path, root_user, root_password, source, dest, owner, poolset = None))]
#[allow(clippy::too_many_arguments)]
pub fn lazy_clone(
    py: Python<'_>,
    conf_path: &str,
    root_user: String,
    root_password: String,
    source: String,
    dest: String,
    owner: String,
    poolset: Option<String>,
) -> PyResult<()> {
    let client = client(py, conf_path)?;
    let root = root(root_user, root_password);
    let done = crate::runtime::wait(py, async move {
        let tasks = CloneTasks::new(&client, root, CloneOptions::default());
        let out = tasks
            .lazy_clone(&source, &dest, &owner, poolset.as_deref())
            .await;
        client.shutdown();
        out
    })?;
    done.map(|_| ()).map_err(|e| raise(py, &e))
}

/// Stage 2 of a lazy clone: copies what `dest` still reads from its source, then marks it
/// Cloned.
#[pyfunction]
pub fn flatten(
    py: Python<'_>,
    conf_path: &str,
    root_user: String,
    root_password: String,
    dest: String,
) -> PyResult<()> {
    let client = client(py, conf_path)?;
    let root = root(root_user, root_password);
    let done = crate::runtime::wait(py, async move {
        let tasks = CloneTasks::new(&client, root, CloneOptions::default());
        let out = tasks.flatten(&dest).await;
        client.shutdown();
        out
    })?;
    done.map_err(|e| raise(py, &e))
}
