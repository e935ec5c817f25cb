"""What the cluster acknowledged survives killing its servers: the MDS alone, and all."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, conf_with, make_user


def test_mds_killed_and_restarted_loses_nothing(tmp_path: Path) -> None:
    user = make_user("curve")
    with LocalCluster(tmp_path / "c") as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        cluster_id = cbd.GetClusterId()
        assert cbd.Mkdir("/dir", user) == 0
        for i in range(20):
            assert cbd.Create(f"/dir/v{i}", user, 10 * GiB) == 0
        assert cbd.Extend("/dir/v3", user, 30 * GiB) == 0
        assert cbd.Unlink("/dir/v4", user) == 0
        assert cbd.Rename(user, "/dir/v5", "/dir/renamed") == 0
        before = {}
        for n in cbd.Listdir("/dir", user):
            info = curvefs.FileInfo_t()
            assert cbd.StatFile(f"/dir/{n}", user, info) == 0
            before[n] = (info.id, info.length, info.ctime)

        cluster.kill_mds(signal.SIGKILL)
        # a client with a short MDS budget, so the call made while the MDS is down is quick
        probe = curvefs.CBDClient()
        assert probe.Init(conf_with(cluster, tmp_path, {"mds.maxRetryMS": 1000})) == 0
        assert probe.StatFile("/dir/v0", user, curvefs.FileInfo_t()) == -2
        probe.UnInit()
        cluster.start_mds()

        assert cbd.GetClusterId() == cluster_id
        after = {}
        for n in cbd.Listdir("/dir", user):
            info = curvefs.FileInfo_t()
            assert cbd.StatFile(f"/dir/{n}", user, info) == 0
            after[n] = (info.id, info.length, info.ctime)
        assert after == before
        assert "v4" not in after and "renamed" in after
        assert after["v3"][1] == 30 * GiB
        assert cbd.Recover("/dir/v4", user, 0) == 0
        # ids keep increasing after a restart: a new file never reuses an acknowledged id
        assert cbd.Create("/dir/new", user, 10 * GiB) == 0
        info = curvefs.FileInfo_t()
        assert cbd.StatFile("/dir/new", user, info) == 0
        assert info.id > max(v[0] for v in before.values())
        cbd.UnInit()


def test_full_cluster_restart_keeps_data(tmp_path: Path) -> None:
    user = make_user("curve")
    data = os.urandom(4 * MiB)
    with LocalCluster(tmp_path / "c") as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        fd = cbd.Open("/vol", user)
        assert cbd.Write(fd, data, GiB - 2 * MiB, len(data)) == len(data)
        assert cbd.Close(fd) == 0
        cluster_id = cbd.GetClusterId()
        cbd.UnInit()
    # The folder is kept (it was given) and a new cluster object finds everything.
    with LocalCluster(tmp_path / "c") as again:
        cbd = curvefs.CBDClient()
        assert cbd.Init(again.conf_path) == 0
        assert cbd.GetClusterId() == cluster_id
        fd = cbd.Open("/vol", user)
        assert fd >= 0
        assert cbd.Read(fd, "", GiB - 2 * MiB, len(data)) == data
        assert cbd.Close(fd) == 0
        cbd.UnInit()


def test_sigkill_everything_then_restart(tmp_path: Path) -> None:
    user = make_user("curve")
    data = os.urandom(1 * MiB)
    cluster = LocalCluster(tmp_path / "c").start()
    try:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        fd = cbd.Open("/vol", user)
        assert cbd.Write(fd, data, 16 * MiB - 512 * 1024, len(data)) == len(data)
        cbd.UnInit()
        cluster.kill_mds(signal.SIGKILL)
        for cs in cluster.chunkserver_ids:
            cluster.kill_chunkserver(cs, signal.SIGKILL)
        cluster.start()
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        fd = cbd.Open("/vol", user)
        assert cbd.Read(fd, "", 16 * MiB - 512 * 1024, len(data)) == data
        cbd.UnInit()
    finally:
        cluster.stop()
