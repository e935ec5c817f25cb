"""The local cluster's snapshot/clone service, driven as upstream's clients drive it: plain
HTTP GETs to ``/SnapshotCloneService`` with ``Action``/``Version`` query parameters (no
curvefs code on the client side of the API), checked against upstream's JSON bodies,
codes and HTTP statuses. The volumes' bytes are checked through the SDK."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import curvefs
from curvefs import snapshot_clone as sc
from curvefs.snapshot_clone import (
    CloneRefStatus,
    CloneStep,
    CloneTask,
    CloneTaskStatus,
    SnapshotCloneClient,
    SnapshotCloneUnavailableError,
)
from curvefs.testing import LocalCluster
from tests.helpers import make_user
from tests.service_api import fails, module_cluster, ok, task, wait_task

GiB = 1 << 30
BLOCK = 4096
CLONED = 4  # FileStatus kFileCloned


cluster = module_cluster("sc", copysets=8)


@pytest.fixture(scope="module")
def cbd(cluster: LocalCluster) -> Iterator[curvefs.CBDClient]:
    client = curvefs.CBDClient()
    assert client.Init(cluster.conf_path) == 0
    yield client
    client.UnInit()


def write_volume(cbd: curvefs.CBDClient, path: str, blocks: dict[int, bytes]) -> None:
    user = make_user("curve")
    assert cbd.Create(path, user, 10 * GiB) == 0
    fd = cbd.Open(path, user)
    assert fd >= 0
    try:
        for offset, data in blocks.items():
            assert cbd.Write(fd, data, offset, len(data)) == len(data)
    finally:
        cbd.Close(fd)


def read(cbd: curvefs.CBDClient, path: str, offset: int, length: int) -> bytes:
    user = make_user("curve")
    fd = cbd.Open(path, user)
    assert fd >= 0, fd
    try:
        data = cbd.Read(fd, None, offset, length)
        assert isinstance(data, bytes)
        return data
    finally:
        cbd.Close(fd)


SOURCE = {0: b"a" * BLOCK, 16 << 20: b"b" * BLOCK, GiB + 8192: b"c" * BLOCK}


def test_requests_upstream_refuses_get_its_codes_and_statuses(cluster: LocalCluster) -> None:
    fails(cluster, -5, Version="0.0.6")  # no Action
    fails(cluster, -5, Action="GetCloneTaskList")  # no Version
    fails(cluster, -5, Action="NoSuchAction", Version="0.0.6")
    fails(cluster, -5, Action="Clone", Version="0.0.6", User="curve", Source="/s", Lazy="true")
    for lazy in ("yes", "2", ""):
        fails(cluster, -5, Action="Clone", Version="1", User="u", Source="/s", Destination="/d",
              Lazy=lazy)  # fmt: skip
    fails(cluster, -5, Action="Clone", Version="1", User="u", Source="/s", Destination="/d",
          Lazy="true", Poolset="")  # fmt: skip
    fails(cluster, -5, Action="GetCloneTaskList", Version="1", Limit="ten")
    fails(cluster, -5, Action="GetCloneTasks", Version="1", Offset="-1", User="curve")
    # Keys are case-sensitive, as upstream's.
    fails(cluster, -5, action="GetCloneTaskList", version="1")
    # Snapshots (tests/test_snapshot_service.py has the rest): no such volume; no such
    # snapshot to cancel (a delete of one is done already).
    fails(cluster, -8, Action="CreateSnapshot", Version="1", User="curve", File="/v", Name="s")
    fails(cluster, -5, Action="CreateSnapshot", Version="1", User="curve", File="/v")
    fails(cluster, -14, Action="CancelSnapshot", Version="1", User="curve", UUID="x", File="/v")
    # Recover needs its destination first (-8), then a snapshot of it (-15).
    fails(cluster, -8, Action="Recover", Version="1", User="curve", Source="x",
          Destination="/v", Lazy="false")  # fmt: skip
    listed = ok(cluster, Action="GetFileSnapshotList")
    assert (listed["TotalCount"], listed["Snapshots"]) == (0, [])
    # POST with the same query, as upstream's robot tests send it.
    assert cluster.snapshot_clone_addr is not None
    url = f"http://{cluster.snapshot_clone_addr}/SnapshotCloneService?Action=GetCloneTaskList&Version=1"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30) as r:
        assert json.loads(r.read())["Code"] == "0"


def test_a_lazy_clone_through_the_api_reads_its_source_and_flattens(
    cluster: LocalCluster, cbd: curvefs.CBDClient
) -> None:
    write_volume(cbd, "/api-src", SOURCE)
    body = ok(cluster, Action="Clone", User="curve", Source="/api-src",
              Destination="/api-dst", Lazy="true")  # fmt: skip
    uuid = body["UUID"]
    # A lazy clone answers once the destination exists: metaInstalled, progress 5.
    info = task(cluster, uuid)
    assert info["TaskStatus"] == 7 and info["Progress"] == 5 and info["NextStep"] == 4
    assert (info["File"], info["Src"], info["User"]) == ("/api-dst", "/api-src", "curve")
    assert info["IsLazy"] is True and info["TaskType"] == 0 and info["FileType"] == 0
    for offset, data in SOURCE.items():
        assert read(cbd, "/api-dst", offset, BLOCK) == data
    # The same request again is the same task (an idempotent retry).
    again = ok(cluster, Action="Clone", User="curve", Source="/api-src",
               Destination="/api-dst", Lazy="true")  # fmt: skip
    assert again["UUID"] == uuid
    # Onto a volume no clone task made: the file exists. (Onto one a finished task made,
    # upstream answers that task's UUID whatever the parameters, and so does this one.)
    failed = fails(cluster, -19, Action="Clone", Version="1", User="curve", Source="/api-src",
                   Destination="/api-src", Lazy="false")  # fmt: skip
    assert failed["UUID"] == ""
    other = ok(cluster, Action="Clone", User="curve", Source="/api-src",
               Destination="/api-dst", Lazy="false")  # fmt: skip
    assert other["UUID"] == uuid
    fails(cluster, -8, Action="Clone", Version="1", User="curve", Source="/no-such-volume",
          Destination="/api-other", Lazy="true")  # fmt: skip
    # The source is referenced by a lazy clone that still reads it.
    ref = ok(cluster, Action="GetCloneRefStatus", User="curve", Source="/api-src")
    assert ref["RefStatus"] == 2 and ref["TotalCount"] == 1
    assert ref["CloneFileInfo"][0]["File"] == "/api-dst" and ref["CloneFileInfo"][0]["Inode"] > 0
    # Unfinished: cannot be cleaned; not the user's: refused.
    fails(cluster, -17, Action="CleanCloneTask", Version="1", User="curve", UUID=uuid)
    fails(cluster, -7, Action="CleanCloneTask", Version="1", User="someone", UUID=uuid)

    ok(cluster, Action="Flatten", User="curve", UUID=uuid)
    wait_task(cluster, uuid, 0)
    info = task(cluster, uuid)
    assert info["Progress"] == 100 and info["NextStep"] == 8
    ok(cluster, Action="Flatten", User="curve", UUID=uuid)  # done: nothing to do
    fails(cluster, -8, Action="Flatten", Version="1", User="curve", UUID="no-such-task")
    ref = ok(cluster, Action="GetCloneRefStatus", User="curve", Source="/api-src")
    assert ref["RefStatus"] == 0 and "CloneFileInfo" not in ref
    # Flattened: the clone holds its own copy; the source can go.
    assert cbd.Unlink("/api-src", make_user("curve")) == 0
    for offset, data in SOURCE.items():
        assert read(cbd, "/api-dst", offset, BLOCK) == data

    fails(cluster, -8, Action="GetCloneTasks", Version="1", User="curve", UUID="nope")
    fails(cluster, -7, Action="GetCloneTasks", Version="1", User="other", UUID=uuid)
    ok(cluster, Action="CleanCloneTask", User="curve", UUID=uuid)
    ok(cluster, Action="CleanCloneTask", User="curve", UUID=uuid)  # unknown now: still 0
    assert ok(cluster, Action="GetCloneTaskList", UUID=uuid)["TotalCount"] == 0
    # Cleaning a task leaves the volume it made.
    assert read(cbd, "/api-dst", 0, BLOCK) == SOURCE[0]


def test_a_full_clone_answers_at_once_and_finishes_in_the_background(
    cluster: LocalCluster, cbd: curvefs.CBDClient
) -> None:
    write_volume(cbd, "/full-src", SOURCE)
    uuid = ok(cluster, Action="Clone", User="curve", Source="/full-src",
              Destination="/full-dst", Lazy="false")["UUID"]  # fmt: skip
    wait_task(cluster, uuid, 0)
    assert task(cluster, uuid)["IsLazy"] is False
    for offset, data in SOURCE.items():
        assert read(cbd, "/full-dst", offset, BLOCK) == data
    # Lists: every filter, and pages of Limit from Offset with the unsliced total.
    listed = ok(cluster, Action="GetCloneTaskList", Destination="/full-dst", Type="0", Status="0")
    assert [t["UUID"] for t in listed["TaskInfos"]] == [uuid]
    assert (
        ok(cluster, Action="GetCloneTaskList", Destination="/full-dst", Type="1")["TotalCount"] == 0
    )
    for i in range(3):
        write_volume(cbd, f"/page-src-{i}", {0: bytes([i]) * BLOCK})
        ok(cluster, Action="Clone", User="pager", Source=f"/page-src-{i}",
           Destination=f"/page-dst-{i}", Lazy="true")  # fmt: skip
    everything = ok(cluster, Action="GetCloneTasks", User="pager")
    assert everything["TotalCount"] == 3 and len(everything["TaskInfos"]) == 3
    page = ok(cluster, Action="GetCloneTasks", User="pager", Limit="2", Offset="1")
    assert page["TotalCount"] == 3
    assert [t["UUID"] for t in page["TaskInfos"]] == [
        t["UUID"] for t in everything["TaskInfos"][1:3]
    ]
    by_file = ok(cluster, Action="GetCloneTasks", User="pager", File="/page-dst-1")
    assert [t["File"] for t in by_file["TaskInfos"]] == ["/page-dst-1"]
    # The clone's owner is the user who asked for it.
    stat = curvefs.FileInfo_t()
    assert cbd.StatFile("/page-dst-1", make_user("pager"), stat) == 0
    assert stat.owner == "pager"


def test_a_flatten_interrupted_by_a_killed_service_finishes_after_its_restart(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path / "c", copysets=4) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        try:
            write_volume(cbd, "/r-src", SOURCE)
            uuid = ok(cluster, Action="Clone", User="curve", Source="/r-src",
                      Destination="/r-dst", Lazy="true")["UUID"]  # fmt: skip
            ok(cluster, Action="Flatten", User="curve", UUID=uuid)
            cluster.kill_snapshot_clone(signal.SIGKILL)
            cluster.start_snapshot_clone()
            # Picked up from its record: flattened, never left half-done as done.
            wait_task(cluster, uuid, 0)
            for offset, data in SOURCE.items():
                assert read(cbd, "/r-dst", offset, BLOCK) == data
            stat = curvefs.FileInfo_t()
            assert cbd.StatFile("/r-dst", make_user("curve"), stat) == 0
            assert stat.fileStatus == CLONED
        finally:
            cbd.UnInit()


def test_a_cluster_without_the_service_has_no_address(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", copysets=2, snapshot_clone=False) as cluster:
        assert cluster.snapshot_clone_addr is None
        with pytest.raises(RuntimeError):
            cluster.start_snapshot_clone()


def closed_port() -> str:
    """An address nothing listens on (a standby service keeps its port closed so)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_the_python_client_fails_over_types_results_and_raises_by_code(
    cluster: LocalCluster, cbd: curvefs.CBDClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cluster.snapshot_clone_addr is not None
    service = SnapshotCloneClient([closed_port(), cluster.snapshot_clone_addr], user="curve")
    write_volume(cbd, "/py-src", SOURCE)
    seen: list[CloneTask] = []
    uuid = service.clone("/py-src", "/py-dst", lazy=True)
    # The address that answered is asked first from now on.
    assert service.addrs[0] == cluster.snapshot_clone_addr
    info = service.wait_clone_task(uuid, until=CloneTaskStatus.META_INSTALLED, progress=seen.append)
    assert info.status is CloneTaskStatus.META_INSTALLED and seen[-1] == info
    assert (info.file, info.source, info.user, info.lazy) == ("/py-dst", "/py-src", "curve", True)
    assert info.next_step is CloneStep.RECOVER_CHUNK and not info.source_is_snapshot
    status, refs = service.clone_ref_status("/py-src")
    assert status is CloneRefStatus.NEED_CHECK and [r.file for r in refs] == ["/py-dst"]
    with pytest.raises(sc.CannotCleanUnfinishedError) as unfinished:
        service.clean_clone_task(uuid)
    assert unfinished.value.code == -17 and unfinished.value.request_id
    with pytest.raises(sc.FileExistError) as exists:
        service.clone("/py-src", "/py-src")
    assert isinstance(exists.value, FileExistsError)
    with pytest.raises(FileNotFoundError):
        service.clone_task("no-such-task")
    # A lazy clone's source is BeingCloned: no snapshot of it (upstream's -9).
    with pytest.raises(sc.FileStatusInvalidError):
        service.create_snapshot("/py-src", "s1")
    assert service.snapshots() == []

    async def flatten_and_wait() -> CloneTask:
        await service.flatten_async(uuid)
        return await service.wait_clone_task_async(uuid, timeout=120, interval=0.05)

    done = asyncio.run(flatten_and_wait())
    assert done.status is CloneTaskStatus.DONE and done.progress == 100
    for offset, data in SOURCE.items():
        assert read(cbd, "/py-dst", offset, BLOCK) == data

    # Lists page through Limit/Offset behind the caller's back.
    monkeypatch.setattr(sc, "PAGE", 2)
    for i in range(3):
        write_volume(cbd, f"/py-page-{i}", {0: bytes([i + 1]) * BLOCK})
        service.clone(f"/py-page-{i}", f"/py-page-dst-{i}")
    # (Other tests of this module's cluster made tasks as this user too.)
    tasks = [t for t in service.clone_tasks() if t.file.startswith("/py-")]
    assert len(tasks) == 4 and len({t.uuid for t in tasks}) == 4
    assert [t.file for t in service.clone_tasks("/py-page-dst-2")] == ["/py-page-dst-2"]
    service.clean_clone_task(uuid)
    assert uuid not in {t.uuid for t in service.clone_tasks()}


def test_the_python_client_with_no_service_answering_says_so() -> None:
    service = SnapshotCloneClient(f"{closed_port()},{closed_port()}", user="u", timeout=5)
    with pytest.raises(SnapshotCloneUnavailableError) as e:
        service.clone_tasks()
    assert isinstance(e.value, ConnectionError)
    no_addrs: list[str | list[str]] = ["", []]
    for bad in no_addrs:
        with pytest.raises(ValueError):
            SnapshotCloneClient(bad, user="u")
    with pytest.raises(ValueError):
        SnapshotCloneClient("127.0.0.1:1", user="")
