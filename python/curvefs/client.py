"""The Pythonic API: :class:`Client`, a file-like :class:`Volume`, typed :class:`FileInfo`.

``CBDClient`` keeps the SWIG SDK's shape (integer codes, 4 KiB alignment); this API raises
:mod:`curvefs.exceptions` errors (``except FileNotFoundError`` works), takes any offset and
length, and reads into or writes from any buffer. Both run on the same Rust core::

    with curvefs.Client(conf_path, user="curve") as client:
        client.create("/vol", 10 * 2**30)
        with client.open("/vol") as vol:
            vol.pwrite(b"hello", 1000)
            assert vol.pread(5, 1000) == b"hello"
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import enum
import io
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Protocol, Self, TypedDict, cast

from typing_extensions import Buffer, Unpack

from curvefs import _core
from curvefs.metrics import ClientMetrics, IoMetrics, MdsMetrics


class _ArrayBuffer(Protocol):
    """An array that exports the buffer protocol but whose type stubs do not say so
    (numpy's before Python 3.12); accepted wherever a buffer is."""

    @property
    def __array_interface__(self) -> dict[str, Any]: ...


#: Any C-contiguous buffer: bytes, bytearray, memoryview, mmap, array.array, numpy arrays.
BufferLike = Buffer | _ArrayBuffer


def _view(obj: BufferLike) -> memoryview:
    # Both members of the union export the buffer protocol at run time.
    return memoryview(cast(Buffer, obj))


__all__ = [
    "BufferLike",
    "Client",
    "ClientOptions",
    "FileInfo",
    "FileStatus",
    "FileType",
    "Volume",
    "conf_options",
]


class FileType(enum.IntEnum):
    """``curve.mds.FileType``."""

    DIRECTORY = 0
    PAGEFILE = 1
    APPENDFILE = 2
    APPENDECFILE = 3
    SNAPSHOT_PAGEFILE = 4


class FileStatus(enum.IntEnum):
    """``curve.mds.FileStatus``."""

    CREATED = 0
    DELETING = 1
    CLONING = 2
    CLONE_META_INSTALLED = 3
    CLONED = 4
    BEING_CLONED = 5


@dataclass(frozen=True)
class FileInfo:
    """What the MDS says of a file or directory."""

    id: int
    parent_id: int
    name: str
    owner: str
    length: int
    ctime: _dt.datetime
    file_type: FileType
    status: FileStatus
    stripe_unit: int
    stripe_count: int
    block_size: int
    #: A lazy clone's source volume; "" for a file that is no clone.
    clone_source: str = ""
    #: The source's length when the clone was made; 0 for a file that is no clone.
    clone_length: int = 0

    @classmethod
    def _from_native(
        cls, t: tuple[int, int, str, str, int, int, int, int, int, int, int, tuple[str, int]]
    ) -> Self:
        id_, parent, name, owner, ftype, status, length, ctime_us, su, sc, bs, clone = t
        return cls(
            id=id_,
            parent_id=parent,
            name=name,
            owner=owner,
            length=length,
            ctime=_dt.datetime.fromtimestamp(ctime_us / 1e6, tz=_dt.UTC),
            file_type=FileType(ftype),
            status=FileStatus(status),
            stripe_unit=su,
            stripe_count=sc,
            block_size=bs,
            clone_source=clone[0],
            clone_length=clone[1],
        )


# One completion queue per event loop: the core queues each ended call there and wakes the
# loop once for all the calls that ended together (see handles.rs, "asyncio").
_COMPLETIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _core.Completions] = (
    weakref.WeakKeyDictionary()
)


def _completions(loop: asyncio.AbstractEventLoop) -> _core.Completions:
    queue = _COMPLETIONS.get(loop)
    if queue is None:
        queue = _core.Completions()
        loop.add_reader(queue.fileno(), queue.drain)
        _COMPLETIONS[loop] = queue
    return queue


