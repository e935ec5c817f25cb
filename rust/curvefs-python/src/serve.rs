//! The local cluster's server processes: `python -m curvefs._serve` calls these, and they
//! return only when the server stops (SIGTERM or SIGINT) or fails.

use std::future::Future;
use std::path::{Path, PathBuf};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use tokio::signal::unix::{SignalKind, signal};

/// Runs a server on its own current-thread runtime (the 2-vCPU budget goes to the client
/// and to the other servers) with the GIL released for the whole run.
fn run<F, Fut>(py: Python<'_>, serve: F) -> PyResult<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send,
    Fut: Future<Output = Result<(), curve_cluster::Error>>,
{
    py.detach(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the server runtime: {e}"))?;
        rt.block_on(async {
            // Registered before serving, so a SIGTERM sent right after startup is not lost.
            let mut term = signal(SignalKind::terminate())
                .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
            let mut int =
                signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
            let shutdown = Box::pin(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            serve(shutdown).await.map_err(|e| e.to_string())
        })
    })
    .map_err(PyOSError::new_err)
}

/// Serves the MDS of the local cluster in `data_dir` until SIGTERM or SIGINT.
#[pyfunction]
pub fn serve_mds(py: Python<'_>, data_dir: PathBuf) -> PyResult<()> {
    run(py, move |shutdown| async move {
        curve_cluster::serve_mds(Path::new(&data_dir), shutdown).await
    })
}

/// Serves chunkserver `chunkserver_id` of the local cluster in `data_dir` until SIGTERM or
/// SIGINT.
#[pyfunction]
pub fn serve_chunkserver(py: Python<'_>, data_dir: PathBuf, chunkserver_id: u32) -> PyResult<()> {
    run(py, move |shutdown| async move {
        curve_cluster::serve_chunkserver(Path::new(&data_dir), chunkserver_id, shutdown).await
    })
}
