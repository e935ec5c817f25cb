"""Forked workers: a child forked after the parent used curvefs makes its own clients
(a fresh runtime), cannot use what it inherited (a clear error naming the fork), and
closing or dropping the inherited objects leaves the parent's sessions alone."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import multiprocessing
import os
import random
import select
import threading
from collections.abc import Callable

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import reap

KiB = 1024
MiB = 1 << 20
GiB = 1 << 30

# Python 3.12+ warns about fork() in a multi-threaded process; forking one is the point.
pytestmark = pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")


def in_child(run: Callable[[], str], timeout: float = 60.0) -> str:
    """Runs `run` in a forked child and returns what it returned ("ok" or a failure),
    or the exception it raised; a child that says nothing within `timeout` fails."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out = run()
            except BaseException as e:
                out = f"raised {type(e).__name__}: {e}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            ready, _, _ = select.select([f], [], [], timeout)
            assert ready, f"the forked child said nothing within {timeout} s (a hang)"
            answer = f.read().decode()
    finally:
        reap(pid, timeout)
    return answer


def io_round_trip(client: curvefs.Client, path: str, size: int = MiB) -> None:
    client.create(path, 10 * GiB)
    with client.open(path) as vol:
        data = os.urandom(size)
        vol.pwrite(data, 3 * MiB + 512)  # unaligned: read-modify-write too
        assert vol.pread(size, 3 * MiB + 512) == data, "read back differs"


def test_fork_after_heavy_io_with_threads_running(cluster: LocalCluster, name: str) -> None:
    client = curvefs.Client(cluster.conf_path, user="curve")
    client.create(name, 10 * GiB)
    vol = client.open(name)
    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        block = os.urandom(16 * KiB)
        try:
            while not stop.is_set():
                # Each thread its own blocks, so what it reads back is what it wrote.
                off = (seed * 256 + rng.randrange(256)) * 16 * KiB
                vol.pwrite(block, off)
                assert vol.pread(len(block), off) == block
                done[0] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        while done[0] < 200 and not errors:  # heavy IO under way before the fork
            stop.wait(0.01)

        def child() -> str:
            for call, what in (
                (lambda: client.stat(name), "Client"),
                (lambda: vol.pread(4096, 0), "Volume"),
                (lambda: client.metrics(), "Client"),
            ):
                try:
                    call()
                    return f"an inherited {what} worked in the child"
                except RuntimeError as e:
                    if "forked" not in str(e) or what not in str(e):
                        return f"unclear error: {e}"
            # Closing and dropping what was inherited must not touch the parent's.
            vol.close()
            client.close()
            gc.collect()
            with curvefs.Client(cluster.conf_path, user="curve") as fresh:
                io_round_trip(fresh, name + "-child")
                fresh.remove(name + "-child")
            return "ok"

        assert in_child(child) == "ok"
        assert not errors, errors
        before = done[0]
        while done[0] < before + 100 and not errors:  # the parent's IO goes on
            stop.wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    # The parent's volume is still open, its session alive, its data intact.
    data = os.urandom(64 * KiB)
    vol.pwrite(data, 5 * MiB)
    assert vol.pread(len(data), 5 * MiB) == data
    assert vol.stat().length == 10 * GiB
    assert client.metrics().volumes[name].write.ops > 0
    vol.close()
    client.remove(name)
    client.close()


def test_an_inherited_cbdclient_raises_and_uninit_leaves_the_parent_alone(
    cluster: LocalCluster, name: str, user: curvefs.UserInfo_t
) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    assert cbd.Create(name, user, 10 * GiB) == 0
    fd = cbd.Open(name, user)
    assert fd >= 0
    assert cbd.Write(fd, b"w" * 4096, 0, 4096) == 4096

    def child() -> str:
        try:
            cbd.Read(fd, b"", 0, 4096)
            return "an inherited CBDClient read in the child"
        except RuntimeError as e:
            if "forked" not in str(e) or "CBDClient" not in str(e):
                return f"unclear error: {e}"
        cbd.UnInit()  # nothing: the sessions are the parent's
        fresh = curvefs.CBDClient()
        if fresh.Init(cluster.conf_path) != 0:
            return "Init failed in the child"
        try:
            if fresh.StatFile(name, user, curvefs.FileInfo_t()) != 0:
                return "StatFile failed in the child"
        finally:
            fresh.UnInit()
        return "ok"

    assert in_child(child) == "ok"
    assert cbd.Read(fd, b"", 0, 4096) == b"w" * 4096
    assert cbd.Close(fd) == 0
    assert cbd.Unlink(name, user) == 0
    cbd.UnInit()


def _pool_worker(args: tuple[str, str]) -> str:
    conf_path, path = args
    with curvefs.Client(conf_path, user="curve") as c:
        c.create(path, 10 * GiB)
        with c.open(path) as vol:
            data = hashlib.sha256(path.encode()).digest() * 4096  # 128 KiB, per worker
            vol.pwrite(data, MiB)
            back = vol.pread(len(data), MiB)
        c.remove(path)
    return hashlib.sha256(back).hexdigest()