async def _run_async(start: Callable[[_core._Waiter], _core.TaskHandle]) -> Any:
    """Starts a call on the core's runtime and awaits it. Cancelling the awaiting task
    aborts the call and returns only once the core has let go of everything it held."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    task = start((_completions(loop), fut))
    try:
        return await fut
    except asyncio.CancelledError:
        task.cancel()
        raise


class ClientOptions(TypedDict, total=False):
    """The keyword options of :class:`Client`: every ``client.conf`` key the core reads but
    ``mds.listen.addr``, named like the core's field. The keys, their types and what each
    means are declared once in the core (``curve_client::conf``); a test checks this type
    against that declaration, and the docs' key table is generated from it."""

    mds_register_to_mds: bool
    mds_rpc_timeout_ms: int
    mds_max_rpc_timeout_ms: int
    mds_max_retry_ms: int
    mds_max_failed_times_before_change_mds: int
    mds_refresh_times_per_lease: int
    mds_rpc_retry_interval_us: int
    mds_normal_retry_times_before_trigger_wait: int
    mds_max_retry_ms_in_io_path: int
    mds_wait_sleep_ms: int
    metacache_get_leader_timeout_ms: int
    metacache_get_leader_retry: int
    metacache_rpc_retry_interval_us: int
    chunkserver_op_retry_interval_us: int
    chunkserver_op_max_retry: int
    chunkserver_rpc_timeout_ms: int
    chunkserver_max_retry_sleep_interval_us: int
    chunkserver_max_rpc_timeout_ms: int
    chunkserver_max_stable_timeout_times: int
    chunkserver_check_health_timeout_ms: int
    chunkserver_server_stable_threshold: int
    chunkserver_min_retry_times_force_timeout_backoff: int
    chunkserver_slow_request_threshold_ms: int
    file_max_in_flight_rpc_num: int
    file_io_split_max_size_kb: int
    throttle_enable: bool
    discard_enable: bool
    discard_granularity: int
    discard_task_delay_ms: int
    closefd_timeout_s: int
    closefd_time_interval_s: int
    chunkserver_max_retry_time_ms: int
    rpc_connect_timeout_ms: int
    channels_per_chunkserver: int
    mds_transport: Literal["baidu_std", "grpc"]
    chunkserver_transport: Literal["baidu_std", "grpc"]
    max_body_size: int


def conf_options() -> dict[str, str]:
    """Every keyword option of :class:`Client` and the ``client.conf`` key it sets."""
    return {field: key for field, key, *_ in _core.ClientHandle.conf_keys()}


def _conf_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\n" in value or "#" in value:
            raise ValueError(f"option {name}: {value!r} cannot be written to client.conf")
        return value
    if name == "mds_addrs" and isinstance(value, Sequence):
        return ",".join(_conf_value(name, v) for v in value)
    raise TypeError(f"option {name} must be int, bool or str, not {type(value).__name__}")


