"""The snapshot/clone service as an active instance and a standby sharing one folder and
one lease (as the MDSes do): only the active one listens; the active one killed with tasks
in flight (a snapshot's dump, a clone's flatten, a recover), the standby takes the lease,
resumes the persisted tasks, and each ends done with the right bytes or failed, never
half-made and shown done; an active instance paused past its lease acts no more once
resumed."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

import curvefs
from curvefs.snapshot_clone import SnapshotCloneClient
from curvefs.testing import LocalCluster
from tests.helpers import GiB
from tests.service_api import (
    CHUNK,
    DONE,
    PENDING,
    USER,
    create,
    module_client,
    module_cluster,
    ok,
    snapshot,
    snapshot_bytes,
    task,
    wait_snapshot,
    write,
)

BLOCK = 4096
CHUNKS = 8
# The lease of MDSes and service instances alike: short, so a paused instance loses it fast.
LEASE = {"file_record_expire_us": 1_000_000, "leader_lease_ms": 1000}

cluster = module_cluster("scstandby", copysets=4, mds_options=LEASE, snapshot_clone_count=2)
client = module_client()


def blocks() -> dict[int, bytes]:
    return {i * CHUNK + (i % 5) * 64 * 1024: os.urandom(BLOCK) for i in range(CHUNKS)}


def refuses(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def fail_over(cluster: LocalCluster, sig: int = signal.SIGKILL) -> int:
    """Kills the active instance with `sig`, waits for the other to serve, starts the
    killed one again (it stands by); the new active index."""
    old = cluster.wait_for_active_snapshot_clone()
    cluster.kill_snapshot_clone(sig, index=old)
    new = cluster.wait_for_active_snapshot_clone(timeout=30)
    assert new != old
    cluster.start_snapshot_clone(old)
    assert cluster.server_state(cluster.snapshot_clone_name(old)) == "standby"
    return new


def settle_task(cluster: LocalCluster, uuid: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (info := task(cluster, uuid))["TaskStatus"] not in (0, 5):
        assert time.monotonic() < deadline, f"task not settled in {timeout} s: {info}"
        time.sleep(0.05)
    return info


@pytest.mark.timeout(120)
def test_only_the_active_instance_listens_and_the_client_finds_it(cluster: LocalCluster) -> None:
    addrs = cluster.snapshot_clone_addrs
    assert len(addrs) == 2
    active = cluster.wait_for_active_snapshot_clone()
    assert cluster.snapshot_clone_addr == addrs[active]
    assert not refuses(addrs[active])
    assert refuses(addrs[1 - active])
    # The client is given both, the standby first: it passes over the closed port.
    sc = SnapshotCloneClient([addrs[1 - active], addrs[active]], user=USER)
    assert isinstance(sc.snapshots(), list)


@pytest.mark.timeout(240)
def test_a_snapshot_dump_in_flight_finishes_on_the_standby(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/standby-dump"
    data = blocks()
    client.create(path, 10 * GiB)
    write(client, path, data)
    uuid = create(cluster, path, "dump")
    while (s := snapshot(cluster, uuid))["Status"] == PENDING and s["Progress"] < 10:
        time.sleep(0.01)
    fail_over(cluster)
    done = wait_snapshot(cluster, uuid, timeout=180)[-1]
    assert done["Status"] == DONE and done["Progress"] == 100
    for offset, block in data.items():
        assert snapshot_bytes(cluster, path, done["SeqNum"], offset, BLOCK) == block, offset


@pytest.mark.timeout(240)
def test_a_clone_and_a_recover_in_flight_end_done_with_the_bytes_or_failed(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    path = "/standby-src"
    data = blocks()
    client.create(path, 10 * GiB)
    write(client, path, data)
    snap = create(cluster, path, "base")
    wait_snapshot(cluster, snap)
    clone = ok(
        cluster, Action="Clone", User=USER, Source=snap, Destination="/standby-dst", Lazy="false"
    )["UUID"]
    fail_over(cluster)
    info = settle_task(cluster, clone)
    if info["TaskStatus"] == 0:
        with client.open("/standby-dst") as vol:
            for offset, block in data.items():
                assert vol.pread(BLOCK, offset) == block, offset
    else:
        # Failed cleanly: nothing is shown done, and the task cleans what it left.
        ok(cluster, Action="CleanCloneTask", User=USER, UUID=clone)
    write(client, path, {offset: os.urandom(BLOCK) for offset in data})
    recover = ok(cluster, Action="Recover", User=USER, Source=snap, Destination=path, Lazy="false")[
        "UUID"
    ]
    fail_over(cluster, signal.SIGKILL)
    if settle_task(cluster, recover)["TaskStatus"] == 0:
        with client.open(path) as vol:
            for offset, block in data.items():
                assert vol.pread(BLOCK, offset) == block, offset


@pytest.mark.timeout(120)
def test_an_instance_paused_past_its_lease_is_deposed(cluster: LocalCluster) -> None:
    old = cluster.wait_for_active_snapshot_clone()
    old_name = cluster.snapshot_clone_name(old)
    cluster.pause_snapshot_clone(index=old)
    try:
        deadline = time.monotonic() + 30
        while cluster.server_state(cluster.snapshot_clone_name(1 - old)) != "serving":
            assert time.monotonic() < deadline, "the standby never took over"
            time.sleep(0.02)
    finally:
        cluster.resume_snapshot_clone(index=old)
    # Resumed, it finds the later term, says so and stops serving.
    deadline = time.monotonic() + 30
    while cluster.server_state(old_name) != "deposed":
        assert time.monotonic() < deadline, "the paused instance was not deposed"
        time.sleep(0.02)
    assert "lost its lease" in cluster.log_tail(old_name, 20)
    cluster.kill_snapshot_clone(index=old)
    cluster.start_snapshot_clone(old)
    assert cluster.active_snapshot_clone() == 1 - old
