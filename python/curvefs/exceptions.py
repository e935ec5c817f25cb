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

# The core's one table of codes (curve-client's SDK_CODES), read from the native module
# rather than typed out again here: (name, code, message, errno name, class, built-in).
_NAMES: dict[int, str] = dict(_core.ERROR_NAMES)

# The POSIX errno of each code (``OSError.errno``); the table says why each is chosen.
_ERRNOS: dict[int, int] = {
    code: getattr(_errno, errno) for _, code, _, errno, _, _ in _core.SDK_CODES
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
    pass


class CurveFailedError(CurveError):
    pass


class CurveDisableIoError(CurveError):
    pass


class CurveAuthError(CurveError, PermissionError):
    pass


class CurveDeletingError(CurveError):
    pass


class CurveNotExistError(CurveError, FileNotFoundError):
    pass


class CurveUnderSnapshotError(CurveError):
    pass


class CurveNotUnderSnapshotError(CurveError):
    pass


class CurveDeleteError(CurveError):
    pass


class CurveNotAllocateError(CurveError):
    pass


class CurveNotSupportError(CurveError):
    pass


class CurveNotEmptyError(CurveError):
    pass


class CurveNoShrinkError(CurveError):
    pass


class CurveSessionNotExistsError(CurveError):
    pass


class CurveFileOccupiedError(CurveError):
    pass


class CurveParamError(CurveError, ValueError):
    pass


class CurveInternalError(CurveError):
    pass


class CurveCrcError(CurveError):
    pass


class CurveInvalidRequestError(CurveError):
    pass


class CurveDiskFailError(CurveError):
    pass


class CurveNoSpaceError(CurveError):
    pass


class CurveNotAlignedError(CurveError, ValueError):
    pass


class CurveBadFdError(CurveError):
    pass


class CurveLengthNotSupportError(CurveError):
    pass


class CurveSessionNotExistError(CurveError):
    pass


class CurveStatusNotMatchError(CurveError):
    pass


class CurveDeleteBeingClonedError(CurveError):
    pass


class CurveClientNotSupportSnapshotError(CurveError):
    pass


class CurveSnapshotFrozenError(CurveError):
    pass


class CurveRetryUntilSuccessError(CurveError):
    pass


class CurveEpochTooOldError(CurveError):
    pass


class CurveUnknownError(CurveError):
    pass


def _classes_of_the_table() -> dict[str, type[CurveError]]:
    """The class of each code by its LIBCURVE_ERROR name, with its docstring made from the
    table; a test checks each class's built-in base against the table's."""
    by_name: dict[str, type[CurveError]] = {}
    for name, code, message, _, class_name, _ in _core.SDK_CODES:
        cls = globals()[class_name]
        cls.__doc__ = f"{name} (-{code}): {message}."
        by_name[name] = cls
    return by_name


_BY_NAME = _classes_of_the_table()


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
