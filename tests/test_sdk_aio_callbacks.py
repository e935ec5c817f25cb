"""AioContext_t with AioRead/AioWrite: submitted at once, completed through Python
callbacks on a curvefs thread, buffers filled in place."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB

PARAM_ERROR, BAD_FD = -16, -23


@pytest.fixture
def fd(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> Iterator[int]:
    assert cbd.Create(name, user, 10 * GiB) == 0
    fd = cbd.Open(name, user)
    assert fd >= 0
    yield fd
    cbd.Close(fd)


class Completions:
    """Counts callbacks and remembers on which threads they ran."""

    def __init__(self, expected: int) -> None:
        self.left = expected
        self.done = threading.Condition()
        self.threads: set[str] = set()
        self.seen: list[curvefs.AioContext_t] = []

    def __call__(self, ctx: curvefs.AioContext_t) -> None:
        with self.done:
            self.threads.add(threading.current_thread().name)
            self.seen.append(ctx)
            self.left -= 1
            self.done.notify_all()

    def wait(self, timeout: float = 60) -> None:
        with self.done:
            assert self.done.wait_for(lambda: self.left == 0, timeout), self.left


def test_64_writes_then_64_reads_in_flight_from_one_thread(cbd: curvefs.CBDClient, fd: int) -> None:
    blocks = [os.urandom(8192) for _ in range(64)]
    wrote = Completions(64)
    ctxs = []
    for i, data in enumerate(blocks):
        ctx = curvefs.AioContext_t(offset=i * 8192, length=8192, buf=data, cb=wrote)
        assert cbd.AioWrite(fd, ctx) == 0
        ctxs.append(ctx)
    wrote.wait()
    assert [c.ret for c in ctxs] == [8192] * 64
    assert all(c.op == curvefs.CURVE_OP_WRITE for c in ctxs)
    assert threading.main_thread().name not in wrote.threads
    read = Completions(64)
    bufs = [bytearray(8192) for _ in range(64)]
    rctxs = [
        curvefs.AioContext_t(offset=i * 8192, length=8192, buf=bufs[i], cb=read) for i in range(64)
    ]
    for ctx in rctxs:
        ctx.op = 99  # set by AioRead
        assert cbd.AioRead(fd, ctx) == 0
    read.wait()
    assert [c.ret for c in rctxs] == [8192] * 64
    assert all(c.op == curvefs.CURVE_OP_READ for c in rctxs)
    assert [bytes(b) for b in bufs] == blocks


def test_module_level_twins(cluster: LocalCluster, user: curvefs.UserInfo_t, name: str) -> None:
    curvefs.UnInit()
    ctx = curvefs.AioContext_t(length=4096, buf=bytearray(4096))
    assert curvefs.AioRead(0, ctx) == -2  # no process-wide client yet
    assert curvefs.Init(cluster.conf_path) == 0
    try:
        assert curvefs.Create(name, user, 10 * GiB) == 0
        fd = curvefs.Open(name, user)
        done = Completions(1)
        w = curvefs.AioContext_t(offset=4096, length=4096, buf=b"m" * 4096, cb=done)
        assert curvefs.AioWrite(fd, w) == 0
        done.wait()
        done = Completions(1)
        r = curvefs.AioContext_t(offset=4096, length=4096, buf=bytearray(4096), cb=done)
        assert curvefs.AioRead(fd, r) == 0
        done.wait()
        assert r.ret == 4096 and r.buf == b"m" * 4096
        curvefs.Close(fd)
    finally:
        curvefs.UnInit()


def test_a_callback_that_raises_is_logged_not_lost(
    cbd: curvefs.CBDClient, fd: int, caplog: pytest.LogCaptureFixture
) -> None:
    fired = threading.Event()

    def bad(ctx: curvefs.AioContext_t) -> None:
        fired.set()
        raise RuntimeError("boom in a callback")

    with caplog.at_level(logging.ERROR, logger="curvefs"):
        ctx = curvefs.AioContext_t(offset=0, length=4096, buf=b"x" * 4096, cb=bad)
        assert cbd.AioWrite(fd, ctx) == 0
        assert fired.wait(30)
        for _ in range(100):
            if any("callback raised" in r.getMessage() for r in caplog.records):
                break
            threading.Event().wait(0.05)
    rec = [r for r in caplog.records if "callback raised" in r.getMessage()]
    assert rec and rec[0].exc_info is not None
    assert "boom in a callback" in str(rec[0].exc_info[1])
    assert ctx.ret == 4096
    assert cbd.Read(fd, "", 0, 4096) == b"x" * 4096


def test_failures_complete_with_a_code_and_bad_contexts_are_refused(
    cbd: curvefs.CBDClient, fd: int
) -> None:
    done = Completions(2)
    past_end = curvefs.AioContext_t(offset=10 * GiB, length=4096, buf=bytearray(4096), cb=done)
    assert cbd.AioRead(fd, past_end) == 0
    unaligned = curvefs.AioContext_t(offset=1, length=4096, buf=b"y" * 4096, cb=done)
    assert cbd.AioWrite(fd, unaligned) == 0
    done.wait()
    assert past_end.ret == -2 and unaligned.ret == -22
    # Refused at submission, no callback: no buffer, a short one, a read-only one, a bad fd.
    never = Completions(1)
    assert cbd.AioRead(fd, curvefs.AioContext_t(length=4096, cb=never)) == PARAM_ERROR
    short = curvefs.AioContext_t(length=8192, buf=bytearray(4096), cb=never)
    assert cbd.AioRead(fd, short) == PARAM_ERROR
    assert cbd.AioRead(fd, curvefs.AioContext_t(length=4096, buf=b"r" * 4096)) == PARAM_ERROR
    ok = curvefs.AioContext_t(length=4096, buf=bytearray(4096), cb=never)
    assert cbd.AioRead(1 << 20, ok) == 0  # submitted: the bad fd is the IO's outcome
    never.wait()
    assert ok.ret == BAD_FD
