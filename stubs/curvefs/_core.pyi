"""The native module of curvefs: upstream's SWIG SDK surface, implemented in Rust.

Calls return 0 (or a result) on success and a negative ``LIBCURVE_ERROR`` code on failure,
as the SWIG SDK did; ``Listdir`` and ``ListPoolset`` raise ``curvefs.exceptions.CurveError``
instead. Wrong argument *types* raise ``TypeError``; out-of-range values return -16.
"""

import os
from collections.abc import Callable
from typing import Any, Final, Self, TypeAlias, final

from typing_extensions import Buffer, disjoint_base

__all__ = [
    "CURVEINODE_APPENDFILE",
    "CURVE_ERROR_AUTHFAIL",
    "CURVE_ERROR_BAD_FD",
    "CURVE_ERROR_CLIENT_NOT_SUPPORT_SNAPSHOT",
    "CURVE_ERROR_CRC_ERROR",
    "CURVE_ERROR_DELETE_BEING_CLONED",
    "CURVE_ERROR_DELETE_ERROR",
    "CURVE_ERROR_DELETING",
    "CURVE_ERROR_DISABLEIO",
    "CURVE_ERROR_DISK_FAIL",
    "CURVE_ERROR_EPOCH_TOO_OLD",
    "CURVE_ERROR_EXISTS",
    "CURVE_ERROR_FAILED",
    "CURVE_ERROR_FILE_OCCUPIED",
    "CURVE_ERROR_INTERNAL_ERROR",
    "CURVE_ERROR_INVALID_REQUEST",
    "CURVE_ERROR_LENGTH_NOT_SUPPORT",
    "CURVE_ERROR_NOTEXIST",
    "CURVE_ERROR_NOT_ALIGNED",
    "CURVE_ERROR_NOT_ALLOCATE",
    "CURVE_ERROR_NOT_EMPTY",
    "CURVE_ERROR_NOT_SUPPORT",
    "CURVE_ERROR_NOT_UNDERSNAPSHOT",
    "CURVE_ERROR_NO_SHRINK_BIGGER_FILE",
    "CURVE_ERROR_NO_SPACE",
    "CURVE_ERROR_OK",
    "CURVE_ERROR_PARAM_ERROR",
    "CURVE_ERROR_RETRY_UNTIL_SUCCESS",
    "CURVE_ERROR_SESSION_NOTEXISTS",
    "CURVE_ERROR_SESSION_NOT_EXIST",
    "CURVE_ERROR_SNAPSTHO_FROZEN",
    "CURVE_ERROR_STATUS_NOT_MATCH",
    "CURVE_ERROR_UNDER_SNAPSHOT",
    "CURVE_ERROR_UNKNOWN",
    "CURVE_FILE_BEINGCLONED",
    "CURVE_FILE_CLONED",
    "CURVE_FILE_CLONEMETAINSTALLED",
    "CURVE_FILE_CLONING",
    "CURVE_FILE_CREATED",
    "CURVE_FILE_DELETING",
    "CURVE_INODE_APPENDECFILE",
    "CURVE_INODE_DIRECTORY",
    "CURVE_INODE_PAGEFILE",
    "CURVE_OP_READ",
    "CURVE_OP_WRITE",
    "ERROR_NAMES",
    "SDK_CODES",
    "AioContext_t",
    "CBDClient",
    "ClientHandle",
    "Completions",
    "CreateContext",
    "FileInfo_t",
    "NbdServer",
    "TaskHandle",
    "UserInfo_t",
    "VolumeHandle",
    "__version__",
    "_log_level",
    "_note_exiting",
    "_set_log_level",
    "copyset_leader",
    "create_local_cluster_layout",
    "debug_build",
    "local_cluster_layout",
    "serve_chunkserver",
    "serve_mds",
    "serve_snapshot_clone",
    "set_runtime_threads",
    "transfer_leader",
    "write_local_client_conf",
]

__version__: Final[str]
debug_build: Final[bool]

CURVE_FILE_CREATED: Final = 0
CURVE_FILE_DELETING: Final = 1
CURVE_FILE_CLONING: Final = 2
CURVE_FILE_CLONEMETAINSTALLED: Final = 3
CURVE_FILE_CLONED: Final = 4
CURVE_FILE_BEINGCLONED: Final = 5

