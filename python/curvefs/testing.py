"""A Curve cluster on loopback for tests, demos and benchmarks.

``LocalCluster`` runs one MDS (or an active MDS and standbys) and N chunkservers (three by
default), each its own process speaking Curve's protocol on a loopback port, with their
state in one data folder. Each server is a separate process so that a test can kill
exactly one of them with SIGKILL and start it again on the same folder, which is how
Curve's own fault tests work.

The cluster's layout (``cluster.json``: ports, copysets, MDS options) and its
``client.conf`` belong to the Rust crate ``curve-cluster``; this module asks for them
(``curvefs._core.local_cluster_layout`` and friends) and passes on what a caller overrides.
The first start creates the layout; later starts on the same folder reuse it, so the
cluster comes back on the same addresses with the same cluster id and data.

Ports are never chosen and then left free: this process binds each server's socket
(SO_REUSEADDR, not listening) and hands it to the server process, keeping no copy, so no
other process can take a port in between, a killed server's port refuses connections as
a dead server's does, and a restart whose port something else took fails at once with
``ClusterStartError``. With ``mds_count > 1`` the MDSes elect the active one through a
lock in the data folder; the others stand by with their ports closed, as upstream's MDS
followers do, and the first to take the lock when the active one dies loads the state
and opens its port.

Each server logs to ``<data_dir>/logs/<server>.log`` (``mds``, ``mds-<i>``,
``chunkserver-<id>``): its ``tracing`` events at the level ``CURVEFS_LOG`` names (``info``
by default; any tracing-subscriber filter, e.g. ``debug`` or
``info,curve_chunkserver=debug``) and its stderr. ``log_tail`` reads them, also after a
temporary cluster removed its folder.

Fault controls for tests: ``kill_*`` (SIGKILL by default), ``stop_*`` (SIGTERM, a clean
exit), ``start_*``, ``pause_*``/``resume_*`` (SIGSTOP/SIGCONT: a hung server whose sockets
stay open), ``restart_mds``, ``active_mds`` and ``copyset_leader`` (asks the chunkservers'
GetLeader).

Network faults: ``LocalCluster(proxied=True)`` puts a ``FaultProxy`` (delay, blackhole,
drop, reset; ``curvefs._fault_proxy``) on the clients' path to every MDS and every
chunkserver; ``fault_proxy("mds")``/``fault_proxy("chunkserver-<id>")`` returns it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from curvefs import _core
from curvefs._fault_proxy import FaultProxy
from curvefs.client import Client

__all__ = [
    "CLIENT_OPTIONS_ENV",
    "LOG_ENV",
    "TRANSPORTS",
    "TRANSPORT_ENV",
    "ClusterStartError",
    "FaultProxy",
    "LocalCluster",
]

_HOST = "127.0.0.1"
# Where a proxied cluster's clients reach its servers, on the servers' own ports: another
# loopback address (all of 127/8 is loopback on Linux), so one port number names a server
# on both paths. The layout records it as `external_ip`; the MDS hands it to clients as
# each chunkserver's externalIp, and the chunkservers replicate over _HOST, off the proxy.
_PROXY_HOST = "127.0.0.2"


# The wires a client can reach the local cluster over (`mds.transport` and
# `chunkserver.transport` in client.conf); the servers answer both on every port.
TRANSPORTS = ("baidu_std", "grpc")
# Picks the transport of clusters that do not name one: the switch that runs a whole test
# suite over gRPC (`CURVEFS_TRANSPORT=grpc pytest`).
TRANSPORT_ENV = "CURVEFS_TRANSPORT"
# client.conf keys every local cluster writes into its client.conf ahead of its own
# ``client_options`` ("key=value,key=value"): a whole test suite's setting, so the clusters
# that tests start in other processes (the CLI's, the docs' examples) get it too.
CLIENT_OPTIONS_ENV = "CURVEFS_LOCAL_CLIENT_OPTIONS"


# The servers' log filter (tracing-subscriber's EnvFilter syntax), read by each server
# process at start; `info` when unset. Servers inherit the environment of the test.
LOG_ENV = "CURVEFS_LOG"

# How many lines of each server's log a stopped temporary cluster keeps in memory.
_SAVED_LOG_LINES = 200


class ClusterStartError(RuntimeError):
    """A server of the local cluster exited or did not serve in time."""


class _LogBook:
    """Where one cluster's server logs are, and their tails once its folder is gone.

    Held by a module-level list rather than by the cluster, so that a test harness can
    print the logs of a failed test's clusters after they were stopped and dropped
    (``recent_server_logs``) without keeping any cluster alive."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.dir: Path | None = None
        self.servers: list[str] = []
        self.saved: dict[str, list[str]] = {}
        self.running = False

    def tail(self, server: str, lines: int) -> list[str]:
        if self.dir is not None:
            path = self.dir / "logs" / f"{server}.log"
            try:
                with open(path, "rb") as f:
                    return _last_lines(f, lines)
            except OSError:
                pass
        return self.saved.get(server, [])[-lines:] if lines > 0 else []

    def save(self) -> None:
        self.saved = {s: self.tail(s, _SAVED_LOG_LINES) for s in self.servers}


def _last_lines(f: io.BufferedReader, lines: int) -> list[str]:
    if lines <= 0:
        return []
    # Read back from the end in blocks until enough newlines are in hand.
    end = f.seek(0, os.SEEK_END)
    block = 64 * 1024
    data = b""
    pos = end
    while pos > 0 and data.count(b"\n") <= lines:
        step = min(block, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-lines:]


