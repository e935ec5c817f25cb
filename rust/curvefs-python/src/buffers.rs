//! Python buffers handed to the core as `Bytes` without a copy.
//!
//! The `Bytes` owns a reference to a Python object that keeps the memory alive and
//! unresizable: the `bytes` or `str` itself (immutable), or a memoryview of any other
//! exporter (a live memoryview pins its exporter's buffer). The core may drop its last
//! clone on a runtime thread without the GIL: PyO3 then defers the decref to the next time
//! a thread attaches, so no runtime thread ever waits for the GIL here.

use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PyString};

struct Pinned {
    /// Keeps `ptr..ptr+len` valid and unresized for as long as it lives.
    _owner: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory is only read, through `as_ref`, and stays valid while `_owner` lives
// (see the module doc); `Py<PyAny>` is Send and Sync. Another Python thread may write a
// mutable exporter meanwhile: the bytes sent are then unspecified (as with any C
// extension), but the memory stays valid.
unsafe impl Send for Pinned {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Pinned {}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` and `len` describe the contiguous memory `_owner` pins.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Any `bytes`, `str` (its UTF-8 form) or C-contiguous buffer as `Bytes`, not copied;
/// TypeError for anything else.
pub fn pinned_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        let s = b.as_bytes();
        return Ok(pin(obj, s.as_ptr(), s.len()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        // The UTF-8 form is cached inside the str object, which outlives the `Bytes`.
        let text = s.to_str()?;
        return Ok(pin(obj, text.as_ptr(), text.len()));
    }
    let view = PyMemoryView::from(obj).map_err(|_| {
        PyTypeError::new_err(format!(
            "expected str or a bytes-like object, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    // Wider items (array('i'), a typed memoryview, numpy): the same bytes, as unsigned.
    let view = match PyBuffer::<u8>::get(&view) {
        Ok(_) => view,
        Err(_) => view
            .call_method1("cast", ("B",))
            .map_err(|_| PyBufferError::new_err("the buffer must be C-contiguous"))?
            .cast_into::<PyMemoryView>()?,
    };
    let buf = PyBuffer::<u8>::get(&view)?;
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err("the buffer must be C-contiguous"));
    }
    let (ptr, len) = (buf.buf_ptr().cast::<u8>().cast_const(), buf.len_bytes());
    // Our own export is released here; the memoryview's stays until the `Bytes` goes.
    drop(buf);
    Ok(pin(view.as_any(), ptr, len))
}

fn pin(owner: &Bound<'_, PyAny>, ptr: *const u8, len: usize) -> Bytes {
    if len == 0 {
        // An empty export may have no valid pointer at all.
        return Bytes::new();
    }
    Bytes::from_owner(Pinned {
        _owner: owner.clone().unbind(),
        ptr,
        len,
    })
}

/// A writable C-contiguous byte view of a buffer the caller passed in, to fill in place.
pub fn writable(obj: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    let buf = PyBuffer::<u8>::get(obj).map_err(|_| {
        PyTypeError::new_err("expected a bytes-like object of unsigned bytes (format 'B')")
    })?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("the buffer must be C-contiguous"));
    }
    if buf.readonly() {
        return Err(PyTypeError::new_err("the buffer is read-only"));
    }
    Ok(buf)
}

/// A new `bytes` of `len` bytes that `fill` writes, not zeroed first (`PyBytes::new_with`
/// zeroes it, a pass over every byte of a large read before the data lands). `fill`
/// gets the object's memory, uninitialised, and may release the GIL while writing it:
/// no one else can reach the object yet. It must answer `Ok(Ok(()))` only once it has
/// written every byte; on any other answer the object is dropped, never handed out
/// partly written.
pub fn new_bytes_filled<'py, E>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> PyResult<Result<(), E>>,
) -> PyResult<Result<Bound<'py, PyBytes>, E>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| PyValueError::new_err(format!("cannot make {len} bytes")))?;
    // SAFETY: we hold the GIL (`py`). With a null source, PyBytes_FromStringAndSize
    // allocates a bytes object of `size` bytes and leaves them uninitialised; it returns
    // a new reference, or null with an exception set.
    let ptr = unsafe { pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size) };
    // SAFETY: `ptr` is an owned reference or null, as just said.
    let obj = unsafe { Bound::from_owned_ptr_or_err(py, ptr)? };
    // SAFETY: `ptr` is a live bytes object (kept alive by `obj`), so PyBytes_AsString
    // returns its inner buffer: `len` bytes (and a trailing NUL) that stay put for the
    // object's life (bytes never resize once made).
    let data = unsafe { pyo3::ffi::PyBytes_AsString(ptr) };
    if data.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `data` spans `len` writable bytes (above); `MaybeUninit<u8>` asks nothing of
    // their contents. The object was made just now and its only reference is `obj`,
    // which stays here until `fill` returns, so no other code, Python or native, with
    // or without the GIL, reads or writes that memory meanwhile.
    let out =
        unsafe { std::slice::from_raw_parts_mut(data.cast::<std::mem::MaybeUninit<u8>>(), len) };
    // Handed out only once `fill` says every byte is written; dropped (with the GIL,
    // which `fill` holds again when it returns) otherwise.
    Ok(match fill(out)? {
        Ok(()) => Ok(obj.cast_into::<PyBytes>()?),
        Err(e) => Err(e),
    })
}
