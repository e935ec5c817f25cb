"""Snapshots through the local cluster's snapshot/clone service, driven as upstream's clients
drive it (plain HTTP GETs, no curvefs code on the client side of the API): a snapshot is
taken in the MDS, dumped chunk by chunk to the service's data store, and its MDS snapshot
deleted; its stored objects are read back from the store's folder (upstream's object
names: ``<file>-<chunkIndex>-<sn>`` for a chunk's bytes, ``<file>-<seq>`` for the chunk
index, a ``ChunkMap`` message). Volumes are written and read through the SDK."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import curvefs
from curvefs import snapshot_clone as sc
from curvefs.testing import LocalCluster
from tests.service_api import (
    CHUNK,
    DONE,
    ERROR,
    PENDING,
    SHORT_LEASE,
    USER,
    chunk_index,
    create,
    fails,
    module_client,
    module_cluster,
    objects,
    ok,
    snapshot,
    snapshot_bytes,
    store,
    task,
    wait_gone,
    wait_snapshot,
    wait_task,
    write,
)

GiB = 1 << 30
BLOCK = 4096


cluster = module_cluster("snap", copysets=4, mds_options=SHORT_LEASE)
client = module_client()


def test_a_snapshot_holds_the_volume_as_it_was_and_shares_unchanged_chunks(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-bytes"
    client.create(path, 10 * GiB)
    before = {
        0: b"a" * BLOCK,
        CHUNK + 8192: b"b" * BLOCK,
        3 * CHUNK: b"d" * BLOCK,
        GiB + BLOCK: b"c" * BLOCK,
    }
    after = {0: b"A" * BLOCK, CHUNK + 8192: b"B" * BLOCK, GiB + BLOCK: b"C" * BLOCK}
    fresh = {2 * CHUNK: b"N" * BLOCK}  # a chunk first written after the snapshot
    with client.open(path) as vol:
        for offset, data in before.items():
            vol.pwrite(data, offset)
        uuid = create(cluster, path, "s1")
        # Retried while pending: the same snapshot (upstream's idempotent create).
        assert create(cluster, path, "s1") == uuid
        first = snapshot(cluster, uuid)
        assert (first["Status"], first["File"], first["User"], first["Name"]) == (
            PENDING, path, USER, "s1",
        )  # fmt: skip
        # Once the MDS snapshot is taken and the clients hold its seqNum (progress 5), the
        # volume's writes copy old pages aside: the dump still reads the old bytes.
        seen = [first]
        while seen[-1]["Status"] == PENDING and seen[-1]["Progress"] < 5:
            time.sleep(0.02)
            seen.append(snapshot(cluster, uuid))
        for offset, data in {**after, **fresh}.items():
            vol.pwrite(data, offset)
    seen += wait_snapshot(cluster, uuid)
    progress = [s["Progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    assert any(0 < p < 100 for p in progress), progress
    done = seen[-1]
    assert (done["SeqNum"], done["FileLength"]) == (1, 10 * GiB)
    assert done["Time"] > 0

    # The chunks that held data at the snapshot, each once, at sn 1; and the index.
    assert chunk_index(cluster, path, 1) == {
        0: f"{path}-0-1", 1: f"{path}-1-1", 3: f"{path}-3-1", 64: f"{path}-64-1",
    }  # fmt: skip
    assert objects(cluster, path) == {
        "snap-bytes-1", "snap-bytes-0-1", "snap-bytes-1-1", "snap-bytes-3-1", "snap-bytes-64-1",
    }  # fmt: skip
    for offset, data in before.items():
        assert snapshot_bytes(cluster, path, 1, offset, BLOCK) == data
    assert snapshot_bytes(cluster, path, 1, BLOCK, BLOCK) == bytes(BLOCK)
    assert snapshot_bytes(cluster, path, 1, 2 * CHUNK, BLOCK) == bytes(BLOCK)
    with client.open(path) as vol:
        for offset, data in {**after, **fresh}.items():
            assert vol.pread(BLOCK, offset) == data

    # A second snapshot: chunk 3, unchanged since the first, keeps its object.
    uuid2 = create(cluster, path, "s2")
    assert wait_snapshot(cluster, uuid2)[-1]["SeqNum"] == 2
    index2 = chunk_index(cluster, path, 2)
    assert index2 == {
        0: f"{path}-0-2", 1: f"{path}-1-2", 2: f"{path}-2-2", 3: f"{path}-3-1",
        64: f"{path}-64-2",
    }  # fmt: skip
    assert "snap-bytes-3-2" not in objects(cluster, path)
    for offset, data in {**after, **fresh, 3 * CHUNK: before[3 * CHUNK]}.items():
        assert snapshot_bytes(cluster, path, 2, offset, BLOCK) == data

    # Deleting the first keeps what the second uses; deleting the second empties the store.
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=uuid, File=path)
    wait_gone(cluster, uuid)
    assert objects(cluster, path) == {
        "snap-bytes-2", "snap-bytes-0-2", "snap-bytes-1-2", "snap-bytes-2-2", "snap-bytes-3-1",
        "snap-bytes-64-2",
    }  # fmt: skip
    # Deleting again, or an unknown snapshot, is done already.
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=uuid)
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=uuid2)
    wait_gone(cluster, uuid2)
    assert objects(cluster, path) == set()
    # No MDS snapshot is left behind: the volume can go.
    client.remove(path)


def test_snapshots_of_a_volume_run_one_at_a_time_and_list_with_filters_and_pages(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path, other = "/snap-list-a", "/snap-list-b"
    client.create(path, 10 * GiB)
    write(client, path, {0: b"x" * BLOCK})
    with curvefs.Client(cluster.conf_path, user="snapper") as theirs:
        theirs.create(other, 10 * GiB)
    theirs_uuid = create(cluster, other, "t1", user="snapper")
    uuids = [create(cluster, path, f"s{i}") for i in range(3)]
    assert len(set(uuids)) == 3
    # One task per volume at a time, in order: a snapshot takes its MDS snapshot (its
    # SeqNum) only once the one before it is done.
    deadline = time.monotonic() + 120
    while True:
        listed = ok(cluster, Action="GetFileSnapshotInfo", User=USER, File=path)
        assert listed["TotalCount"] == 3
        snaps = {s["UUID"]: s for s in listed["Snapshots"]}
        order = [snaps[u] for u in uuids]
        for earlier, later in itertools.pairwise(order):
            if later["SeqNum"] != 0:
                assert earlier["Status"] == DONE, order
        if all(s["Status"] == DONE for s in order):
            break
        assert all(s["Status"] in (DONE, PENDING) for s in order), order
        assert time.monotonic() < deadline, order
        time.sleep(0.05)
    assert [s["SeqNum"] for s in order] == [1, 2, 3]
    assert [s["Name"] for s in order] == ["s0", "s1", "s2"]
    assert all(s["Progress"] == 100 for s in order)
    wait_snapshot(cluster, theirs_uuid, user="snapper")

    # GetFileSnapshotInfo: the user's snapshots of the file, sliced [Offset, Offset+Limit).
    def info(**q: str) -> dict[str, Any]:
        return ok(cluster, Action="GetFileSnapshotInfo", User=USER, File=path, **q)

    page = info(Limit="2")
    assert page["TotalCount"] == 3 and [s["UUID"] for s in page["Snapshots"]] == uuids[:2]
    page = info(Limit="2", Offset="2")
    assert page["TotalCount"] == 3 and [s["UUID"] for s in page["Snapshots"]] == uuids[2:]
    assert info(Offset="5")["Snapshots"] == []
    assert len(info(Limit="", Offset="")["Snapshots"]) == 3  # empty: the defaults
    fails(cluster, -5, Action="GetFileSnapshotInfo", Version="1", User=USER, Limit="-1")
    fails(cluster, -5, Action="GetFileSnapshotInfo", Version="1", File=path)  # no User
    assert ok(cluster, Action="GetFileSnapshotInfo", User="snapper", File=path)["TotalCount"] == 0
    # Without File: upstream lists the file "" (none).
    assert ok(cluster, Action="GetFileSnapshotInfo", User=USER)["TotalCount"] == 0
    assert info(UUID=uuids[1])["Snapshots"][0]["Name"] == "s1"
    fails(cluster, -7, Action="GetFileSnapshotInfo", Version="1", User="snapper", UUID=uuids[1])
    fails(cluster, -11, Action="GetFileSnapshotInfo", Version="1", User=USER, UUID=uuids[1],
          File=other)  # fmt: skip
    fails(cluster, -8, Action="GetFileSnapshotInfo", Version="1", User=USER, UUID="no-such")

    # GetFileSnapshotList: every snapshot, filters combined with AND.
    def listed_uuids(**q: str) -> list[str]:
        body = ok(cluster, Action="GetFileSnapshotList", Limit="100", **q)
        assert body["TotalCount"] == len(body["Snapshots"])
        return [s["UUID"] for s in body["Snapshots"]]

    everything = listed_uuids()
    assert set(uuids) | {theirs_uuid} <= set(everything)
    assert listed_uuids(File=path) == uuids
    assert listed_uuids(User="snapper") == [theirs_uuid]
    assert listed_uuids(User="snapper", File=path) == []
    assert listed_uuids(UUID=uuids[2], Status="0") == [uuids[2]]
    assert listed_uuids(File=path, Status="1") == []
    assert listed_uuids(Status="done") == []  # not a number: matches nothing, as upstream
    body = ok(cluster, Action="GetFileSnapshotList", File=path, Limit="1", Offset="1")
    assert body["TotalCount"] == 3 and [s["UUID"] for s in body["Snapshots"]] == [uuids[1]]
    assert set(body["Snapshots"][0]) == {
        "UUID", "User", "File", "SeqNum", "Name", "Time", "FileLength", "Status", "Progress",
    }  # fmt: skip


def test_snapshot_requests_upstream_refuses_get_its_codes(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-codes"
    client.create(path, 10 * GiB)
    q = {"Action": "CreateSnapshot", "Version": "1"}
    fails(cluster, -5, **q, User=USER, File=path)  # no Name
    fails(cluster, -5, **q, User=USER, File=path, Name="")
    fails(cluster, -8, **q, User=USER, File="/snap-no-such-volume", Name="s")
    fails(cluster, -7, **q, User="intruder", File=path, Name="s")
    # A lazy clone whose metadata is installed cannot be snapshotted (not Created/Cloned),
    # nor can its source, now BeingCloned.
    client.create("/snap-codes-src", 10 * GiB)
    ok(cluster, Action="Clone", User=USER, Source="/snap-codes-src",
       Destination="/snap-codes-clone", Lazy="true")  # fmt: skip
    fails(cluster, -9, **q, User=USER, File="/snap-codes-src", Name="s")
    fails(cluster, -9, **q, User=USER, File="/snap-codes-clone", Name="s")

    uuid = create(cluster, path, "s")
    wait_snapshot(cluster, uuid)
    # Cancel: only a running task; a finished or unknown one is -14.
    fails(cluster, -5, Action="CancelSnapshot", Version="1", User=USER, UUID=uuid)  # no File
    fails(cluster, -14, Action="CancelSnapshot", Version="1", User=USER, UUID=uuid, File=path)
    fails(cluster, -14, Action="CancelSnapshot", Version="1", User=USER, UUID="x", File=path)
    # Delete: the owner's, of the file named (if named).
    fails(cluster, -5, Action="DeleteSnapshot", Version="1", User=USER)
    fails(cluster, -7, Action="DeleteSnapshot", Version="1", User="intruder", UUID=uuid)
    fails(cluster, -11, Action="DeleteSnapshot", Version="1", User=USER, UUID=uuid,
          File="/snap-other")  # fmt: skip
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID="no-such-snapshot")
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=uuid, File=path)
    wait_gone(cluster, uuid)

    # A running snapshot: cancel checks the user and the file first.
    running = create(cluster, path, "s2")
    fails(cluster, -7, Action="CancelSnapshot", Version="1", User="intruder", UUID=running,
          File=path)  # fmt: skip
    fails(cluster, -11, Action="CancelSnapshot", Version="1", User=USER, UUID=running,
          File="/snap-other")  # fmt: skip
    wait_snapshot(cluster, running)


def test_a_canceled_snapshot_removes_what_it_made(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-cancel"
    client.create(path, 10 * GiB)
    write(client, path, {0: b"k" * BLOCK, GiB: b"l" * BLOCK})
    # Canceled while it waits for the clients to take up its seqNum (MDS snapshot taken).
    uuid = create(cluster, path, "c1")
    ok(cluster, Action="CancelSnapshot", User=USER, UUID=uuid, File=path)
    wait_gone(cluster, uuid)
    # A waiting one (behind another of the volume) is dropped at once; DeleteSnapshot of
    # a pending snapshot cancels it.
    first = create(cluster, path, "c2")
    second = create(cluster, path, "c3")
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=second, File=path)
    fails(cluster, -8, Action="GetFileSnapshotInfo", Version="1", User=USER, UUID=second)
    # Canceled while dumping or later: whatever it stored goes.
    while snapshot(cluster, first)["Progress"] < 5:
        time.sleep(0.01)
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=first, File=path)
    wait_gone(cluster, first)
    assert objects(cluster, path) == set()
    # Nothing left in the MDS either: the next snapshot is taken and done (the canceled
    # ones used seqNums 1 and 2), and the volume can be removed after it.
    again = create(cluster, path, "c4")
    done = wait_snapshot(cluster, again)[-1]
    assert done["SeqNum"] == 3
    assert snapshot_bytes(cluster, path, 3, 0, BLOCK) == b"k" * BLOCK
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=again)
    wait_gone(cluster, again)
    client.remove(path)


def test_a_failed_snapshot_is_kept_until_deleted_or_cleared_by_the_next(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-fail"
    client.create(path, 10 * GiB)
    write(client, path, {0: b"f" * BLOCK})

    def failing() -> str:
        """A snapshot that fails: a file stands where the store's folder was, so every put
        fails. It is kept, status error, with its MDS snapshot."""
        folder = store(cluster)
        aside = folder.with_name(folder.name + ".aside")
        folder.rename(aside)
        try:
            folder.write_bytes(b"")
            uuid = create(cluster, path, "f")
            wait_snapshot(cluster, uuid, status=ERROR)
        finally:
            folder.unlink(missing_ok=True)
            aside.rename(folder)
        assert snapshot(cluster, uuid)["Progress"] == 0
        return uuid

    failed = failing()
    # The next snapshot of the volume deletes it first (else it would fail too).
    good = create(cluster, path, "g")
    assert wait_snapshot(cluster, good)[-1]["SeqNum"] == 2
    fails(cluster, -8, Action="GetFileSnapshotInfo", Version="1", User=USER, UUID=failed)
    assert snapshot_bytes(cluster, path, 2, 0, BLOCK) == b"f" * BLOCK
    # DeleteSnapshot of a failed one removes its MDS snapshot too.
    failed = failing()
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=failed)
    wait_gone(cluster, failed)
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=good)
    wait_gone(cluster, good)
    assert objects(cluster, path) == set()
    client.remove(path)


def test_a_snapshot_interrupted_by_a_killed_service_finishes_after_its_restart(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-restart"
    client.create(path, 10 * GiB)
    blocks = {0: b"r" * BLOCK, 5 * CHUNK: b"s" * BLOCK}
    write(client, path, blocks)
    uuid = create(cluster, path, "r1")
    waiting = create(cluster, path, "r2")
    # Killed once the MDS snapshot is taken (its seq recorded), before the dump ends.
    while snapshot(cluster, uuid)["SeqNum"] == 0:
        time.sleep(0.01)
    cluster.kill_snapshot_clone(signal.SIGKILL)
    # Written once the clients hold the new seqNum (2 leases on): copied aside.
    time.sleep(2.5)
    write(client, path, {0: b"R" * BLOCK})
    cluster.start_snapshot_clone()
    # Both picked up from their records, in order.
    assert wait_snapshot(cluster, uuid)[-1]["SeqNum"] == 1
    assert wait_snapshot(cluster, waiting)[-1]["SeqNum"] == 2
    for offset, data in blocks.items():
        assert snapshot_bytes(cluster, path, 1, offset, BLOCK) == data
    assert snapshot_bytes(cluster, path, 2, 0, BLOCK) == b"R" * BLOCK

    # Killed again in the middle of a dump (progress 10 to 99: some chunks stored, some
    # not), with sixteen chunks to read, and again once restarted. Resumed, the task
    # stores the rest; it is never listed done before every chunk is stored.
    many = {i * CHUNK + BLOCK: os.urandom(BLOCK) for i in range(16)}
    write(client, path, many)
    third = create(cluster, path, "r3")
    for _ in range(2):
        while (s := snapshot(cluster, third))["Progress"] < 10:
            assert s["Status"] == PENDING, s
            time.sleep(0.01)
        assert s["Status"] == PENDING, f"the dump ended before the kill: {s}"
        cluster.kill_snapshot_clone(signal.SIGKILL)
        cluster.start_snapshot_clone()
    seen = wait_snapshot(cluster, third)
    assert all(x["Progress"] == 100 for x in seen if x["Status"] == DONE), seen
    assert seen[-1]["SeqNum"] == 3
    for offset, data in many.items():
        assert snapshot_bytes(cluster, path, 3, offset, BLOCK) == data, offset
    # Whole objects only: a put cut short by a kill left nothing beside them.
    named = {Path(n).name for seq in (1, 2, 3) for n in chunk_index(cluster, path, seq).values()}
    indexes = {f"{path.lstrip('/')}-{seq}" for seq in (1, 2, 3)}
    assert objects(cluster, path) == indexes | named

    for u in (uuid, waiting, third):
        ok(cluster, Action="DeleteSnapshot", User=USER, UUID=u)
        wait_gone(cluster, u)
    assert objects(cluster, path) == set()


def test_the_python_client_takes_lists_and_deletes_snapshots(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-py"
    client.create(path, 10 * GiB)
    write(client, path, {0: b"p" * BLOCK})
    assert cluster.snapshot_clone_addr is not None
    service = sc.SnapshotCloneClient(cluster.snapshot_clone_addr, user=USER)
    uuid = service.create_snapshot(path, "py")
    seen: list[sc.Snapshot] = []
    snap = service.wait_snapshot(uuid, timeout=120, interval=0.05, progress=seen.append)
    assert (snap.status, snap.progress, snap.seq_num, snap.name) == (
        sc.SnapshotStatus.DONE, 100, 1, "py",
    )  # fmt: skip
    assert seen[0].status is sc.SnapshotStatus.PENDING
    assert uuid in {s.uuid for s in service.snapshots()}
    assert [s.uuid for s in service.snapshots(path)] == [uuid]
    with pytest.raises(sc.CannotCancelFinishedError):
        service.cancel_snapshot(uuid, path)
    with pytest.raises(sc.FileNotExistError):
        service.create_snapshot("/snap-py-none", "py")
    service.delete_snapshot(uuid, path)
    wait_gone(cluster, uuid)
    with pytest.raises(FileNotFoundError):
        service.snapshot(uuid)


def test_a_clone_of_a_snapshot_reads_it_and_holds_it_until_flattened(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path, dest, full = "/snap-src", "/snap-src-clone", "/snap-src-full"
    blocks = {0: b"1" * BLOCK, CHUNK + BLOCK: b"2" * BLOCK, GiB: b"3" * BLOCK}
    client.create(path, 10 * GiB)
    write(client, path, blocks)
    snap = create(cluster, path, "src")
    wait_snapshot(cluster, snap)
    write(client, path, {0: b"9" * BLOCK})  # the volume moves on; the snapshot does not
    later = create(cluster, path, "later")
    clone = {"Action": "Clone", "Version": "1", "Lazy": "true"}
    # A snapshot still pending is no source (-15); another user's neither (-7).
    fails(cluster, -15, **clone, User=USER, Source=later, Destination=dest)
    fails(cluster, -7, **clone, User="snapper", Source=snap, Destination=dest)

    uuid = ok(cluster, Action="Clone", User=USER, Source=snap, Destination=dest,
              Lazy="true")["UUID"]  # fmt: skip
    info = task(cluster, uuid)
    assert (info["TaskStatus"], info["FileType"], info["Src"], info["File"]) == (
        7, 1, snap, dest,
    )  # fmt: skip
    stat = client.stat(dest)
    assert (stat.status, stat.length, stat.owner) == (
        curvefs.FileStatus.CLONE_META_INSTALLED, 10 * GiB, USER,
    )  # fmt: skip
    # The lazy clone reads the snapshot (its chunks from the data store), zeros elsewhere.
    with client.open(dest) as vol:
        for offset, data in blocks.items():
            assert vol.pread(BLOCK, offset) == data
        assert vol.pread(BLOCK, 2 * CHUNK) == bytes(BLOCK)
        vol.pwrite(b"w" * BLOCK, CHUNK)
        assert vol.pread(2 * BLOCK, CHUNK) == b"w" * BLOCK + b"2" * BLOCK
    # In use by the clone until it is flattened (-16).
    fails(cluster, -16, Action="DeleteSnapshot", Version="1", User=USER, UUID=snap)
    ok(cluster, Action="Flatten", User=USER, UUID=uuid)
    wait_task(cluster, uuid, 0)
    assert client.stat(dest).status == curvefs.FileStatus.CLONED
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=snap)
    wait_gone(cluster, snap)
    with client.open(dest) as vol:  # its own bytes now: the snapshot is gone
        assert vol.pread(2 * BLOCK, CHUNK) == b"w" * BLOCK + b"2" * BLOCK
        for offset in (0, GiB):
            assert vol.pread(BLOCK, offset) == blocks[offset]

    # A clone that is not lazy answers at once and copies every chunk in the background.
    wait_snapshot(cluster, later)
    full_uuid = ok(cluster, Action="Clone", User=USER, Source=later, Destination=full,
                   Lazy="false")["UUID"]  # fmt: skip
    wait_task(cluster, full_uuid, 0)
    assert client.stat(full).status == curvefs.FileStatus.CLONED
    with client.open(full) as vol:
        assert vol.pread(BLOCK, 0) == b"9" * BLOCK
        for offset in (CHUNK + BLOCK, GiB):
            assert vol.pread(BLOCK, offset) == blocks[offset]
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=later)
    wait_gone(cluster, later)
    assert objects(cluster, path) == set()


def test_a_recover_brings_a_volume_back_to_its_snapshot(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/snap-recover"
    blocks = {0: b"o" * BLOCK, GiB: b"p" * BLOCK}
    client.create(path, 10 * GiB)
    write(client, path, blocks)
    snap = create(cluster, path, "before")
    wait_snapshot(cluster, snap)
    write(client, path, {0: b"X" * BLOCK, 2 * CHUNK: b"Y" * BLOCK})
    old = client.stat(path)
    recover = {"Action": "Recover", "Version": "1", "Lazy": "true"}
    fails(cluster, -15, **recover, User=USER, Source="no-such-snapshot", Destination=path)
    fails(cluster, -8, **recover, User=USER, Source=snap, Destination="/snap-recover-none")
    fails(cluster, -7, **recover, User="snapper", Source=snap, Destination=path)
    client.create("/snap-recover-other", 10 * GiB)
    # Only onto the snapshot's own volume.
    fails(cluster, -15, **recover, User=USER, Source=snap, Destination="/snap-recover-other")

    uuid = ok(cluster, Action="Recover", User=USER, Source=snap, Destination=path,
              Lazy="true")["UUID"]  # fmt: skip
    info = task(cluster, uuid)
    assert (info["TaskType"], info["TaskStatus"], info["FileType"]) == (1, 7, 1), info
    # A new volume in its place, reading the snapshot: the later writes are gone.
    now = client.stat(path)
    assert now.id != old.id and now.status == curvefs.FileStatus.CLONE_META_INSTALLED
    with client.open(path) as vol:
        for offset, data in blocks.items():
            assert vol.pread(BLOCK, offset) == data
        assert vol.pread(BLOCK, 2 * CHUNK) == bytes(BLOCK)
        vol.pwrite(b"Z" * BLOCK, 0)
    fails(cluster, -16, Action="DeleteSnapshot", Version="1", User=USER, UUID=snap)
    ok(cluster, Action="Flatten", User=USER, UUID=uuid)
    wait_task(cluster, uuid, 0)
    assert client.stat(path).status == curvefs.FileStatus.CLONED
    with client.open(path) as vol:
        assert vol.pread(BLOCK, 0) == b"Z" * BLOCK
        assert vol.pread(BLOCK, GiB) == blocks[GiB]
    # The recovered volume's seqNum follows the one it replaced (2): its next snapshot is 3.
    again = create(cluster, path, "after")
    assert wait_snapshot(cluster, again)[-1]["SeqNum"] == 3
    assert snapshot_bytes(cluster, path, 3, 0, BLOCK) == b"Z" * BLOCK
    assert snapshot_bytes(cluster, path, 3, GiB, BLOCK) == blocks[GiB]
    for u in (again, snap):
        ok(cluster, Action="DeleteSnapshot", User=USER, UUID=u)
        wait_gone(cluster, u)
    assert objects(cluster, path) == set()
