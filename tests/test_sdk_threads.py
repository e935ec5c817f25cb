"""Many Python threads on one client: the GIL is released for every call."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, bytes_queued_at, conf_with, make_user, wait_for


def test_16_threads_on_one_fd_write_distinct_regions(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    fd = cbd.Open(name, user)
    region = 2 * MiB + 64 * 1024  # not chunk aligned: regions straddle chunks
    blocks = [os.urandom(region) for _ in range(16)]

    def write(i: int) -> int:
        # each thread writes its region in 64 KiB pieces, interleaving with the others
        step = 64 * 1024
        for off in range(0, region, step):
            rc = cbd.Write(fd, blocks[i][off : off + step], i * region + off, step)
            if rc != step:
                return rc
        return region

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(write, range(16))) == [region] * 16
    whole = cbd.Read(fd, "", 0, 16 * region)
    assert isinstance(whole, bytes)
    for i in range(16):
        got = whole[i * region : (i + 1) * region]
        assert hashlib.sha256(got).digest() == hashlib.sha256(blocks[i]).digest(), i
    assert cbd.Close(fd) == 0


def test_many_fds_from_many_threads(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    def volume(i: int) -> bool:
        path = f"{name}-{i}"
        assert cbd.Create(path, user, 10 * GiB) == 0
        fd = cbd.Open(path, user)
        data = os.urandom(256 * 1024)
        assert cbd.Write(fd, data, i * GiB // 2, len(data)) == len(data)
        ok = cbd.Read(fd, "", i * GiB // 2, len(data)) == data
        assert cbd.Close(fd) == 0
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(volume, range(8)))


def test_gil_is_released_while_a_call_waits(tmp_path: Path) -> None:
    # Freeze the MDS so a StatFile blocks inside the client until its retry budget runs
    # out. Meanwhile this thread must keep running Python: if the blocked call held the
    # GIL, the loop below could not start until the call had returned.
    with LocalCluster(tmp_path / "c") as cluster:
        conf = conf_with(cluster, tmp_path, {"mds.maxRetryMS": 3000})
        cbd = curvefs.CBDClient()
        assert cbd.Init(conf) == 0
        user = make_user("curve")
        results: list[int] = []
        os.kill(cluster.pid("mds"), signal.SIGSTOP)
        try:
            t = threading.Thread(
                target=lambda: results.append(cbd.StatFile("/x", user, curvefs.FileInfo_t()))
            )
            t.start()
            # The call is in flight once its request waits, unread, at the frozen MDS.
            port = int(cluster.mds_addr.rsplit(":", 1)[1])
            wait_for(lambda: bytes_queued_at(port) > 0, 20, "the StatFile at the frozen MDS")
            spins = 0
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                spins += 1
            assert t.is_alive(), "the call returned early; the test proves nothing"
            assert spins > 1000, f"this thread ran {spins} loops in 1 s beside the call"
            # still frozen: the call must give up with FAILED once its budget is spent
            t.join(timeout=30)
            assert not t.is_alive(), "the call outlived its 3 s budget by 30 s"
            assert results == [-2]
        finally:
            os.kill(cluster.pid("mds"), signal.SIGCONT)
        cbd.UnInit()


def test_two_clusters_two_clients(tmp_path: Path) -> None:
    user = make_user("curve")
    with LocalCluster(tmp_path / "a") as a, LocalCluster(tmp_path / "b") as b:
        ca, cb = curvefs.CBDClient(), curvefs.CBDClient()
        assert ca.Init(a.conf_path) == 0 and cb.Init(b.conf_path) == 0
        assert ca.GetClusterId() != cb.GetClusterId()
        assert ca.Create("/same", user, 10 * GiB) == 0
        assert cb.StatFile("/same", user, curvefs.FileInfo_t()) == -6
        assert cb.Create("/same", user, 20 * GiB) == 0

        def io(c: curvefs.CBDClient, byte: bytes) -> bytes | int:
            fd = c.Open("/same", user)
            assert c.Write(fd, byte * MiB, 0, MiB) == MiB
            out = c.Read(fd, "", 0, MiB)
            c.Close(fd)
            return out

        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(io, ca, b"a")
            fb = pool.submit(io, cb, b"b")
            assert fa.result() == b"a" * MiB
            assert fb.result() == b"b" * MiB
        ca.UnInit()
        cb.UnInit()


def test_user_can_be_changed_while_a_call_using_it_waits(tmp_path: Path) -> None:
    # A call copies its UserInfo_t before it releases the GIL: a borrow kept for the wait
    # would make another thread's `user.owner = ...` raise "Already borrowed". The "MDS"
    # accepts connections (the kernel's backlog) and never reads: a call that waits.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    conf = tmp_path / "client.conf"
    conf.write_text(f"mds.listen.addr=127.0.0.1:{port}\nmds.maxRetryMS=1500\n", encoding="utf-8")
    cbd = curvefs.CBDClient()
    assert cbd.Init(str(conf)) == 0
    user = make_user("curve")
    results: list[int] = []
    t = threading.Thread(
        target=lambda: results.append(cbd.StatFile("/x", user, curvefs.FileInfo_t()))
    )
    t.start()
    try:
        wait_for(lambda: bytes_queued_at(port) > 0, 20, "the StatFile sent to the silent MDS")
        assert t.is_alive(), "the call returned early; the test proves nothing"
        user.owner = "someone-else"
        user.password = "pw"
        t.join(timeout=30)
        assert not t.is_alive(), "the call outlived its 1.5 s budget by 30 s"
    finally:
        hole.close()
    assert results == [-2]  # the MDS never answered
    assert (user.owner, user.password) == ("someone-else", "pw")
    cbd.UnInit()
