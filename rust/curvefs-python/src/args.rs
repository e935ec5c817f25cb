//! Turning Python arguments into owned Rust values before the GIL is released.
//!
//! Upstream's SWIG wrapper raised TypeError for an argument of the wrong type, and the C++
//! client answered PARAM_ERROR for values it refused; we keep that split. A value Python
//! can represent but Curve cannot (a negative size, an int past u64, a str that is not
//! valid UTF-8) is PARAM_ERROR, not OverflowError or UnicodeEncodeError.

use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::{CallError, CallResult};
use crate::types::UserInfo;

/// A path, owner or other text argument.
/// Two converted arguments together; the first bad one (in call order) is the answer.
pub fn both<A, B>(a: CallResult<A>, b: CallResult<B>) -> CallResult<(A, B)> {
    a.and_then(|a| b.map(|b| (a, b)))
}

pub fn text(obj: &Bound<'_, PyAny>, name: &str) -> CallResult<String> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be str, not {}", type_name(obj))))?;
    match s.to_str() {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(CallError::param(format!("{name} is not valid UTF-8"))),
    }
}

/// A size, offset, length or file id: any int from 0 to 2**64-1.
pub fn uint(obj: &Bound<'_, PyAny>, name: &str) -> CallResult<u64> {
    match obj.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(CallError::param(format!("{name} is out of range")))
        }
        Err(_) => {
            Err(PyTypeError::new_err(format!("{name} must be int, not {}", type_name(obj))).into())
        }
    }
}

/// A file descriptor returned by Open: a non-negative C int.
pub fn fd(obj: &Bound<'_, PyAny>) -> CallResult<i32> {
    let v = uint(obj, "fd")?;
    i32::try_from(v).map_err(|_| CallError::param("fd is out of range"))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The caller's `UserInfo_t`, copied out so that no borrow of it outlives this line: a
/// borrow kept while the GIL is released would make `user.owner = ...` in another
/// thread fail with "Already borrowed" for as long as the call waits.
pub fn user(obj: &Bound<'_, UserInfo>) -> PyResult<curve_client::UserInfo> {
    Ok(obj.try_borrow()?.to_client())
}
