"""The snapshot/clone service's HTTP API as the tests drive it (plain GETs, upstream's
JSON bodies), what its data store holds, and module-scoped cluster fixtures for the
service's test modules."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import curvefs
from curvefs.testing import LocalCluster

CHUNK = 16 << 20
USER = "curve"
# Snapshot statuses (upstream's snapshotclone_info.h).
DONE, PENDING, ERROR = 0, 1, 5
# A 1 s client lease: a snapshot waits two leases for the volume's clients to take up its
# seqNum (upstream's 2 × mdsSessionTimeUs), 2 s instead of 10.
SHORT_LEASE = {"file_record_expire_us": 1_000_000}


def module_cluster(folder: str, **options: Any) -> Callable[..., Iterator[LocalCluster]]:
    """A module-scoped ``cluster`` fixture: a LocalCluster with `options` in a folder of
    its own under pytest's temporary root, stopped once the module's tests are done."""

    @pytest.fixture(scope="module", name="cluster")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
        with LocalCluster(tmp_path_factory.mktemp(folder) / "c", **options) as c:
            yield c

    return fixture


def module_client(user: str = USER) -> Callable[..., Iterator[curvefs.Client]]:
    """A module-scoped ``client`` fixture: a Client of the module's ``cluster`` as `user`."""

    @pytest.fixture(scope="module", name="client")
    def fixture(cluster: LocalCluster) -> Iterator[curvefs.Client]:
        with curvefs.Client(cluster.conf_path, user=user) as c:
            yield c

    return fixture


def call(cluster: LocalCluster, **query: str) -> tuple[int, dict[str, Any]]:
    """One request to the service: its HTTP status and its JSON body."""
    assert cluster.snapshot_clone_addr is not None
    url = f"http://{cluster.snapshot_clone_addr}/SnapshotCloneService?" + urllib.parse.urlencode(
        query
    )
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return int(r.status), dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        with e:
            return int(e.code), dict(json.loads(e.read()))


def ok(cluster: LocalCluster, **query: str) -> dict[str, Any]:
    status, body = call(cluster, Version="0.0.6", **query)
    assert (status, body["Code"]) == (200, "0"), body
    return body


def fails(cluster: LocalCluster, code: int, **query: str) -> dict[str, Any]:
    status, body = call(cluster, **query)
    assert body["Code"] == str(code), body
    assert status == (400 if code == -5 else 500), (status, body)
    assert body["Message"] and body["RequestId"] and "UUID" in body
    return body


def task(cluster: LocalCluster, uuid: str) -> dict[str, Any]:
    infos = ok(cluster, Action="GetCloneTasks", User="curve", UUID=uuid)["TaskInfos"]
    assert len(infos) == 1 and infos[0]["UUID"] == uuid
    return dict(infos[0])


def wait_task(cluster: LocalCluster, uuid: str, status: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (info := task(cluster, uuid))["TaskStatus"] != status:
        assert info["TaskStatus"] != 5, f"the task failed: {info}"
        assert time.monotonic() < deadline, f"task not in status {status} in {timeout} s: {info}"
        time.sleep(0.05)


def store(cluster: LocalCluster) -> Path:
    assert cluster.snapshot_store_dir is not None
    return Path(cluster.snapshot_store_dir)


def snapshot(cluster: LocalCluster, uuid: str, user: str = USER) -> dict[str, Any]:
    body = ok(cluster, Action="GetFileSnapshotInfo", User=user, UUID=uuid)
    assert body["TotalCount"] == 1 and body["Snapshots"][0]["UUID"] == uuid, body
    return dict(body["Snapshots"][0])


def create(cluster: LocalCluster, file: str, name: str, user: str = USER) -> str:
    return str(ok(cluster, Action="CreateSnapshot", User=user, File=file, Name=name)["UUID"])


def wait_snapshot(
    cluster: LocalCluster, uuid: str, status: int = DONE, timeout: float = 120, user: str = USER
) -> list[dict[str, Any]]:
    """Polls the snapshot until it has `status`; every answer seen on the way."""
    deadline = time.monotonic() + timeout
    seen = [snapshot(cluster, uuid, user)]
    while seen[-1]["Status"] != status:
        assert status == ERROR or seen[-1]["Status"] != ERROR, f"the snapshot failed: {seen[-1]}"
        assert time.monotonic() < deadline, f"not in status {status} in {timeout} s: {seen[-1]}"
        time.sleep(0.05)
        seen.append(snapshot(cluster, uuid, user))
    return seen


def wait_gone(cluster: LocalCluster, uuid: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (
        call(cluster, Action="GetFileSnapshotInfo", Version="1", User=USER, UUID=uuid)[1]["Code"]
        != "-8"
    ):
        assert time.monotonic() < deadline, f"snapshot {uuid} still there after {timeout} s"
        time.sleep(0.05)


def varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def chunk_index(cluster: LocalCluster, file: str, seq: int) -> dict[int, str]:
    """The stored chunk index of snapshot `seq` of `file`: chunk index → object name (a
    protobuf ``ChunkMap {map<uint32, string> indexmap = 1}``, decoded by hand)."""
    data = (store(cluster) / f"{file.lstrip('/')}-{seq}").read_bytes()
    index: dict[int, str] = {}
    at = 0
    while at < len(data):
        key, at = varint(data, at)
        assert key == (1 << 3) | 2, key  # field 1, length-delimited: one map entry
        size, at = varint(data, at)
        entry, at = data[at : at + size], at + size
        chunk, name, e = 0, "", 0
        while e < len(entry):
            tag, e = varint(entry, e)
            if tag == (1 << 3) | 0:
                chunk, e = varint(entry, e)
            else:
                assert tag == (2 << 3) | 2, tag
                n, e = varint(entry, e)
                name, e = entry[e : e + n].decode(), e + n
        index[chunk] = name
    return index


def snapshot_bytes(cluster: LocalCluster, file: str, seq: int, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` of the snapshot, from its stored objects (zeros where the
    snapshot has no chunk); the range stays inside one chunk."""
    chunk, within = divmod(offset, CHUNK)
    assert within + length <= CHUNK
    name = chunk_index(cluster, file, seq).get(chunk)
    if name is None:
        return bytes(length)
    data = (store(cluster) / name.lstrip("/")).read_bytes()
    assert len(data) == CHUNK, (name, len(data))
    return data[within : within + length]


def objects(cluster: LocalCluster, file: str) -> set[str]:
    """The names of the store's objects of `file` (its chunks and indexes)."""
    prefix = file.lstrip("/") + "-"
    return {p.name for p in store(cluster).iterdir() if p.name.startswith(prefix)}


def write(client: curvefs.Client, path: str, blocks: dict[int, bytes]) -> None:
    with client.open(path) as vol:
        for offset, data in blocks.items():
            assert vol.pwrite(data, offset) == len(data)