CURVE_INODE_DIRECTORY: Final = 0
CURVE_INODE_PAGEFILE: Final = 1
CURVEINODE_APPENDFILE: Final = 2
CURVE_INODE_APPENDECFILE: Final = 3

CURVE_ERROR_OK: Final = 0
CURVE_ERROR_EXISTS: Final = 1
CURVE_ERROR_FAILED: Final = 2
CURVE_ERROR_DISABLEIO: Final = 3
CURVE_ERROR_AUTHFAIL: Final = 4
CURVE_ERROR_DELETING: Final = 5
CURVE_ERROR_NOTEXIST: Final = 6
CURVE_ERROR_UNDER_SNAPSHOT: Final = 7
CURVE_ERROR_NOT_UNDERSNAPSHOT: Final = 8
CURVE_ERROR_DELETE_ERROR: Final = 9
CURVE_ERROR_NOT_ALLOCATE: Final = 10
CURVE_ERROR_NOT_SUPPORT: Final = 11
CURVE_ERROR_NOT_EMPTY: Final = 12
CURVE_ERROR_NO_SHRINK_BIGGER_FILE: Final = 13
CURVE_ERROR_SESSION_NOTEXISTS: Final = 14
CURVE_ERROR_FILE_OCCUPIED: Final = 15
CURVE_ERROR_PARAM_ERROR: Final = 16
CURVE_ERROR_INTERNAL_ERROR: Final = 17
CURVE_ERROR_CRC_ERROR: Final = 18
CURVE_ERROR_INVALID_REQUEST: Final = 19
CURVE_ERROR_DISK_FAIL: Final = 20
CURVE_ERROR_NO_SPACE: Final = 21
CURVE_ERROR_NOT_ALIGNED: Final = 22
CURVE_ERROR_BAD_FD: Final = 23
CURVE_ERROR_LENGTH_NOT_SUPPORT: Final = 24
CURVE_ERROR_SESSION_NOT_EXIST: Final = 25
CURVE_ERROR_STATUS_NOT_MATCH: Final = 26
CURVE_ERROR_DELETE_BEING_CLONED: Final = 27
CURVE_ERROR_CLIENT_NOT_SUPPORT_SNAPSHOT: Final = 28
CURVE_ERROR_SNAPSTHO_FROZEN: Final = 29
CURVE_ERROR_RETRY_UNTIL_SUCCESS: Final = 30
CURVE_ERROR_EPOCH_TOO_OLD: Final = 31
CURVE_ERROR_UNKNOWN: Final = 100

ERROR_NAMES: Final[dict[int, str]]
"""``LIBCURVE_ERROR`` names by positive code: the core's one table of codes."""
SDK_CODES: Final[tuple[tuple[str, int, str, str, str, str], ...]]
"""The core's one table of codes: (name, positive code, message, errno name, exception class,
built-in base or "") per ``LIBCURVE_ERROR`` code."""

def _set_log_level(level: int) -> None:
    """Sets the core's event filter: events at or above this Python logging level cross
    to Python (``curvefs._logging`` keeps it in step with the ``curvefs`` loggers)."""

def _log_level() -> int:
    """The Python logging level the core's event filter lets through now."""

def _note_exiting() -> None:
    """The atexit hook that marks the interpreter as shutting down."""

def set_runtime_threads(threads: int) -> None:
    """Sizes the runtime's worker threads; only before the first call that uses it."""

CURVE_OP_READ: Final = 0
CURVE_OP_WRITE: Final = 1

@final
class UserInfo_t:
    """Who makes a call. ``password`` matters only for root."""

    owner: str
    password: str
    def __new__(cls, owner: str = "", password: str = "") -> Self: ...
    def __getnewargs__(self) -> tuple[str, str]: ...

@final
class FileInfo_t:
    """A file's attributes, filled in place by ``CBDClient.StatFile``."""

    id: int
    parentid: int
    filetype: int
    length: int
    ctime: int
    filename: str
    owner: str
    fileStatus: int
    stripeUnit: int
    stripeCount: int
    cloneSource: str
    cloneLength: int
    def __new__(cls) -> Self: ...