_LOGBOOKS: deque[_LogBook] = deque(maxlen=64)
_serial = 0


def clusters_started() -> int:
    """How many ``LocalCluster`` starts this process has seen (a marker for
    ``recent_server_logs``)."""
    return _serial


def recent_server_logs(
    since: int, *, lines: int = 50, running: bool = False
) -> list[tuple[str, str, list[str]]]:
    """``(data_dir, server, last lines)`` of every server of the clusters started after
    marker ``since`` (``clusters_started()``), and with ``running=True`` of the clusters
    still running too, whenever they started. For printing when a test fails."""
    out = []
    for book in list(_LOGBOOKS):
        if book.serial > since or (running and book.running):
            where = str(book.dir) if book.dir is not None else "(removed)"
            out += [(where, s, book.tail(s, lines)) for s in book.servers]
    return out


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), not listening, for a server
    process to inherit. SO_REUSEADDR, so that a restart can rebind a port whose last server
    left connections in TIME_WAIT (a port another socket listens on still fails); set after
    a fresh port's bind, so that no two fresh sockets can share a port, and before the
    server's connections inherit it from the socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port != 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except BaseException:
        sock.close()
        raise
    return sock


_lifeline: tuple[int, int] | None = None  # (pid, read end) of this process's lifeline pipe
_lifeline_lock = threading.Lock()


def _lifeline_fd() -> int:
    """The read end of a pipe whose write end this process keeps open for life, handed to
    every server it starts (``--lifeline-fd``): when this process ends, however (SIGKILL
    included), the pipe closes and the servers stop, so no server outlives its test run.
    Both ends are close-on-exec, so no other child keeps the pipe open; a forked child makes
    its own."""
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None or _lifeline[0] != os.getpid():
            read_end, _write_end = os.pipe()  # the write end is never closed on purpose
            _lifeline = (os.getpid(), read_end)
        return _lifeline[1]


