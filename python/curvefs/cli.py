"""The ``curvefs`` command: volumes of a Curve cluster from the shell, over :class:`curvefs.Client`.

    curvefs [--conf PATH] [--user NAME] [--password PW] COMMAND [ARGS] [--json]

Commands: ``cluster start``, ``create``, ``stat``, ``ls``, ``rm``, ``recover``, ``mv``,
``mkdir``, ``rmdir``, ``extend``, ``chown``, ``put``, ``get``, ``bench``. A failure prints one
line, ``curvefs <command>: <what went wrong>``, on stderr and exits with a code of
:class:`Exit`; nothing but the result goes to stdout, and the progress bar of ``put``/``get``
goes to stderr only when that is a terminal (or ``--progress always``). Upstream's own tool is
the other console script, ``curve`` (:mod:`curvefs.curve_tool`); this one does not mimic it.
"""

from __future__ import annotations

import argparse
import enum
import errno
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, NoReturn

from tqdm import tqdm

from curvefs import exceptions as ex
from curvefs import nbd
from curvefs import snapshot_clone as sc
from curvefs.client import Client, FileInfo, FileType, Volume
from curvefs.curve_tool import CONF_ENV, DEFAULT_CONF
from curvefs.metrics import IoMetrics
from curvefs.testing import LocalCluster

__all__ = [
    "PASSWORD_ENV",
    "SNAPSHOT_CLONE_ENV",
    "USER_ENV",
    "Exit",
    "exit_code",
    "main",
    "parse_size",
]

USER_ENV = "CURVEFS_USER"
PASSWORD_ENV = "CURVEFS_PASSWORD"
SNAPSHOT_CLONE_ENV = "CURVEFS_SNAPSHOT_CLONE"

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
# What `put` creates when no --size is given: the image rounded up to whole segments (1 GiB
# on upstream's MDS) and no smaller than upstream's default minimum file length.
SEGMENT = GiB
MIN_VOLUME = 10 * GiB
# The granularity at which `put` and `get` look for zeros (a hole is never smaller).
ZERO_GRAIN = 64 * KiB


class Exit(enum.IntEnum):
    """The exit status of ``curvefs``, one per kind of failure (docs/guide/cli.md)."""

    OK = 0
    ERROR = 1  # any other Curve error: FAILED (an MDS that does not answer), DISABLEIO, …
    USAGE = 2  # a bad argument: argparse's, a bad size, an unreadable conf, or Curve's
    #            PARAM_ERROR / LENGTH_NOT_SUPPORT / NOT_ALIGNED / NO_SHRINK / INVALID_REQUEST
    NOT_FOUND = 3  # NOTEXIST: no such volume, directory or poolset
    AUTH = 4  # AUTHFAIL: the login (user, password) was refused or the user may not do this
    EXISTS = 5  # EXISTS: the target already exists
    BUSY = 6  # NOT_EMPTY, FILE_OCCUPIED, DELETING: the target is in a state that forbids it
    LOCAL = 7  # a local file (put's image, get's output) could not be read or written
    INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it


_BY_CLASS: tuple[tuple[type[BaseException], Exit], ...] = (
    (ex.CurveNotExistError, Exit.NOT_FOUND),
    (ex.CurveAuthError, Exit.AUTH),
    (ex.CurveExistsError, Exit.EXISTS),
    (ex.CurveNotEmptyError, Exit.BUSY),
    (ex.CurveFileOccupiedError, Exit.BUSY),
    (ex.CurveDeletingError, Exit.BUSY),
    (ex.CurveParamError, Exit.USAGE),
    (ex.CurveLengthNotSupportError, Exit.USAGE),
    (ex.CurveNotAlignedError, Exit.USAGE),
    (ex.CurveNoShrinkError, Exit.USAGE),
    (ex.CurveInvalidRequestError, Exit.USAGE),
    (ex.CurveError, Exit.ERROR),
    # The snapshot/clone service's codes (not the SDK's), by what they mean to a script.
    (sc.FileNotExistError, Exit.NOT_FOUND),
    (sc.InvalidUserError, Exit.AUTH),
    (sc.FileExistError, Exit.EXISTS),
    (sc.TaskExistError, Exit.EXISTS),
    (sc.InvalidRequestError, Exit.USAGE),
    (sc.FileNameNotMatchError, Exit.USAGE),
    (sc.InvalidSnapshotError, Exit.USAGE),
    (sc.ChunkSizeNotAlignedError, Exit.USAGE),
    (sc.FileStatusInvalidError, Exit.BUSY),
    (sc.CannotDeleteUnfinishedError, Exit.BUSY),
    (sc.CannotCreateWhenErrorError, Exit.BUSY),
    (sc.CannotCancelFinishedError, Exit.BUSY),
    (sc.SnapshotInUseError, Exit.BUSY),
    (sc.CannotCleanUnfinishedError, Exit.BUSY),
    (sc.SnapshotLimitError, Exit.BUSY),
    (sc.TaskFullError, Exit.BUSY),
    (sc.SnapshotCloneError, Exit.ERROR),
    (KeyboardInterrupt, Exit.INTERRUPTED),
)


def exit_code(exc: BaseException) -> Exit:
    """The exit status for an exception a command raised."""
    if isinstance(exc, Failure):
        return exc.status
    for cls, status in _BY_CLASS:
        if isinstance(exc, cls):
            return status
    return Exit.ERROR


class Failure(Exception):
    """A failure the command itself detected (a bad size, an unreadable local file)."""

    def __init__(self, status: Exit, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- sizes -------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpe])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def parse_size(text: str) -> int:
    """Bytes from ``"10G"``, ``"10GiB"``, ``"10GB"``, ``"512M"``, ``"1.5T"``, ``"4096"``.

    Every suffix is a power of 1024 (Curve sizes volumes in GiB), ``B``/``iB`` optional; a
    bare number is bytes. Raises ``ValueError`` for anything else or a fraction of a byte."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 10G, 512MiB, 4096)")
    value = Fraction(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if value.denominator != 1:
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_size(n: float) -> str:
    """``10 GiB``, ``1.5 MiB``, ``512 B``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


# -- output ------------------------------------------------------------------------------


