"""LocalCluster itself: where it keeps its state and that it leaves nothing running."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import curvefs
from curvefs import testing
from curvefs.testing import ClusterStartError, LocalCluster
from tests.helpers import child, conf_with, readline, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def _state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (T: stopped)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(") ", 1)[1][:1]


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


STARTER = """
import sys
from curvefs.testing import LocalCluster
c = LocalCluster(sys.argv[1], copysets=4).start()
print(c.pid("mds"), *(c.pid(f"chunkserver-{i}") for i in c.chunkserver_ids), flush=True)
sys.stdin.readline()
"""


def test_servers_stop_when_their_starter_is_killed(tmp_path: Path) -> None:
    # SIGKILL: no finalizer, no atexit; only the lifeline pipe's closing tells the servers.
    with child(
        [sys.executable, "-c", STARTER, str(tmp_path / "c")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as starter:
        pids = [int(p) for p in readline(starter.stdout, 60, "the starter's pids").split()]
        assert len(pids) == 4 and all(alive(p) for p in pids)
        starter.kill()
        starter.wait(timeout=10)
        wait_for(
            lambda: not any(alive(p) for p in pids),
            30,
            f"servers {[p for p in pids if alive(p)]} outlived their starter",
        )
    log = (tmp_path / "c" / "logs" / "mds.log").read_text()
    assert "the process that started this server is gone" in log


def test_servers_outlive_the_thread_that_started_them(tmp_path: Path) -> None:
    # Why a lifeline pipe and not PR_SET_PDEATHSIG: that fires when the starting *thread*
    # ends, and clusters are started and restarted from worker threads.
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    with LocalCluster(tmp_path / "c", copysets=4) as cluster:
        restarter = threading.Thread(target=cluster.restart)
        restarter.start()
        restarter.join(timeout=60)
        assert not restarter.is_alive(), "the restart did not return within 60 s"
        pid = cluster.pid("mds")
        # The thread is gone; the servers it started must serve on.
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        try:
            assert cbd.Mkdir("/after-the-thread", user) == 0
        finally:
            cbd.UnInit()
        assert alive(pid)


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


def test_fault_controls_and_server_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The servers take their filter from the environment: debug shows the MDS's calls.
    monkeypatch.setenv(testing.LOG_ENV, "info,curve_mds=debug")
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    since = testing.clusters_started()
    with LocalCluster(tmp_path / "c", copysets=3) as cluster:
        assert "MDS serving" in cluster.log_tail("mds")
        assert "chunkserver 1 serving" in cluster.log_tail("chunkserver-1")
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Mkdir("/d", user) == 0
        # The MDS logs a refusal at debug, before it answers.
        assert cbd.StatFile("/missing", user, curvefs.FileInfo_t()) == -6
        assert "DEBUG" in cluster.log_tail("mds", 5)

        # A paused leader keeps its process and port; the others elect a new one.
        leader = cluster.copyset_leader(1)
        cluster.pause_chunkserver(leader)
        pid = cluster.pid(f"chunkserver-{leader}")
        assert alive(pid) and cluster.is_paused(f"chunkserver-{leader}")
        assert leader not in cluster.running_chunkservers()
        assert cluster.copyset_leader(1, timeout=30) != leader
        cluster.resume_chunkserver(leader)
        assert leader in cluster.running_chunkservers()

        stopped = cluster.pid("chunkserver-2")
        cluster.stop_chunkserver(2)
        assert not alive(stopped)
        assert "chunkserver 2 stopped" in cluster.log_tail("chunkserver-2", 5)
        cluster.start_chunkserver(2)
        assert 2 in cluster.running_chunkservers()

        # A paused MDS is stopped by the kernel and answers nothing (a client with a
        # 0.5 s budget gives up); resumed, it answers again.
        quick = curvefs.CBDClient()
        assert quick.Init(conf_with(cluster, tmp_path, {"mds.maxRetryMS": 500})) == 0
        mds_pid = cluster.pid("mds")
        cluster.pause_mds()
        assert cluster.is_paused("mds") and _state(mds_pid) == "T"
        assert quick.StatFile("/d", user, curvefs.FileInfo_t()) == -2  # FAILED: no answer
        cluster.resume_mds()
        assert not cluster.is_paused("mds") and _state(mds_pid) != "T"
        assert quick.StatFile("/d", user, curvefs.FileInfo_t()) == 0
        quick.UnInit()
        # A restart is a new process on the same port and folder, which still has /d.
        cluster.restart_mds()
        assert cluster.pid("mds") != mds_pid and not alive(mds_pid)
        assert "MDS stopped" in cluster.log_tail("mds", 100)
        assert cbd.StatFile("/d", user, curvefs.FileInfo_t()) == 0
        # A paused server is still stopped cleanly with the cluster.
        cluster.pause_chunkserver(3)
        cbd.UnInit()
    logs = testing.recent_server_logs(since, lines=3)
    assert {server for _, server, _ in logs} == {
        "mds",
        "chunkserver-1",
        "chunkserver-2",
        "chunkserver-3",
        "snapshotclone",
    }
    assert all(lines for _, _, lines in logs)


def test_a_temporary_cluster_keeps_its_log_tails() -> None:
    with LocalCluster(copysets=2) as cluster:
        data_dir = cluster.data_dir
    assert not os.path.exists(data_dir)
    assert "MDS stopped" in cluster.log_tail("mds")
    assert "chunkserver 3 stopped" in cluster.log_tail("chunkserver-3")


@contextlib.contextmanager
def _volume(cluster: LocalCluster) -> Iterator[tuple[curvefs.CBDClient, int]]:
    """A CBDClient on ``cluster`` and the fd of a new 10 GiB volume, closed after."""
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    assert cbd.Create("/v", user, 10 << 30) == 0
    fd = cbd.Open("/v", user)
    assert fd >= 0
    try:
        yield cbd, fd
    finally:
        cbd.Close(fd)
        cbd.UnInit()


def _chunk_file_flags(pid: int) -> list[int]:
    """The open flags of every chunk file that process ``pid`` holds open."""
    flags = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue  # closed meanwhile
        # `<name>.tmp` is a record being replaced (fsynced before its rename), not a
        # chunk file.
        name = Path(target).name
        if "/copysets/" in target and name.startswith("chunk_") and not name.endswith(".tmp"):
            flags.append(int(info["flags"].strip(), 8))
    return flags


@pytest.mark.parametrize("chunk_fsync", [False, True])
def test_chunk_fsync_opens_chunk_files_synchronous(tmp_path: Path, chunk_fsync: bool) -> None:
    cluster = LocalCluster(tmp_path / "c", copysets=1, chunk_fsync=chunk_fsync)
    with cluster, _volume(cluster) as (cbd, fd):
        data = os.urandom(64 << 10)
        assert cbd.Write(fd, data, 0, len(data)) == len(data)
        assert cbd.Read(fd, bytearray(len(data)), 0, len(data)) == data
        # One copyset: every chunkserver holds the chunk, and keeps it open. Followers
        # apply a write once it is committed, which may be after the client's ack.
        for cs_id in cluster.chunkserver_ids:
            pid = cluster.pid(f"chunkserver-{cs_id}")
            deadline = time.monotonic() + 10
            while not (flags := _chunk_file_flags(pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert flags, f"chunkserver {cs_id} holds no chunk file open after 10 s"
            assert all(bool(f & os.O_DSYNC) == chunk_fsync for f in flags), (cs_id, flags)


def test_transfer_leader_moves_leadership_and_it_stays(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", copysets=1)
    with cluster, _volume(cluster) as (cbd, fd):
        before = os.urandom(16 << 10)
        assert cbd.Write(fd, before, 0, len(before)) == len(before)
        leader = cluster.copyset_leader(1)
        target = max(i for i in cluster.chunkserver_ids if i != leader)
        cluster.transfer_leader(1, target, timeout=20)
        assert cluster.copyset_leader(1) == target
        # IO follows the new leader, and the old data is there.
        assert cbd.Read(fd, bytearray(len(before)), 0, len(before)) == before
        after = os.urandom(16 << 10)
        assert cbd.Write(fd, after, 0, len(after)) == len(after)
        # Earlier members ask for leadership back with every probe; a transferred
        # leadership is not handed back.
        time.sleep(2.5)
        assert cluster.copyset_leader(1) == target
        assert cbd.Read(fd, bytearray(len(after)), 0, len(after)) == after
        with pytest.raises(ValueError):
            cluster.transfer_leader(1, 99)
        cluster.transfer_leader(1, leader, timeout=20)
        assert cluster.copyset_leader(1) == leader


def test_a_proxied_cluster_puts_its_proxies_on_the_clients_path(tmp_path: Path) -> None:
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    with LocalCluster(tmp_path / "c", copysets=3, proxied=True) as cluster:
        assert cluster.proxied
        layout = json.loads((tmp_path / "c" / "cluster.json").read_text())
        assert layout["external_ip"] == "127.0.0.2"
        proxies = {s: cluster.fault_proxy(s) for s in ["mds", "chunkserver-1"]}
        assert proxies["mds"].address == f"127.0.0.2:{cluster.mds_addr.rsplit(':', 1)[1]}"
        assert proxies["mds"].target == cluster.mds_addr
        with pytest.raises(KeyError):
            cluster.fault_proxy("chunkserver-9")
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/p", user, 10 << 30) == 0
        fd = cbd.Open("/p", user)
        # Three chunks over three copysets: all their data goes through the proxies of
        # their leaders, whichever chunkservers lead them.
        for i in range(3):
            assert cbd.Write(fd, b"p" * 4096, i * (16 << 20), 4096) == 4096
        cbd.Close(fd)
        cbd.UnInit()
        sent = [
            cluster.fault_proxy(f"chunkserver-{cs}").forwarded("upstream")
            for cs in cluster.chunkserver_ids
        ]
        assert sum(sent) > 3 * 4096, sent
        assert proxies["mds"].forwarded("upstream") > 0
    # The folder keeps what its first start chose.
    with LocalCluster(tmp_path / "c") as again:
        assert again.proxied
        assert again.fault_proxy("mds").accepted == 0
    with LocalCluster(tmp_path / "d", copysets=1) as plain:
        assert not plain.proxied
        with pytest.raises(RuntimeError):
            plain.fault_proxy("mds")


def test_bad_options_are_refused_before_any_server_starts(tmp_path: Path) -> None:
    # Both tables are curve-cluster's: a typo must not silently leave a default in place.
    with pytest.raises(ValueError, match=r"mds\.rpcTimeoutMs"):
        LocalCluster(tmp_path / "a", client_options={"mds.rpcTimeoutMs": 1}).start()
    with pytest.raises(ValueError, match=r"mds\.rpcTimeoutMS"):
        LocalCluster(tmp_path / "b", client_options={"mds.rpcTimeoutMS": "soon"}).start()
    with pytest.raises(ValueError, match="file_record_expire"):
        LocalCluster(tmp_path / "c", mds_options={"file_record_expire": 1}).start()
    with pytest.raises(ValueError):
        LocalCluster(mds_count=0)


def refuses(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2.0)
        return s.connect_ex((host, int(port))) != 0


@pytest.mark.timeout(120)
def test_a_dead_servers_port_refuses_and_a_taken_port_fails_the_restart(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c", copysets=2) as cluster:
        cs_addr, mds_addr = cluster.chunkserver_addr(2), cluster.mds_addr
        cluster.kill_chunkserver(2)
        cluster.kill_mds()
        # Nobody keeps a listening copy: the ports refuse as a dead server's would.
        assert refuses(cs_addr) and refuses(mds_addr)

        host, port = cs_addr.rsplit(":", 1)
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((host, int(port)))
            squatter.listen()
            with pytest.raises(ClusterStartError, match=f"chunkserver-2 .*port {cs_addr} is taken"):
                cluster.start_chunkserver(2)
        assert 2 not in cluster.running_chunkservers()
        cluster.start_chunkserver(2)
        cluster.start_mds()
        assert not refuses(cs_addr) and not refuses(mds_addr)
        user = curvefs.UserInfo_t()
        user.owner = "curve"
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Mkdir("/back", user) == 0
        cbd.UnInit()


@pytest.mark.timeout(120)
def test_a_standby_mds_takes_over_and_the_old_one_stands_by(tmp_path: Path) -> None:
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    options = {"mds.maxRetryMS": 12345}
    with LocalCluster(tmp_path / "c", copysets=2, mds_count=2, client_options=options) as cluster:
        assert cluster.mds_count == 2 and len(cluster.mds_addrs) == 2
        keys = dict(
            line.split("=", 1)
            for line in Path(cluster.conf_path).read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        assert keys["mds.listen.addr"] == ",".join(cluster.mds_addrs)
        assert keys["mds.maxRetryMS"] == "12345"
        # The client core's default (upstream's sample file says 2), from its one table.
        assert keys["mds.maxFailedTimesBeforeChangeMDS"] == "5"
        assert cluster.active_mds() == 0
        assert cluster.mds_name(1) == "mds-1" and alive(cluster.pid("mds-1"))
        # Upstream's followers keep their port closed until elected; so does a standby.
        assert refuses(cluster.mds_addrs[1]) and not refuses(cluster.mds_addrs[0])
        assert "standing by" in cluster.log_tail("mds-1")
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        try:
            assert cbd.Mkdir("/before", user) == 0

            cluster.kill_mds()  # the active one
            assert cluster.wait_for_active_mds(timeout=20) == 1
            assert refuses(cluster.mds_addrs[0]) and not refuses(cluster.mds_addrs[1])
            # The standby loaded what the first one committed; the client walked over.
            assert cbd.StatFile("/before", user, curvefs.FileInfo_t()) == 0
            assert cbd.Mkdir("/after", user) == 0

            cluster.start_mds(0)  # back as a standby
            assert cluster.active_mds() == 1 and refuses(cluster.mds_addrs[0])
            cluster.stop_mds()  # MDS 1, cleanly
            assert cluster.wait_for_active_mds(timeout=20) == 0
            assert cbd.StatFile("/after", user, curvefs.FileInfo_t()) == 0

            cluster.start_mds()  # every MDS not running: MDS 1, as a standby
            standby = cluster.pid("mds-1")
            cluster.pause_mds(index=1)
            assert cluster.is_paused("mds-1") and _state(standby) == "T"
            cluster.resume_mds(index=1)
            assert not cluster.is_paused("mds-1") and _state(standby) != "T"
            stood_by = cluster.log_tail("mds-1", 10_000).count("standing by")
            cluster.restart_mds(index=1)
            # A new process, standing by again (its port closed) behind the active MDS 0.
            assert cluster.pid("mds-1") != standby and not alive(standby)
            assert cluster.log_tail("mds-1", 10_000).count("standing by") > stood_by
            assert refuses(cluster.mds_addrs[1])
            assert cluster.active_mds() == 0
            with pytest.raises(IndexError):
                cluster.kill_mds(index=2)
        finally:
            cbd.UnInit()
    assert "MDS stopped" in cluster.log_tail("mds-1")


@pytest.mark.timeout(120)
def test_a_paused_active_mds_is_replaced_within_its_lease_and_stops_when_resumed(
    tmp_path: Path,
) -> None:
    # Upstream's MDS holds an etcd lease (mds.leader.sessionInterSec); so does ours, here 1 s.
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    options = {"mds.rpcTimeoutMS": 300, "mds.maxRetryMS": 20_000}
    with LocalCluster(
        tmp_path / "c",
        copysets=2,
        mds_count=2,
        mds_options={"leader_lease_ms": 1000},
        client_options=options,
    ) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        try:
            assert cbd.Mkdir("/before", user) == 0
            old = cluster.pid("mds")
            cluster.pause_mds()
            assert _state(old) == "T"
            paused_at = time.monotonic()
            wait_for(lambda: cluster.active_mds() == 1, 30, "the standby taking the lease")
            took = time.monotonic() - paused_at
            # Lease 1 s, a tenth of it as margin, and the standby's poll: a bound with room
            # for a loaded machine, far below "never" (the old flock never lapsed).
            assert took < 15, f"the standby took {took:.1f} s to take over a 1 s lease"
            # The client walks over to the new active MDS; its store has what was committed.
            assert cbd.StatFile("/before", user, curvefs.FileInfo_t()) == 0
            assert cbd.Mkdir("/after", user) == 0

            # A client that knows only the old MDS: once resumed, the old one must not answer
            # (it would: "/before" is in the store it had), and it stops serving.
            only_old = curvefs.CBDClient()
            conf = conf_with(
                cluster,
                tmp_path,
                {"mds.listen.addr": cluster.mds_addrs[0], "mds.maxRetryMS": 3000},
            )
            assert only_old.Init(conf) == 0
            try:
                cluster.resume_mds(index=0)
                assert only_old.StatFile("/before", user, curvefs.FileInfo_t()) != 0
                wait_for(lambda: not alive(old), 30, "the deposed MDS stopping")
                assert "lost its lease" in cluster.log_tail("mds", 50)
                assert refuses(cluster.mds_addrs[0])
            finally:
                only_old.UnInit()
            assert cluster.active_mds() == 1
            assert cbd.StatFile("/after", user, curvefs.FileInfo_t()) == 0
        finally:
            cbd.UnInit()


def _tree_bytes(path: Path) -> int:
    """Bytes the files under `path` take on disk (holes not counted)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def test_a_copysets_raft_log_stays_small_whatever_was_written(tmp_path: Path) -> None:
    # The log holds every write's data until a snapshot lets it go; the chunk files are
    # the snapshot, so 128 MiB of overwrites of one chunk must leave the chunk and a few
    # MiB of log, not the 128 MiB that went through Raft. The client sends 1 MiB
    # requests, as the service's flatten does (stock clients split at 64 KiB).
    mib = 1 << 20
    with (
        LocalCluster(tmp_path / "c", copysets=1) as cluster,
        curvefs.Client(
            conf_with(cluster, tmp_path, {"global.fileIOSplitMaxSizeKB": 1024}), user="curve"
        ) as client,
    ):
        client.create("/busy", 10 << 30)
        with client.open("/busy") as volume:
            for i in range(128):
                volume.pwrite(bytes([i]) * mib, (i % 16) * mib)

        def logs() -> list[int]:
            return [
                _tree_bytes(Path(cluster.chunkserver_data_dir(cs)) / "raft")
                for cs in cluster.chunkserver_ids
            ]

        # Snapshots are taken on a timer (every 500 ms at most): wait for them.
        wait_for(lambda: max(logs()) < 24 * mib, 20, f"Raft logs of {logs()} bytes")
