"""A client of Curve's snapshot/clone service: upstream's HTTP API (``snapshotcloneserver``,
path ``/SnapshotCloneService``), as a stock cluster and the local cluster serve it.

The service is not reached through client.conf (libcurve has no key for it): give its
addresses, ``host:port`` each, as upstream's tools do (tools-v2's ``snapshotAddr``). Only
the active service answers (standbys keep their port closed), so every address is tried in
turn, and the one that answered is tried first next time.

Results are frozen dataclasses with :class:`enum.IntEnum` statuses; a refusal raises a
:class:`SnapshotCloneError` subclass named after the service's code (they are the service's
codes, not the SDK's). Listing pages through the service's ``Limit``/``Offset`` itself.
Every method has an ``*_async`` twin that runs it off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

__all__ = [
    "CannotCancelFinishedError",
    "CannotCleanUnfinishedError",
    "CannotCreateWhenErrorError",
    "CannotDeleteUnfinishedError",
    "ChunkSizeNotAlignedError",
    "CloneRefStatus",
    "CloneStep",
    "CloneTask",
    "CloneTaskStatus",
    "CloneTaskType",
    "FileExistError",
    "FileNameNotMatchError",
    "FileNotExistError",
    "FileStatusInvalidError",
    "InternalError",
    "InvalidRequestError",
    "InvalidSnapshotError",
    "InvalidUserError",
    "NotSupportedError",
    "ServerInitError",
    "ServerStartError",
    "ServiceStoppedError",
    "Snapshot",
    "SnapshotCloneClient",
    "SnapshotCloneError",
    "SnapshotCloneUnavailableError",
    "SnapshotInUseError",
    "SnapshotLimitError",
    "SnapshotStatus",
    "TaskExistError",
    "TaskFullError",
    "error_class",
]

PATH = "/SnapshotCloneService"
VERSION = "0.0.6"  # what upstream's tools send; the service requires one and checks none
PAGE = 100  # as upstream's snaptool pages


class CloneTaskStatus(IntEnum):
    """``CloneStatus`` of upstream's service."""

    DONE = 0
    CLONING = 1
    RECOVERING = 2
    CLEANING = 3
    ERROR_CLEANING = 4
    ERROR = 5
    RETRYING = 6
    META_INSTALLED = 7


class CloneTaskType(IntEnum):
    CLONE = 0
    RECOVER = 1


class CloneStep(IntEnum):
    """What a clone task does next (``CloneStep``)."""

    CREATE_CLONE_FILE = 0
    CREATE_CLONE_META = 1
    CREATE_CLONE_CHUNK = 2
    COMPLETE_CLONE_META = 3
    RECOVER_CHUNK = 4
    CHANGE_OWNER = 5
    RENAME_CLONE_FILE = 6
    COMPLETE_CLONE_FILE = 7
    END = 8


class SnapshotStatus(IntEnum):
    DONE = 0
    PENDING = 1
    DELETING = 2
    ERROR_DELETING = 3
    CANCELING = 4
    ERROR = 5


class CloneRefStatus(IntEnum):
    """Whether clone tasks still use a source (``GetCloneRefStatus``)."""

    NO_REF = 0
    HAS_REF = 1
    NEED_CHECK = 2


