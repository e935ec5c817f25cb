"""The client rides through the loss of a chunkserver or of the MDS, losing no byte."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, make_user, wait_for
from tests.test_faults_scenarios import replicas_differ


def test_io_survives_killing_a_chunkserver(tmp_path: Path) -> None:
    user = make_user("curve")
    with LocalCluster(tmp_path / "c", copysets=12) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        fd = cbd.Open("/vol", user)
        # 12 chunks over 12 copysets: every chunkserver leads some of them
        before = os.urandom(12 * 16 * MiB)
        assert cbd.Write(fd, before, 0, len(before)) == len(before)

        cluster.kill_chunkserver(1, signal.SIGKILL)
        after = os.urandom(4 * MiB)
        # chunks whose leader died: the write waits for a new leader, then lands
        for off in range(0, 12 * 16 * MiB, 16 * MiB):
            assert cbd.Write(fd, after, off, len(after)) == len(after)
        expected = bytearray(before)
        for off in range(0, 12 * 16 * MiB, 16 * MiB):
            expected[off : off + len(after)] = after
        assert cbd.Read(fd, "", 0, len(expected)) == bytes(expected)

        # the killed one comes back and catches up (every replica's chunk files hold the
        # same bytes); then another one goes
        cluster.start_chunkserver(1)
        wait_for(
            lambda: not replicas_differ(cluster),
            120,
            "chunkserver 1 caught up (every chunk file alike on the three replicas)",
            interval=0.5,
        )
        cluster.kill_chunkserver(2, signal.SIGKILL)
        assert cbd.Read(fd, "", 0, len(expected)) == bytes(expected)
        assert cbd.Close(fd) == 0
        cbd.UnInit()


def test_allocated_io_survives_a_short_mds_outage(tmp_path: Path) -> None:
    user = make_user("curve")
    with LocalCluster(tmp_path / "c") as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        fd = cbd.Open("/vol", user)
        first = os.urandom(2 * MiB)
        assert cbd.Write(fd, first, 0, len(first)) == len(first)

        cluster.kill_mds(signal.SIGKILL)
        # the segment is allocated and the lease still runs: IO needs no MDS
        second = os.urandom(1 * MiB)
        assert cbd.Write(fd, second, MiB, len(second)) == len(second)
        assert cbd.Read(fd, "", 0, 2 * MiB) == first[:MiB] + second
        cluster.start_mds()

        # a new segment needs the MDS again, which is back
        third = os.urandom(MiB)
        assert cbd.Write(fd, third, 5 * GiB, len(third)) == len(third)
        assert cbd.Read(fd, "", 5 * GiB, MiB) == third
        assert cbd.Close(fd) == 0
        cbd.UnInit()


def test_cold_restart_after_a_chunkserver_missed_writes(tmp_path: Path) -> None:
    # A chunkserver is down while writes are acknowledged without it; then the whole
    # cluster restarts. The member that missed the writes must not lead with stale data.
    user = make_user("curve")
    cluster = LocalCluster(tmp_path / "c", copysets=6).start()
    try:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        fd = cbd.Open("/vol", user)
        old = os.urandom(6 * 16 * MiB)
        assert cbd.Write(fd, old, 0, len(old)) == len(old)
        cluster.kill_chunkserver(1, signal.SIGKILL)
        new = os.urandom(6 * 16 * MiB)
        assert cbd.Write(fd, new, 0, len(new)) == len(new)
        assert cbd.Close(fd) == 0
        cbd.UnInit()

        cluster.restart()
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        fd = cbd.Open("/vol", user)
        assert cbd.Read(fd, "", 0, len(new)) == new
        assert cbd.Close(fd) == 0
        cbd.UnInit()
    finally:
        cluster.stop()
