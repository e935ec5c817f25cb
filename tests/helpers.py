"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import curvefs
from curvefs.testing import LocalCluster

GiB = 1 << 30
MiB = 1 << 20


def conf_with(cluster: LocalCluster, where: Path, overrides: Mapping[str, str | int]) -> str:
    """A copy of the cluster's client.conf with some keys replaced (later keys win)."""
    text = Path(cluster.conf_path).read_text(encoding="utf-8")
    extra = "".join(f"{k}={v}\n" for k, v in overrides.items())
    path = where / f"client-{uuid.uuid4().hex[:8]}.conf"
    path.write_text(text + extra, encoding="utf-8")
    return str(path)


def make_user(owner: str, password: str = "") -> curvefs.UserInfo_t:
    u = curvefs.UserInfo_t()
    u.owner = owner
    u.password = password
    return u


@contextmanager
def child(argv: list[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """A child process the test owns: however the test ends, the child is killed (if it
    still runs) and reaped, and its pipes are closed."""
    proc = subprocess.Popen(argv, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)  # SIGKILL cannot be ignored: this returns at once
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# A child that a test interrupts with SIGINT must not inherit an ignored SIGINT (a runner
# started from a background shell ignores it, and an ignored signal stays ignored across
# exec): this prefix restores the default disposition, then execs argv.
_RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def interruptible(argv: list[str]) -> list[str]:
    """``argv`` run with SIGINT's default handling, whatever this process does with it."""
    return [sys.executable, "-c", _RESTORE_SIGINT, *argv]


def readline(stream: IO[Any] | None, timeout: float, what: str) -> str:
    """One line from a child's pipe within `timeout` seconds, else an AssertionError that
    says what was awaited and what came. Reads the descriptor byte by byte, so nothing is
    left in a buffer: use it before, not after, any buffered read of the same pipe."""
    assert stream is not None, f"{what}: no pipe to read"
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"{what}: no whole line within {timeout} s (got {line!r})")
        byte = os.read(fd, 1)
        if not byte:
            raise AssertionError(f"{what}: the pipe closed after {line!r}")
        line += byte
    return line.decode()


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Polls `condition()` until it is true; an AssertionError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def reap(pid: int, timeout: float) -> int:
    """Waits for forked child `pid` and returns its wait status; after `timeout` seconds
    kills it and fails (the caller's test must not hang on a stuck child)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child {pid} did not exit within {timeout} s")
        time.sleep(0.01)


def bytes_queued_at(port: int) -> int:
    """Bytes received and not yet read on the server side of every TCP connection to
    `port` on this host (/proc/net/tcp's rx_queue): what a frozen server has not taken."""
    total = 0
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, queues, state = fields[1], fields[4], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":  # ESTABLISHED
                total += int(queues.split(":")[1], 16)
    return total
