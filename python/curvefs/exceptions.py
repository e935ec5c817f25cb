"""Exceptions raised by curvefs.

The SDK's calls return negative ``LIBCURVE_ERROR`` codes, as upstream's SWIG module did; the
few calls that raise (``Listdir``, ``ListPoolset``) raise :class:`CurveError` carrying that
code in ``.code``. Subclasses also derive from the matching built-in, so
``except FileNotFoundError`` catches a missing file. :func:`from_code` is the one place that
maps a code to its class; the native module calls it.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "CurveAuthError",
    "CurveBadFdError",
    "CurveError",
    "CurveExistsError",
    "CurveFileOccupiedError",
    "CurveLengthNotSupportError",
    "CurveNotEmptyError",
    "CurveNotExistError",
    "CurveNotSupportError",
    "CurveParamError",
    "error_name",
    "from_code",
]

# LIBCURVE_ERROR names by positive value (upstream spelling, including SNAPSTHO_FROZEN).
_NAMES: dict[int, str] = {
    0: "OK",
    1: "EXISTS",
    2: "FAILED",
    3: "DISABLEIO",
    4: "AUTHFAIL",
    5: "DELETING",
    6: "NOTEXIST",
    7: "UNDER_SNAPSHOT",
    8: "NOT_UNDERSNAPSHOT",
    9: "DELETE_ERROR",
    10: "NOT_ALLOCATE",
    11: "NOT_SUPPORT",
    12: "NOT_EMPTY",
    13: "NO_SHRINK_BIGGER_FILE",
    14: "SESSION_NOTEXISTS",
    15: "FILE_OCCUPIED",
    16: "PARAM_ERROR",
    17: "INTERNAL_ERROR",
    18: "CRC_ERROR",
    19: "INVALID_REQUEST",
    20: "DISK_FAIL",
    21: "NO_SPACE",
    22: "NOT_ALIGNED",
    23: "BAD_FD",
    24: "LENGTH_NOT_SUPPORT",
    25: "SESSION_NOT_EXIST",
    26: "STATUS_NOT_MATCH",
    27: "DELETE_BEING_CLONED",
    28: "CLIENT_NOT_SUPPORT_SNAPSHOT",
    29: "SNAPSTHO_FROZEN",
    30: "RETRY_UNTIL_SUCCESS",
    31: "EPOCH_TOO_OLD",
    100: "UNKNOWN",
}

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
}


def error_name(code: int) -> str:
    """The ``LIBCURVE_ERROR`` name of ``code`` (either sign), e.g. ``"NOTEXIST"``."""
    return _NAMES.get(abs(code), f"UNKNOWN_CODE_{abs(code)}")


class CurveError(OSError):
    """A failed Curve call. ``code`` is the negative SDK code (``-6`` for NOTEXIST);
    ``errno`` is the closest POSIX errno."""

    code: int
    message: str

    def __init__(self, code: int, message: str = "") -> None:
        code = -abs(int(code))
        name = error_name(code)
        text = f"{name} ({code})" + (f": {message}" if message else "")
        super().__init__(_ERRNOS.get(-code, _errno.EIO), text)
        self.code = code
        self.message = message

    @staticmethod
    def from_code(code: int, message: str = "") -> CurveError:
        """The exception for ``code``, of the most specific class (see :func:`from_code`)."""
        return from_code(code, message)

    def __reduce__(self) -> tuple[type[CurveError], tuple[int, str]]:
        # OSError pickles its (errno, strerror) args, which would rebuild a different code.
        return (type(self), (self.code, self.message))


class CurveExistsError(CurveError, FileExistsError):
    """EXISTS (-1): the file or directory already exists."""


class CurveNotExistError(CurveError, FileNotFoundError):
    """NOTEXIST (-6): the file, directory or poolset does not exist."""


class CurveAuthError(CurveError, PermissionError):
    """AUTHFAIL (-4): the user is not allowed to do this."""


class CurveNotEmptyError(CurveError):
    """NOT_EMPTY (-12): the directory is not empty."""


class CurveNotSupportError(CurveError):
    """NOT_SUPPORT (-11): the operation is not supported on this entry."""


class CurveFileOccupiedError(CurveError):
    """FILE_OCCUPIED (-15): the file is open by a client."""


class CurveParamError(CurveError):
    """PARAM_ERROR (-16): an argument was refused."""


class CurveBadFdError(CurveError):
    """BAD_FD (-23): the fd is not open."""


class CurveLengthNotSupportError(CurveError):
    """LENGTH_NOT_SUPPORT (-24): the file length is out of range or not aligned."""


_CLASSES: dict[int, type[CurveError]] = {
    1: CurveExistsError,
    4: CurveAuthError,
    6: CurveNotExistError,
    11: CurveNotSupportError,
    12: CurveNotEmptyError,
    15: CurveFileOccupiedError,
    16: CurveParamError,
    23: CurveBadFdError,
    24: CurveLengthNotSupportError,
}


def from_code(code: int, message: str = "") -> CurveError:
    """The exception for SDK code ``code`` (either sign), of the most specific class."""
    return _CLASSES.get(abs(code), CurveError)(code, message)
