"""Exceptions raised by curvefs.

The SDK's calls return negative ``LIBCURVE_ERROR`` codes, as upstream's SWIG module did; the
few calls that raise (``Listdir``, ``ListPoolset``) raise :class:`CurveError` carrying that
code in ``.code``. Subclasses also derive from the matching built-in, so
``except FileNotFoundError`` catches a missing file. :func:`from_code` is the one place that
maps a code to its class; the native module calls it.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable

from curvefs import _core

__all__ = [
    "CurveAuthError",
    "CurveBadFdError",
    "CurveClientNotSupportSnapshotError",
    "CurveCrcError",
    "CurveDeleteBeingClonedError",
    "CurveDeleteError",
    "CurveDeletingError",
    "CurveDisableIoError",
    "CurveDiskFailError",
    "CurveEpochTooOldError",
    "CurveError",
    "CurveExistsError",
    "CurveFailedError",
    "CurveFileOccupiedError",
    "CurveInternalError",
    "CurveInvalidRequestError",
    "CurveLengthNotSupportError",
    "CurveNoShrinkError",
    "CurveNoSpaceError",
    "CurveNotAlignedError",
    "CurveNotAllocateError",
    "CurveNotEmptyError",
    "CurveNotExistError",
    "CurveNotSupportError",
    "CurveNotUnderSnapshotError",
    "CurveParamError",
    "CurveRetryUntilSuccessError",
    "CurveSessionNotExistError",
    "CurveSessionNotExistsError",
    "CurveSnapshotFrozenError",
    "CurveStatusNotMatchError",
    "CurveUnderSnapshotError",
    "CurveUnknownError",
    "error_name",
    "from_code",
]

# LIBCURVE_ERROR names by positive value: the core's code table (curve-client's
# SDK_CODES), read from the native module rather than typed out again here.
_NAMES: dict[int, str] = dict(_core.ERROR_NAMES)

# The POSIX errno that best describes each code, so that ``OSError.errno`` stays meaningful
# to code that only knows built-in exceptions. Codes without a close match get EIO.
_ERRNOS: dict[int, int] = {
    1: _errno.EEXIST,
    4: _errno.EACCES,
    6: _errno.ENOENT,
    11: _errno.EOPNOTSUPP,
    12: _errno.ENOTEMPTY,
    15: _errno.EBUSY,
    16: _errno.EINVAL,
    19: _errno.EINVAL,
    21: _errno.ENOSPC,
    22: _errno.EINVAL,
    23: _errno.EBADF,
    24: _errno.EFBIG,
    3: _errno.EIO,
    5: _errno.EBUSY,
    14: _errno.ENOENT,
    25: _errno.ENOENT,
    31: _errno.ESTALE,
}


def error_name(code: int) -> str:
    """The ``LIBCURVE_ERROR`` name of ``code`` (either sign), e.g. ``"NOTEXIST"``."""
    return _NAMES.get(abs(code), f"UNKNOWN_CODE_{abs(code)}")


class CurveError(OSError):
    """A failed Curve call. ``code`` is the negative SDK code (``-6`` for NOTEXIST);
    ``errno`` is the closest POSIX errno."""

    code: int
    code_name: str
    message: str
    #: Why the call gave up, when known: "timeout", "unreachable" or "".
    cause: str = ""

    def __init__(self, code: int, message: str = "") -> None:
        code = -abs(int(code))
        name = error_name(code)
        text = f"{name} ({code})" + (f": {message}" if message else "")
        super().__init__(_ERRNOS.get(-code, _errno.EIO), text)
        self.code = code
        self.code_name = name
        self.message = message

    @staticmethod
    def from_code(code: int, message: str = "") -> CurveError:
        """The exception for ``code``, of the most specific class (see :func:`from_code`)."""
        return from_code(code, message)

    def __reduce__(self) -> tuple[Callable[[int, str, str], CurveError], tuple[int, str, str]]:
        # OSError pickles its (errno, strerror) args, which would rebuild a different code;
        # and a class mixed with a cause is made at run time, so rebuild through from_code.
        return (from_code, (self.code, self.message, self.cause))


class CurveExistsError(CurveError, FileExistsError):
    """EXISTS (-1): the file or directory already exists."""


class CurveFailedError(CurveError):
    """FAILED (-2): the call failed (an unreachable MDS, IO past the end, …)."""


class CurveDisableIoError(CurveError):
    """DISABLEIO (-3): IO on this open file is disabled (deleted, replaced, lease lost)."""


class CurveAuthError(CurveError, PermissionError):
    """AUTHFAIL (-4): the user is not allowed to do this."""


class CurveDeletingError(CurveError):
    """DELETING (-5): the file is being deleted."""


class CurveNotExistError(CurveError, FileNotFoundError):
    """NOTEXIST (-6): the file, directory or poolset does not exist."""


class CurveUnderSnapshotError(CurveError):
    """UNDER_SNAPSHOT (-7)."""


class CurveNotUnderSnapshotError(CurveError):
    """NOT_UNDERSNAPSHOT (-8)."""


class CurveDeleteError(CurveError):
    """DELETE_ERROR (-9)."""


class CurveNotAllocateError(CurveError):
    """NOT_ALLOCATE (-10): the segment is not allocated."""


class CurveNotSupportError(CurveError):
    """NOT_SUPPORT (-11): the operation is not supported on this entry."""


class CurveNotEmptyError(CurveError):
    """NOT_EMPTY (-12): the directory is not empty (``errno.ENOTEMPTY``)."""


class CurveNoShrinkError(CurveError):
    """NO_SHRINK_BIGGER_FILE (-13): volumes only grow."""


class CurveSessionNotExistsError(CurveError):
    """SESSION_NOTEXISTS (-14)."""


class CurveFileOccupiedError(CurveError):
    """FILE_OCCUPIED (-15): the file is open by a client (``errno.EBUSY``)."""


class CurveParamError(CurveError, ValueError):
    """PARAM_ERROR (-16): an argument was refused."""


class CurveInternalError(CurveError):
    """INTERNAL_ERROR (-17)."""


class CurveCrcError(CurveError):
    """CRC_ERROR (-18)."""


class CurveInvalidRequestError(CurveError):
    """INVALID_REQUEST (-19): a chunkserver cannot run this request."""


class CurveDiskFailError(CurveError):
    """DISK_FAIL (-20)."""


class CurveNoSpaceError(CurveError):
    """NO_SPACE (-21): the pool is full (``errno.ENOSPC``)."""


class CurveNotAlignedError(CurveError, ValueError):
    """NOT_ALIGNED (-22): offset or length is not a multiple of the block size."""


class CurveBadFdError(CurveError):
    """BAD_FD (-23): the fd or volume is not open (``errno.EBADF``)."""


class CurveLengthNotSupportError(CurveError):
    """LENGTH_NOT_SUPPORT (-24): the file length is out of range or not aligned."""


class CurveSessionNotExistError(CurveError):
    """SESSION_NOT_EXIST (-25)."""


class CurveStatusNotMatchError(CurveError):
    """STATUS_NOT_MATCH (-26)."""


class CurveDeleteBeingClonedError(CurveError):
    """DELETE_BEING_CLONED (-27)."""


class CurveClientNotSupportSnapshotError(CurveError):
    """CLIENT_NOT_SUPPORT_SNAPSHOT (-28)."""


class CurveSnapshotFrozenError(CurveError):
    """SNAPSTHO_FROZEN (-29)."""


class CurveRetryUntilSuccessError(CurveError):
    """RETRY_UNTIL_SUCCESS (-30)."""


class CurveEpochTooOldError(CurveError):
    """EPOCH_TOO_OLD (-31): another client fenced this one off the file."""


class CurveUnknownError(CurveError):
    """UNKNOWN (-100): an MDS answer without a closer code."""


# By LIBCURVE_ERROR name; a test checks that every name of the core's table has a class.
_BY_NAME: dict[str, type[CurveError]] = {
    "EXISTS": CurveExistsError,
    "FAILED": CurveFailedError,
    "DISABLEIO": CurveDisableIoError,
    "AUTHFAIL": CurveAuthError,
    "DELETING": CurveDeletingError,
    "NOTEXIST": CurveNotExistError,
    "UNDER_SNAPSHOT": CurveUnderSnapshotError,
    "NOT_UNDERSNAPSHOT": CurveNotUnderSnapshotError,
    "DELETE_ERROR": CurveDeleteError,
    "NOT_ALLOCATE": CurveNotAllocateError,
    "NOT_SUPPORT": CurveNotSupportError,
    "NOT_EMPTY": CurveNotEmptyError,
    "NO_SHRINK_BIGGER_FILE": CurveNoShrinkError,
    "SESSION_NOTEXISTS": CurveSessionNotExistsError,
    "FILE_OCCUPIED": CurveFileOccupiedError,
    "PARAM_ERROR": CurveParamError,
    "INTERNAL_ERROR": CurveInternalError,
    "CRC_ERROR": CurveCrcError,
    "INVALID_REQUEST": CurveInvalidRequestError,
    "DISK_FAIL": CurveDiskFailError,
    "NO_SPACE": CurveNoSpaceError,
    "NOT_ALIGNED": CurveNotAlignedError,
    "BAD_FD": CurveBadFdError,
    "LENGTH_NOT_SUPPORT": CurveLengthNotSupportError,
    "SESSION_NOT_EXIST": CurveSessionNotExistError,
    "STATUS_NOT_MATCH": CurveStatusNotMatchError,
    "DELETE_BEING_CLONED": CurveDeleteBeingClonedError,
    "CLIENT_NOT_SUPPORT_SNAPSHOT": CurveClientNotSupportSnapshotError,
    "SNAPSTHO_FROZEN": CurveSnapshotFrozenError,
    "RETRY_UNTIL_SUCCESS": CurveRetryUntilSuccessError,
    "EPOCH_TOO_OLD": CurveEpochTooOldError,
    "UNKNOWN": CurveUnknownError,
}


# Why a call gave up, when the core knows: such an exception is also the built-in of it.
_CAUSES: dict[str, type[OSError]] = {"timeout": TimeoutError, "unreachable": ConnectionError}
_MIXED: dict[tuple[type[CurveError], str], type[CurveError]] = {}


def _with_cause(cls: type[CurveError], cause: str) -> type[CurveError]:
    builtin = _CAUSES.get(cause)
    if builtin is None:
        return cls
    mixed = _MIXED.get((cls, cause))
    if mixed is None:
        name = cls.__name__.removesuffix("Error") + (
            "TimeoutError" if cause == "timeout" else "UnreachableError"
        )
        mixed = type(name, (cls, builtin), {"__module__": __name__, "cause": cause})
        _MIXED[(cls, cause)] = mixed
    return mixed


def from_code(code: int, message: str = "", cause: str = "") -> CurveError:
    """The exception for SDK code ``code`` (either sign), of the most specific class.

    ``cause`` is why the call gave up, when the core knows: ``"timeout"`` (its budget ran
    out with requests unanswered) makes it also a :class:`TimeoutError`, ``"unreachable"``
    (no server could be reached) also a :class:`ConnectionError`."""
    return _with_cause(_BY_NAME.get(error_name(code), CurveError), cause)(code, message)
