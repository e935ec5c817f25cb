"""The clone task (curve-snapshotclone) on the real local cluster: a lazy clone of a volume
made and flattened as upstream's snapshot/clone service does, through
`LocalCluster.clone_volume`/`flatten`, `Client.clone_volume`/`flatten` and the `curvefs`
command; the MDS's rules for a source and its clones as the SDK sees them; and a flatten
that runs while eight threads read and write the clone, checked byte for byte."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

import curvefs
import curvefs.exceptions as ex
from curvefs import Client, FileStatus
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB

CHUNK = 16 * MiB


@pytest.fixture
def curve(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster.conf_path, user="curve") as c:
        yield c


def _source(client: Client, path: str, writes: dict[int, bytes], size: int = 10 * GiB) -> None:
    client.create(path, size)
    with client.open(path) as vol:
        for at, data in writes.items():
            vol.pwrite(data, at)


def test_clone_is_metainstalled_and_reads_its_source(
    cluster: LocalCluster, curve: Client, name: str
) -> None:
    data = os.urandom(2 * MiB)
    # Straddles the first chunk boundary.
    _source(curve, name + "-src", {CHUNK - MiB: data})
    cluster.clone_volume(name + "-src", name + "-dst")

    info = curve.stat(name + "-dst")
    assert info.status == FileStatus.CLONE_META_INSTALLED
    assert info.owner == "curve", "the owner defaults to the source's"
    assert info.length == 10 * GiB
    assert curve.stat(name + "-src").status == FileStatus.BEING_CLONED
    with curve.open(name + "-dst") as vol:
        assert vol.pread(len(data), CHUNK - MiB) == data
        assert vol.pread(4096, 5 * GiB) == bytes(4096)
    # Nothing is left in the service's temporary folder.
    with cluster.root_client() as root:
        assert root.listdir("/clone") == []


def test_clone_owner_and_refusals(cluster: LocalCluster, curve: Client, name: str) -> None:
    _source(curve, name + "-src", {0: b"a" * 4096})
    cluster.clone_volume(name + "-src", name + "-dst", "someone")
    with cluster.root_client() as root:
        assert root.stat(name + "-dst").owner == "someone"
        with pytest.raises(ex.CurveNotExistError):
            root.clone_volume(name + "-nothing", name + "-x")
        with pytest.raises(ex.CurveExistsError):
            root.clone_volume(name + "-src", name + "-dst")
        # No chains: a clone that still reads its source cannot be a source.
        with pytest.raises(ex.CurveStatusNotMatchError):
            root.clone_volume(name + "-dst", name + "-chain")
        with pytest.raises(ex.CurveStatusNotMatchError):
            root.flatten(name + "-src")
    # Only root runs clone tasks (the MDS refuses a user's CreateCloneFile under /clone
    # and ChangeOwner).
    with pytest.raises(ex.CurveAuthError):
        curve.clone_volume(name + "-src", name + "-mine")


def test_source_is_kept_until_its_clones_are_flattened(
    cluster: LocalCluster,
    curve: Client,
    cbd: curvefs.CBDClient,
    user: curvefs.UserInfo_t,
    name: str,
) -> None:
    data = os.urandom(MiB)
    _source(curve, name + "-src", {3 * CHUNK: data})
    cluster.clone_volume(name + "-src", name + "-a")
    cluster.clone_volume(name + "-src", name + "-b")
    # The SDK's code and the Pythonic exception for a source a clone reads from.
    assert cbd.Unlink(name + "-src", user) == -curvefs.CURVE_ERROR_DELETE_BEING_CLONED
    with pytest.raises(ex.CurveDeleteBeingClonedError):
        curve.remove(name + "-src")
    with pytest.raises(ex.CurveDeleteBeingClonedError):
        curve.rename(name + "-src", name + "-moved")

    cluster.flatten(name + "-a")
    assert curve.stat(name + "-a").status == FileStatus.CLONED
    # "-b" still reads from it.
    assert cbd.Unlink(name + "-src", user) == -curvefs.CURVE_ERROR_DELETE_BEING_CLONED
    cluster.flatten(name + "-b")
    cluster.flatten(name + "-b")  # a flattened clone: nothing to do
    curve.remove(name + "-src")
    for clone in ("-a", "-b"):
        with curve.open(name + clone) as vol:
            assert vol.pread(len(data), 3 * CHUNK) == data, clone


def test_flatten_while_eight_threads_read_and_write(
    cluster: LocalCluster, curve: Client, name: str
) -> None:
    """Writes land while RecoverChunk fills the same chunks: every byte afterwards is the
    last write's or, where nothing was written, the source's."""
    span = 4 * CHUNK  # four chunks of the first segment
    source = bytearray(os.urandom(span))
    _source(curve, name + "-src", {0: bytes(source)})
    cluster.clone_volume(name + "-src", name + "-dst")

    model = bytearray(source)
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()
    block = 4096

    def worker(seed: int) -> None:
        r = random.Random(seed)
        try:
            with curve.open(name + "-dst") as vol:
                # Each thread owns the blocks b with b % 8 == seed: no two threads write
                # one block, so the model needs no ordering between threads.
                mine = [b for b in range(span // block) if b % 8 == seed]
                while not done.is_set():
                    b = r.choice(mine)
                    if r.random() < 0.5:
                        payload = r.randbytes(block)
                        vol.pwrite(payload, b * block)
                        with lock:
                            model[b * block : (b + 1) * block] = payload
                    else:
                        got = vol.pread(block, b * block)
                        with lock:
                            want = bytes(model[b * block : (b + 1) * block])
                        assert got == want, f"block {b} read back wrong"
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        cluster.flatten(name + "-dst")
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker did not finish"
    assert not errors, errors[0]
    assert curve.stat(name + "-dst").status == FileStatus.CLONED
    curve.remove(name + "-src")
    with curve.open(name + "-dst") as vol:
        assert vol.pread(span, 0) == bytes(model)


def _flatten_during(cluster: LocalCluster, dest: str, fault: Callable[[], None]) -> None:
    """Runs the flatten of ``dest`` on a thread, ``fault`` meanwhile; the flatten must end
    well within its chunk calls' deadlines."""
    failure: list[BaseException] = []

    def flatten() -> None:
        try:
            cluster.flatten(dest)
        except BaseException as e:
            failure.append(e)

    t = threading.Thread(target=flatten)
    t.start()
    try:
        fault()
    finally:
        t.join(timeout=180)
    assert not t.is_alive(), f"the flatten of {dest} did not end within 180 s"
    assert not failure, failure[0]


