"""LocalCluster itself: where it keeps its state and that it leaves nothing running."""

from __future__ import annotations

import gc
import json
import os
import socket
from pathlib import Path

import pytest

import curvefs
from curvefs.testing import ClusterStartError, LocalCluster


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def serves(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def test_temporary_cluster_cleans_up() -> None:
    with LocalCluster(chunkservers=3, copysets=8) as cluster:
        data_dir = cluster.data_dir
        pids = [cluster.pid("mds")] + [cluster.pid(f"chunkserver-{i}") for i in (1, 2, 3)]
        addrs = [cluster.mds_addr] + [cluster.chunkserver_addr(i) for i in (1, 2, 3)]
        assert all(alive(p) for p in pids)
        assert all(serves(a) for a in addrs)
        assert os.path.isfile(cluster.conf_path)
        layout = json.loads(Path(data_dir, "cluster.json").read_text())
        assert layout["copysets"] == 8 and len(layout["chunkservers"]) == 3
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(data_dir)


def test_given_folder_is_kept_and_reused(tmp_path: Path) -> None:
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    with LocalCluster(tmp_path / "keep") as first:
        addr = first.mds_addr
        cbd = curvefs.CBDClient()
        assert cbd.Init(first.conf_path) == 0
        assert cbd.Mkdir("/kept", user) == 0
        cbd.UnInit()
    assert (tmp_path / "keep" / "cluster.json").is_file()
    with LocalCluster(tmp_path / "keep") as second:
        assert second.mds_addr == addr
        cbd = curvefs.CBDClient()
        assert cbd.Init(second.conf_path) == 0
        assert cbd.StatFile("/kept", user, curvefs.FileInfo_t()) == 0
        cbd.UnInit()


def test_dropped_cluster_kills_its_servers(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", copysets=4).start()
    pids = [cluster.pid("mds"), cluster.pid("chunkserver-1")]
    del cluster
    gc.collect()
    assert not any(alive(p) for p in pids)


def test_a_server_that_cannot_start_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cluster.json").write_text('{"mds_ports": [1], "chunkservers": []}')
    with pytest.raises(ClusterStartError):
        LocalCluster(tmp_path / "bad", start_timeout=10).start()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        LocalCluster(chunkservers=0)
    with pytest.raises(ValueError):
        LocalCluster(copysets=0)
