//! `AioContext_t` and `CBDClient.AioRead`/`AioWrite`, as upstream's SDK has them, with a
//! callback Python can actually set: the IO runs as a task on the runtime; when it ends,
//! `ctx.ret` holds the length or a negative code and `ctx.cb(ctx)` runs with the GIL on a
//! runtime thread (as rbd's completions do). The task owns a reference to the context and
//! a view of its buffer until the callback has run, so neither can go away under it.

use std::sync::Arc;

use bytes::Bytes;
use curve_client::Client;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use crate::errors::{CallError, CallResult, PARAM_ERROR};
use crate::runtime;

/// The arguments and outcome of one asynchronous IO (upstream's `AioContext_t`).
#[pyclass(name = "AioContext_t", module = "curvefs")]
pub struct AioContext {
    #[pyo3(get, set)]
    pub offset: u64,
    #[pyo3(get, set)]
    pub length: u64,
    /// The length on success, a negative code on failure; set before `cb` runs.
    #[pyo3(get, set)]
    pub ret: i32,
    /// `CURVE_OP_READ` or `CURVE_OP_WRITE`, set by AioRead/AioWrite.
    #[pyo3(get, set)]
    pub op: i32,
    /// Called as `cb(ctx)` when the IO ends; `None` for no callback.
    #[pyo3(get, set)]
    pub cb: Option<Py<PyAny>>,
    /// AioRead fills it in place (any writable buffer); AioWrite sends it (any buffer, not
    /// copied: keep it unchanged until the callback ran).
    #[pyo3(get, set)]
    pub buf: Option<Py<PyAny>>,
}

#[pymethods]
impl AioContext {
    #[new]
    #[pyo3(signature = (offset=0, length=0, buf=None, cb=None))]
    fn new(offset: u64, length: u64, buf: Option<Py<PyAny>>, cb: Option<Py<PyAny>>) -> Self {
        AioContext {
            offset,
            length,
            ret: 0,
            op: 0,
            cb,
            buf,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "AioContext_t(offset={}, length={}, op={}, ret={})",
            self.offset, self.length, self.op, self.ret
        )
    }
}

/// What a submitted IO needs after submission.
enum Io {
    /// The buffer to fill, held (exported) until the IO ends.
    Read(PyBuffer<u8>),
    /// The data: the caller's buffer itself, pinned until the write ends.
    Write(Bytes),
}

/// Checks the context and starts the IO; the code to return at once if it cannot start.
pub fn submit(
    py: Python<'_>,
    client: CallResult<Arc<Client>>,
    fd: i32,
    ctx: &Bound<'_, AioContext>,
    write: bool,
) -> CallResult<()> {
    let client = client?;
    let (offset, length, buf) = {
        let mut c = ctx.try_borrow_mut().map_err(PyErr::from)?;
        c.op = i32::from(write);
        let buf = c
            .buf
            .as_ref()
            .map(|b| b.clone_ref(py))
            .ok_or_else(|| CallError::param("ctx.buf is not set"))?;
        (c.offset, c.length, buf)
    };
    let len = usize::try_from(length).map_err(|_| CallError::param("length is out of range"))?;
    let view = PyBuffer::<u8>::get(buf.bind(py))
        .map_err(|_| CallError::param("ctx.buf must be a bytes-like object of unsigned bytes"))?;
    if !view.is_c_contiguous() || view.len_bytes() < len {
        return Err(CallError::code(
            PARAM_ERROR,
            format!(
                "ctx.buf must be C-contiguous and hold {len} bytes ({} here)",
                view.len_bytes()
            ),
        ));
    }
    let io = if write {
        drop(view);
        // Pinned, not copied: the buffer stays referenced until the write ends.
        Io::Write(crate::buffers::pinned_bytes(buf.bind(py))?.slice(..len))
    } else {
        if view.readonly() {
            return Err(CallError::param("ctx.buf is read-only"));
        }
        Io::Read(view)
    };
    let rt = runtime::get()?;
    let ctx: Py<AioContext> = ctx.clone().unbind();
    rt.spawn(async move {
        let (ret, held) = match io {
            Io::Write(data) => {
                let r = client.write_bytes(fd, offset, data).await;
                (r.map(|()| len), None)
            }
            Io::Read(view) => {
                // SAFETY: C-contiguous, writable, at least `len` bytes (checked at
                // submission); `view` keeps the export alive and the memory unresized
                // until it is dropped below, after the last use of this slice.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(view.buf_ptr().cast::<u8>(), len) };
                let r = client.read(fd, offset, out).await;
                (r.map(|()| len), Some(view))
            }
        };
        if !runtime::python_alive() {
            // At interpreter exit no callback can run; the buffer's export dies with it.
            std::mem::forget(held);
            return;
        }
        Python::attach(|py| {
            drop(held);
            let ret = match ret {
                Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
                Err(e) => e.sdk_code(),
            };
            let cb = match ctx.try_borrow_mut(py) {
                Ok(mut c) => {
                    c.ret = ret;
                    c.cb.as_ref().map(|cb| cb.clone_ref(py))
                }
                Err(e) => {
                    report(py, "AioContext_t is in use elsewhere", PyErr::from(e));
                    return;
                }
            };
            if let Some(cb) = cb
                && let Err(e) = cb.call1(py, (ctx.clone_ref(py),))
            {
                report(py, "the AioContext_t callback raised", e);
            }
        });
    });
    Ok(())
}

/// Logs an exception from a completion on the `curvefs` logger (never lost, never fatal).
fn report(py: Python<'_>, what: &str, e: PyErr) {
    let logged = py.import("logging").and_then(|logging| {
        let logger = logging.call_method1("getLogger", ("curvefs",))?;
        let exc_info = (
            e.get_type(py),
            e.value(py).clone(),
            e.traceback(py).map(|t| t.into_any()),
        );
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("exc_info", exc_info)?;
        logger.call_method("error", (what,), Some(&kwargs))?;
        Ok(())
    });
    if logged.is_err() {
        e.write_unraisable(py, None);
    }
}
