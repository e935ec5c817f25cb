//! `curvefs._core`: the native half of the `curvefs` package.
//!
//! A thin binding over curve-client (the SDK's `CBDClient`), curve-snapshotclone (clone
//! tasks) and curve-cluster (the local cluster's server processes). It converts arguments
//! and results and releases the GIL around every wait; Curve's behaviour belongs in the
//! core crates, not here.

use pyo3::prelude::*;

mod aio;
mod args;
mod buffers;
mod client;
mod errors;
mod handles;
mod logging;
mod metrics;
mod nbd;
mod runtime;
mod serve;
mod types;

/// Constants of upstream's SWIG module (curve_type.h), with upstream's names and values.
/// The `CURVE_ERROR_*` ones come from the core's code table (`SDK_CODES`), positive, as
/// upstream's; the calls return them negated.
const CONSTANTS: &[(&str, i32)] = &[
    ("CURVE_FILE_CREATED", 0),
    ("CURVE_FILE_DELETING", 1),
    ("CURVE_FILE_CLONING", 2),
    ("CURVE_FILE_CLONEMETAINSTALLED", 3),
    ("CURVE_FILE_CLONED", 4),
    ("CURVE_FILE_BEINGCLONED", 5),
    ("CURVE_INODE_DIRECTORY", 0),
    ("CURVE_INODE_PAGEFILE", 1),
    ("CURVEINODE_APPENDFILE", 2),
    ("CURVE_INODE_APPENDECFILE", 3),
    ("CURVE_OP_READ", 0),
    ("CURVE_OP_WRITE", 1),
];

/// Sends records of the `log` facade (a dependency's; the curvefs crates use `tracing`,
/// bridged by logging.rs) to Python's `logging`, under the `curvefs` logger. Loggers are
/// looked up once per target, levels on every record; debug and trace records stay in
/// Rust, because asking Python about them would take the GIL on the IO path.
fn install_logging(py: Python<'_>) {
    let installed = pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers).map(|l| {
        l.set_prefix("curvefs")
            .filter(log::LevelFilter::Info)
            .install()
    });
    match installed {
        Ok(Ok(_)) => {}
        // Another extension in this process installed the global logger first; its
        // bridge then carries our records.
        Ok(Err(_)) => {}
        Err(e) => e.print(py),
    }
}

/// The native module of curvefs: Curve's SWIG SDK surface (CBDClient, UserInfo_t,
/// FileInfo_t, CreateContext, constants) and the local cluster's server entry points.
#[pymodule(gil_used = false)]
mod _core {
    use super::*;

    #[pymodule_export]
    use super::aio::AioContext;
    #[pymodule_export]
    use super::client::CBDClient;
    #[pymodule_export]
    use super::handles::{ClientHandle, Completions, TaskHandle, VolumeHandle};
    #[pymodule_export]
    use super::nbd::NbdServer;
    #[pymodule_export]
    use super::serve::{
        copyset_leader, create_local_cluster_layout, local_cluster_layout, serve_chunkserver,
        serve_mds, serve_snapshot_clone, transfer_leader, write_local_client_conf,
    };
    #[pymodule_export]
    use super::types::{CreateContext, FileInfo, UserInfo};

    /// Sizes the tokio runtime (worker threads) before its first use.
    #[pyfunction]
    fn set_runtime_threads(threads: usize) -> PyResult<()> {
        super::runtime::set_threads(threads)
    }

    /// Sets the core's event filter from a Python logging level (`curvefs._logging`).
    #[pyfunction]
    fn _set_log_level(level: i32) {
        super::logging::set_level(level);
    }

    /// The Python logging level the core's event filter lets through.
    #[pyfunction]
    fn _log_level() -> i32 {
        super::logging::level()
    }

    /// The `atexit` hook: marks the interpreter as shutting down (see runtime.rs).
    #[pyfunction]
    fn _note_exiting(py: Python<'_>) {
        super::runtime::note_exiting(py);
    }

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        for (name, value) in CONSTANTS {
            m.add(*name, *value)?;
        }
        m.add("CURVE_ERROR_OK", 0)?;
        let names = pyo3::types::PyDict::new(m.py());
        let mut table = Vec::with_capacity(curve_client::error::SDK_CODES.len());
        for row in curve_client::error::SDK_CODES {
            let code = row.code as i32;
            m.add(format!("CURVE_ERROR_{}", row.name), code)?;
            names.set_item(code, row.name)?;
            table.push((
                row.name,
                code,
                row.message,
                row.errno,
                row.class,
                row.builtin,
            ));
        }
        names.set_item(0, "OK")?;
        // `curvefs.exceptions` names its codes, picks its classes and errnos from these.
        m.add("ERROR_NAMES", names)?;
        m.add("SDK_CODES", pyo3::types::PyTuple::new(m.py(), table)?)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // Debug builds are an order of magnitude slower on the IO path; let callers tell.
        m.add("debug_build", cfg!(debug_assertions))?;
        install_logging(m.py());
        super::runtime::watch_forks()?;
        super::runtime::note_main_thread(m.py())?;
        let hook = m.getattr("_note_exiting")?;
        m.py().import("atexit")?.call_method1("register", (hook,))?;
        Ok(())
    }
}