def info_dict(info: FileInfo) -> dict[str, Any]:
    """A :class:`FileInfo` as JSON-ready values (enums by name, ``ctime`` in ISO 8601)."""
    return {
        "id": info.id,
        "parent_id": info.parent_id,
        "name": info.name,
        "owner": info.owner,
        "length": info.length,
        "ctime": info.ctime.isoformat(),
        "file_type": info.file_type.name,
        "status": info.status.name,
        "stripe_unit": info.stripe_unit,
        "stripe_count": info.stripe_count,
        "block_size": info.block_size,
        "clone_source": info.clone_source,
        "clone_length": info.clone_length,
    }


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _print_info(path: str, info: FileInfo) -> None:
    rows = [
        ("path", path),
        ("id", str(info.id)),
        ("parent_id", str(info.parent_id)),
        ("type", info.file_type.name),
        ("owner", info.owner),
        ("length", f"{format_size(info.length)} ({info.length} bytes)"),
        ("ctime", info.ctime.isoformat(timespec="seconds")),
        ("status", info.status.name),
        ("stripe", f"unit {info.stripe_unit}, count {info.stripe_count}"),
        ("block_size", str(info.block_size)),
    ]
    if info.clone_source:
        rows.append(("clone_source", f"{info.clone_source} ({format_size(info.clone_length)})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


# -- the cluster -------------------------------------------------------------------------


def _client(args: argparse.Namespace, *, default_user: str | None = None) -> Client:
    conf = args.conf or os.environ.get(CONF_ENV) or DEFAULT_CONF
    user = args.user or os.environ.get(USER_ENV) or default_user
    if not user:
        raise Failure(Exit.USAGE, f"no user: pass --user or set ${USER_ENV}")
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV, "")
    try:
        return Client(conf, user=user, password=password)
    except ex.CurveError as e:  # Client() makes no RPC: this is the conf's content
        raise Failure(Exit.USAGE, f"the client.conf {conf} is not usable: {e.message}") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Failure(Exit.USAGE, f"cannot read the client.conf {conf}: {reason}") from None
    except ValueError as e:
        raise Failure(Exit.USAGE, f"the client.conf {conf} is not usable: {e}") from None


# -- namespace commands ------------------------------------------------------------------


def _cmd_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.create(
            args.path,
            args.size,
            stripe_unit=args.stripe_unit,
            stripe_count=args.stripe_count,
            poolset=args.poolset,
        )
        if args.json:
            _print_json(info_dict(client.stat(args.path)))
    return Exit.OK


def _cmd_stat(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.stat(args.path)
    if args.json:
        _print_json(info_dict(info))
    else:
        _print_info(args.path, info)
    return Exit.OK


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _cmd_ls(args: argparse.Namespace) -> int:
    with _client(args) as client:
        names = sorted(client.listdir(args.path))
        if not (args.long or args.json):
            for name in names:
                print(name)
            return Exit.OK
        infos: list[tuple[str, FileInfo | None]] = []
        for name in names:
            try:
                infos.append((name, client.stat(_join(args.path, name))))
            except (ex.CurveNotExistError, ex.CurveAuthError):
                # Removed in between, or another owner's entry the user may list but not stat.
                infos.append((name, None))
    if args.json:
        _print_json([{"name": name} if info is None else info_dict(info) for name, info in infos])
        return Exit.OK
    for name, info in infos:
        if info is None:
            print(f"{'?':<4} {'?':<12} {'?':>12}  {'?':<19}  {name}")
            continue
        kind = "dir" if info.file_type is FileType.DIRECTORY else "file"
        when = info.ctime.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        print(f"{kind:<4} {info.owner:<12} {info.length:>12}  {when}  {name}")
    return Exit.OK


def _cmd_rm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.remove(args.path)
    return Exit.OK


def _cmd_recover(args: argparse.Namespace) -> int:
    if args.snapshot:
        return _cmd_service_recover(args)
    with _client(args) as client:
        client.recover(args.path, args.id)
    return Exit.OK


def _cmd_mv(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.rename(args.old, args.new)
    return Exit.OK


def _cmd_mkdir(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.mkdir(args.path)
    return Exit.OK


def _cmd_rmdir(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.stat(args.path)
        if info.file_type is not FileType.DIRECTORY:
            raise Failure(Exit.USAGE, f"{args.path} is not a directory (use rm for volumes)")
        client.rmdir(args.path)
    return Exit.OK


def _cmd_extend(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.extend(args.path, args.size)
        if args.json:
            _print_json(info_dict(client.stat(args.path)))
    return Exit.OK


def _cmd_chown(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.change_owner(args.path, args.owner)
    return Exit.OK


def _cmd_clone(args: argparse.Namespace) -> int:
    if _service_addrs(args):
        return _cmd_clone_task(args)
    if args.lazy is False or args.wait:
        raise Failure(
            Exit.USAGE,
            "--no-lazy and --wait are tasks of the snapshot/clone service: pass "
            f"--snapshot-clone HOST:PORT or set ${SNAPSHOT_CLONE_ENV}",
        )
    with _client(args) as client:
        client.clone_volume(args.source, args.dest, owner=args.owner, poolset=args.poolset)
        if args.flatten:
            client.flatten(args.dest)
    return Exit.OK


def _cmd_flatten(args: argparse.Namespace) -> int:
    if _service_addrs(args):
        service = _service(args)
        task = _task_of(service, args.path)
        service.flatten(task.uuid)
        if args.wait:
            _wait_task(args, service, task.uuid, sc.CloneTaskStatus.DONE)
        return Exit.OK
    with _client(args) as client:
        client.flatten(args.path)
    return Exit.OK


# -- the snapshot/clone service ----------------------------------------------------------


def _service_addrs(args: argparse.Namespace) -> str:
    return str(getattr(args, "snapshot_clone", None) or os.environ.get(SNAPSHOT_CLONE_ENV) or "")


def _service(args: argparse.Namespace) -> sc.SnapshotCloneClient:
    addrs = _service_addrs(args)
    if not addrs:
        raise Failure(
            Exit.USAGE,
            f"no snapshot/clone service: pass --snapshot-clone HOST:PORT[,HOST:PORT...] or set "
            f"${SNAPSHOT_CLONE_ENV}",
        )
    user = args.user or os.environ.get(USER_ENV)
    if not user:
        raise Failure(Exit.USAGE, f"no user: pass --user or set ${USER_ENV}")
    try:
        return sc.SnapshotCloneClient(addrs, user=user, timeout=args.request_timeout)
    except ValueError as e:
        raise Failure(Exit.USAGE, str(e)) from None


def _when(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1e6, UTC).astimezone().isoformat(timespec="seconds")


def snapshot_dict(snap: sc.Snapshot) -> dict[str, Any]:
    """A :class:`~curvefs.snapshot_clone.Snapshot` as JSON-ready values."""
    return {
        "uuid": snap.uuid,
        "name": snap.name,
        "file": snap.file,
        "user": snap.user,
        "seq_num": snap.seq_num,
        "file_length": snap.file_length,
        "status": snap.status.name,
        "progress": snap.progress,
        "time": _when(snap.time_us),
    }


def task_dict(task: sc.CloneTask) -> dict[str, Any]:
    """A :class:`~curvefs.snapshot_clone.CloneTask` as JSON-ready values."""
    return {
        "uuid": task.uuid,
        "type": task.task_type.name,
        "file": task.file,
        "source": task.source,
        "source_is_snapshot": task.source_is_snapshot,
        "user": task.user,
        "lazy": task.lazy,
        "status": task.status.name,
        "next_step": task.next_step.name,
        "progress": task.progress,
        "time": _when(task.time_us),
    }


def _print_rows(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_record(record: dict[str, Any]) -> None:
    width = max(len(k) for k in record)
    for key, value in record.items():
        print(f"{key:<{width}}  {value}")


def _waiting_bar(args: argparse.Namespace, desc: str) -> tqdm[Any]:
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    return tqdm(total=100, desc=desc, unit="%", file=sys.stderr, disable=not show)


def _wait_task(
    args: argparse.Namespace,
    service: sc.SnapshotCloneClient,
    uuid: str,
    until: sc.CloneTaskStatus,
) -> sc.CloneTask:
    with _waiting_bar(args, f"task {uuid[:8]}") as bar:

        def progress(task: sc.CloneTask) -> None:
            bar.update(task.progress - bar.n)
            bar.set_postfix_str(task.status.name.lower(), refresh=False)

        try:
            return service.wait_clone_task(
                uuid, until=until, timeout=args.timeout, progress=progress
            )
        except TimeoutError as e:
            raise Failure(Exit.ERROR, str(e)) from None


def _task_of(service: sc.SnapshotCloneClient, target: str) -> sc.CloneTask:
    """The task named by UUID, or the one whose destination is the path ``target``."""
    if not target.startswith("/"):
        return service.clone_task(target)
    tasks = service.clone_tasks(target)
    if not tasks:
        raise Failure(Exit.NOT_FOUND, f"no clone or recover task made {target}")
    return max(tasks, key=lambda t: t.time_us)


def _cmd_clone_task(args: argparse.Namespace) -> int:
    service = _service(args)
    lazy = True if args.lazy is None else args.lazy
    if args.recover:
        uuid = service.recover(args.source, args.dest, lazy=lazy)
    else:
        uuid = service.clone(args.source, args.dest, lazy=lazy, poolset=args.poolset)
    task = service.clone_task(uuid)
    if args.flatten and lazy:
        service.flatten(uuid)
    if args.wait or args.flatten:
        done = args.flatten or not lazy
        until = sc.CloneTaskStatus.DONE if done else sc.CloneTaskStatus.META_INSTALLED
        task = _wait_task(args, service, uuid, until)
    if args.json:
        _print_json(task_dict(task))
    else:
        print(uuid)
    return Exit.OK


def _cmd_service_recover(args: argparse.Namespace) -> int:
    args.source, args.dest, args.recover, args.poolset = args.snapshot, args.path, True, None
    args.flatten = False
    return _cmd_clone_task(args)


def _cmd_snapshot_create(args: argparse.Namespace) -> int:
    service = _service(args)
    name = (
        args.name or f"{args.volume.rstrip('/').rsplit('/', 1)[-1]}-{time.strftime('%Y%m%d%H%M%S')}"
    )
    uuid = service.create_snapshot(args.volume, name)
    if not (args.wait or args.json):
        print(uuid)
        return Exit.OK
    if args.wait:
        with _waiting_bar(args, f"snapshot {uuid[:8]}") as bar:

            def progress(snap: sc.Snapshot) -> None:
                bar.update(snap.progress - bar.n)

            try:
                snap = service.wait_snapshot(uuid, timeout=args.timeout, progress=progress)
            except TimeoutError as e:
                raise Failure(Exit.ERROR, str(e)) from None
    else:
        snap = service.snapshot(uuid)
    if args.json:
        _print_json(snapshot_dict(snap))
    else:
        print(uuid)
    return Exit.OK


def _cmd_snapshot_list(args: argparse.Namespace) -> int:
    snaps = _service(args).snapshots(args.volume)
    if args.json:
        _print_json([snapshot_dict(s) for s in snaps])
        return Exit.OK
    rows = [
        (
            s.uuid,
            s.name,
            s.file,
            str(s.seq_num),
            s.status.name.lower(),
            f"{s.progress}%",
            _when(s.time_us),
        )
        for s in sorted(snaps, key=lambda s: s.time_us)
    ]
    _print_rows(rows, ("UUID", "NAME", "VOLUME", "SEQ", "STATUS", "PROGRESS", "TIME"))
    return Exit.OK


def _cmd_snapshot_info(args: argparse.Namespace) -> int:
    snap = _service(args).snapshot(args.uuid)
    if args.json:
        _print_json(snapshot_dict(snap))
        return Exit.OK
    _print_record(snapshot_dict(snap))
    return Exit.OK


def _cmd_snapshot_delete(args: argparse.Namespace) -> int:
    _service(args).delete_snapshot(args.uuid, args.volume)
    return Exit.OK


def _cmd_snapshot_cancel(args: argparse.Namespace) -> int:
    _service(args).cancel_snapshot(args.uuid, args.volume)
    return Exit.OK


def _cmd_task_list(args: argparse.Namespace) -> int:
    tasks = _service(args).clone_tasks(args.volume)
    if args.json:
        _print_json([task_dict(t) for t in tasks])
        return Exit.OK
    rows = [
        (
            t.uuid,
            t.task_type.name.lower(),
            t.file,
            t.source,
            t.status.name.lower(),
            f"{t.progress}%",
            "lazy" if t.lazy else "full",
        )
        for t in sorted(tasks, key=lambda t: t.time_us)
    ]
    _print_rows(rows, ("UUID", "TYPE", "VOLUME", "SOURCE", "STATUS", "PROGRESS", "KIND"))
    return Exit.OK


def _cmd_task_info(args: argparse.Namespace) -> int:
    task = _task_of(_service(args), args.task)
    d = task_dict(task)
    if args.json:
        _print_json(d)
        return Exit.OK
    _print_record(d)
    return Exit.OK


def _cmd_task_wait(args: argparse.Namespace) -> int:
    service = _service(args)
    task = _task_of(service, args.task)
    until = sc.CloneTaskStatus.META_INSTALLED if args.meta_installed else sc.CloneTaskStatus.DONE
    task = _wait_task(args, service, task.uuid, until)
    if args.json:
        _print_json(task_dict(task))
    return Exit.OK


def _cmd_task_clean(args: argparse.Namespace) -> int:
    service = _service(args)
    service.clean_clone_task(_task_of(service, args.task).uuid)
    return Exit.OK


# -- put and get -------------------------------------------------------------------------


def _progress(args: argparse.Namespace, total: int, desc: str) -> tqdm[Any]:
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    return tqdm(
        total=total,
        desc=desc,
        # With unit_divisor 1024, tqdm's "M" means Mi: "64.0MiB/1.0GiB", "1.2GiB/s".
        unit="iB",
        unit_scale=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}iB/{total_fmt}iB "
        "[{elapsed}<{remaining}, {rate_fmt}]",
        unit_divisor=1024,
        file=sys.stderr,
        disable=not show,
        dynamic_ncols=True,
        mininterval=0.2,
        leave=True,
    )


def _zero_free_runs(block: bytes | bytearray, zeros: bytes) -> Iterator[tuple[int, int]]:
    """The (start, end) ranges of ``block`` that are not all zeros, at ZERO_GRAIN.

    ``zeros`` is at least as long as ``block``. Slices of bytes compare with memcmp (a
    memoryview compares item by item, 20 times slower), and an all-zero block, the common
    case of a sparse image, is one comparison."""
    if block == zeros[: len(block)]:
        return
    start = -1
    for off in range(0, len(block), ZERO_GRAIN):
        piece = block[off : off + ZERO_GRAIN]
        if piece == zeros[: len(piece)]:
            if start >= 0:
                yield start, off
                start = -1
        elif start < 0:
            start = off
    if start >= 0:
        yield start, len(block)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The ranges of a local file that may hold data: its holes are skipped without reading
    them where the file system tells them (``SEEK_DATA``/``SEEK_HOLE``)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    pos = 0
    while pos < size:
        if seek_data is None or seek_hole is None:
            yield pos, size
            return
        try:
            start = os.lseek(fd, pos, seek_data)
        except OSError as e:
            if e.errno != errno.ENXIO:  # the file system does not tell: read the rest
                yield pos, size
            return  # ENXIO: only a hole from pos to the end
        if start >= size:
            return
        end = min(os.lseek(fd, start, seek_hole), size)
        yield start, end
        pos = end


def _bounded(
    jobs: int, tasks: Iterable[Callable[[], tuple[int, int]]], done: Callable[[int, int], None]
) -> None:
    """Runs ``tasks`` on ``jobs`` threads (curvefs releases the GIL in every IO), at most
    ``2 * jobs`` queued, and hands each result to ``done`` on this thread."""
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="curvefs-cli")
    pending: set[Future[tuple[int, int]]] = set()
    try:
        for task in tasks:
            pending.add(pool.submit(task))
            while len(pending) >= 2 * jobs:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    done(*f.result())
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                done(*f.result())
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)


class _Tally:
    def __init__(self, bar: tqdm[Any]) -> None:
        self.bar = bar
        self.covered = 0
        self.written = 0

    def __call__(self, covered: int, written: int) -> None:
        self.covered += covered
        self.written += written
        self.bar.update(covered)


def _io_stats(m: IoMetrics, write: bool, seconds: float) -> dict[str, Any]:
    """``--stats``: the user calls of one direction and their chunk RPCs, from the
    volume's metrics (``Volume.metrics()``)."""
    user, rpc = (m.write, m.write_rpc) if write else (m.read, m.read_rpc)
    return {
        "ops": user.ops,
        "iops": round(user.ops / seconds, 1),
        "mib_per_s": round(user.bytes / seconds / MiB, 2),
        "latency_ms": {
            "p50": round(user.latency.p50 * 1e3, 3),
            "p99": round(user.latency.p99 * 1e3, 3),
            "p999": round(user.latency.p999 * 1e3, 3),
            "max": round(user.latency.max * 1e3, 3),
        },
        "errors": user.errors,
        "rpcs": rpc.ops,
        "rpc_errors": rpc.errors,
        "rpc_timeouts": rpc.timeouts,
        "rpc_redirects": rpc.redirects,
        "get_leader_retries": m.get_leader_retries,
        "slow_requests": m.slow_requests,
    }


def _print_stats(what: str, s: dict[str, Any]) -> None:
    lat = s["latency_ms"]
    print(
        f"stats: {s['ops']} {what}s, {s['iops']:.0f} IOPS, {s['mib_per_s']:.1f} MiB/s; latency "
        f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, p99.9 {lat['p999']:.2f} ms, "
        f"max {lat['max']:.2f} ms; {s['rpcs']} chunk RPCs ({s['rpc_errors']} failed, "
        f"{s['rpc_timeouts']} timed out, {s['rpc_redirects']} redirected), "
        f"{s['slow_requests']} slow"
    )


def _summary(
    args: argparse.Namespace,
    what: str,
    source: str,
    target: str,
    tally: _Tally,
    t0: float,
    metrics: IoMetrics | None = None,
) -> None:
    seconds = max(time.monotonic() - t0, 1e-9)
    stats = None if metrics is None else _io_stats(metrics, what == "put", seconds)
    if args.json:
        out: dict[str, Any] = {
            "command": what,
            "source": source,
            "target": target,
            "bytes": tally.covered,
            "bytes_written": tally.written,
            "bytes_skipped": tally.covered - tally.written,
            "seconds": round(seconds, 3),
            "bytes_per_second": round(tally.covered / seconds),
        }
        if stats is not None:
            out["stats"] = stats
        _print_json(out)
        return
    print(
        f"{what} {source} -> {target}: {format_size(tally.covered)} in {seconds:.1f} s "
        f"({format_size(tally.covered / seconds)}/s), {format_size(tally.written)} written, "
        f"{format_size(tally.covered - tally.written)} of zeros skipped"
    )
    if stats is not None:
        _print_stats("write" if what == "put" else "read", stats)


def _open_local(path: str, flags: int, what: str) -> int:
    try:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise Failure(Exit.LOCAL, f"cannot {what} {path}: {e.strerror}") from None


def _cmd_put(args: argparse.Namespace) -> int:
    fd = _open_local(args.local, os.O_RDONLY, "read")
    with ExitStack() as stack:
        stack.callback(os.close, fd)
        size = os.fstat(fd).st_size
        client = stack.enter_context(_client(args))
        try:
            existing: FileInfo | None = client.stat(args.remote)
        except ex.CurveNotExistError:
            existing = None
        if existing is not None and not args.overwrite:
            raise Failure(Exit.EXISTS, f"{args.remote} exists (--overwrite writes into it)")
        if existing is None:
            vol_size = args.size or max(MIN_VOLUME, -(-size // SEGMENT) * SEGMENT)
            if vol_size < size:
                raise Failure(Exit.USAGE, f"--size {vol_size} is smaller than {args.local}")
            client.create(args.remote, vol_size)
        vol = stack.enter_context(client.open(args.remote))
        if vol.size < size:
            raise Failure(
                Exit.USAGE,
                f"{args.remote} ({format_size(vol.size)}) is smaller than {args.local} "
                f"({format_size(size)}); curvefs extend it first",
            )
        # A fresh volume reads as zeros, so its zero blocks need no write; an existing one
        # may hold old data there, so everything is written.
        skip_zeros = existing is None
        bar = stack.enter_context(_progress(args, size, f"put {args.remote}"))
        tally = _Tally(bar)
        t0 = time.monotonic()
        _bounded(args.jobs, _put_tasks(fd, size, vol, args.block_size, skip_zeros, tally), tally)
        bar.close()
        metrics = vol.metrics() if args.stats else None
    _summary(args, "put", args.local, args.remote, tally, t0, metrics)
    return Exit.OK


def _put_tasks(
    fd: int, size: int, vol: Volume, block: int, skip_zeros: bool, tally: _Tally
) -> Iterator[Callable[[], tuple[int, int]]]:
    zeros = bytes(block)
    extents = list(_data_extents(fd, size)) if skip_zeros else [(0, size)]
    pos = 0
    for start, end in extents:
        if start > pos:
            tally(start - pos, 0)  # a hole in the local file: nothing to read or write
        for off in range(start, end, block):
            n = min(block, end - off)
            try:
                data = os.pread(fd, n, off)
            except OSError as e:
                raise Failure(Exit.LOCAL, f"cannot read the image: {e.strerror}") from None
            if len(data) < n:
                raise Failure(Exit.LOCAL, "the image shrank while it was read")
            runs = list(_zero_free_runs(data, zeros)) if skip_zeros else [(0, n)]
            if not runs:
                tally(n, 0)
                continue
            yield _put_task(vol, memoryview(data), off, n, runs)
        pos = end
    if size > pos:
        tally(size - pos, 0)


def _put_task(
    vol: Volume, view: memoryview, off: int, n: int, runs: list[tuple[int, int]]
) -> Callable[[], tuple[int, int]]:
    def run() -> tuple[int, int]:
        written = 0
        for a, b in runs:
            written += vol.pwrite(view[a:b], off + a)
        return n, written

    return run


def _cmd_get(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        client = stack.enter_context(_client(args))
        vol = stack.enter_context(client.open(args.remote, read_only=True))
        length = vol.size if args.length is None else args.length
        if length > vol.size:
            raise Failure(
                Exit.USAGE, f"--length {length} is past the end of {args.remote} ({vol.size})"
            )
        fd = _open_local(args.local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "write")
        stack.callback(os.close, fd)
        bar = stack.enter_context(_progress(args, length, f"get {args.remote}"))
        tally = _Tally(bar)
        t0 = time.monotonic()
        zeros = bytes(args.block_size)
        tasks = (
            _get_task(vol, fd, off, min(args.block_size, length - off), zeros)
            for off in range(0, length, args.block_size)
        )
        _bounded(args.jobs, tasks, tally)
        try:
            # The holes at the end are not written either: the size comes from truncate.
            os.ftruncate(fd, length)
        except OSError as e:
            raise Failure(Exit.LOCAL, f"cannot write {args.local}: {e.strerror}") from None
        bar.close()
        metrics = vol.metrics() if args.stats else None
    _summary(args, "get", args.remote, args.local, tally, t0, metrics)
    return Exit.OK


def _get_task(
    vol: Volume, fd: int, off: int, n: int, zeros: bytes
) -> Callable[[], tuple[int, int]]:
    def run() -> tuple[int, int]:
        buf = bytearray(n)
        view = memoryview(buf)
        got = vol.preadinto(view, off)
        if got != n:
            raise ex.CurveFailedError(-2, f"get {vol.path}: short read at {off}")
        written = 0
        for a, b in _zero_free_runs(buf, zeros):
            while a < b:  # a regular file takes it all at once, save on a full disk
                try:
                    done = os.pwrite(fd, view[a:b], off + a)
                except OSError as e:
                    raise Failure(Exit.LOCAL, f"cannot write the image: {e.strerror}") from None
                a += done
                written += done
        return n, written

    return run


# -- bench -------------------------------------------------------------------------------

_BENCH_TESTS: tuple[tuple[str, bool, bool, int], ...] = (
    # name, write?, sequential?, block size
    ("seq write", True, True, MiB),
    ("seq read", False, True, MiB),
    ("rand write", True, False, 4 * KiB),
    ("rand read", False, False, 4 * KiB),
)


def _bench_one(
    vol: Volume, write: bool, sequential: bool, block: int, span: int, jobs: int, seconds: float
) -> dict[str, Any]:
    import random

    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    state = {"next": 0, "ops": 0, "latency": 0.0}
    data = os.urandom(block)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        buf = bytearray(block)
        ops, latency = 0, 0.0
        while time.monotonic() < stop_at:
            if sequential:
                with lock:
                    off = state["next"]
                    state["next"] = (off + block) % span
            else:
                off = rng.randrange(span // block) * block
            t = time.perf_counter()
            if write:
                vol.pwrite(data, int(off))
            else:
                vol.preadinto(buf, int(off))
            latency += time.perf_counter() - t
            ops += 1
        with lock:
            state["ops"] += ops
            state["latency"] += latency

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    ops = int(state["ops"])
    return {
        "block_size": block,
        "jobs": jobs,
        "ops": ops,
        "seconds": round(elapsed, 3),
        "iops": round(ops / elapsed, 1),
        "mib_per_s": round(ops * block / elapsed / MiB, 2),
        "mean_latency_ms": round(state["latency"] / ops * 1e3, 3) if ops else None,
    }


def _cmd_bench(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        if args.local:
            if args.conf:
                raise Failure(Exit.USAGE, "--local starts its own cluster: drop --conf")
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="curvefs-bench-"))
            print("starting a local cluster…", file=sys.stderr, flush=True)
            cluster = stack.enter_context(LocalCluster(tmp))
            args.conf = cluster.conf_path
            where = "a fresh local cluster"
        else:
            where = args.conf or os.environ.get(CONF_ENV) or DEFAULT_CONF
        client = stack.enter_context(_client(args, default_user="curve" if args.local else None))
        path = args.path or f"/curvefs-bench-{uuid.uuid4().hex[:12]}"
        client.create(path, args.size)
        stack.callback(client.remove, path)
        span = min(args.span, client.stat(path).length)
        results = []
        for name, write, sequential, block in _BENCH_TESTS:
            # Opened per test: a volume's metrics start at its open, so each test's
            # latency percentiles are its own.
            with client.open(path) as vol:
                r = _bench_one(vol, write, sequential, block, span, args.jobs, args.seconds)
                m = vol.metrics()
            done = (m.write if write else m.read).latency
            r["p50_latency_ms"] = round(done.p50 * 1e3, 3)
            r["p99_latency_ms"] = round(done.p99 * 1e3, 3)
            results.append({"test": name, **r})
            if name == "seq write":
                # The other tests stay where data now is: reads of never-written chunks
                # answer without a chunkserver and would flatter the figures.
                span = max(block, min(span, r["ops"] * block))
    if args.json:
        _print_json({"cluster": where, "volume": path, "span": span, "results": results})
        return Exit.OK
    print(
        f"curvefs bench: {where}, {args.jobs} jobs, {args.seconds:g} s per test; after seq "
        f"write, IO within the {format_size(span)} it wrote"
    )
    header = (
        f"{'test':<11} {'block':>7} {'IOPS':>10} {'MiB/s':>9} {'mean lat':>10} "
        f"{'p50':>10} {'p99':>10}"
    )
    print(header)
    for r in results:
        lat = "-" if r["mean_latency_ms"] is None else f"{r['mean_latency_ms']:.2f} ms"
        print(
            f"{r['test']:<11} {format_size(r['block_size']):>7} {r['iops']:>10.0f} "
            f"{r['mib_per_s']:>9.1f} {lat:>10} {r['p50_latency_ms']:>7.2f} ms "
            f"{r['p99_latency_ms']:>7.2f} ms"
        )
    return Exit.OK


# -- cluster start -----------------------------------------------------------------------


def _cmd_cluster_start(args: argparse.Namespace) -> int:
    cluster = LocalCluster(
        args.dir,
        chunkservers=args.chunkservers,
        copysets=args.copysets,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster.start()
    try:
        print(cluster.conf_path, flush=True)
        # Every instance's address: clients ask each until the active one answers.
        addrs = ",".join(cluster.snapshot_clone_addrs)
        service = (
            f", snapshot/clone service {addrs} (export {SNAPSHOT_CLONE_ENV}={addrs})"
            if addrs
            else ""
        )
        print(
            f"curvefs local cluster: MDS {cluster.mds_addr}, "
            f"{len(cluster.chunkserver_ids)} chunkservers{service}, data in {cluster.data_dir}; "
            "Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        cluster.stop()
    return Exit.OK


def _cmd_nbd_serve(args: argparse.Namespace) -> int:
    client = _client(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ExitStack() as stack:
        try:
            served = stack.enter_context(
                nbd.serve(
                    client,
                    args.volumes,
                    socket=args.socket,
                    bind=args.bind,
                    read_only=args.read_only,
                )
            )
        except ex.CurveError:
            raise
        except OSError as e:  # the socket or the address cannot be listened on
            raise Failure(Exit.LOCAL, str(e)) from None
        for uri in served.uris.values():
            print(uri, flush=True)
        print(
            f"curvefs nbd serve: {len(served.uris)} export(s) on {served.address}; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return Exit.OK


# -- the parser --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's usage line, then one line of what was wrong; exit status USAGE.
        self.print_usage(sys.stderr)
        self.exit(Exit.USAGE, f"{self.prog}: error: {message}\n")


def _cluster_options(suppress: bool) -> _Parser:
    # The same options on the top-level parser and on every command, so they may come
    # before or after the command; a command's copy leaves the top-level value alone
    # unless it is given.
    p = _Parser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("cluster options")
    g.add_argument(
        "--conf",
        metavar="PATH",
        default=default,
        help=f"the cluster's client.conf (default: ${CONF_ENV}, else {DEFAULT_CONF})",
    )
    g.add_argument(
        "--user", metavar="NAME", default=default, help=f"the user (default: ${USER_ENV})"
    )
    g.add_argument(
        "--password",
        metavar="PW",
        default=default,
        help=f"the user's password (default: ${PASSWORD_ENV}, else none); the environment "
        "keeps it out of the process list",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``curvefs`` argument parser."""
    parser = _Parser(
        prog="curvefs",
        description="Volumes of a Curve cluster from the shell.",
        epilog="exit status: "
        + ", ".join(f"{int(e)} {e.name.lower().replace('_', ' ')}" for e in Exit)
        + " (docs/guide/cli.md)",
        parents=[_cluster_options(False)],
    )
    common = [_cluster_options(True)]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func: Callable[[argparse.Namespace], int]) -> _Parser:
        p: _Parser = sub.add_parser(name, help=help, description=help, parents=common)
        p.set_defaults(func=func)
        return p

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON")

    def service_options(p: argparse.ArgumentParser, *, waits: bool = True) -> None:
        g = p.add_argument_group("snapshot/clone service")
        g.add_argument(
            "--snapshot-clone",
            metavar="ADDRS",
            help="the service's HOST:PORT, several comma-separated (only the active one "
            f"answers; default: ${SNAPSHOT_CLONE_ENV})",
        )
        g.add_argument(
            "--request-timeout",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds each HTTP request may take (30)",
        )
        if waits:
            g.add_argument(
                "--timeout", type=float, metavar="S", help="give up waiting after S seconds"
            )
            g.add_argument(
                "--progress",
                choices=("auto", "always", "never"),
                default="auto",
                help="a progress bar on stderr while waiting: auto (when stderr is a "
                "terminal), always, never",
            )

    def group(name: str, help: str) -> argparse._SubParsersAction[_Parser]:
        p = sub.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(
        actions: argparse._SubParsersAction[_Parser],
        name: str,
        help: str,
        func: Callable[[argparse.Namespace], int],
        *,
        waits: bool = False,
    ) -> _Parser:
        p: _Parser = actions.add_parser(name, help=help, description=help, parents=common)
        p.set_defaults(func=func)
        service_options(p, waits=waits)
        return p

    cluster = sub.add_parser(
        "cluster",
        help="the local Curve cluster",
        description=(
            "The local Curve cluster: an MDS and chunkservers on loopback, for tests and demos."
        ),
    )
    cluster_sub = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = cluster_sub.add_parser(
        "start",
        help="start a local cluster in DIR, print its client.conf path, run until Ctrl-C",
        description="Start a local cluster in DIR, print its client.conf path on stdout and "
        "serve until Ctrl-C (or SIGTERM). A later start on the same DIR finds the same "
        "ports, files and data.",
    )
    start.add_argument("--dir", required=True, help="data folder, created or reused")
    start.add_argument("--chunkservers", type=int, default=3)
    start.add_argument("--copysets", type=int, default=100)
    start.set_defaults(func=_cmd_cluster_start)

    p = command("create", "create a volume", _cmd_create)
    p.add_argument("path", help="the volume's path, e.g. /vol")
    p.add_argument("size", type=_size_arg, help="its size: 10G, 10GiB, 10737418240 (bytes)")
    p.add_argument("--stripe-unit", type=_size_arg, metavar="SIZE", help="stripe unit, e.g. 64K")
    p.add_argument("--stripe-count", type=int, metavar="N", help="stripe width")
    p.add_argument("--poolset", help="the poolset to create it in")
    json_flag(p, "the new volume's attributes")

    p = command("stat", "print a volume's or directory's attributes", _cmd_stat)
    p.add_argument("path")
    json_flag(p, "the attributes")

    p = command("ls", "list a directory", _cmd_ls)
    p.add_argument("path", nargs="?", default="/", help="the directory (default /)")
    p.add_argument("-l", "--long", action="store_true", help="type, owner, size, ctime too")
    json_flag(p, "the entries and their attributes")

    p = command("rm", "remove a volume (it goes to /RecycleBin; see recover)", _cmd_rm)
    p.add_argument("path")

    p = command(
        "recover",
        "bring a removed volume back from /RecycleBin; with --snapshot, roll a volume back "
        "to its snapshot through the snapshot/clone service",
        _cmd_recover,
    )
    p.add_argument("path", help="the volume's original path")
    p.add_argument("--id", type=int, default=0, help="its file id, when several were removed")
    p.add_argument("--snapshot", metavar="UUID", help="the snapshot of PATH to recover from")
    p.add_argument(
        "--lazy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --snapshot: answer once PATH reads as the snapshot, copying later "
        "(on flatten); default lazy",
    )
    p.add_argument("--wait", action="store_true", help="with --snapshot: wait for the task")
    json_flag(p, "the task (with --snapshot)")
    service_options(p)

    p = command("mv", "rename a volume or directory", _cmd_mv)
    p.add_argument("old")
    p.add_argument("new")

    p = command("mkdir", "create a directory", _cmd_mkdir)
    p.add_argument("path")

    p = command("rmdir", "remove an empty directory", _cmd_rmdir)
    p.add_argument("path")

    p = command("extend", "grow a volume (volumes never shrink)", _cmd_extend)
    p.add_argument("path")
    p.add_argument("size", type=_size_arg, help="the new size: 20G, 20GiB, bytes")
    json_flag(p, "the volume's attributes after")

    p = command("chown", "give a volume or directory to another owner (root only)", _cmd_chown)
    p.add_argument("path")
    p.add_argument("owner")

    p = command(
        "clone",
        "make DEST a clone of SOURCE: through the snapshot/clone service when its address "
        "is known (SOURCE a volume or a snapshot UUID; prints the task's UUID), else "
        "directly, as the service does (root only; SOURCE a volume, always lazy). A lazy "
        "clone reads as SOURCE and holds no data of its own until written or flattened",
        _cmd_clone,
    )
    p.add_argument("source", help="the volume (or, through the service, snapshot UUID) to clone")
    p.add_argument("dest", help="the clone's path (must not exist)")
    p.add_argument("--owner", help="the clone's owner (directly only; default: the source's)")
    p.add_argument("--poolset", help="the poolset to create it in (default: the source's)")
    p.add_argument(
        "--lazy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="answer once DEST reads as SOURCE and copy only on flatten (default), or copy "
        "everything in the background (--no-lazy, the service only)",
    )
    p.add_argument("--flatten", action="store_true", help="then flatten it at once (see flatten)")
    p.add_argument(
        "--wait", action="store_true", help="wait for the service's task (a lazy one: stage 1)"
    )
    json_flag(p, "the service's task")
    service_options(p)
    p.set_defaults(recover=False)

    p = command(
        "flatten",
        "copy into a lazy clone what it still reads from its source, then mark it Cloned; "
        "through the service when its address is known (PATH or the task's UUID), else "
        "directly (root only)",
        _cmd_flatten,
    )
    p.add_argument("path", help="the lazy clone, or (service) its task's UUID")
    p.add_argument("--wait", action="store_true", help="(service) wait until it is done")
    service_options(p)

    snapshot = group(
        "snapshot", "snapshots of volumes, through the cluster's snapshot/clone service"
    )
    p = action(snapshot, "create", "take a snapshot of VOLUME; prints its UUID",
               _cmd_snapshot_create, waits=True)  # fmt: skip
    p.add_argument("volume")
    p.add_argument("--name", help="its name (default: the volume's name and the time)")
    p.add_argument("--wait", action="store_true", help="wait until it is dumped (done)")
    json_flag(p, "the snapshot")
    p = action(snapshot, "list", "list your snapshots (of VOLUME)", _cmd_snapshot_list)
    p.add_argument("volume", nargs="?")
    json_flag(p, "the snapshots")
    p = action(snapshot, "info", "show one snapshot", _cmd_snapshot_info)
    p.add_argument("uuid")
    json_flag(p, "the snapshot")
    p = action(snapshot, "delete", "delete a snapshot", _cmd_snapshot_delete)
    p.add_argument("uuid")
    p.add_argument("--volume", help="the snapshot's volume (checked if given)")
    p = action(snapshot, "cancel", "stop a snapshot that is being taken", _cmd_snapshot_cancel)
    p.add_argument("uuid")
    p.add_argument("volume", help="the snapshot's volume")

    task = group("task", "clone and recover tasks of the cluster's snapshot/clone service")
    p = action(task, "list", "list your tasks (that made VOLUME)", _cmd_task_list)
    p.add_argument("volume", nargs="?")
    json_flag(p, "the tasks")
    p = action(task, "info", "show a task (by UUID, or the volume it made)", _cmd_task_info)
    p.add_argument("task")
    json_flag(p, "the task")
    p = action(task, "wait", "wait for a task to finish", _cmd_task_wait, waits=True)
    p.add_argument("task")
    p.add_argument(
        "--meta-installed",
        action="store_true",
        help="only until a lazy task's volume reads as its source (stage 1)",
    )
    json_flag(p, "the task")
    p = action(task, "clean", "forget a finished or failed task", _cmd_task_clean)
    p.add_argument("task")

    def transfer(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--block-size",
            type=_size_arg,
            default=4 * MiB,
            metavar="SIZE",
            help="bytes per IO (default 4M)",
        )
        p.add_argument("--jobs", type=int, default=4, metavar="N", help="IOs in flight (4)")
        p.add_argument(
            "--progress",
            choices=("auto", "always", "never"),
            default="auto",
            help="a progress bar on stderr: auto (when stderr is a terminal), always, never",
        )
        p.add_argument(
            "--stats",
            action="store_true",
            help="also print IOPS, MiB/s, latency percentiles and chunk RPC counts",
        )
        json_flag(p, "the summary")

    p = command(
        "put",
        "copy a raw image into a new volume (or, with --overwrite, an existing one), "
        "skipping zero blocks",
        _cmd_put,
    )
    p.add_argument("local", help="the raw image to read")
    p.add_argument("remote", help="the volume to write")
    p.add_argument(
        "--size",
        type=_size_arg,
        help="the new volume's size (default: the image rounded up to GiB, at least 10G)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an existing volume (every block, zeros too, and nothing past the image)",
    )
    transfer(p)

    p = command("get", "copy a volume into a local sparse file", _cmd_get)
    p.add_argument("remote", help="the volume to read")
    p.add_argument("local", help="the file to write (replaced if it exists)")
    p.add_argument("--length", type=_size_arg, help="copy only the first SIZE bytes (default: all)")
    transfer(p)

    nbd_cmd = sub.add_parser(
        "nbd",
        help="serve volumes over NBD (qemu, nbdcopy, fio, nbd-client)",
        description="Serve volumes over the Network Block Device protocol.",
    )
    nbd_sub = nbd_cmd.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = nbd_sub.add_parser(
        "serve",
        help="serve VOLUMEs until Ctrl-C (or SIGTERM); print each export's NBD URI",
        description="Serve each VOLUME as an NBD export named by its path without the "
        "leading '/', on a Unix socket (a fresh one in a temporary folder unless --socket) "
        "or on TCP with --bind. Prints one NBD URI per volume on stdout, then serves until "
        "Ctrl-C or SIGTERM, which finish the requests in flight and close the volumes.",
        parents=common,
    )
    p.add_argument("volumes", nargs="+", metavar="VOLUME", help="a volume to serve")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--socket", help="listen on this Unix socket path (must not exist)")
    where.add_argument("--bind", metavar="HOST:PORT", help="listen on TCP instead")
    p.add_argument("--read-only", action="store_true", help="refuse writes (EPERM)")
    p.set_defaults(func=_cmd_nbd_serve)

    p = command(
        "bench",
        "a short IO benchmark (a few seconds) on a scratch volume, against the configured "
        "cluster or, with --local, a fresh local one",
        _cmd_bench,
    )
    p.add_argument("--local", action="store_true", help="start a local cluster to run it on")
    p.add_argument("--seconds", type=float, default=1.0, help="per test (default 1)")
    p.add_argument("--jobs", type=int, default=4, metavar="N", help="threads (default 4)")
    p.add_argument(
        "--size", type=_size_arg, default=MIN_VOLUME, help="the scratch volume's size (10G)"
    )
    p.add_argument(
        "--span", type=_size_arg, default=256 * MiB, help="the range the IO covers (256M)"
    )
    p.add_argument("--path", help="the scratch volume (default /curvefs-bench-<random>)")
    json_flag(p, "the results")
    return parser


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ex.CurveError):
        reason = _REASONS.get(exc.code_name)
        what = exc.message + (f": {reason}" if reason else "")
        return f"{what} ({exc.code_name}, {exc.code})"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) or type(exc).__name__


_REASONS = {
    "NOTEXIST": "no such volume or directory",
    "EXISTS": "already exists",
    "AUTHFAIL": "refused (wrong user or password, or not allowed)",
    "NOT_EMPTY": "the directory is not empty",
    "FILE_OCCUPIED": "in use by another client",
    "LENGTH_NOT_SUPPORT": "size not supported by the cluster",
    "PARAM_ERROR": "bad argument",
    "NO_SHRINK_BIGGER_FILE": "volumes cannot shrink",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``curvefs`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Bounds argparse's types do not state; reported as its own errors are.
    if getattr(args, "jobs", 1) < 1:
        parser.error("--jobs must be at least 1")
    if getattr(args, "block_size", 1) <= 0:
        parser.error("--block-size must be positive")
    if getattr(args, "seconds", 1) <= 0 or getattr(args, "span", 1) <= 0:
        parser.error("--seconds and --span must be positive")
    command = {"cluster": "cluster start", "nbd": "nbd serve"}.get(args.command, args.command)
    if args.command in ("snapshot", "task"):
        command = f"{args.command} {args.action}"
    try:
        status = int(args.func(args))
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader went away (`curvefs ls | head`): stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.ERROR
    except (ex.CurveError, sc.SnapshotCloneError, Failure, KeyboardInterrupt) as e:
        _fail(command, e)
        return exit_code(e)


def _fail(command: str, exc: BaseException) -> None:
    print(f"curvefs {command}: {_describe(exc)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