class Client:
    """A client of one Curve cluster, as one user.

    ``conf_path`` is a ``client.conf`` (Curve's format); ``mds_addrs`` lists MDS
    addresses (``"ip:port"``) instead of or on top of it; every other ``client.conf`` key
    is a keyword argument named like the core's field (``mds_rpc_timeout_ms=1000`` for
    ``mds.rpcTimeoutMS``; :class:`ClientOptions` types them, :func:`conf_options` lists
    them). Unknown keywords raise
    ``TypeError``. No RPC is made until the first call. Safe to share between threads;
    pickles by its configuration.
    """

    def __init__(
        self,
        conf_path: str | os.PathLike[str] | None = None,
        *,
        user: str,
        password: str = "",
        mds_addrs: Sequence[str] | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        keys = conf_options()
        lines = []
        if conf_path is not None:
            lines.append(Path(conf_path).read_text(encoding="utf-8"))
        if mds_addrs is not None:
            lines.append(f"mds.listen.addr={_conf_value('mds_addrs', list(mds_addrs))}")
        for name, value in options.items():
            key = keys.get(name)
            if key is None or name == "mds_addrs":
                raise TypeError(f"Client() got an unknown option {name!r}")
            lines.append(f"{key}={_conf_value(name, value)}")
        if conf_path is None and mds_addrs is None:
            raise TypeError("Client() needs conf_path or mds_addrs")
        self._args: tuple[str | None, str, str, list[str] | None, dict[str, Any]] = (
            None if conf_path is None else os.fspath(conf_path),
            user,
            password,
            None if mds_addrs is None else list(mds_addrs),
            dict(options),
        )
        self._handle: _core.ClientHandle | None = _core.ClientHandle(
            "\n".join(lines) + "\n", user, password
        )
        self._volumes: weakref.WeakSet[Volume] = weakref.WeakSet()

    def __reduce__(self) -> tuple[Any, ...]:
        conf_path, user, password, mds_addrs, options = self._args
        return (_rebuild, (conf_path, user, password, mds_addrs, options))

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else "open"
        return f"<curvefs.Client user={self._args[1]!r} {state}>"

    @property
    def _h(self) -> _core.ClientHandle:
        if self._handle is None:
            raise ValueError("the client is closed")
        return self._handle

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes every volume this client opened; later calls raise ``ValueError``."""
        for vol in list(self._volumes):
            vol.close()
        self._handle = None

    async def close_async(self) -> None:
        """The async twin of :meth:`close`: the volumes are closed side by side."""
        await asyncio.gather(*(vol.close_async() for vol in list(self._volumes)))
        self._handle = None

    def create(
        self,
        path: str,
        size: int,
        *,
        stripe_unit: int | None = None,
        stripe_count: int | None = None,
        poolset: str | None = None,
    ) -> None:
        """Creates a volume of ``size`` bytes (a multiple of the segment size, ≥ 10 GiB on
        a stock MDS), optionally striped and in a poolset."""
        self._h.create(path, size, stripe_unit or 0, stripe_count or 0, poolset)

    def stat(self, path: str) -> FileInfo:
        return FileInfo._from_native(self._h.stat(path))

    def extend(self, path: str, size: int) -> None:
        """Grows a volume to ``size`` bytes (volumes never shrink)."""
        self._h.extend(path, size)

    def remove(self, path: str) -> None:
        """Moves a volume to ``/RecycleBin`` (see :meth:`recover`)."""
        self._h.remove(path)

    def recover(self, path: str, file_id: int = 0) -> None:
        """Brings a removed volume back from ``/RecycleBin`` to ``path``."""
        self._h.recover(path, file_id)

    def rename(self, old: str, new: str) -> None:
        self._h.rename(old, new)

    def mkdir(self, path: str) -> None:
        self._h.mkdir(path)

    def rmdir(self, path: str) -> None:
        """Removes an empty directory."""
        self._h.remove(path)

    def listdir(self, path: str) -> list[str]:
        return self._h.listdir(path)

    def change_owner(self, path: str, new_owner: str) -> None:
        """Gives a file to another owner (root only)."""
        self._h.change_owner(path, new_owner)

    def clone_volume(
        self, source: str, dest: str, *, owner: str | None = None, poolset: str | None = None
    ) -> None:
        """Makes ``dest`` a lazy clone of the volume ``source``, as Curve's snapshot/clone
        service does for ``Action=Clone&Lazy=true`` (root only): ``dest`` then has status
        CloneMetaInstalled, reads as ``source`` and holds no data of its own until written
        or flattened; ``source`` becomes BeingCloned and cannot be deleted while a clone
        reads from it. ``owner`` defaults to the source's owner."""
        self._h.clone_volume(source, dest, owner, poolset)

    def flatten(self, path: str) -> None:
        """Copies into the lazy clone ``path`` everything it still reads from its source,
        then marks it Cloned (root only). IO to it may go on meanwhile; a clone already
        flattened succeeds at once."""
        self._h.flatten(path)

    def cluster_id(self) -> str:
        return self._h.cluster_id()

    def poolsets(self) -> list[str]:
        return self._h.poolsets()

    def metrics(self) -> ClientMetrics:
        """This client's metrics now: IO summed over every volume it opened, its MDS
        client's, and each open volume's (see :mod:`curvefs.metrics`)."""
        io_stats, mds_stats = self._h.metrics()
        volumes = {
            v.path: IoMetrics._from_native(v._handle.metrics())
            for v in list(self._volumes)
            if not v.closed
        }
        return ClientMetrics(
            io=IoMetrics._from_native(io_stats),
            mds=MdsMetrics._from_native(mds_stats),
            volumes=MappingProxyType(volumes),
        )

    def open(self, path: str, *, read_only: bool = False) -> Volume:
        """Opens a volume: a file-like object with its own lease, closed by ``close()``."""
        vol = Volume(self._h.open(path), read_only=read_only)
        self._volumes.add(vol)
        return vol

    # asyncio twins: the same core calls, awaited; no thread per call.

    async def create_async(
        self,
        path: str,
        size: int,
        *,
        stripe_unit: int | None = None,
        stripe_count: int | None = None,
        poolset: str | None = None,
    ) -> None:
        h = self._h
        await _run_async(
            lambda w: h.create_async(path, size, stripe_unit or 0, stripe_count or 0, poolset, w)
        )

    async def stat_async(self, path: str) -> FileInfo:
        h = self._h
        return FileInfo._from_native(await _run_async(lambda w: h.stat_async(path, w)))

    async def extend_async(self, path: str, size: int) -> None:
        h = self._h
        await _run_async(lambda w: h.extend_async(path, size, w))

    async def remove_async(self, path: str) -> None:
        h = self._h
        await _run_async(lambda w: h.remove_async(path, w))

    async def recover_async(self, path: str, file_id: int = 0) -> None:
        h = self._h
        await _run_async(lambda w: h.recover_async(path, file_id, w))

    async def rename_async(self, old: str, new: str) -> None:
        h = self._h
        await _run_async(lambda w: h.rename_async(old, new, w))

    async def mkdir_async(self, path: str) -> None:
        h = self._h
        await _run_async(lambda w: h.mkdir_async(path, w))

    async def rmdir_async(self, path: str) -> None:
        h = self._h
        await _run_async(lambda w: h.remove_async(path, w))

    async def listdir_async(self, path: str) -> list[str]:
        h = self._h
        names: list[str] = await _run_async(lambda w: h.listdir_async(path, w))
        return names

    async def change_owner_async(self, path: str, new_owner: str) -> None:
        h = self._h
        await _run_async(lambda w: h.change_owner_async(path, new_owner, w))

    async def clone_volume_async(
        self, source: str, dest: str, *, owner: str | None = None, poolset: str | None = None
    ) -> None:
        h = self._h
        await _run_async(lambda w: h.clone_volume_async(source, dest, owner, poolset, w))

    async def flatten_async(self, path: str) -> None:
        h = self._h
        await _run_async(lambda w: h.flatten_async(path, w))

    async def cluster_id_async(self) -> str:
        h = self._h
        cid: str = await _run_async(h.cluster_id_async)
        return cid

    async def poolsets_async(self) -> list[str]:
        h = self._h
        names: list[str] = await _run_async(h.poolsets_async)
        return names

    async def open_async(self, path: str, *, read_only: bool = False) -> Volume:
        h = self._h
        vol = Volume(await _run_async(lambda w: h.open_async(path, w)), read_only=read_only)
        self._volumes.add(vol)
        return vol


def _rebuild(
    conf_path: str | None,
    user: str,
    password: str,
    mds_addrs: list[str] | None,
    options: Mapping[str, Any],
) -> Client:
    return Client(
        conf_path,
        user=user,
        password=password,
        mds_addrs=mds_addrs,
        **cast(ClientOptions, options),
    )


class Volume(io.RawIOBase):
    """An open volume: readable, writable (unless opened read-only), seekable.

    Besides the file protocol (``read``, ``readinto``, ``write``, ``seek``, ``tell``;
    ``io.BufferedReader``/``BufferedWriter`` and ``shutil.copyfileobj`` work on it), it
    has positioned IO: :meth:`pread`, :meth:`preadinto`, :meth:`pwrite`. Any offset and
    length work (partial blocks are read, patched and written back, with concurrent writes
    to the same block kept in order). Reads stop at the end of the volume; writes past it
    fail, because volumes grow only through :meth:`Client.extend`.
    """

    def __init__(self, handle: _core.VolumeHandle, *, read_only: bool = False) -> None:
        super().__init__()
        self._handle = handle
        self._read_only = read_only
        self._pos = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<curvefs.Volume {self._handle.path!r} {state}>"

    @property
    def path(self) -> str:
        return self._handle.path

    @property
    def size(self) -> int:
        """The volume's size in bytes (as of open, the last lease refresh or ``stat``)."""
        return self._handle.size()

    @property
    def block_size(self) -> int:
        """The alignment below which writes are read-modify-write."""
        return self._handle.block_size()

    def metrics(self) -> IoMetrics:
        """This volume's IO metrics since it was opened (see :mod:`curvefs.metrics`)."""
        self._check_open()
        return IoMetrics._from_native(self._handle.metrics())

    def stat(self) -> FileInfo:
        """The volume's attributes, asked of the MDS now (``size`` follows them)."""
        self._check_open()
        return FileInfo._from_native(self._handle.stat())

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed volume")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise io.UnsupportedOperation("the volume was opened read-only")

    def readable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return not self._read_only

    def seekable(self) -> bool:
        self._check_open()
        return True

    def close(self) -> None:
        if not self.closed:
            try:
                self._handle.close()
            finally:
                super().close()

    async def close_async(self) -> None:
        """The async twin of :meth:`close`."""
        if not self.closed:
            handle = self._handle
            try:
                await _run_async(handle.close_async)
            finally:
                super().close()

    async def stat_async(self) -> FileInfo:
        """The async twin of :meth:`stat`."""
        self._check_open()
        handle = self._handle
        return FileInfo._from_native(await _run_async(handle.stat_async))

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("Curve volumes cannot be truncated; use Client.extend")

    def _clamp(self, offset: int, length: int) -> int:
        """How much of ``length`` bytes at ``offset`` lies inside the volume."""
        self._check_span(offset, length)
        return max(0, min(length, self.size - offset))

    def pread(self, length: int, offset: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end, ``b""`` past it)."""
        self._check_open()
        n = self._clamp(offset, length)
        return self._handle.pread(n, offset) if n else b""

    def preadinto(self, buffer: BufferLike, offset: int) -> int:
        """Fills ``buffer`` (any writable buffer: bytearray, memoryview, numpy array,
        mmap) in place from ``offset``, without an intermediate copy; returns the bytes
        read (fewer at the end of the volume)."""
        self._check_open()
        # Views released on the way out, so the caller's buffer is free again at once.
        with _view(buffer) as mv, mv.cast("B") as view:
            n = self._clamp(offset, view.nbytes)
            if n == 0:
                return 0
            with view[:n] as part:
                return self._handle.preadinto(part, offset)

    def pwrite(self, data: BufferLike, offset: int) -> int:
        """Writes all of ``data`` (any C-contiguous buffer) at ``offset``."""
        self._check_writable()
        if offset < 0:
            raise ValueError("offset must be non-negative")
        with _view(data) as mv:
            if mv.nbytes == 0:
                return 0
        # The object itself, not a view of ours: the core pins it (no copy) for as long as
        # its requests need it, and a view released here must not be the one it pins.
        return self._handle.pwrite(cast(Buffer, data), offset)

    def _check_span(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")

    def discard(self, offset: int, length: int) -> None:
        """Discards a range (libcurve's discard): it reads as zeros afterwards. With
        ``discard.enable`` in client.conf, segments it covers whole go back to the pool."""
        self._check_writable()
        self._check_span(offset, length)
        self._handle.discard(offset, length)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zeroes a range (any alignment); never-allocated segments are left as they are,
        except where a lazy clone reads them from its source."""
        self._check_writable()
        self._check_span(offset, length)
        self._handle.write_zeroes(offset, length)

    def readinto(self, buffer: BufferLike) -> int:
        n = self.preadinto(buffer, self._pos)
        self._pos += n
        return n

    def write(self, data: BufferLike) -> int:
        n = self.pwrite(data, self._pos)
        self._pos += n
        return n

    # asyncio twins of pread, preadinto and pwrite.

    async def pread_async(self, length: int, offset: int) -> bytes:
        self._check_open()
        n = self._clamp(offset, length)
        if n == 0:
            return b""
        handle = self._handle
        data: bytes = await _run_async(lambda w: handle.pread_async(n, offset, w))
        return data

    async def preadinto_async(self, buffer: BufferLike, offset: int) -> int:
        """Fills ``buffer`` in place; it stays borrowed until the call ends or, if the
        awaiting task is cancelled, until the cancellation returns."""
        self._check_open()
        handle = self._handle
        # The views are released when this returns or is cancelled (a traceback that
        # keeps this frame must not keep the caller's buffer exported).
        with _view(buffer) as mv, mv.cast("B") as view:
            n = self._clamp(offset, view.nbytes)
            if n == 0:
                return 0
            with view[:n] as part:
                got: int = await _run_async(lambda w: handle.preadinto_async(part, offset, w))
                return got

    async def pwrite_async(self, data: BufferLike, offset: int) -> int:
        """Writes all of ``data`` at ``offset``; ``data`` is sent as it is, not copied, so
        leave it unchanged until the call returns."""
        self._check_writable()
        if offset < 0:
            raise ValueError("offset must be non-negative")
        handle = self._handle
        with _view(data) as mv:
            if mv.nbytes == 0:
                return 0
        written: int = await _run_async(
            lambda w: handle.pwrite_async(cast(Buffer, data), offset, w)
        )
        return written

    async def discard_async(self, offset: int, length: int) -> None:
        self._check_writable()
        self._check_span(offset, length)
        handle = self._handle
        await _run_async(lambda w: handle.discard_async(offset, length, w))

    async def write_zeroes_async(self, offset: int, length: int) -> None:
        self._check_writable()
        self._check_span(offset, length)
        handle = self._handle
        await _run_async(lambda w: handle.write_zeroes_async(offset, length, w))