@dataclass(frozen=True)
class CloneTask:
    """A clone or recover task (``TaskInfos[]``)."""

    uuid: str
    user: str
    file: str
    source: str
    task_type: CloneTaskType
    status: CloneTaskStatus
    lazy: bool
    next_step: CloneStep
    time_us: int
    progress: int
    source_is_snapshot: bool

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> CloneTask:
        return cls(
            uuid=str(item["UUID"]),
            user=str(item["User"]),
            file=str(item["File"]),
            source=str(item["Src"]),
            task_type=CloneTaskType(int(item["TaskType"])),
            status=CloneTaskStatus(int(item["TaskStatus"])),
            lazy=bool(item["IsLazy"]),
            next_step=CloneStep(int(item["NextStep"])),
            time_us=int(item["Time"]),
            progress=int(item["Progress"]),
            source_is_snapshot=int(item["FileType"]) == 1,
        )


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of a volume (``Snapshots[]``)."""

    uuid: str
    user: str
    file: str
    seq_num: int
    name: str
    time_us: int
    file_length: int
    status: SnapshotStatus
    progress: int

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Snapshot:
        return cls(
            uuid=str(item["UUID"]),
            user=str(item["User"]),
            file=str(item["File"]),
            seq_num=int(item["SeqNum"]),
            name=str(item["Name"]),
            time_us=int(item["Time"]),
            file_length=int(item["FileLength"]),
            status=SnapshotStatus(int(item["Status"])),
            progress=int(item["Progress"]),
        )


@dataclass(frozen=True)
class CloneReference:
    """A lazy clone that may still read a source (``CloneFileInfo[]``)."""

    user: str
    file: str
    inode: int


class SnapshotCloneError(Exception):
    """The service refused a request: ``code`` is its code (-1 ... -21), ``message`` its
    text, ``request_id`` the id it logged the request under, ``uuid`` the task it names."""

    code: int = -1

    def __init__(self, code: int, message: str, request_id: str = "", uuid: str = "") -> None:
        super().__init__(
            f"{message} (code {code}{', request ' + request_id if request_id else ''})"
        )
        self.code = code
        self.message = message
        self.request_id = request_id
        self.uuid = uuid


class SnapshotCloneUnavailableError(SnapshotCloneError, ConnectionError):
    """No address of the service answered."""


# The service's codes (upstream's snapshotclone_define.h), one class each; _CODES maps them.


class InternalError(SnapshotCloneError):
    code = -1


class ServerInitError(SnapshotCloneError):
    code = -2


class ServerStartError(SnapshotCloneError):
    code = -3


class ServiceStoppedError(SnapshotCloneError):
    code = -4


class InvalidRequestError(SnapshotCloneError, ValueError):
    code = -5


class TaskExistError(SnapshotCloneError):
    code = -6


class InvalidUserError(SnapshotCloneError, PermissionError):
    code = -7


class FileNotExistError(SnapshotCloneError, FileNotFoundError):
    code = -8


class FileStatusInvalidError(SnapshotCloneError):
    code = -9


class ChunkSizeNotAlignedError(SnapshotCloneError):
    code = -10


class FileNameNotMatchError(SnapshotCloneError):
    code = -11


class CannotDeleteUnfinishedError(SnapshotCloneError):
    code = -12


class CannotCreateWhenErrorError(SnapshotCloneError):
    code = -13


class CannotCancelFinishedError(SnapshotCloneError):
    code = -14


class InvalidSnapshotError(SnapshotCloneError):
    code = -15


class SnapshotInUseError(SnapshotCloneError):
    code = -16


class CannotCleanUnfinishedError(SnapshotCloneError):
    code = -17


class SnapshotLimitError(SnapshotCloneError):
    code = -18


class FileExistError(SnapshotCloneError, FileExistsError):
    code = -19


class TaskFullError(SnapshotCloneError):
    code = -20


class NotSupportedError(SnapshotCloneError, NotImplementedError):
    code = -21


_CODES: dict[int, type[SnapshotCloneError]] = {
    -1: InternalError,
    -2: ServerInitError,
    -3: ServerStartError,
    -4: ServiceStoppedError,
    -5: InvalidRequestError,
    -6: TaskExistError,
    -7: InvalidUserError,
    -8: FileNotExistError,
    -9: FileStatusInvalidError,
    -10: ChunkSizeNotAlignedError,
    -11: FileNameNotMatchError,
    -12: CannotDeleteUnfinishedError,
    -13: CannotCreateWhenErrorError,
    -14: CannotCancelFinishedError,
    -15: InvalidSnapshotError,
    -16: SnapshotInUseError,
    -17: CannotCleanUnfinishedError,
    -18: SnapshotLimitError,
    -19: FileExistError,
    -20: TaskFullError,
    -21: NotSupportedError,
}


def error_class(code: int) -> type[SnapshotCloneError]:
    """The exception class of a service code (``SnapshotCloneError`` for an unknown one)."""
    return _CODES.get(code, SnapshotCloneError)


class SnapshotCloneClient:
    """A client of the snapshot/clone service at ``addrs`` (``"host:port"``, a list, or a
    comma-separated string), acting as ``user``. ``timeout`` bounds each HTTP request."""

    def __init__(self, addrs: str | Sequence[str], *, user: str, timeout: float = 30.0) -> None:
        if isinstance(addrs, str):
            addrs = [a.strip() for a in addrs.split(",") if a.strip()]
        if not addrs:
            raise ValueError("no snapshot/clone service address")
        if not user:
            raise ValueError("user must not be empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.addrs = list(addrs)
        self.user = user
        self.timeout = timeout

    # -- the wire ------------------------------------------------------------------------

    def request(self, action: str, **params: str | int | bool | None) -> dict[str, Any]:
        """One action: its JSON body on success; raises the code's exception otherwise."""
        query: dict[str, str] = {"Action": action, "Version": VERSION}
        for key, value in params.items():
            if value is None:
                continue
            query[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        encoded = urllib.parse.urlencode(query)
        last: Exception | None = None
        for addr in list(self.addrs):
            url = f"http://{addr}{PATH}?{encoded}"
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    body = json.loads(response.read())
            except urllib.error.HTTPError as e:
                with e:
                    try:
                        body = json.loads(e.read())
                    except ValueError:
                        raise SnapshotCloneError(-1, f"HTTP {e.code} from {addr}") from e
            except (TimeoutError, urllib.error.URLError, OSError) as e:
                last = e
                continue
            code = int(body.get("Code", -1))
            cls = error_class(code)
            if cls is ServiceStoppedError:
                # An instance that stops, or lost its lease to another, answers -4: the
                # active one is elsewhere.
                last = cls(code, f"{addr} is not the active instance")
                continue
            # The one that answered is asked first next time.
            self.addrs.remove(addr)
            self.addrs.insert(0, addr)
            if code != 0:
                raise cls(
                    code,
                    str(body.get("Message", "")),
                    str(body.get("RequestId", "")),
                    str(body.get("UUID", "")),
                )
            return dict(body)
        raise SnapshotCloneUnavailableError(
            -1, f"no snapshot/clone service answered at {', '.join(self.addrs)}: {last}"
        )

    def _pages(self, action: str, key: str, **params: str | int | bool | None) -> list[Any]:
        items: list[Any] = []
        while True:
            body = self.request(action, Limit=PAGE, Offset=len(items), **params)
            page = list(body.get(key) or [])
            items.extend(page)
            if not page or len(items) >= int(body.get("TotalCount", 0)):
                return items

    # -- clones --------------------------------------------------------------------------

    def clone(
        self, source: str, destination: str, *, lazy: bool = True, poolset: str | None = None
    ) -> str:
        """Clones the volume or snapshot ``source`` to ``destination``; returns the task's
        UUID. A lazy clone returns once ``destination`` exists (reading ``source`` until
        flattened); otherwise the copy goes on in the background (see
        :meth:`wait_clone_task`)."""
        body = self.request(
            "Clone",
            User=self.user,
            Source=source,
            Destination=destination,
            Lazy=lazy,
            Poolset=poolset,
        )
        return str(body["UUID"])

    def recover(self, snapshot: str, volume: str, *, lazy: bool = True) -> str:
        """Recovers ``volume`` from its snapshot ``snapshot``; returns the task's UUID."""
        body = self.request(
            "Recover", User=self.user, Source=snapshot, Destination=volume, Lazy=lazy
        )
        return str(body["UUID"])

    def flatten(self, task: str) -> None:
        """Starts copying what the lazy clone of ``task`` still reads from its source."""
        self.request("Flatten", User=self.user, UUID=task)

    def clone_task(self, task: str) -> CloneTask:
        body = self.request("GetCloneTasks", User=self.user, UUID=task)
        return CloneTask.from_json(body["TaskInfos"][0])

    def clone_tasks(self, file: str | None = None) -> list[CloneTask]:
        """This user's clone and recover tasks (of ``file``, the destination, if given)."""
        items = self._pages("GetCloneTasks", "TaskInfos", User=self.user, File=file)
        return [CloneTask.from_json(i) for i in items]

    def clean_clone_task(self, task: str) -> None:
        """Forgets a finished or failed task (a failed one's leftovers are removed)."""
        self.request("CleanCloneTask", User=self.user, UUID=task)

    def clone_ref_status(self, source: str) -> tuple[CloneRefStatus, list[CloneReference]]:
        """Whether tasks still use ``source``, and the lazy clones that may still read it."""
        body = self.request("GetCloneRefStatus", User=self.user, Source=source)
        refs = [
            CloneReference(str(i["User"]), str(i["File"]), int(i["Inode"]))
            for i in body.get("CloneFileInfo") or []
        ]
        return CloneRefStatus(int(body["RefStatus"])), refs

    def wait_clone_task(
        self,
        task: str,
        *,
        until: CloneTaskStatus = CloneTaskStatus.DONE,
        timeout: float | None = None,
        interval: float = 0.2,
        progress: Callable[[CloneTask], None] | None = None,
    ) -> CloneTask:
        """Polls ``task`` until it reaches ``until`` (``META_INSTALLED`` counts for a lazy
        clone's first stage), calling ``progress`` with each state seen. Raises
        :class:`SnapshotCloneError` if the task fails, ``TimeoutError`` after ``timeout``
        seconds. Interruptible (Ctrl-C)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.clone_task(task)
            if progress is not None:
                progress(info)
            if info.status == until or (
                until == CloneTaskStatus.META_INSTALLED and info.status == CloneTaskStatus.DONE
            ):
                return info
            if info.status in (CloneTaskStatus.ERROR, CloneTaskStatus.ERROR_CLEANING):
                raise SnapshotCloneError(-1, f"clone task {task} of {info.file} failed", uuid=task)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"clone task {task} is {info.status.name} after {timeout} s")
            time.sleep(interval)

    # -- snapshots -----------------------------------------------------------------------

    def create_snapshot(self, file: str, name: str) -> str:
        """Takes a snapshot of ``file``; returns its UUID (the dump goes on in the
        background: see :meth:`wait_snapshot`)."""
        return str(self.request("CreateSnapshot", User=self.user, File=file, Name=name)["UUID"])

    def delete_snapshot(self, uuid: str, file: str | None = None) -> None:
        self.request("DeleteSnapshot", User=self.user, UUID=uuid, File=file)

    def cancel_snapshot(self, uuid: str, file: str) -> None:
        self.request("CancelSnapshot", User=self.user, UUID=uuid, File=file)

    def snapshots(self, file: str | None = None) -> list[Snapshot]:
        """This user's snapshots (of ``file``, if given)."""
        # GetFileSnapshotInfo lists one file's (none without File, as upstream's does).
        if file is None:
            items = self._pages("GetFileSnapshotList", "Snapshots", User=self.user)
        else:
            items = self._pages("GetFileSnapshotInfo", "Snapshots", User=self.user, File=file)
        return [Snapshot.from_json(i) for i in items]

    def snapshot(self, uuid: str) -> Snapshot:
        items = self._pages("GetFileSnapshotInfo", "Snapshots", User=self.user, UUID=uuid)
        if not items:
            raise error_class(-8)(-8, f"no snapshot {uuid}", uuid=uuid)
        return Snapshot.from_json(items[0])

    def wait_snapshot(
        self,
        uuid: str,
        *,
        timeout: float | None = None,
        interval: float = 0.2,
        progress: Callable[[Snapshot], None] | None = None,
    ) -> Snapshot:
        """Polls a snapshot until it is done; raises if it fails or after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = self.snapshot(uuid)
            if progress is not None:
                progress(snap)
            if snap.status == SnapshotStatus.DONE:
                return snap
            if snap.status in (SnapshotStatus.ERROR, SnapshotStatus.ERROR_DELETING):
                raise SnapshotCloneError(-1, f"snapshot {uuid} of {snap.file} failed", uuid=uuid)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"snapshot {uuid} is {snap.status.name} after {timeout} s")
            time.sleep(interval)

    # -- async twins ---------------------------------------------------------------------

    async def clone_async(
        self, source: str, destination: str, *, lazy: bool = True, poolset: str | None = None
    ) -> str:
        return await asyncio.to_thread(self.clone, source, destination, lazy=lazy, poolset=poolset)

    async def recover_async(self, snapshot: str, volume: str, *, lazy: bool = True) -> str:
        return await asyncio.to_thread(self.recover, snapshot, volume, lazy=lazy)

    async def flatten_async(self, task: str) -> None:
        await asyncio.to_thread(self.flatten, task)

    async def clone_task_async(self, task: str) -> CloneTask:
        return await asyncio.to_thread(self.clone_task, task)

    async def clone_tasks_async(self, file: str | None = None) -> list[CloneTask]:
        return await asyncio.to_thread(self.clone_tasks, file)

    async def clean_clone_task_async(self, task: str) -> None:
        await asyncio.to_thread(self.clean_clone_task, task)

    async def clone_ref_status_async(
        self, source: str
    ) -> tuple[CloneRefStatus, list[CloneReference]]:
        return await asyncio.to_thread(self.clone_ref_status, source)

    async def wait_clone_task_async(
        self,
        task: str,
        *,
        until: CloneTaskStatus = CloneTaskStatus.DONE,
        timeout: float | None = None,
        interval: float = 0.2,
        progress: Callable[[CloneTask], None] | None = None,
    ) -> CloneTask:
        """As :meth:`wait_clone_task`, sleeping on the event loop (cancellable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self.clone_task_async(task)
            if progress is not None:
                progress(info)
            if info.status == until or (
                until == CloneTaskStatus.META_INSTALLED and info.status == CloneTaskStatus.DONE
            ):
                return info
            if info.status in (CloneTaskStatus.ERROR, CloneTaskStatus.ERROR_CLEANING):
                raise SnapshotCloneError(-1, f"clone task {task} of {info.file} failed", uuid=task)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"clone task {task} is {info.status.name} after {timeout} s")
            await asyncio.sleep(interval)

    async def create_snapshot_async(self, file: str, name: str) -> str:
        return await asyncio.to_thread(self.create_snapshot, file, name)

    async def delete_snapshot_async(self, uuid: str, file: str | None = None) -> None:
        await asyncio.to_thread(self.delete_snapshot, uuid, file)

    async def cancel_snapshot_async(self, uuid: str, file: str) -> None:
        await asyncio.to_thread(self.cancel_snapshot, uuid, file)

    async def snapshots_async(self, file: str | None = None) -> list[Snapshot]:
        return await asyncio.to_thread(self.snapshots, file)

    async def snapshot_async(self, uuid: str) -> Snapshot:
        return await asyncio.to_thread(self.snapshot, uuid)