def _stop_process(proc: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        if sig != signal.SIGKILL:
            # A paused (SIGSTOPped) server acts on SIGTERM only once it runs again.
            proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat (R, S, T, Z, ...); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return None


def _close_stdout(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdout is not None:
        proc.stdout.close()


def _kill_all(procs: dict[str, subprocess.Popen[bytes]], sockets: dict[str, socket.socket]) -> None:
    # Runs from weakref.finalize when a cluster is dropped without stop(): no server
    # process may outlive the Python process that started it.
    for proc in procs.values():
        _stop_process(proc, signal.SIGKILL, 5.0)
        _close_stdout(proc)
    procs.clear()
    for sock in sockets.values():
        sock.close()
    sockets.clear()


class LocalCluster:
    """``mds_count`` MDSes and ``chunkservers`` chunkservers on loopback, persisted in
    ``data_dir``.

    ``with LocalCluster() as cluster:`` starts it in a temporary folder (removed on exit)
    and stops it on exit; ``LocalCluster(data_dir=...)`` uses and keeps a given folder, so a
    second cluster on the same folder finds the first one's files, volumes and data (and
    its layout: the counts given to the second are not used). ``cluster.conf_path`` is a
    client.conf that ``CBDClient.Init`` accepts, listing every MDS in ``mds.listen.addr``.

    ``transport`` is the wire that client.conf selects: ``"baidu_std"`` (brpc's protocol,
    what stock Curve servers speak, and what a client.conf without curvefs's keys gets) or
    ``"grpc"``; by default the ``CURVEFS_TRANSPORT`` environment variable, else baidu_std.

    ``chunk_fsync=True`` makes the chunkservers put every write on stable storage before
    they acknowledge it (chunk files opened ``O_DSYNC``, as upstream's, and their records
    fsynced) and the MDS fsync every commit of its store, as upstream's etcd does; by
    default a write or a metadata change survives a killed server but not a power cut.

    ``proxied=True`` makes clients reach every server through a fault-injecting proxy of
    its own (``fault_proxy``), for network faults on the path to one server. Replication
    between chunkservers does not go through the proxies: a fault there is one on a
    client's path, not a partition of the copyset. A folder keeps what its first start
    chose.

    ``snapshot_clone=True`` (the default) runs the cluster's snapshot/clone service, upstream's
    HTTP API, as ``snapshot_clone_count`` instances (one by default) at ``snapshot_clone_addrs``:
    the one holding the lease of the service's folder serves and runs the tasks, the others
    stand by with their ports closed and take over (resuming its tasks) when it dies, as the
    MDSes do. Instance ``i`` is the server ``"snapshotclone"`` for ``i == 0`` and
    ``"snapshotclone-<i>"`` after; its methods act on the one ``index`` names, by default on
    the active one. A folder keeps what its first start chose.

    ``client_options`` are client.conf keys and values written in place of the client
    core's defaults (after those the ``CURVEFS_LOCAL_CLIENT_OPTIONS`` environment variable
    names, "key=value,key=value", which this project's test suite sets);
    ``mds_options`` are fields of the MDS's options (``root_user``,
    ``file_record_expire_us``, ...); ``snapshot_clone_options`` are keys of upstream's
    ``snapshot_clone_server.conf`` the service takes (``server.maxSnapshotLimit``). Unknown
    names in any raise ``ValueError`` at start; a folder keeps what its first start chose.

    MDS ``i`` (its address is ``mds_addrs[i]``) is the server ``"mds"`` for ``i == 0`` and
    ``"mds-<i>"`` after (for ``pid`` and ``log_tail``). The MDS methods act on the one
    ``index`` names, by default on the active one (``start_mds``: on every MDS not
    running).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        chunkservers: int = 3,
        mds_count: int = 1,
        copysets: int = 100,
        root_password: str = "root_password",
        mds_options: Mapping[str, int | str] | None = None,
        snapshot_clone_options: Mapping[str, int | str] | None = None,
        client_options: Mapping[str, str | int] | None = None,
        transport: str | None = None,
        chunk_fsync: bool = False,
        start_timeout: float = 30.0,
        proxied: bool = False,
        snapshot_clone: bool = True,
        snapshot_clone_count: int = 1,
    ) -> None:
        if chunkservers < 1:
            raise ValueError("a cluster needs at least one chunkserver")
        if mds_count < 1:
            raise ValueError("a cluster needs at least one MDS")
        if copysets < 1:
            raise ValueError("a logical pool needs at least one copyset")
        if snapshot_clone_count < 1:
            raise ValueError("a snapshot/clone service needs at least one instance")
        transport = transport or os.environ.get(TRANSPORT_ENV) or "baidu_std"
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self._transport = transport
        self._owns_dir = data_dir is None
        self._dir = Path(data_dir) if data_dir is not None else None
        self._requested_chunkservers = chunkservers
        self._requested_mds = mds_count
        self._requested_copysets = copysets
        self._requested_root_password = root_password
        self._mds_options = dict(mds_options or {})
        self._snapshot_clone_options = dict(snapshot_clone_options or {})
        self._client_options = {k: str(v) for k, v in (client_options or {}).items()}
        self._chunk_fsync = chunk_fsync
        self._start_timeout = start_timeout
        self._requested_proxied = proxied
        self._requested_snapshot_clone = snapshot_clone_count if snapshot_clone else 0
        self._proxies: dict[str, FaultProxy] = {}
        # What curve-cluster says of the layout (ClusterLayout::describe).
        self._layout: dict[str, Any] = {}
        self._conf_path: str | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # The last state each running server reported ("serving", "standby", "deposed").
        self._states: dict[str, str] = {}
        # When each server was last seen to start serving (a count): of two MDSes that
        # report serving, the later one holds the lease (the other is stopped or deposed).
        self._serving_since: dict[str, int] = {}
        self._state_reads = 0
        # Sockets bound for a new layout's servers, until each server takes its own.
        self._sockets: dict[str, socket.socket] = {}
        self._paused: set[str] = set()
        self._logbook: _LogBook | None = None
        self._finalizer = weakref.finalize(self, _kill_all, self._procs, self._sockets)

    # -- attributes -----------------------------------------------------------------

    @property
    def data_dir(self) -> str:
        if self._dir is None:
            raise RuntimeError("the cluster has not been started")
        return str(self._dir)

    @property
    def transport(self) -> str:
        """The wire the generated client.conf selects: ``"baidu_std"`` or ``"grpc"``."""
        return self._transport

    @property
    def conf_path(self) -> str:
        """The client.conf (Curve's format) pointing at this cluster's MDSes."""
        if self._conf_path is None:
            raise RuntimeError("the cluster has not been started")
        return self._conf_path

    @property
    def root_password(self) -> str:
        return str(self._layout.get("root_password", self._requested_root_password))

    @property
    def mds_count(self) -> int:
        """How many MDSes the cluster has: one active, the others standing by."""
        return len(self._mds_entries()) if self._layout else self._requested_mds

    @property
    def mds_addrs(self) -> list[str]:
        """Every MDS's address, in ``mds.listen.addr`` order."""
        return [str(m["addr"]) for m in self._mds_entries()]

    @property
    def mds_addr(self) -> str:
        """The first MDS's address (the one that starts active)."""
        return self.mds_addrs[0]

    def mds_name(self, index: int) -> str:
        """The server name of MDS ``index`` (``"mds"``, ``"mds-1"``, ...)."""
        return str(self._mds_entry(index)["name"])

    @property
    def chunkserver_ids(self) -> list[int]:
        return [int(cs["id"]) for cs in self._chunkservers()]

    def chunkserver_addr(self, chunkserver_id: int) -> str:
        return str(self._chunkserver(chunkserver_id)["addr"])

    @property
    def logical_pool_id(self) -> int:
        return int(self._layout.get("logical_pool_id", 1))

    @property
    def copyset_ids(self) -> list[int]:
        """The copysets of the logical pool: ``1..copysets``."""
        count = self._layout.get("copysets")
        if count is None:
            raise RuntimeError("the cluster has not been started")
        return list(range(1, int(count) + 1))

    def chunkserver_data_dir(self, chunkserver_id: int) -> str:
        """The folder of chunkserver ``chunkserver_id``'s chunk files."""
        return str(self._chunkserver(chunkserver_id)["data_dir"])

    def log_path(self, server: str) -> str:
        """The log file of ``"mds"``, ``"mds-<i>"`` or ``"chunkserver-<id>"``."""
        for entry in self._servers():
            if entry["name"] == server:
                return str(entry["log"])
        raise KeyError(server)

    def log_tail(self, server: str, lines: int = 50) -> str:
        """The last ``lines`` lines of the log of ``"mds"``, ``"mds-<i>"`` or
        ``"chunkserver-<id>"`` (also after a temporary cluster removed its folder: the
        last 200 are kept)."""
        if self._logbook is None:
            return ""
        return "\n".join(self._logbook.tail(server, lines))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every server not running and wait until each serves (or, for an MDS
        while another is active, stands by)."""
        global _serial
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="curvefs-cluster-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        (self._dir / "logs").mkdir(exist_ok=True)
        try:
            self._layout = self._load_or_create_layout()
            self._conf_path = self._write_client_conf()
        except BaseException:
            self._close_sockets()
            raise
        self._start_proxies()
        if self._logbook is None or self._logbook.dir != self._dir:
            _serial += 1
            self._logbook = _LogBook(_serial)
            self._logbook.dir = self._dir
            self._logbook.servers = [str(e["name"]) for e in self._servers()]
            _LOGBOOKS.append(self._logbook)
        self._logbook.running = True
        try:
            self.start_mds()
            for cs_id in self.chunkserver_ids:
                self.start_chunkserver(cs_id)
            if self._snapshot_clone_entries():
                self.start_snapshot_clone()
        except BaseException:
            self._stop_all(signal.SIGKILL)
            self._close_proxies()
            raise
        return self

    def stop(self) -> None:
        """Stop every server gracefully (SIGTERM, then SIGKILL after a grace period)."""
        self._stop_all(signal.SIGTERM)
        self._close_proxies()
        if self._logbook is not None:
            self._logbook.running = False
        if self._owns_dir and self._dir is not None:
            if self._logbook is not None:
                self._logbook.save()
                self._logbook.dir = None
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self) -> None:
        """Stop every server and start them again on the same folder and ports."""
        self._stop_all(signal.SIGTERM)
        self.start()

    # -- the MDSes --------------------------------------------------------------------

    def active_mds(self) -> int | None:
        """The index of the MDS that is active (holds the lease and serves, or is paused
        while nobody took the lease from it), or ``None`` while none is (during a
        failover)."""
        return self._active(self._mds_entries())

    def _active(self, entries: list[dict[str, Any]]) -> int | None:
        """Of servers that campaign for one lease, the index of the one serving last."""
        serving: list[tuple[int, int]] = []
        for index, entry in enumerate(entries):
            name = str(entry["name"])
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None and self._state(name) == "serving":
                serving.append((self._serving_since.get(name, 0), index))
        return max(serving)[1] if serving else None

    def wait_for_active_mds(self, timeout: float = 30.0) -> int:
        """The index of the active MDS, waiting up to ``timeout`` seconds for one."""
        return self._wait_active(self.active_mds, "MDS", timeout)

    @staticmethod
    def _wait_active(active: Callable[[], int | None], what: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (index := active()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} became active within {timeout} s")
            time.sleep(0.01)
        return index

    def start_mds(self, index: int | None = None) -> None:
        """Start MDS ``index`` (by default every MDS not running, the first first) and
        return once each is active or, while another is, standing by."""
        indices = [self._mds_index(index)] if index is not None else range(self.mds_count)
        for i in indices:
            name = self.mds_name(i)
            port = int(self._mds_entry(i)["port"])
            self._spawn(name, ["mds", "--index", str(i)], port, ("serving", "standby"))

    def kill_mds(self, sig: int = signal.SIGKILL, *, index: int | None = None) -> None:
        """Send ``sig`` (SIGKILL by default) to an MDS (by default the active one) and wait
        for it to exit."""
        self._kill(self.mds_name(self._mds_target(index)), sig)

    def stop_mds(self, *, index: int | None = None) -> None:
        """Stop an MDS (by default the active one) cleanly (SIGTERM) and wait for it to
        exit."""
        self._kill(self.mds_name(self._mds_target(index)), signal.SIGTERM)

    def restart_mds(self, sig: int = signal.SIGTERM, *, index: int | None = None) -> None:
        """Stop an MDS (by default the active one) with ``sig`` (SIGTERM: cleanly; SIGKILL:
        a crash) and start it again on the same folder and port; returns once it serves,
        or stands by if another MDS took over meanwhile."""
        target = self._mds_target(index)
        self._kill(self.mds_name(target), sig)
        self.start_mds(target)

    def pause_mds(self, *, index: int | None = None) -> None:
        """SIGSTOP an MDS (by default the active one): it keeps its port and its
        connections but answers nothing. A standby takes the lease over once it runs out
        (``leader_lease_ms`` of the MDS options); the paused MDS, resumed, then finds it
        taken, answers nothing more and stops (it reports ``deposed``). Alone, resumed, it
        takes the lease again and serves on."""
        self._pause(self.mds_name(self._mds_target(index)))

    def resume_mds(self, *, index: int | None = None) -> None:
        """SIGCONT a paused MDS (by default the active one)."""
        self._resume(self.mds_name(self._mds_target(index)))

    # -- the chunkservers -------------------------------------------------------------

    def start_chunkserver(self, chunkserver_id: int) -> None:
        entry = self._chunkserver(chunkserver_id)
        args = ["chunkserver", "--id", str(chunkserver_id)]
        self._spawn(str(entry["name"]), args, int(entry["port"]), ("serving",))

    def kill_chunkserver(self, chunkserver_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to a chunkserver and wait for it to exit."""
        self._kill(self._chunkserver_name(chunkserver_id), sig)

    def stop_chunkserver(self, chunkserver_id: int) -> None:
        """Stop a chunkserver cleanly (SIGTERM) and wait for it to exit."""
        self._kill(self._chunkserver_name(chunkserver_id), signal.SIGTERM)

    def pause_chunkserver(self, chunkserver_id: int) -> None:
        """SIGSTOP a chunkserver: a hung server whose sockets stay open (connections are
        accepted by the kernel, nothing is answered)."""
        self._pause(self._chunkserver_name(chunkserver_id))

    def resume_chunkserver(self, chunkserver_id: int) -> None:
        """SIGCONT a paused chunkserver."""
        self._resume(self._chunkserver_name(chunkserver_id))

    def is_paused(self, server: str) -> bool:
        return server in self._paused

    def running_chunkservers(self) -> list[int]:
        """Chunkservers whose process runs and is not paused."""
        return [
            i
            for i in self.chunkserver_ids
            if (p := self._procs.get(name := self._chunkserver_name(i))) is not None
            and p.poll() is None
            and name not in self._paused
        ]

    def copyset_leader(self, copyset_id: int, timeout: float = 20.0) -> int:
        """The id of the chunkserver leading ``copyset_id``, asked of the running
        chunkservers through GetLeader. A member naming itself leads; if several do (an
        old leader just resumed), the one most members name wins. Waits up to
        ``timeout`` seconds for a leader (during a failover there is none)."""
        by_addr = {self.chunkserver_addr(i): i for i in self.chunkserver_ids}
        deadline = time.monotonic() + timeout
        while True:
            named: dict[int, int] = {}
            claims: set[int] = set()
            for cs_id in self.running_chunkservers():
                addr = self.chunkserver_addr(cs_id)
                try:
                    leader = _core.copyset_leader(
                        addr, self.logical_pool_id, copyset_id, timeout_ms=500
                    )
                except OSError:
                    continue
                leader_id = by_addr.get(leader)
                if leader_id is None:
                    continue
                named[leader_id] = named.get(leader_id, 0) + 1
                if leader_id == cs_id:
                    claims.add(cs_id)
            if claims:
                return max(claims, key=lambda c: named.get(c, 0))
            if time.monotonic() > deadline:
                raise TimeoutError(f"copyset {copyset_id} has no leader after {timeout} s")
            time.sleep(0.05)

    def transfer_leader(self, copyset_id: int, to_chunkserver: int, timeout: float = 20.0) -> None:
        """Moves the leadership of ``copyset_id`` to chunkserver ``to_chunkserver``, as
        upstream's ``curve_ops_tool transfer-leader`` does (TransferLeader to the current
        leader), and returns once it leads. The new leader keeps it: it does not hand
        leadership back to an earlier member. ``ValueError`` if ``to_chunkserver`` is not
        a member of the copyset; ``TimeoutError`` if it does not lead within ``timeout``
        seconds (it must be running and caught up)."""
        if to_chunkserver not in self.chunkserver_ids:
            raise ValueError(f"chunkserver {to_chunkserver} is not part of this cluster")
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            leader = self.copyset_leader(copyset_id, timeout=remaining)
            if leader == to_chunkserver:
                return
            # OSError: leadership moved meanwhile; ask again whom to ask.
            with contextlib.suppress(OSError):
                _core.transfer_leader(
                    self.chunkserver_addr(leader),
                    self.logical_pool_id,
                    copyset_id,
                    self.chunkserver_addr(to_chunkserver),
                    timeout_ms=1000,
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"chunkserver {to_chunkserver} does not lead copyset {copyset_id} "
                    f"after {timeout} s"
                )
            time.sleep(0.1)

    # -- lazy clones ------------------------------------------------------------------

    @property
    def root_user(self) -> str:
        """The MDS's root user, as whom clone tasks run."""
        return str(self._mds_options.get("root_user", "root"))

    def root_client(self) -> Client:
        """A ``curvefs.Client`` of this cluster as its root user (close it after use)."""
        return Client(self.conf_path, user=self.root_user, password=self.root_password)

    def clone_volume(
        self, source: str, dest: str, owner: str | None = None, *, poolset: str | None = None
    ) -> None:
        """Make ``dest`` a lazy clone of the volume ``source`` (owned by ``owner``, by
        default the source's owner), as Curve's snapshot/clone service does for
        ``Action=Clone&Lazy=true`` with a volume as ``Source``: the source becomes
        BeingCloned; CreateCloneFile under ``/clone``; CloneMetaInstalled; ChangeOwner;
        rename onto ``dest``. ``dest`` then reads as ``source`` and owns no data until
        written or flattened (``Client.clone_volume`` as root)."""
        with self.root_client() as client:
            client.clone_volume(source, dest, owner=owner, poolset=poolset)

    def flatten(self, dest: str) -> None:
        """Copy into the lazy clone ``dest`` every chunk it still reads from its source
        (CreateCloneChunk and RecoverChunk on each, as the service's Flatten does), then
        mark it Cloned (``Client.flatten`` as root). IO to ``dest`` may go on meanwhile."""
        with self.root_client() as client:
            client.flatten(dest)

    # -- network faults ---------------------------------------------------------------

    @property
    def proxied(self) -> bool:
        """Whether clients reach the servers through fault proxies (``fault_proxy``)."""
        return self._external_ip() is not None

    def fault_proxy(self, server: str) -> FaultProxy:
        """The proxy on the clients' path to ``"mds"`` or ``"chunkserver-<id>"`` of a
        cluster started with ``proxied=True``."""
        if not self.proxied:
            raise RuntimeError("the cluster was not started with proxied=True")
        try:
            return self._proxies[server]
        except KeyError:
            raise KeyError(f"no proxy for {server!r}: not a server of this cluster") from None

    def _external_ip(self) -> str | None:
        ip = self._layout.get("external_ip")
        return str(ip) if ip else None

    def _start_proxies(self) -> None:
        ip = self._external_ip()
        if ip is None:
            return
        servers = {str(m["name"]): int(m["port"]) for m in self._mds_entries()}
        servers.update({str(cs["name"]): int(cs["port"]) for cs in self._chunkservers()})
        for name, port in servers.items():
            if name not in self._proxies:
                try:
                    proxy = FaultProxy((ip, port), (_HOST, port)).start()
                except OSError as e:
                    self._close_proxies()
                    raise ClusterStartError(
                        f"cannot put a proxy for {name} on {ip}:{port}: {e}"
                    ) from e
                self._proxies[name] = proxy

    def _close_proxies(self) -> None:
        for proxy in self._proxies.values():
            proxy.close()
        self._proxies.clear()

    # -- the snapshot/clone service ----------------------------------------------------

    @property
    def snapshot_clone_addrs(self) -> list[str]:
        """``host:port`` of every instance of the snapshot/clone service (upstream's HTTP API,
        path ``/SnapshotCloneService``; only the active one listens), empty if the cluster
        has none. Give them all to a client: it asks each until one answers."""
        return [str(e["addr"]) for e in self._snapshot_clone_entries()]

    @property
    def snapshot_clone_addr(self) -> str | None:
        """``host:port`` of the active instance of the snapshot/clone service (of the first
        while none is known to be), or ``None`` if the cluster has none."""
        entries = self._snapshot_clone_entries()
        if not entries:
            return None
        active = self.active_snapshot_clone()
        return str(entries[0 if active is None else active]["addr"])

    @property
    def snapshot_store_dir(self) -> str | None:
        """The folder the snapshot/clone service dumps snapshots to (its stand-in for
        upstream's S3 bucket: object ``<file>-<chunkIndex>-<sn>`` is the file of that name
        under it), or ``None`` if the cluster has no service."""
        entries = self._snapshot_clone_entries()
        return str(entries[0]["store_dir"]) if entries else None

    def snapshot_clone_name(self, index: int) -> str:
        """The server name of instance ``index`` (``"snapshotclone"``, ``"snapshotclone-1"``,
        ...)."""
        return str(self._snapshot_clone_entry(index)["name"])

    def active_snapshot_clone(self) -> int | None:
        """The index of the active instance of the snapshot/clone service (it holds the
        lease and serves, or is paused while nobody took the lease), or ``None`` while none
        is."""
        entries = self._snapshot_clone_entries()
        return self._active(entries) if entries else None

    def wait_for_active_snapshot_clone(self, timeout: float = 30.0) -> int:
        """The index of the active snapshot/clone instance, waiting up to ``timeout`` s."""
        return self._wait_active(self.active_snapshot_clone, "snapshot/clone service", timeout)

    def start_snapshot_clone(self, index: int | None = None) -> None:
        """Start instance ``index`` of the snapshot/clone service (by default every one not
        running, the first first); returns once each serves or, while another does, stands
        by."""
        entries = self._snapshot_clone_entries()
        if not entries:
            raise RuntimeError("the cluster has no snapshot/clone service")
        indices = [self._snapshot_clone_index(index)] if index is not None else range(len(entries))
        for i in indices:
            entry = entries[i]
            args = ["snapshotclone", "--index", str(i)]
            self._spawn(str(entry["name"]), args, int(entry["port"]), ("serving", "standby"))

    def kill_snapshot_clone(self, sig: int = signal.SIGKILL, *, index: int | None = None) -> None:
        """Send ``sig`` (SIGKILL by default) to an instance of the snapshot/clone service (by
        default the active one) and wait for it to exit."""
        self._kill(self.snapshot_clone_name(self._snapshot_clone_target(index)), sig)

    def restart_snapshot_clone(
        self, sig: int = signal.SIGTERM, *, index: int | None = None
    ) -> None:
        """Stop an instance (by default the active one) with ``sig`` and start it again;
        returns once it serves, or stands by if another took over meanwhile."""
        target = self._snapshot_clone_target(index)
        self._kill(self.snapshot_clone_name(target), sig)
        self.start_snapshot_clone(target)

    def pause_snapshot_clone(self, *, index: int | None = None) -> None:
        """SIGSTOP an instance (by default the active one). A standby takes the lease over
        once it runs out (the MDS's ``leader_lease_ms``); the paused one, resumed, acts no
        more (no answer, no task step, no record written) and stops (``deposed``)."""
        self._pause(self.snapshot_clone_name(self._snapshot_clone_target(index)))

    def resume_snapshot_clone(self, *, index: int | None = None) -> None:
        """SIGCONT a paused instance (by default the active one)."""
        self._resume(self.snapshot_clone_name(self._snapshot_clone_target(index)))

    def server_state(self, server: str) -> str | None:
        """The last state server ``server`` reported (``"serving"``, ``"standby"``,
        ``"deposed"``), or ``None`` if it is not running."""
        return self._state(server) if server in self._procs else None

    def _snapshot_clone_entries(self) -> list[dict[str, Any]]:
        entries = self._layout.get("snapshot_clone")
        if isinstance(entries, dict):
            # A layout described before the service had several instances.
            return [entries]
        return entries if isinstance(entries, list) else []

    def _snapshot_clone_index(self, index: int) -> int:
        count = len(self._snapshot_clone_entries())
        if not 0 <= index < count:
            raise IndexError(f"snapshot/clone instance {index}: the cluster has {count}")
        return index

    def _snapshot_clone_entry(self, index: int) -> dict[str, Any]:
        return self._snapshot_clone_entries()[self._snapshot_clone_index(index)]

    def _snapshot_clone_target(self, index: int | None) -> int:
        """``index``, or the active instance (the only one, if there is one)."""
        entries = self._snapshot_clone_entries()
        if not entries:
            raise RuntimeError("the cluster has no snapshot/clone service")
        if index is not None:
            return self._snapshot_clone_index(index)
        if len(entries) == 1:
            return 0
        active = self.active_snapshot_clone()
        if active is None:
            raise RuntimeError("no snapshot/clone instance is active; name one with index=")
        return active

    def pid(self, server: str) -> int:
        """The process id of ``"mds"``, ``"mds-<i>"`` or ``"chunkserver-<id>"``."""
        return self._procs[server].pid

    @property
    def server_names(self) -> list[str]:
        """The names (for :meth:`pid`) of the servers started and not stopped since."""
        return sorted(self._procs)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = str(self._dir) if self._dir is not None else "not started"
        return f"LocalCluster({where!r}, mds={self.mds_addrs if self._layout else []})"

    # -- internals ------------------------------------------------------------------

    def _mds_entries(self) -> list[dict[str, Any]]:
        entries = self._layout.get("mds")
        if not isinstance(entries, list):
            raise RuntimeError("the cluster has not been started")
        return entries

    def _mds_entry(self, index: int) -> dict[str, Any]:
        return self._mds_entries()[self._mds_index(index)]

    def _mds_index(self, index: int) -> int:
        count = len(self._mds_entries())
        if not 0 <= index < count:
            raise IndexError(f"MDS {index}: the cluster has MDSes 0..{count - 1}")
        return index

    def _mds_target(self, index: int | None) -> int:
        """``index``, or the active MDS (the only one, if there is one)."""
        if index is not None:
            return self._mds_index(index)
        if len(self._mds_entries()) == 1:
            return 0
        active = self.active_mds()
        if active is None:
            raise RuntimeError("no MDS is active; name one with index=")
        return active

    def _chunkservers(self) -> list[dict[str, Any]]:
        servers = self._layout.get("chunkservers")
        if not isinstance(servers, list):
            raise RuntimeError("the cluster has not been started")
        return servers

    def _chunkserver(self, chunkserver_id: int) -> dict[str, Any]:
        for cs in self._chunkservers():
            if int(cs["id"]) == chunkserver_id:
                return cs
        raise KeyError(chunkserver_id)

    def _chunkserver_name(self, chunkserver_id: int) -> str:
        return str(self._chunkserver(chunkserver_id)["name"])

    def _servers(self) -> list[dict[str, Any]]:
        return [*self._mds_entries(), *self._chunkservers(), *self._snapshot_clone_entries()]

    def _load_or_create_layout(self) -> dict[str, Any]:
        assert self._dir is not None
        try:
            text = _core.local_cluster_layout(self._dir)
            if text is not None:
                return dict(json.loads(text))
            # A new cluster: bind every port first and keep the sockets until each server
            # takes its own, so the ports in the layout stay this cluster's.
            n_mds, n_cs = self._requested_mds, self._requested_chunkservers
            n_sc = self._requested_snapshot_clone
            socks = [_bind(_HOST, 0) for _ in range(n_mds + n_cs + n_sc)]
            by_port = {int(sock.getsockname()[1]): sock for sock in socks}
            ports = list(by_port)
            spec: dict[str, Any] = {
                "host": _HOST,
                "mds_ports": ports[:n_mds],
                "chunkserver_ports": ports[n_mds : n_mds + n_cs],
                "copysets": self._requested_copysets,
                "mds": {
                    "root_password": self._requested_root_password,
                    # Snapshots at once: a test cluster's clients are all new.
                    "snapshot_frozen_us": 0,
                    **self._mds_options,
                },
                "chunk_fsync": self._chunk_fsync,
            }
            if n_sc:
                spec["snapshot_clone_ports"] = ports[n_mds + n_cs :]
            if self._snapshot_clone_options:
                spec["snapshot_clone"] = self._snapshot_clone_options
            if self._requested_proxied:
                spec["external_ip"] = _PROXY_HOST
            try:
                layout = dict(
                    json.loads(_core.create_local_cluster_layout(self._dir, json.dumps(spec)))
                )
            except BaseException:
                for sock in socks:
                    sock.close()
                raise
            for entry in [*layout["mds"], *layout["chunkservers"], *layout["snapshot_clone"]]:
                self._sockets[str(entry["name"])] = by_port.pop(int(entry["port"]))
            return layout
        except OSError as e:
            raise ClusterStartError(f"the layout in {self._dir}: {e}") from e

    def _write_client_conf(self) -> str:
        assert self._dir is not None
        overrides = _env_client_options()
        if self._transport != "baidu_std":
            overrides["mds.transport"] = self._transport
            overrides["chunkserver.transport"] = self._transport
        overrides.update(self._client_options)
        try:
            return _core.write_local_client_conf(self._dir, list(overrides.items()))
        except OSError as e:
            raise ClusterStartError(f"the client.conf in {self._dir}: {e}") from e

    def _close_sockets(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _spawn(self, name: str, args: list[str], port: int, states: tuple[str, ...]) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            return
        assert self._dir is not None
        sock = self._sockets.pop(name, None)
        if sock is None:
            host = str(self._layout.get("host", _HOST))
            try:
                sock = _bind(host, port)
            except OSError as e:
                raise ClusterStartError(
                    f"{name} cannot start: its port {host}:{port} is taken ({e.strerror})"
                ) from e
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - the child owns it
        lifeline = _lifeline_fd()
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "curvefs._serve",
                    *args,
                    "--dir",
                    str(self._dir),
                    "--listen-fd",
                    str(sock.fileno()),
                    "--lifeline-fd",
                    str(lifeline),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=(sock.fileno(), lifeline),
                start_new_session=True,
            )
        finally:
            log.close()
            # The child holds the only copy now: once it dies, its port refuses.
            sock.close()
        self._procs[name] = proc
        self._states.pop(name, None)
        state = self._first_state(name, proc)
        if state not in states:
            _stop_process(proc, signal.SIGKILL, 5.0)
            raise ClusterStartError(f"{name} reported {state!r}, not one of {states}")

    def _first_state(self, name: str, proc: subprocess.Popen[bytes]) -> str:
        """Waits for the first state line the server prints."""
        deadline = time.monotonic() + self._start_timeout
        while (state := self._state(name, wait=0.1)) is None:
            # After an early exit the pipe reads as EOF at once: do not spin on it.
            time.sleep(0.01)
            if proc.poll() is not None:
                raise ClusterStartError(
                    f"{name} exited with {proc.returncode}: {self._log_tail(name)}"
                )
            if time.monotonic() > deadline:
                _stop_process(proc, signal.SIGKILL, 5.0)
                raise ClusterStartError(
                    f"{name} did not start within {self._start_timeout} s: {self._log_tail(name)}"
                )
        return state

    def _state(self, name: str, wait: float = 0.0) -> str | None:
        """The last state server ``name`` reported, reading what it printed since (up to
        ``wait`` seconds for something new)."""
        proc = self._procs.get(name)
        if proc is not None and proc.stdout is not None and not proc.stdout.closed:
            fd = proc.stdout.fileno()
            data = b""
            timeout = wait
            while select.select([fd], [], [], timeout)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                timeout = 0.0
            lines = data.decode("utf-8", "replace").split()
            if lines:
                if lines[-1] == "serving" and self._states.get(name) != "serving":
                    self._state_reads += 1
                    self._serving_since[name] = self._state_reads
                self._states[name] = lines[-1]
        return self._states.get(name)

    def _kill(self, name: str, sig: int) -> None:
        proc = self._procs.pop(name, None)
        self._paused.discard(name)
        self._states.pop(name, None)
        if proc is not None:
            _stop_process(proc, sig, 10.0)
            _close_stdout(proc)

    def _pause(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{name} is not running")
        proc.send_signal(signal.SIGSTOP)
        self._paused.add(name)
        # SIGSTOP is asynchronous: return once the kernel shows the process stopped.
        deadline = time.monotonic() + 10.0
        while _proc_state(proc.pid) not in ("T", "t", None):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not stop")
            time.sleep(0.005)

    def _resume(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{name} is not running")
        proc.send_signal(signal.SIGCONT)
        self._paused.discard(name)

    def _stop_all(self, sig: int) -> None:
        # The snapshot/clone service (a client of the rest: its standbys first, so none
        # takes over), then the chunkservers, then the standby MDSes (so none takes over),
        # the active last: the MDS is what a restarting client reaches first.
        active = self.mds_name(a) if self._layout and (a := self.active_mds()) is not None else None
        mds = {str(e["name"]) for e in self._mds_entries()} if self._layout else set()
        services = [str(e["name"]) for e in self._snapshot_clone_entries()]
        sc = self.active_snapshot_clone() if self._layout else None
        active_sc = services[sc] if sc is not None else None

        def order(n: str) -> tuple[bool, bool, bool, bool]:
            return (n not in services, n == active_sc, n in mds, n == active)

        for name in sorted(self._procs, key=order):
            _stop_process(self._procs[name], sig, 10.0)
            _close_stdout(self._procs[name])
        self._procs.clear()
        self._states.clear()
        self._paused.clear()
        self._close_sockets()

    def _log_tail(self, name: str, limit: int = 2000) -> str:
        try:
            with open(self.log_path(name), "rb") as f:
                data = f.read()
        except OSError:
            return "(no log)"
        return data[-limit:].decode("utf-8", "replace").strip() or "(empty log)"


def _env_client_options() -> dict[str, str]:
    """The client.conf keys ``CURVEFS_LOCAL_CLIENT_OPTIONS`` names ("key=value,...")."""
    text = os.environ.get(CLIENT_OPTIONS_ENV, "").strip()
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{CLIENT_OPTIONS_ENV}: {item!r} is not key=value")
        options[key.strip()] = value.strip()
    return options
