"""``curvefs.CBDClient`` and ``DirInfos_t``: the native client plus the parts of upstream's
SDK that are plain Python over it.

The native ``curvefs._core.CBDClient`` is declared ``frozen, subclass``: ``curvefs.CBDClient``
derives from it, so every native call is the native method itself, and the subclass adds only
upstream's older positional ``Create2`` and ``OpenDir``/``Listdir(dirinfo)``/``CloseDir``.
"""

from __future__ import annotations

from typing import Any, final, overload

from curvefs import _core
from curvefs._core import CreateContext, FileInfo_t, UserInfo_t
from curvefs.exceptions import CurveError

__all__ = ["CBDClient", "DirInfos_t"]

FAILED = -_core.CURVE_ERROR_FAILED
NOTEXIST = -_core.CURVE_ERROR_NOTEXIST
AUTHFAIL = -_core.CURVE_ERROR_AUTHFAIL


@final
class DirInfos_t:
    """A directory opened by ``OpenDir``: ``Listdir(dirinfo)`` fills ``dirsize`` and
    ``fileinfo`` (a list of ``FileInfo_t``, one per entry, in the MDS's order)."""

    __slots__ = ("_closed", "dirpath", "dirsize", "fileinfo", "userinfo")

    dirpath: str
    userinfo: UserInfo_t
    dirsize: int
    fileinfo: list[FileInfo_t]

    def __init__(self, dirpath: str = "", userinfo: UserInfo_t | None = None) -> None:
        self.dirpath = dirpath
        # Shared, not copied: upstream's DirInfos_t keeps a pointer to the caller's UserInfo_t.
        self.userinfo = UserInfo_t() if userinfo is None else userinfo
        self.dirsize = 0
        self.fileinfo = []
        self._closed = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<curvefs.DirInfos_t {self.dirpath!r} dirsize={self.dirsize}{state}>"


DirInfos_t.__module__ = "curvefs"


def _entry_path(dirpath: str, name: str) -> str:
    return f"{dirpath.rstrip('/')}/{name}"


def fill_dirinfo(client: _core.CBDClient, dirinfo: DirInfos_t | None) -> int:
    """Upstream's ``Listdir(DirInfos_t*)``: lists ``dirinfo.dirpath`` and fills ``dirsize``
    and ``fileinfo``. 0, or a negative code (then ``dirsize`` is 0 and ``fileinfo`` empty).

    The native module lists names only, so each entry is stat'ed on its own (one MDS call per
    entry). An entry removed between the two calls is left out; an entry the caller may list
    but not stat (another owner's file in the caller's directory) is kept with only its
    ``filename`` set, as upstream's one-call listing would still return it."""
    if dirinfo is None or dirinfo._closed:
        return FAILED
    try:
        names = client.Listdir(dirinfo.dirpath, dirinfo.userinfo)
    except CurveError as err:
        dirinfo.dirsize = 0
        dirinfo.fileinfo = []
        return err.code
    entries: list[FileInfo_t] = []
    for name in names:
        info = FileInfo_t()
        ret = client.StatFile(_entry_path(dirinfo.dirpath, name), dirinfo.userinfo, info)
        if ret == NOTEXIST:
            continue
        if ret == AUTHFAIL:
            info = FileInfo_t()
            info.filename = name
        elif ret != 0:
            dirinfo.dirsize = 0
            dirinfo.fileinfo = []
            return ret
        entries.append(info)
    dirinfo.fileinfo = entries
    dirinfo.dirsize = len(entries)
    return 0


def close_dirinfo(dirinfo: DirInfos_t | None) -> None:
    """Upstream's ``CloseDir``: releases the entries; a closed dirinfo lists as FAILED (-2)."""
    if dirinfo is None:
        return
    dirinfo.fileinfo = []
    dirinfo.dirsize = 0
    dirinfo._closed = True


def _create2_positional(
    filename: str, user: UserInfo_t, size: int, stripeUnit: int, stripeCount: int
) -> CreateContext:
    return CreateContext(filename, size, user, "", stripeUnit, stripeCount)


@final
class CBDClient(_core.CBDClient):
    """A client of one Curve cluster; safe to share between threads.

    Upstream's ``CBDClient``, call for call: the native class (``curvefs._core.CBDClient``)
    plus upstream's positional ``Create2`` and the ``OpenDir``/``Listdir(dirinfo)``/``CloseDir``
    trio."""

    __slots__ = ()

    @overload
    def Create2(self, context: CreateContext) -> int: ...
    @overload
    def Create2(
        self, filename: str, user: UserInfo_t, size: int, stripeUnit: int, stripeCount: int
    ) -> int: ...
    def Create2(self, *args: Any, **kwargs: Any) -> int:
        """``Create2(context)`` (a ``CreateContext``), or upstream's older
        ``Create2(filename, user, size, stripeUnit, stripeCount)`` (no poolset)."""
        if len(args) + len(kwargs) == 1:
            return super().Create2(*args, **kwargs)
        return super().Create2(_create2_positional(*args, **kwargs))

    def OpenDir(self, dirpath: str, user: UserInfo_t) -> DirInfos_t:
        """A ``DirInfos_t`` for ``Listdir(dirinfo)``; no RPC, as upstream."""
        return DirInfos_t(dirpath, user)

    @overload
    def Listdir(self, dirpath: str, user: UserInfo_t) -> list[str]: ...
    @overload
    def Listdir(self, dirinfo: DirInfos_t | None) -> int: ...
    def Listdir(self, *args: Any, **kwargs: Any) -> list[str] | int:
        """``Listdir(dirpath, user)``: the entry names; raises ``CurveError`` on failure.
        ``Listdir(dirinfo)``: fills ``dirinfo.dirsize`` and ``dirinfo.fileinfo``; 0 or a code."""
        if not kwargs and len(args) == 1 and (args[0] is None or isinstance(args[0], DirInfos_t)):
            return fill_dirinfo(self, args[0])
        if not args and set(kwargs) == {"dirinfo"}:
            return fill_dirinfo(self, kwargs["dirinfo"])
        return super().Listdir(*args, **kwargs)

    def CloseDir(self, dirinfo: DirInfos_t | None) -> None:
        close_dirinfo(dirinfo)


CBDClient.__module__ = "curvefs"
