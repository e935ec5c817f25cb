//! `curvefs._core.NbdServer`: curve-nbd's server on the shared runtime, for
//! `curvefs.nbd.serve` and `curvefs nbd serve`. Opening, binding and stopping are here;
//! the protocol is all in curve-nbd.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::errors;
use crate::handles::ClientHandle;
use crate::runtime::{self, Owned};

/// An NBD server of one or more volumes, running in the background from construction
/// until `stop` (which waits until every volume is closed).
#[pyclass(frozen, module = "curvefs._core")]
pub struct NbdServer {
    address: String,
    uris: Vec<(String, String)>,
    /// Both ends below belong to the serving task on this process's runtime: in a
    /// forked child (where that task does not run) they are neither used nor dropped.
    stop_tx: Owned<Mutex<Option<oneshot::Sender<()>>>>,
    /// `None` while serving; then the outcome, an error message if it failed.
    done: Owned<watch::Receiver<Option<Result<(), String>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NbdServer {
    fn signal_stop(&self) {
        let Ok(stop_tx) = self.stop_tx.get("NbdServer") else {
            return;
        };
        if let Some(tx) = lock(stop_tx).take() {
            let _ = tx.send(());
        }
    }

    fn wait_done(&self, py: Python<'_>) -> PyResult<()> {
        let mut done = self.done.get("NbdServer")?.clone();
        let outcome = runtime::wait(py, async move {
            match done.wait_for(|d| d.is_some()).await {
                Ok(d) => d.clone().unwrap_or(Ok(())),
                Err(_) => Err("the NBD server task ended without a word".to_string()),
            }
        })?;
        outcome.map_err(PyOSError::new_err)
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        // Dropped unstopped: stop in the background (the runtime outlives this object).
        self.signal_stop();
    }
}

#[pymethods]
impl NbdServer {
    /// Opens `volumes` with `client`'s user and listens on the Unix socket `socket` or,
    /// if `bind` (`HOST:PORT`) is given, on TCP.
    #[new]
    #[pyo3(signature = (client, volumes, *, socket=None, bind=None, read_only=false))]
    fn new(
        py: Python<'_>,
        client: &ClientHandle,
        volumes: Vec<String>,
        socket: Option<PathBuf>,
        bind: Option<String>,
        read_only: bool,
    ) -> PyResult<Self> {
        let (core, user) = client.parts()?;
        let (core, user) = (core.clone(), user.clone());
        let listener = match (&socket, &bind) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "give a socket or a bind address, not both",
                ));
            }
            (None, None) => return Err(PyValueError::new_err("give a socket or a bind address")),
            (Some(path), None) => {
                let rt = runtime::get()?;
                let _entered = rt.enter();
                curve_nbd::Listener::unix(path)
            }
            (None, Some(addr)) => runtime::wait(py, curve_nbd::Listener::tcp(addr))?,
        }
        .map_err(|e| PyOSError::new_err(format!("cannot listen for NBD clients: {e}")))?;
        let opened = runtime::wait(
            py,
            curve_nbd::open_exports(&core, &user, &volumes, read_only),
        )?;
        let exports = match opened {
            Ok(e) => e,
            Err(e) => {
                if let curve_nbd::Listener::Unix(_, path) = &listener {
                    let _ = std::fs::remove_file(path);
                }
                return Err(errors::curve_error_because(
                    py,
                    e.sdk_code(),
                    &format!("open {}: {}", volumes.join(", "), e.message),
                    e.cause,
                ));
            }
        };
        let uris = exports
            .iter()
            .map(|e| Ok((e.path.clone(), listener.uri(&e.name)?)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let address = listener
            .address()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done) = watch::channel(None);
        runtime::get()?.spawn(async move {
            let outcome = curve_nbd::serve(listener, exports, async move {
                let _ = stop_rx.await;
            })
            .await
            .map_err(|e| e.to_string());
            let _ = done_tx.send(Some(outcome));
        });
        Ok(NbdServer {
            address,
            uris,
            stop_tx: Owned::new(Mutex::new(Some(stop_tx))),
            done: Owned::new(done),
        })
    }

    /// `unix:PATH` or `HOST:PORT`.
    #[getter]
    fn address(&self) -> String {
        self.address.clone()
    }

    /// `(volume path, NBD URI)` for each export, in the order given.
    #[getter]
    fn uris(&self) -> Vec<(String, String)> {
        self.uris.clone()
    }

    /// Stops taking requests, lets those in flight finish, closes the connections and the
    /// volumes; returns when all that is done. Later calls return at once.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.signal_stop();
        self.wait_done(py)
    }

    /// Waits until the server stops (another thread's `stop`); Ctrl-C raises
    /// KeyboardInterrupt and leaves it running.
    fn wait(&self, py: Python<'_>) -> PyResult<()> {
        self.wait_done(py)
    }
}