def test_inherited_async_twins_raise_and_close_async_leaves_the_parent_alone(
    cluster: LocalCluster, name: str
) -> None:
    client = curvefs.Client(cluster.conf_path, user="curve")
    client.create(name, 10 * GiB)
    vol = client.open(name)
    vol.pwrite(b"p" * 4096, 0)

    def child() -> str:
        async def main() -> str:
            for call, what in (
                (lambda: vol.pread_async(4096, 0), "Volume"),
                (lambda: client.stat_async(name), "Client"),
            ):
                try:
                    await call()
                    return f"an inherited {what}'s async twin worked in the child"
                except RuntimeError as e:
                    if "forked" not in str(e) or what not in str(e):
                        return f"unclear error: {e}"
            # As their blocking twins: nothing sent, the parent's session untouched.
            await vol.close_async()
            await client.close_async()
            return "ok" if vol.closed else "the volume is not closed in the child"

        return asyncio.run(main())

    assert in_child(child) == "ok"
    # The parent's volume is still open and its session alive.
    vol.pwrite(b"q" * 4096, 4096)
    assert vol.pread(8192, 0) == b"p" * 4096 + b"q" * 4096
    vol.close()
    client.remove(name)
    client.close()


def test_a_fork_pool_of_four_workers_each_opening_volumes(cluster: LocalCluster, name: str) -> None:
    parent = curvefs.Client(cluster.conf_path, user="curve")
    io_round_trip(parent, name)  # the parent's runtime runs, its volume closed again
    keep = parent.open(name)
    paths = [f"{name}-w{i}" for i in range(8)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        got = pool.map(_pool_worker, [(cluster.conf_path, p) for p in paths], chunksize=1)
    want = [hashlib.sha256(hashlib.sha256(p.encode()).digest() * 4096).hexdigest() for p in paths]
    assert got == want
    # The parent's volume, open across the pool's life, still works.
    keep.pwrite(b"k" * 4096, 0)
    assert keep.pread(4096, 0) == b"k" * 4096
    keep.close()
    parent.remove(name)
    parent.close()


def test_gunicorn_style_preload(cluster: LocalCluster, name: str) -> None:
    """The app is imported and a client made in the master (preload); each worker is a
    fork of it, makes its own client on first use, and serves requests."""
    master_client = curvefs.Client(cluster.conf_path, user="curve")
    master_client.create(name, 10 * GiB)
    with master_client.open(name) as vol:
        vol.pwrite(b"m" * 4096, 0)

    app_state: dict[str, curvefs.Client] = {}
    master_pid = os.getpid()

    def get_client() -> curvefs.Client:
        # What an app does: one client per process, made lazily.
        key = str(os.getpid())
        if key not in app_state:
            app_state[key] = curvefs.Client(cluster.conf_path, user="curve")
        return app_state[key]

    def worker(i: int) -> Callable[[], str]:
        def serve() -> str:
            if os.getpid() == master_pid:
                return "not forked"
            try:
                master_client.stat(name)
                return "the master's client worked in a worker"
            except RuntimeError as e:
                if "forked" not in str(e):
                    return f"unclear error: {e}"
            c = get_client()
            for _ in range(3):  # a few requests
                info = c.stat(name)
                if info.length != 10 * GiB:
                    return f"stat said {info.length}"
            io_round_trip(c, f"{name}-worker{i}", 64 * KiB)
            c.remove(f"{name}-worker{i}")
            return "ok"

        return serve

    get_client()  # the master's own, made before the workers fork
    assert [in_child(worker(i)) for i in range(2)] == ["ok", "ok"]
    # The master goes on with both of its clients.
    with master_client.open(name) as vol:
        assert vol.pread(4096, 0) == b"m" * 4096
    assert get_client().stat(name).length == 10 * GiB
    get_client().close()
    master_client.remove(name)
    master_client.close()


def test_the_module_level_api_starts_uninitialised_in_a_child(
    cluster: LocalCluster, name: str, user: curvefs.UserInfo_t
) -> None:
    assert curvefs.Init(cluster.conf_path) == 0
    try:
        assert curvefs.Create(name, user, 10 * GiB) == 0
        fd = curvefs.Open(name, user)
        assert fd >= 0

        def child() -> str:
            if curvefs.Open(name, user) != -curvefs.CURVE_ERROR_FAILED:
                return "the parent's process-wide client answered in the child"
            if curvefs.Init(cluster.conf_path) != 0:
                return "Init failed in the child"
            info = curvefs.FileInfo_t()
            if curvefs.StatFile(name, user, info) != 0 or info.length != 10 * GiB:
                return "StatFile failed in the child"
            curvefs.UnInit()
            return "ok"

        assert in_child(child) == "ok"
        assert curvefs.Write(fd, b"p" * 4096, 0, 4096) == 4096
        assert curvefs.Close(fd) == 0
        assert curvefs.Unlink(name, user) == 0
    finally:
        curvefs.UnInit()
