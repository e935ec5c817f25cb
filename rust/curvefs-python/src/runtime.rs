//! The one tokio runtime every `CBDClient` of the process shares.
//!
//! Built on first use so that `CURVEFS_RUNTIME_THREADS` can be set after import. tokio is not
//! fork-safe: a child forked after the runtime started has its memory but none of its
//! threads, so any wait on it would hang forever. We record the pid that built it and refuse
//! to run in another one.

use std::sync::OnceLock;

use pyo3::PyResult;
use pyo3::exceptions::PyRuntimeError;
use tokio::runtime::Runtime;

/// Worker threads when `CURVEFS_RUNTIME_THREADS` is unset: the client's IO is driven on the
/// calling thread by `block_on`; the workers only run the connections' background tasks, and
/// on a 2-vCPU box more would compete with the application and the local cluster.
const DEFAULT_THREADS: usize = 2;

pub const THREADS_ENV: &str = "CURVEFS_RUNTIME_THREADS";

struct Built {
    runtime: Runtime,
    pid: u32,
}

static RUNTIME: OnceLock<Result<Built, String>> = OnceLock::new();

fn threads() -> Result<usize, String> {
    match std::env::var(THREADS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_THREADS),
        Err(e) => Err(format!("{THREADS_ENV}: {e}")),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "{THREADS_ENV} must be an integer from 1 to 1024, not {v:?}"
            )),
        },
    }
}

fn build() -> Result<Built, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads()?)
        .thread_name("curvefs-client")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the curvefs runtime: {e}"))?;
    Ok(Built {
        runtime,
        pid: std::process::id(),
    })
}

/// The shared runtime, built on first use; an error (never a hang) in a forked child.
pub fn get() -> PyResult<&'static Runtime> {
    match RUNTIME.get_or_init(build) {
        Ok(b) if b.pid == std::process::id() => Ok(&b.runtime),
        Ok(b) => Err(PyRuntimeError::new_err(format!(
            "curvefs cannot be used in a process forked after it started (runtime of pid {}, \
             this is pid {}); use the 'spawn' or 'forkserver' start method, or fork before \
             the first CBDClient call",
            b.pid,
            std::process::id()
        ))),
        Err(msg) => Err(PyRuntimeError::new_err(msg.clone())),
    }
}