@final
class CreateContext:
    """The arguments of ``CBDClient.Create2``. ``user`` is shared, not copied."""

    name: str
    length: int
    user: UserInfo_t
    poolset: str
    stripeUnit: int
    stripeCount: int
    def __new__(
        cls,
        name: str = "",
        length: int = 0,
        user: UserInfo_t | None = None,
        poolset: str = "",
        stripeUnit: int = 0,
        stripeCount: int = 0,
    ) -> Self: ...

@final
class AioContext_t:
    """One asynchronous IO: AioRead fills ``buf`` (any writable buffer) in place, AioWrite
    sends it. When the IO ends, ``ret`` holds the length or a negative code and
    ``cb(ctx)`` runs with the GIL on a curvefs thread; an exception in it is logged on the
    ``curvefs`` logger."""

    offset: int
    length: int
    ret: int
    op: int
    cb: Callable[[AioContext_t], object] | None
    buf: Buffer | None
    def __new__(
        cls,
        offset: int = 0,
        length: int = 0,
        buf: Buffer | None = None,
        cb: Callable[[AioContext_t], object] | None = None,
    ) -> Self: ...

# Not final: curvefs.CBDClient derives from it (the native class is `frozen, subclass`).
@disjoint_base
class CBDClient:
    """A client of one Curve cluster; safe to share between threads."""

    def __new__(cls) -> Self: ...
    def Init(self, conf_path: str | os.PathLike[str]) -> int:
        """Reads client.conf (no RPC): 0, or -1 on any failure."""

    def UnInit(self) -> None: ...
    def Create(self, filename: str, user: UserInfo_t, size: int) -> int: ...
    def Create2(self, context: CreateContext) -> int: ...
    def StatFile(self, filename: str, user: UserInfo_t, finfo: FileInfo_t) -> int: ...
    def Extend(self, filename: str, user: UserInfo_t, size: int) -> int: ...
    def Open(self, filename: str, user: UserInfo_t) -> int:
        """An fd (>= 0) or a negative code."""

    def Close(self, fd: int) -> int: ...
    def Read(self, fd: int, buf: object, offset: int, length: int) -> bytes | int:
        """``length`` bytes, or a negative code. ``buf`` is ignored, as upstream."""

    def AioRead(self, fd: int, ctx: AioContext_t) -> int:
        """Starts a read into ``ctx.buf``: 0 once submitted, or a negative code."""

    def AioWrite(self, fd: int, ctx: AioContext_t) -> int:
        """Starts a write of ``ctx.buf`` (not copied): 0 once submitted, or a code."""

    def Write(self, fd: int, buf: str | Buffer, offset: int, length: int) -> int:
        """Writes the first ``length`` bytes of ``buf`` (a str is written as UTF-8): returns
        ``length`` or a negative code."""

    def Unlink(self, filename: str, user: UserInfo_t) -> int: ...
    def DeleteForce(self, filename: str, user: UserInfo_t) -> int: ...
    def Recover(self, filename: str, user: UserInfo_t, fileId: int = 0) -> int: ...
    def Rename(self, user: UserInfo_t, oldpath: str, newpath: str) -> int: ...
    def Mkdir(self, dirpath: str, user: UserInfo_t) -> int: ...
    def Rmdir(self, dirpath: str, user: UserInfo_t) -> int: ...
    def Listdir(self, dirpath: str, user: UserInfo_t) -> list[str]:
        """Entry names; raises ``curvefs.exceptions.CurveError`` on failure."""

    def GetClusterId(self) -> str:
        """The cluster's id, or "" on failure."""

    def ChangeOwner(self, filename: str, newOwner: str, user: UserInfo_t) -> int: ...
    def ListPoolset(self) -> list[str]:
        """Poolset names; raises ``curvefs.exceptions.CurveError`` on failure."""

def local_cluster_layout(data_dir: str | os.PathLike[str]) -> str | None:
    """The layout of the local cluster in ``data_dir`` as JSON (servers with their names,
    ports, addresses and logs; copysets; the root password; the client.conf path), or
    ``None`` if the folder holds no cluster yet."""

