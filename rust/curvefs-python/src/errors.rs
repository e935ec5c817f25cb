//! The two conversions of a failure: to the SDK's negative integer, and to
//! `curvefs.exceptions.CurveError`. Every method goes through one of them.

use pyo3::prelude::*;

pyo3::import_exception!(curvefs.exceptions, CurveError);

/// `LIBCURVE_ERROR` values the binding produces itself (the rest come from curve-client).
pub const FAILED: i32 = -2;
pub const PARAM_ERROR: i32 = -16;
pub const BAD_FD: i32 = -23;

/// Why a call did not produce its value.
pub enum CallError {
    /// Raised as is: a wrong argument type, a runtime that cannot run here.
    Py(PyErr),
    /// Returned as the negative SDK code (or raised as `CurveError` by the calls that raise).
    Code { code: i32, message: String },
}

pub type CallResult<T> = Result<T, CallError>;

impl CallError {
    pub fn code(code: i32, message: impl Into<String>) -> Self {
        CallError::Code {
            code,
            message: message.into(),
        }
    }

    pub fn param(message: impl Into<String>) -> Self {
        Self::code(PARAM_ERROR, message)
    }

    pub fn not_initialized(code: i32) -> Self {
        Self::code(code, "the client is not initialized (call Init first)")
    }
}

impl From<PyErr> for CallError {
    fn from(e: PyErr) -> Self {
        CallError::Py(e)
    }
}

impl From<curve_client::Error> for CallError {
    fn from(e: curve_client::Error) -> Self {
        CallError::Code {
            code: e.sdk_code(),
            message: e.message,
        }
    }
}

/// For the calls that return an int: codes become the return value.
pub fn as_int(r: CallResult<i32>) -> PyResult<i32> {
    match r {
        Ok(v) => Ok(v),
        Err(CallError::Code { code, .. }) => Ok(code),
        Err(CallError::Py(e)) => Err(e),
    }
}

/// For the calls that raise, as upstream's SWIG wrapper does: codes become `CurveError`.
pub fn raising<T>(py: Python<'_>, r: CallResult<T>) -> PyResult<T> {
    match r {
        Ok(v) => Ok(v),
        Err(CallError::Code { code, message }) => Err(curve_error(py, code, &message)),
        Err(CallError::Py(e)) => Err(e),
    }
}

/// The exception for `code`, of the class `curvefs.exceptions.from_code` picks: the mapping
/// from code to class lives in Python, next to the classes.
pub fn curve_error(py: Python<'_>, code: i32, message: &str) -> PyErr {
    curve_error_because(py, code, message, curve_client::error::Cause::Answered)
}

/// As [`curve_error`], with why the call gave up: a timed-out call's exception is also a
/// `TimeoutError`, an unreachable cluster's also a `ConnectionError`.
pub fn curve_error_because(
    py: Python<'_>,
    code: i32,
    message: &str,
    cause: curve_client::error::Cause,
) -> PyErr {
    use curve_client::error::Cause;
    let cause = match cause {
        Cause::Answered => "",
        Cause::TimedOut => "timeout",
        Cause::Unreachable => "unreachable",
    };
    let built = py
        .import("curvefs.exceptions")
        .and_then(|m| m.getattr("from_code"))
        .and_then(|f| f.call1((code, message, cause)));
    match built {
        Ok(exc) => PyErr::from_value(exc),
        // Only if the Python half of the package is broken; keep the code anyway.
        Err(_) => CurveError::new_err((code, message.to_owned())),
    }
}