def test_flatten_with_a_chunkserver_killed_then_one_paused() -> None:
    """A flatten rides over a chunkserver killed, another over one paused (SIGSTOP: its
    copysets' leaders hang until the others take over); the clones read their source's
    bytes before and after, and every replica ends up serving them."""
    with LocalCluster(copysets=4) as cluster, Client(cluster.conf_path, user="curve") as c:
        data = os.urandom(8 * MiB)
        _source(c, "/src", {0: data, 5 * CHUNK: data})
        cluster.clone_volume("/src", "/killed")
        cluster.clone_volume("/src", "/paused")
        victim, sleeper = cluster.chunkserver_ids[0], cluster.chunkserver_ids[1]

        _flatten_during(cluster, "/killed", lambda: cluster.kill_chunkserver(victim))
        cluster.start_chunkserver(victim)
        _flatten_during(cluster, "/paused", lambda: cluster.pause_chunkserver(sleeper))
        cluster.resume_chunkserver(sleeper)

        c.remove("/src")
        for clone in ("/killed", "/paused"):
            assert c.stat(clone).status == FileStatus.CLONED
            with c.open(clone) as vol:
                assert vol.pread(len(data), 0) == data, clone
                assert vol.pread(len(data), 5 * CHUNK) == data, clone
                assert vol.pread(MiB, 9 * CHUNK) == bytes(MiB), clone
        # Every member serves the flattened bytes: each in turn leads every copyset.
        for member in cluster.chunkserver_ids:
            for copyset in cluster.copyset_ids:
                cluster.transfer_leader(copyset, member)
            with c.open("/paused") as vol:
                assert vol.pread(len(data), 0) == data, f"chunkserver {member}"


def test_the_curvefs_command_clones_and_flattens(
    cluster: LocalCluster, curve: Client, name: str
) -> None:
    _source(curve, name + "-src", {CHUNK: b"z" * 4096})
    env = dict(os.environ, CURVEFS_USER="root", CURVEFS_PASSWORD=cluster.root_password)
    cli = [sys.executable, "-m", "curvefs", "--conf", cluster.conf_path]
    made = subprocess.run(
        [*cli, "clone", name + "-src", name + "-dst"], env=env, capture_output=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    assert curve.stat(name + "-dst").status == FileStatus.CLONE_META_INSTALLED
    flat = subprocess.run(
        [*cli, "flatten", name + "-dst"], env=env, capture_output=True, timeout=120
    )
    assert flat.returncode == 0, flat.stderr
    assert curve.stat(name + "-dst").status == FileStatus.CLONED
    both = subprocess.run(
        [*cli, "clone", "--flatten", name + "-src", name + "-dst2"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert both.returncode == 0, both.stderr
    assert curve.stat(name + "-dst2").status == FileStatus.CLONED
    with curve.open(name + "-dst2") as vol:
        assert vol.pread(4096, CHUNK) == b"z" * 4096
    # A user is refused, with the command's error line.
    mine = subprocess.run(
        [*cli, "--user", "curve", "clone", name + "-src", name + "-mine"],
        env=dict(os.environ, CURVEFS_PASSWORD=""),
        capture_output=True,
        timeout=120,
    )
    assert mine.returncode != 0
    assert b"AUTHFAIL" in mine.stderr, mine.stderr