def create_local_cluster_layout(data_dir: str | os.PathLike[str], spec: str) -> str:
    """Creates the layout of a new local cluster from ``spec`` (JSON: ``mds_ports``,
    ``chunkserver_ports``, optional ``host``, ``copysets``, ``mds`` options) and returns it
    as ``local_cluster_layout`` does; ``ValueError`` for a bad spec."""

def write_local_client_conf(
    data_dir: str | os.PathLike[str], overrides: list[tuple[str, str]]
) -> str:
    """Writes the local cluster's client.conf (the core's defaults, ``overrides`` in their
    place) and returns its path; ``ValueError`` for an unknown key or a bad value."""

def serve_mds(
    data_dir: str | os.PathLike[str],
    index: int = 0,
    listen_fd: int | None = None,
    lifeline_fd: int | None = None,
) -> None:
    """Serves MDS ``index`` of the local cluster in ``data_dir`` until SIGTERM or SIGINT (or,
    given ``lifeline_fd``, the read end of a pipe, until its writers are gone): active, or
    standing by with its port closed while another MDS is."""

def serve_chunkserver(
    data_dir: str | os.PathLike[str],
    chunkserver_id: int,
    listen_fd: int | None = None,
    lifeline_fd: int | None = None,
) -> None:
    """Serves chunkserver ``chunkserver_id`` of the local cluster until SIGTERM or SIGINT (or
    the end of the ``lifeline_fd`` pipe's writers)."""

def serve_snapshot_clone(
    data_dir: str | os.PathLike[str],
    index: int = 0,
    listen_fd: int | None = None,
    lifeline_fd: int | None = None,
) -> None:
    """Serves instance ``index`` of the local cluster's snapshot/clone service (upstream's
    HTTP API) until SIGTERM or SIGINT (or the end of the ``lifeline_fd`` pipe's writers), or
    until another instance took its lease; it serves only while it holds the lease."""

def copyset_leader(addr: str, logical_pool_id: int, copyset_id: int, timeout_ms: int = 1000) -> str:
    """The "ip:port" that the chunkserver at ``addr`` names as the copyset's leader
    (GetLeader over baidu_std); ``OSError`` if it names none or does not answer in time."""

def transfer_leader(
    addr: str,
    logical_pool_id: int,
    copyset_id: int,
    transferee: str,
    timeout_ms: int = 1000,
) -> None:
    """Asks the copyset's leader at ``addr`` to hand leadership to the member at
    ``transferee`` (TransferLeader over baidu_std); ``ValueError`` if that is not a member,
    ``OSError`` for other refusals (``addr`` does not lead) or no answer in time."""

_Stat: TypeAlias = tuple[int, int, str, str, int, int, int, int, int, int, int, tuple[str, int]]
_Waiter: TypeAlias = tuple[Completions, object]
"""What an async twin takes last: its loop's completion queue and the future to resolve."""

@final
class NbdServer:
    """An NBD server of volumes (curve-nbd), running from construction until ``stop``."""

    def __new__(
        cls,
        client: ClientHandle,
        volumes: list[str],
        *,
        socket: str | os.PathLike[str] | None = None,
        bind: str | None = None,
        read_only: bool = False,
    ) -> Self: ...
    @property
    def address(self) -> str: ...
    @property
    def uris(self) -> list[tuple[str, str]]: ...
    def stop(self) -> None: ...
    def wait(self) -> None: ...

