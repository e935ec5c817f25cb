"""A Curve cluster on loopback for tests, demos and benchmarks.

``LocalCluster`` runs one MDS and N chunkservers (three by default), each its own process
speaking Curve's protocol on a free loopback port, with their state in one data folder.
Each server is a separate process so that a test can kill exactly one of them with
SIGKILL and start it again on the same folder, which is how Curve's own fault tests work.

The first start writes ``cluster.json`` (ports, copyset count, MDS options) into the data
folder; later starts on the same folder reuse it, so the cluster comes back on the same
addresses with the same cluster id and data.

Each server logs to ``<data_dir>/logs/<server>.log`` (``mds``, ``chunkserver-<id>``): its
``tracing`` events at the level ``CURVEFS_LOG`` names (``info`` by default; any
tracing-subscriber filter, e.g. ``debug`` or ``info,curve_chunkserver=debug``) and its
stderr. ``log_tail`` reads them, also after a temporary cluster removed its folder.

Fault controls for tests: ``kill_*`` (SIGKILL by default), ``stop_*`` (SIGTERM, a clean
exit), ``start_*``, ``pause_*``/``resume_*`` (SIGSTOP/SIGCONT: a hung server whose sockets
stay open), ``restart_mds`` and ``copyset_leader`` (asks the chunkservers' GetLeader).

Network faults: ``LocalCluster(proxied=True)`` puts a ``FaultProxy`` (delay, blackhole,
drop, reset; ``curvefs._fault_proxy``) on the clients' path to the MDS and to every
chunkserver; ``fault_proxy("mds")``/``fault_proxy("chunkserver-<id>")`` returns it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from curvefs._fault_proxy import FaultProxy

__all__ = [
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
_LAYOUT = "cluster.json"
_CLIENT_CONF = "client.conf"

# Upstream's conf/client.conf, reduced to the keys our client reads. Every key Curve
# marks as required is present so that a stock libcurve would accept the file too.
_CLIENT_DEFAULTS: dict[str, str] = {
    "mds.registerToMDS": "true",
    "mds.rpcTimeoutMS": "500",
    "mds.maxRPCTimeoutMS": "2000",
    "mds.maxRetryMS": "8000",
    "mds.maxFailedTimesBeforeChangeMDS": "2",
    "mds.refreshTimesPerLease": "4",
    "mds.rpcRetryIntervalUS": "100000",
    "mds.normalRetryTimesBeforeTriggerWait": "3",
    "mds.waitSleepMs": "10000",
    "mds.maxRetryMsInIOPath": "60000",
    "metacache.getLeaderTimeOutMS": "500",
    "metacache.getLeaderRetry": "5",
    "metacache.rpcRetryIntervalUS": "100000",
    "schedule.queueCapacity": "1000000",
    "schedule.threadpoolSize": "2",
    "isolation.taskQueueCapacity": "1000000",
    "isolation.taskThreadPoolSize": "1",
    "chunkserver.opRetryIntervalUS": "100000",
    "chunkserver.opMaxRetry": "2500000",
    "chunkserver.rpcTimeoutMS": "1000",
    "chunkserver.maxRetrySleepIntervalUS": "8000000",
    "chunkserver.maxRPCTimeoutMS": "8000",
    "chunkserver.maxStableTimeoutTimes": "10",
    "chunkserver.checkHealthTimeoutMs": "100",
    "chunkserver.serverStableThreshold": "3",
    "chunkserver.minRetryTimesForceTimeoutBackoff": "5",
    "chunkserver.maxRetryTimeMS": "60000",
    "global.fileMaxInFlightRPCNum": "128",
    "global.fileIOSplitMaxSizeKB": "64",
    "global.logLevel": "0",
    "global.logPath": "",
    "discard.enable": "false",
    "discard.granularity": "4096",
    "discard.taskDelayMs": "60000",
}


# The wires a client can reach the local cluster over (`mds.transport` and
# `chunkserver.transport` in client.conf); the servers answer both on every port.
TRANSPORTS = ("baidu_std", "grpc")
# Picks the transport of clusters that do not name one: the switch that runs a whole test
# suite over gRPC (`CURVEFS_TRANSPORT=grpc pytest`).
TRANSPORT_ENV = "CURVEFS_TRANSPORT"


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


def _free_ports(count: int) -> list[int]:
    # Hold every socket open until all are chosen so the ports differ from each other.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((_HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _serves(port: int) -> bool:
    try:
        with socket.create_connection((_HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


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


def _kill_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    # Runs from weakref.finalize when a cluster is dropped without stop(): no server
    # process may outlive the Python process that started it.
    for proc in procs.values():
        _stop_process(proc, signal.SIGKILL, 5.0)
    procs.clear()


class LocalCluster:
    """One MDS and ``chunkservers`` chunkservers on loopback, persisted in ``data_dir``.

    ``with LocalCluster() as cluster:`` starts it in a temporary folder (removed on exit)
    and stops it on exit; ``LocalCluster(data_dir=...)`` uses and keeps a given folder, so a
    second cluster on the same folder finds the first one's files, volumes and data.
    ``cluster.conf_path`` is a client.conf that ``CBDClient.Init`` accepts.

    ``transport`` is the wire that client.conf selects: ``"baidu_std"`` (brpc's protocol,
    what stock Curve servers speak, and what a client.conf without curvefs's keys gets) or
    ``"grpc"``; by default the ``CURVEFS_TRANSPORT`` environment variable, else baidu_std.

    ``chunk_fsync=True`` makes the chunkservers put every write on stable storage before
    they acknowledge it (chunk files opened ``O_DSYNC``, as upstream's, and their records
    fsynced); by default a write survives a killed server but not a power cut.

    ``proxied=True`` makes clients reach every server through a fault-injecting proxy of
    its own (``fault_proxy``), for network faults on the path to one server. Replication
    between chunkservers does not go through the proxies: a fault there is one on a
    client's path, not a partition of the copyset. A folder keeps what its first start
    chose.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        chunkservers: int = 3,
        copysets: int = 100,
        root_password: str = "root_password",
        mds_options: Mapping[str, int | str] | None = None,
        client_options: Mapping[str, str | int] | None = None,
        transport: str | None = None,
        chunk_fsync: bool = False,
        start_timeout: float = 30.0,
        proxied: bool = False,
    ) -> None:
        if chunkservers < 1:
            raise ValueError("a cluster needs at least one chunkserver")
        if copysets < 1:
            raise ValueError("a logical pool needs at least one copyset")
        transport = transport or os.environ.get(TRANSPORT_ENV) or "baidu_std"
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self._transport = transport
        self._owns_dir = data_dir is None
        self._dir = Path(data_dir) if data_dir is not None else None
        self._requested_chunkservers = chunkservers
        self._requested_copysets = copysets
        self._requested_root_password = root_password
        self._mds_options = dict(mds_options or {})
        self._client_options = {k: str(v) for k, v in (client_options or {}).items()}
        self._chunk_fsync = chunk_fsync
        self._start_timeout = start_timeout
        self._requested_proxied = proxied
        self._proxies: dict[str, FaultProxy] = {}
        self._layout: dict[str, object] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._paused: set[str] = set()
        self._logbook: _LogBook | None = None
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)

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
        """The client.conf (Curve's format) pointing at this cluster's MDS."""
        return os.path.join(self.data_dir, _CLIENT_CONF)

    @property
    def root_password(self) -> str:
        mds = self._layout.get("mds", {})
        assert isinstance(mds, dict)
        return str(mds.get("root_password", self._requested_root_password))

    @property
    def mds_addrs(self) -> list[str]:
        return [f"{_HOST}:{p}" for p in self._mds_ports()]

    @property
    def mds_addr(self) -> str:
        return self.mds_addrs[0]

    @property
    def chunkserver_ids(self) -> list[int]:
        return [int(cs["id"]) for cs in self._chunkservers()]

    def chunkserver_addr(self, chunkserver_id: int) -> str:
        for cs in self._chunkservers():
            if int(cs["id"]) == chunkserver_id:
                return f"{_HOST}:{cs['port']}"
        raise KeyError(chunkserver_id)

    @property
    def logical_pool_id(self) -> int:
        return int(str(self._layout.get("logical_pool_id", 1)))

    @property
    def copyset_ids(self) -> list[int]:
        """The copysets of the logical pool: ``1..copysets``."""
        count = self._layout.get("copysets")
        if count is None:
            raise RuntimeError("the cluster has not been started")
        return list(range(1, int(str(count)) + 1))

    def chunkserver_data_dir(self, chunkserver_id: int) -> str:
        """The folder of chunkserver ``chunkserver_id``'s chunk files."""
        self.chunkserver_addr(chunkserver_id)  # KeyError for an unknown id
        return os.path.join(self.data_dir, f"chunkserver-{chunkserver_id}")

    def log_path(self, server: str) -> str:
        """The log file of ``"mds"`` or ``"chunkserver-<id>"``."""
        return os.path.join(self.data_dir, "logs", f"{server}.log")

    def log_tail(self, server: str, lines: int = 50) -> str:
        """The last ``lines`` lines of the log of ``"mds"`` or ``"chunkserver-<id>"``
        (also after a temporary cluster removed its folder: the last 200 are kept)."""
        if self._logbook is None:
            return ""
        return "\n".join(self._logbook.tail(server, lines))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every server not running and wait until each serves."""
        global _serial
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="curvefs-cluster-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        (self._dir / "logs").mkdir(exist_ok=True)
        self._layout = self._load_or_create_layout()
        self._write_client_conf()
        self._start_proxies()
        if self._logbook is None or self._logbook.dir != self._dir:
            _serial += 1
            self._logbook = _LogBook(_serial)
            self._logbook.dir = self._dir
            self._logbook.servers = ["mds"] + [f"chunkserver-{i}" for i in self.chunkserver_ids]
            _LOGBOOKS.append(self._logbook)
        self._logbook.running = True
        try:
            self.start_mds()
            for cs_id in self.chunkserver_ids:
                self.start_chunkserver(cs_id)
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

    def start_mds(self) -> None:
        port = self._mds_ports()[0]
        self._spawn("mds", ["mds"], port)

    def kill_mds(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to the MDS and wait for it to exit."""
        self._kill("mds", sig)

    def stop_mds(self) -> None:
        """Stop the MDS cleanly (SIGTERM) and wait for it to exit."""
        self._kill("mds", signal.SIGTERM)

    def restart_mds(self, sig: int = signal.SIGTERM) -> None:
        """Stop the MDS with ``sig`` (SIGTERM: cleanly; SIGKILL: a crash) and start it
        again on the same folder and port; returns once it serves."""
        self.kill_mds(sig)
        self.start_mds()

    def pause_mds(self) -> None:
        """SIGSTOP the MDS: it keeps its port and connections but answers nothing."""
        self._pause("mds")

    def resume_mds(self) -> None:
        """SIGCONT a paused MDS."""
        self._resume("mds")

    def start_chunkserver(self, chunkserver_id: int) -> None:
        port = int(self.chunkserver_addr(chunkserver_id).rsplit(":", 1)[1])
        name = f"chunkserver-{chunkserver_id}"
        self._spawn(name, ["chunkserver", "--id", str(chunkserver_id)], port)

    def kill_chunkserver(self, chunkserver_id: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to a chunkserver and wait for it to exit."""
        self._kill(f"chunkserver-{chunkserver_id}", sig)

    def stop_chunkserver(self, chunkserver_id: int) -> None:
        """Stop a chunkserver cleanly (SIGTERM) and wait for it to exit."""
        self._kill(f"chunkserver-{chunkserver_id}", signal.SIGTERM)

    def pause_chunkserver(self, chunkserver_id: int) -> None:
        """SIGSTOP a chunkserver: a hung server whose sockets stay open (connections are
        accepted by the kernel, nothing is answered)."""
        self._pause(f"chunkserver-{chunkserver_id}")

    def resume_chunkserver(self, chunkserver_id: int) -> None:
        """SIGCONT a paused chunkserver."""
        self._resume(f"chunkserver-{chunkserver_id}")

    def is_paused(self, server: str) -> bool:
        return server in self._paused

    def running_chunkservers(self) -> list[int]:
        """Chunkservers whose process runs and is not paused."""
        return [
            i
            for i in self.chunkserver_ids
            if (p := self._procs.get(f"chunkserver-{i}")) is not None
            and p.poll() is None
            and f"chunkserver-{i}" not in self._paused
        ]

    def copyset_leader(self, copyset_id: int, timeout: float = 20.0) -> int:
        """The id of the chunkserver leading ``copyset_id``, asked of the running
        chunkservers through GetLeader. A member naming itself leads; if several do (an
        old leader just resumed), the one most members name wins. Waits up to
        ``timeout`` seconds for a leader (during a failover there is none)."""
        from curvefs import _core

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
        from curvefs import _core

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
        servers = {"mds": self._mds_ports()[0]}
        servers.update({f"chunkserver-{cs['id']}": int(cs["port"]) for cs in self._chunkservers()})
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

    def pid(self, server: str) -> int:
        """The process id of ``"mds"`` or ``"chunkserver-<id>"``."""
        return self._procs[server].pid

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

    def _mds_ports(self) -> list[int]:
        ports = self._layout.get("mds_ports")
        if not isinstance(ports, list):
            raise RuntimeError("the cluster has not been started")
        return [int(p) for p in ports]

    def _chunkservers(self) -> list[dict[str, int]]:
        servers = self._layout.get("chunkservers")
        if not isinstance(servers, list):
            raise RuntimeError("the cluster has not been started")
        return servers

    def _load_or_create_layout(self) -> dict[str, object]:
        assert self._dir is not None
        path = self._dir / _LAYOUT
        if path.exists():
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
            if not isinstance(loaded, dict):
                raise ClusterStartError(f"{path} does not hold a cluster layout")
            return {str(k): v for k, v in loaded.items()}
        n = self._requested_chunkservers
        ports = _free_ports(n + 1)
        mds: dict[str, int | str] = {
            "root_user": "root",
            "root_password": self._requested_root_password,
        }
        mds.update(self._mds_options)
        layout: dict[str, object] = {
            "host": _HOST,
            "mds_ports": [ports[0]],
            "chunkservers": [{"id": i + 1, "port": ports[i + 1]} for i in range(n)],
            "logical_pool_id": 1,
            "copysets": self._requested_copysets,
            "poolset": "default",
            "mds": mds,
            "chunk_fsync": self._chunk_fsync,
        }
        if self._requested_proxied:
            layout["external_ip"] = _PROXY_HOST
        # Written atomically: a half-written layout would strand the folder's data.
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(layout, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return layout

    def _write_client_conf(self) -> None:
        assert self._dir is not None
        conf = dict(_CLIENT_DEFAULTS)
        client_ip = self._external_ip() or _HOST
        conf["mds.listen.addr"] = ",".join(f"{client_ip}:{p}" for p in self._mds_ports())
        conf["global.logPath"] = str(self._dir / "logs")
        if self._transport != "baidu_std":
            # baidu_std is the default: the conf then holds only upstream's keys.
            conf["mds.transport"] = self._transport
            conf["chunkserver.transport"] = self._transport
        conf.update(self._client_options)
        lines = ["# client.conf for the curvefs local cluster in this folder"]
        lines += [f"{k}={v}" for k, v in conf.items()]
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def _spawn(self, name: str, args: list[str], port: int) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            return
        assert self._dir is not None
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "curvefs._serve", *args, "--dir", str(self._dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs[name] = proc
        deadline = time.monotonic() + self._start_timeout
        while not _serves(port):
            if proc.poll() is not None:
                raise ClusterStartError(
                    f"{name} exited with {proc.returncode}: {self._log_tail(name)}"
                )
            if time.monotonic() > deadline:
                _stop_process(proc, signal.SIGKILL, 5.0)
                raise ClusterStartError(
                    f"{name} did not serve on port {port} within {self._start_timeout} s: "
                    f"{self._log_tail(name)}"
                )
            time.sleep(0.02)

    def _kill(self, name: str, sig: int) -> None:
        proc = self._procs.pop(name, None)
        self._paused.discard(name)
        if proc is not None:
            _stop_process(proc, sig, 10.0)

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
        # Chunkservers first: the MDS is what a restarting client reaches first.
        for name in sorted(self._procs, key=lambda n: n == "mds"):
            _stop_process(self._procs[name], sig, 10.0)
        self._procs.clear()
        self._paused.clear()

    def _log_tail(self, name: str, limit: int = 2000) -> str:
        try:
            with open(self.log_path(name), "rb") as f:
                data = f.read()
        except OSError:
            return "(no log)"
        return data[-limit:].decode("utf-8", "replace").strip() or "(empty log)"
