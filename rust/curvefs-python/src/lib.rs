//! `curvefs._core`: the native half of the `curvefs` package.
//!
//! A thin binding over curve-client (the SDK's `CBDClient`) and curve-cluster (the local
//! cluster's server processes). It converts arguments and results and releases the GIL
//! around every wait; Curve's behaviour belongs in the core crates, not here.

use pyo3::prelude::*;

mod args;
mod client;
mod errors;
mod runtime;
mod serve;
mod types;

/// Constants of upstream's SWIG module (curve_type.h), with upstream's names and values.
/// Error codes are positive here; the calls return them negated.
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
    ("CURVE_ERROR_OK", 0),
    ("CURVE_ERROR_EXISTS", 1),
    ("CURVE_ERROR_FAILED", 2),
    ("CURVE_ERROR_DISABLEIO", 3),
    ("CURVE_ERROR_AUTHFAIL", 4),
    ("CURVE_ERROR_DELETING", 5),
    ("CURVE_ERROR_NOTEXIST", 6),
    ("CURVE_ERROR_UNDER_SNAPSHOT", 7),
    ("CURVE_ERROR_NOT_UNDERSNAPSHOT", 8),
    ("CURVE_ERROR_DELETE_ERROR", 9),
    ("CURVE_ERROR_NOT_ALLOCATE", 10),
    ("CURVE_ERROR_NOT_SUPPORT", 11),
    ("CURVE_ERROR_NOT_EMPTY", 12),
    ("CURVE_ERROR_NO_SHRINK_BIGGER_FILE", 13),
    ("CURVE_ERROR_SESSION_NOTEXISTS", 14),
    ("CURVE_ERROR_FILE_OCCUPIED", 15),
    ("CURVE_ERROR_PARAM_ERROR", 16),
    ("CURVE_ERROR_INTERNAL_ERROR", 17),
    ("CURVE_ERROR_CRC_ERROR", 18),
    ("CURVE_ERROR_INVALID_REQUEST", 19),
    ("CURVE_ERROR_DISK_FAIL", 20),
    ("CURVE_ERROR_NO_SPACE", 21),
    ("CURVE_ERROR_NOT_ALIGNED", 22),
    ("CURVE_ERROR_BAD_FD", 23),
    ("CURVE_ERROR_LENGTH_NOT_SUPPORT", 24),
    ("CURVE_ERROR_SESSION_NOT_EXIST", 25),
    ("CURVE_ERROR_STATUS_NOT_MATCH", 26),
    ("CURVE_ERROR_DELETE_BEING_CLONED", 27),
    ("CURVE_ERROR_CLIENT_NOT_SUPPORT_SNAPSHOT", 28),
    ("CURVE_ERROR_SNAPSTHO_FROZEN", 29),
    ("CURVE_ERROR_UNKNOWN", 100),
    ("CURVE_OP_READ", 0),
    ("CURVE_OP_WRITE", 1),
];

/// Sends the Rust crates' log events to Python's `logging`, under the `curvefs` logger
/// (`curvefs.curve_client.transport.route`, …), so nothing reaches stderr unless the
/// application's logging config says so. Loggers are looked up once per target, levels
/// on every record, so a level set after import takes effect; debug and trace events stay
/// in Rust, because asking Python about them would take the GIL on the IO path.
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
    use super::client::CBDClient;
    #[pymodule_export]
    use super::serve::{serve_chunkserver, serve_mds};
    #[pymodule_export]
    use super::types::{CreateContext, FileInfo, UserInfo};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        for (name, value) in CONSTANTS {
            m.add(*name, *value)?;
        }
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // Debug builds are an order of magnitude slower on the IO path; let callers tell.
        m.add("debug_build", cfg!(debug_assertions))?;
        install_logging(m.py());
        Ok(())
    }
}