@final
class ClientHandle:
    """The native half of ``curvefs.Client``: raises ``curvefs.exceptions`` errors."""

    def __new__(cls, conf: str, owner: str, password: str) -> Self: ...
    def create(
        self,
        path: str,
        size: int,
        stripe_unit: int = 0,
        stripe_count: int = 0,
        poolset: str | None = None,
    ) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def stat(self, path: str) -> _Stat: ...
    def extend(self, path: str, size: int) -> None: ...
    def remove(self, path: str) -> None: ...
    def delete_force(self, path: str) -> None: ...
    def recover(self, path: str, file_id: int = 0) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def change_owner(self, path: str, new_owner: str) -> None: ...
    def clone_volume(
        self, source: str, dest: str, owner: str | None = None, poolset: str | None = None
    ) -> None: ...
    def flatten(self, path: str) -> None: ...
    def create_mds_snapshot(self, path: str) -> int: ...
    def cluster_id(self) -> str: ...
    def poolsets(self) -> list[str]: ...
    def metrics(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(io, mds)``: the client's IO metrics and its MDS client's, as dicts that
        ``curvefs.metrics`` types."""

    def open(self, path: str) -> VolumeHandle: ...
    # The async twins: the same core call as the blocking method of the same name, started
    # on the runtime; ``waiter``'s future is resolved with its result when it ends.
    def create_async(
        self,
        path: str,
        size: int,
        stripe_unit: int,
        stripe_count: int,
        poolset: str | None,
        waiter: _Waiter,
    ) -> TaskHandle: ...
    def mkdir_async(self, path: str, waiter: _Waiter) -> TaskHandle: ...
    def stat_async(self, path: str, waiter: _Waiter) -> TaskHandle: ...
    def extend_async(self, path: str, size: int, waiter: _Waiter) -> TaskHandle: ...
    def remove_async(self, path: str, waiter: _Waiter) -> TaskHandle: ...
    def recover_async(self, path: str, file_id: int, waiter: _Waiter) -> TaskHandle: ...
    def rename_async(self, old: str, new: str, waiter: _Waiter) -> TaskHandle: ...
    def listdir_async(self, path: str, waiter: _Waiter) -> TaskHandle: ...
    def change_owner_async(self, path: str, new_owner: str, waiter: _Waiter) -> TaskHandle: ...
    def clone_volume_async(
        self,
        source: str,
        dest: str,
        owner: str | None,
        poolset: str | None,
        waiter: _Waiter,
    ) -> TaskHandle: ...
    def flatten_async(self, path: str, waiter: _Waiter) -> TaskHandle: ...
    def cluster_id_async(self, waiter: _Waiter) -> TaskHandle: ...
    def poolsets_async(self, waiter: _Waiter) -> TaskHandle: ...
    def open_async(self, path: str, waiter: _Waiter) -> TaskHandle: ...
    @staticmethod
    def conf_keys() -> list[tuple[str, str, str, str, str, bool]]:
        """Every client.conf key the core reads, from its one declaration: (keyword
        argument, key, kind, default as client.conf spells it, doc, added by curvefs)."""

@final
class VolumeHandle:
    """The native half of ``curvefs.Volume``: positioned IO at any offset and length."""

    @property
    def path(self) -> str: ...
    def pread(self, length: int, offset: int) -> bytes: ...
    def preadinto(self, buffer: Buffer, offset: int) -> int: ...
    def pwrite(self, data: Buffer, offset: int) -> int: ...
    def stat(self) -> _Stat: ...
    def size(self) -> int: ...
    def block_size(self) -> int: ...
    def metrics(self) -> dict[str, Any]:
        """This volume's IO metrics, as a dict that ``curvefs.metrics`` types."""

    def close(self) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...
    def write_zeroes(self, offset: int, length: int) -> None: ...
    def stat_async(self, waiter: _Waiter) -> TaskHandle: ...
    def close_async(self, waiter: _Waiter) -> TaskHandle: ...
    def discard_async(self, offset: int, length: int, waiter: _Waiter) -> TaskHandle: ...
    def write_zeroes_async(self, offset: int, length: int, waiter: _Waiter) -> TaskHandle: ...
    def pread_async(self, length: int, offset: int, waiter: _Waiter) -> TaskHandle: ...
    def preadinto_async(self, buffer: Buffer, offset: int, waiter: _Waiter) -> TaskHandle: ...
    def pwrite_async(self, data: Buffer, offset: int, waiter: _Waiter) -> TaskHandle: ...

@final
class Completions:
    """The completion queue of one event loop: ended calls wait here, and the loop, woken
    through ``fileno()`` (an eventfd) once for all that ended together, resolves them."""

    def __new__(cls) -> Self: ...
    def fileno(self) -> int: ...
    def drain(self) -> None:
        """Resolves every queued future (on the loop's thread)."""

@final
class TaskHandle:
    """An async call running on the runtime."""

    def cancel(self) -> None:
        """Aborts the call; returns once it let go of everything it held."""
