"""Snapshots and clones of snapshots through the snapshot/clone service with a chunkserver
killed in the middle: a snapshot's dump (ReadChunkSnapshot against the copysets, one of
whose leaders dies) and a flatten of a lazy clone of a snapshot (RecoverChunk, the
chunkservers reading the snapshot's objects). Each copyset has three replicas, so the
two left elect a leader and the task goes on; it must end done, with the right bytes."""

from __future__ import annotations

import os
import time

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB
from tests.service_api import (
    CHUNK,
    PENDING,
    SHORT_LEASE,
    USER,
    create,
    module_client,
    module_cluster,
    ok,
    snapshot,
    snapshot_bytes,
    task,
    wait_gone,
    wait_snapshot,
    wait_task,
    write,
)

BLOCK = 4096
# Chunks with data: every one is read whole (16 MiB) by the dump and by the flatten, so
# enough of them keep either busy for seconds, long enough to kill a server midway.
CHUNKS = 16


cluster = module_cluster("snapfault", copysets=4, mds_options=SHORT_LEASE)
client = module_client()


def random_blocks() -> dict[int, bytes]:
    """One random 4 KiB block in each of the first CHUNKS chunks, a different place in each."""
    return {i * CHUNK + (i % 7) * 64 * 1024: os.urandom(BLOCK) for i in range(CHUNKS)}


def read_all(client: curvefs.Client, path: str, blocks: dict[int, bytes]) -> dict[int, bytes]:
    with client.open(path) as vol:
        return {offset: vol.pread(len(data), offset) for offset, data in blocks.items()}


def leader_of_chunk_zero(cluster: LocalCluster) -> int:
    """The chunkserver leading the first copyset: with three chunkservers and three
    replicas every chunkserver holds every copyset, so killing a leader is what tests
    the task's retries (a follower's death is not seen by a reader)."""
    return cluster.copyset_leader(cluster.copyset_ids[0])


@pytest.mark.timeout(240)
def test_a_snapshot_dump_with_a_chunkserver_killed_finishes_with_the_snapshot_bytes(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/fault-dump"
    old = random_blocks()
    new = {offset: os.urandom(BLOCK) for offset in old}
    client.create(path, 10 * GiB)
    write(client, path, old)
    uuid = create(cluster, path, "dump")
    # Progress 5: the MDS snapshot is taken and the clients hold its seqNum, so these
    # writes copy the snapshot's pages aside, on every replica.
    while (s := snapshot(cluster, uuid))["Status"] == PENDING and s["Progress"] < 5:
        time.sleep(0.02)
    write(client, path, new)
    victim = leader_of_chunk_zero(cluster)
    # Killed once the dump is under way (progress 10: the chunk map is built).
    while (s := snapshot(cluster, uuid))["Status"] == PENDING and s["Progress"] < 10:
        time.sleep(0.01)
    cluster.kill_chunkserver(victim)
    at_kill = snapshot(cluster, uuid)
    try:
        assert at_kill["Status"] == PENDING, f"the dump ended before the kill: {at_kill}"
        done = wait_snapshot(cluster, uuid, timeout=180)[-1]
    finally:
        cluster.start_chunkserver(victim)
    assert done["Progress"] == 100
    for offset, data in old.items():
        assert snapshot_bytes(cluster, path, done["SeqNum"], offset, BLOCK) == data, offset
    assert read_all(client, path, new) == new
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=uuid)
    wait_gone(cluster, uuid)


@pytest.mark.timeout(240)
def test_a_flatten_of_a_snapshot_clone_with_a_chunkserver_killed_completes(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path, dest = "/fault-flat-src", "/fault-flat-clone"
    source = random_blocks()
    client.create(path, 10 * GiB)
    write(client, path, source)
    snap = create(cluster, path, "flat")
    wait_snapshot(cluster, snap)
    write(client, path, dict.fromkeys(source, b"\xff" * BLOCK))  # not in the snapshot
    uuid = ok(cluster, Action="Clone", User=USER, Source=snap, Destination=dest,
              Lazy="true")["UUID"]  # fmt: skip
    assert read_all(client, dest, source) == source
    mine = {CHUNK * 2 + 8 * MiB: os.urandom(BLOCK)}  # the clone's own write, kept
    write(client, dest, mine)

    victim = leader_of_chunk_zero(cluster)
    ok(cluster, Action="Flatten", User=USER, UUID=uuid)
    cluster.kill_chunkserver(victim)
    at_kill = task(cluster, uuid)
    try:
        assert at_kill["TaskStatus"] != 0, f"the flatten ended before the kill: {at_kill}"
        wait_task(cluster, uuid, 0, timeout=180)
    finally:
        cluster.start_chunkserver(victim)
    assert task(cluster, uuid)["Progress"] == 100
    assert client.stat(dest).status == curvefs.FileStatus.CLONED
    # The clone's own bytes now: the snapshot can go, and the clone still reads right.
    ok(cluster, Action="DeleteSnapshot", User=USER, UUID=snap)
    wait_gone(cluster, snap)
    assert read_all(client, dest, source) == source
    assert read_all(client, dest, mine) == mine
    with client.open(dest) as vol:
        assert vol.pread(BLOCK, CHUNKS * CHUNK) == bytes(BLOCK)
