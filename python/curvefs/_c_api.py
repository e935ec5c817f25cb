"""Upstream's module-level API (``curvefs.Init``, ``curvefs.Open``, …): libcurve's C
functions over one process-wide client, with their return conventions.

- ``Init(path)`` makes the process-wide client: 0, or -1 (and no client). While a client
  exists, ``Init`` returns 0 at once and keeps the first configuration, as upstream's
  ``GlobalInit`` does.
- Every other call before ``Init`` (or after ``UnInit``) returns FAILED (-2); ``OpenDir``
  returns ``None``, ``Listdir(dirpath, info)`` raises ``CurveError`` (-2), ``UnInit`` and
  ``CloseDir`` do nothing.
- ``Open4Qemu``/``StatFile4Qemu`` take the owner from the name: the last two ``_`` delimit it,
  ``"/vol_owner_"`` is file ``/vol`` of owner ``owner`` (no password); a name with fewer than
  two ``_`` is FAILED (-2).
- ``GetClusterId()`` returns the id, or FAILED (-2).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Final, overload

from typing_extensions import Buffer

from curvefs import _core
from curvefs._client import DirInfos_t, close_dirinfo, fill_dirinfo
from curvefs._core import AioContext_t, FileInfo_t, UserInfo_t
from curvefs.exceptions import CurveError

__all__ = [
    "CLUSTERIDMAX",
    "AioRead",
    "AioWrite",
    "ChangeOwner",
    "Close",
    "CloseDir",
    "Create",
    "DeleteForce",
    "Extend",
    "GetClusterId",
    "Init",
    "Listdir",
    "Mkdir",
    "Open",
    "Open4Qemu",
    "OpenDir",
    "Read",
    "Recover",
    "Rename",
    "Rmdir",
    "StatFile",
    "StatFile4Qemu",
    "UnInit",
    "Unlink",
    "Write",
]

CLUSTERIDMAX: Final = 256

_FAILED: Final = -_core.CURVE_ERROR_FAILED

_lock = threading.Lock()
_client: _core.CBDClient | None = None


def _forget_in_child() -> None:
    # The process-wide client of a forked child is not its parent's (whose connections
    # and sessions it cannot use): the child starts uninitialised, and Init makes its own.
    global _client, _lock
    _lock = threading.Lock()
    _client = None


os.register_at_fork(after_in_child=_forget_in_child)


def _split_owner(filename: str) -> tuple[str, str] | None:
    """Upstream's ``ServiceHelper::GetUserInfoFromFilename``: the owner sits between the
    last two ``_``; the real name is what precedes them. ``None`` without two ``_``."""
    end = filename.rfind("_")
    if end < 0:
        return None
    # std::string::find_last_of("_", end - 1); at end == 0 that position wraps to npos,
    # which searches the whole string and finds `end` itself.
    begin = filename.rfind("_", 0, end) if end > 0 else end
    if begin < 0:
        return None
    owner = filename[begin + 1 : end] if end > begin else filename[begin + 1 :]
    return filename[:begin], owner


def Init(path: str | os.PathLike[str]) -> int:
    """Reads client.conf (no RPC) into the process-wide client: 0, or -1."""
    global _client
    with _lock:
        if _client is not None:
            return 0
        client = _core.CBDClient()
        ret = client.Init(path)
        if ret == 0:
            _client = client
        return ret


def UnInit() -> None:
    """Drops the process-wide client (its fds without CloseFile, as upstream)."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.UnInit()


def Open4Qemu(filename: str) -> int:
    """Opens ``"<path>_<owner>_"`` as ``owner``: an fd, or a negative code."""
    parsed = _split_owner(filename)
    client = _client
    if parsed is None or client is None:
        return _FAILED
    path, owner = parsed
    return client.Open(path, UserInfo_t(owner))


def Open(filename: str, info: UserInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.Open(filename, info)


def Create(filename: str, info: UserInfo_t, size: int) -> int:
    client = _client
    return _FAILED if client is None else client.Create(filename, info, size)


def Read(fd: int, buf: object, offset: int, length: int) -> bytes | int:
    """``length`` bytes, or a negative code. ``buf`` is ignored, as upstream."""
    client = _client
    return _FAILED if client is None else client.Read(fd, buf, offset, length)


def Write(fd: int, buf: str | Buffer, offset: int, length: int) -> int:
    client = _client
    return _FAILED if client is None else client.Write(fd, buf, offset, length)


def AioRead(fd: int, aioctx: AioContext_t) -> int:
    """Starts an asynchronous read (see ``CBDClient.AioRead``): 0 once submitted."""
    client = _client
    return _FAILED if client is None else client.AioRead(fd, aioctx)


def AioWrite(fd: int, aioctx: AioContext_t) -> int:
    """Starts an asynchronous write (see ``CBDClient.AioWrite``): 0 once submitted."""
    client = _client
    return _FAILED if client is None else client.AioWrite(fd, aioctx)


def StatFile4Qemu(filename: str, finfo: FileInfo_t) -> int:
    """Stats ``"<path>_<owner>_"`` as ``owner`` into ``finfo``: 0 or a negative code."""
    parsed = _split_owner(filename)
    client = _client
    if parsed is None or client is None:
        return _FAILED
    path, owner = parsed
    return client.StatFile(path, UserInfo_t(owner), finfo)


def StatFile(filename: str, info: UserInfo_t, finfo: FileInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.StatFile(filename, info, finfo)


def ChangeOwner(filename: str, owner: str, info: UserInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.ChangeOwner(filename, owner, info)


def Close(fd: int) -> int:
    client = _client
    return _FAILED if client is None else client.Close(fd)


def Rename(info: UserInfo_t, oldpath: str, newpath: str) -> int:
    client = _client
    return _FAILED if client is None else client.Rename(info, oldpath, newpath)


def Extend(filename: str, info: UserInfo_t, size: int) -> int:
    client = _client
    return _FAILED if client is None else client.Extend(filename, info, size)


def Unlink(filename: str, info: UserInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.Unlink(filename, info)


def Recover(filename: str, info: UserInfo_t, fileId: int = 0) -> int:
    client = _client
    return _FAILED if client is None else client.Recover(filename, info, fileId)


def DeleteForce(filename: str, info: UserInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.DeleteForce(filename, info)


def OpenDir(dirpath: str, info: UserInfo_t) -> DirInfos_t | None:
    """A ``DirInfos_t`` for ``Listdir(dirinfo)`` (no RPC), or ``None`` before ``Init``."""
    return None if _client is None else DirInfos_t(dirpath, info)


@overload
def Listdir(dirpath: str, info: UserInfo_t) -> list[str]: ...
@overload
def Listdir(dirinfo: DirInfos_t | None) -> int: ...
def Listdir(*args: Any, **kwargs: Any) -> list[str] | int:
    """``Listdir(dirpath, info)``: the entry names; raises ``CurveError`` on failure, as
    upstream's wrapper raises. ``Listdir(dirinfo)``: fills ``dirinfo.dirsize`` and
    ``dirinfo.fileinfo``; 0 or a negative code."""
    client = _client
    if not kwargs and len(args) == 1 and (args[0] is None or isinstance(args[0], DirInfos_t)):
        return _FAILED if client is None else fill_dirinfo(client, args[0])
    if not args and set(kwargs) == {"dirinfo"}:
        return _FAILED if client is None else fill_dirinfo(client, kwargs["dirinfo"])
    return _listdir_names(client, *args, **kwargs)


def _listdir_names(client: _core.CBDClient | None, dirpath: str, info: UserInfo_t) -> list[str]:
    if client is None:
        raise CurveError.from_code(_FAILED, "Listdir: curvefs.Init was not called")
    return client.Listdir(dirpath, info)


def CloseDir(dirinfo: DirInfos_t | None) -> None:
    close_dirinfo(dirinfo)


def Mkdir(dirpath: str, info: UserInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.Mkdir(dirpath, info)


def Rmdir(dirpath: str, info: UserInfo_t) -> int:
    client = _client
    return _FAILED if client is None else client.Rmdir(dirpath, info)


def GetClusterId(buf: object = None, length: int = 0, /) -> str | int:
    """The cluster's id, or FAILED (-2). As upstream's wrapper, ``buf`` is ignored and
    ``length`` (0: ``CLUSTERIDMAX``) is the room for the id and its NUL: an id that does not
    fit is FAILED."""
    client = _client
    if client is None:
        return _FAILED
    cluster_id = client.GetClusterId()
    room = length or CLUSTERIDMAX
    if not cluster_id or room < len(cluster_id) + 1:
        return _FAILED
    return cluster_id
