"""The wire a client.conf selects: baidu_std by default (what stock Curve servers speak),
gRPC on request; the local cluster serves both on every port, so the wire a client used is
read off the fault proxies in front of the servers (``FaultProxy.protocols``)."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import curvefs
from curvefs.testing import TRANSPORT_ENV, LocalCluster
from tests.helpers import GiB, MiB, conf_with, make_user


def _conf_keys(path: str) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in Path(path).read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


# Every key of upstream Curve's conf/client.conf (opencurve/curve), the file a stock client
# reads: a conf the local cluster writes must be one that client could read.
UPSTREAM_CLIENT_CONF_KEYS = frozenset(
    [
        "mds.listen.addr",
        "mds.registerToMDS",
        "mds.rpcTimeoutMS",
        "mds.maxRPCTimeoutMS",
        "mds.maxRetryMS",
        "mds.maxFailedTimesBeforeChangeMDS",
        "mds.refreshTimesPerLease",
        "mds.rpcRetryIntervalUS",
        "mds.normalRetryTimesBeforeTriggerWait",
        "mds.maxRetryMsInIOPath",
        "mds.waitSleepMs",
        "metacache.getLeaderTimeOutMS",
        "metacache.getLeaderRetry",
        "metacache.rpcRetryIntervalUS",
        "schedule.queueCapacity",
        "schedule.threadpoolSize",
        "isolation.taskQueueCapacity",
        "isolation.taskThreadPoolSize",
        "chunkserver.opRetryIntervalUS",
        "chunkserver.opMaxRetry",
        "chunkserver.rpcTimeoutMS",
        "chunkserver.maxRetrySleepIntervalUS",
        "chunkserver.maxRPCTimeoutMS",
        "chunkserver.maxStableTimeoutTimes",
        "chunkserver.checkHealthTimeoutMs",
        "chunkserver.serverStableThreshold",
        "chunkserver.minRetryTimesForceTimeoutBackoff",
        "chunkserver.maxRetryTimesBeforeConsiderSuspend",
        "chunkserver.slowRequestThresholdMS",
        "global.fileMaxInFlightRPCNum",
        "global.fileIOSplitMaxSizeKB",
        "global.logging.enable",
        "global.logLevel",
        "global.logPath",
        "closefd.timeout",
        "closefd.timeInterval",
        "global.metricDummyServerStartPort",
        "global.turnOffHealthCheck",
        "global.minOpenFileLimit",
        "throttle.enable",
        "discard.enable",
        "discard.granularity",
        "discard.taskDelayMs",
        "csClientOpt.rpcTimeoutMs",
        "csClientOpt.rpcMaxTry",
        "csClientOpt.rpcIntervalUs",
        "csClientOpt.rpcMaxTimeoutMs",
        "csBroadCasterOpt.broadCastMaxNum",
    ]
)
WIRE_KEYS = {"mds.transport", "chunkserver.transport"}


def test_default_conf_holds_only_upstream_keys_and_gets_baidu_std(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    keys = _conf_keys(cluster.conf_path)
    assert "mds.listen.addr" in keys
    if cluster.transport == "baidu_std":
        assert set(keys) <= UPSTREAM_CLIENT_CONF_KEYS, set(keys) - UPSTREAM_CLIENT_CONF_KEYS
        # What a conf without the keys gets is shown on the wire by test_io_over_each_pairing.
    else:
        assert set(keys) - WIRE_KEYS <= UPSTREAM_CLIENT_CONF_KEYS
        assert keys["chunkserver.transport"] == keys["mds.transport"] == cluster.transport


@pytest.fixture(scope="module")
def proxied_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # baidu_std whatever CURVEFS_TRANSPORT says: the conf below sets (or omits) the keys.
    with LocalCluster(
        tmp_path_factory.mktemp("wire") / "c", copysets=4, proxied=True, transport="baidu_std"
    ) as c:
        yield c


def _wires(cluster: LocalCluster, servers: list[str]) -> Counter[str]:
    """Connections the clients opened to `servers`, by the wire they spoke."""
    total: Counter[str] = Counter()
    for server in servers:
        total.update(cluster.fault_proxy(server).protocols())
    return total


@pytest.mark.parametrize(
    ("mds", "chunkserver"),
    [
        ("baidu_std", "baidu_std"),
        ("grpc", "grpc"),
        ("grpc", "baidu_std"),
        ("baidu_std", "grpc"),
        (None, None),  # no keys: upstream's wire
    ],
)
def test_io_over_each_pairing(
    proxied_cluster: LocalCluster, tmp_path: Path, name: str, mds: str | None, chunkserver: str
) -> None:
    cluster = proxied_cluster
    keys = {"mds.transport": mds, "chunkserver.transport": chunkserver}
    conf = conf_with(cluster, tmp_path, {k: v for k, v in keys.items() if v is not None})
    mds_servers = [cluster.mds_name(i) for i in range(cluster.mds_count)]
    cs_servers = [f"chunkserver-{i}" for i in cluster.chunkserver_ids]
    mds_before, cs_before = _wires(cluster, mds_servers), _wires(cluster, cs_servers)
    cbd = curvefs.CBDClient()
    assert cbd.Init(conf) == 0
    user = make_user("curve")
    assert cbd.Create(name, user, 10 * GiB) == 0
    fd = cbd.Open(name, user)
    assert fd >= 0
    data = os.urandom(MiB)
    offset = 16 * MiB - 512 * 1024  # across a chunk boundary
    assert cbd.Write(fd, data, offset, MiB) == MiB
    assert cbd.Read(fd, "", offset, MiB) == data
    assert cbd.Close(fd) == 0
    cbd.UnInit()
    # What the servers were spoken to in: only the selected wire, on each path.
    mds_new = _wires(cluster, mds_servers) - mds_before
    cs_new = _wires(cluster, cs_servers) - cs_before
    assert set(mds_new) == {mds or "baidu_std"}, f"MDS connections by wire: {dict(mds_new)}"
    assert set(cs_new) == {chunkserver or "baidu_std"}, f"chunkserver connections: {cs_new}"


@pytest.mark.parametrize("value", ["http", "", "baidu-std"])
def test_unknown_transport_is_refused_at_init(
    cluster: LocalCluster, tmp_path: Path, value: str
) -> None:
    conf = conf_with(cluster, tmp_path, {"chunkserver.transport": value})
    assert curvefs.CBDClient().Init(conf) == -1


def test_environment_switch_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRANSPORT_ENV, "grpc")
    assert LocalCluster().transport == "grpc"
    assert LocalCluster(transport="baidu_std").transport == "baidu_std"
    monkeypatch.delenv(TRANSPORT_ENV)
    assert LocalCluster().transport == "baidu_std"
    with pytest.raises(ValueError, match="transport"):
        LocalCluster(transport="tcp")


def _frame(meta: bytes, body: bytes) -> bytes:
    return b"PRPC" + struct.pack(">II", len(meta) + len(body), len(meta)) + meta + body


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_mds_port_answers_a_hand_framed_baidu_std_call(cluster: LocalCluster) -> None:
    """A baidu_std request framed here byte by byte (not by curvefs's encoder): the MDS
    answers on its one port with an RpcMeta whose error_code is ENOMETHOD (1002)."""
    request_meta = _field(1, b"curve.mds.CurveFSService") + _field(2, b"NoSuchMethod")
    meta = _field(1, request_meta) + bytes([4 << 3, 42])  # correlation_id = 42
    host, port = cluster.mds_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(_frame(meta, b""))
        head = b""
        while len(head) < 12:
            chunk = s.recv(12 - len(head))
            assert chunk, "closed before the header"
            head += chunk
        assert head[:4] == b"PRPC"
        body_size, meta_size = struct.unpack(">II", head[4:])
        body = b""
        while len(body) < body_size:
            chunk = s.recv(body_size - len(body))
            assert chunk
            body += chunk
    reply_meta = body[:meta_size]
    # correlation_id 42 echoed; response meta (field 2) holds error_code 1002 (0xea 0x07).
    assert bytes([4 << 3, 42]) in reply_meta
    assert bytes([1 << 3, 0xEA, 0x07]) in reply_meta


def test_core_events_reach_python_logging_under_curvefs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that answers baidu_std with HTTP: the core closes the connection and logs
    why; the record reaches a handler through the `curvefs` logger, not stderr."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def answer_garbage() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                except OSError:
                    pass

    worker = threading.Thread(target=answer_garbage)
    worker.start()
    try:
        conf = tmp_path / "client.conf"
        port = srv.getsockname()[1]
        conf.write_text(f"mds.listen.addr=127.0.0.1:{port}\nmds.maxRetryMS=300\n")
        cbd = curvefs.CBDClient()
        assert cbd.Init(str(conf)) == 0
        with caplog.at_level(logging.WARNING, logger="curvefs"):
            rc = cbd.StatFile("/x", make_user("curve"), curvefs.FileInfo_t())
        cbd.UnInit()
    finally:
        stop.set()
        worker.join(timeout=10)
        srv.close()
    assert not worker.is_alive(), "the garbage server did not stop within 10 s"
    assert rc < 0
    records = [r for r in caplog.records if r.name.startswith("curvefs.curve_brpc")]
    assert records, [r.name for r in caplog.records]
    assert records[0].levelno == logging.WARNING
    assert "does not speak baidu_std" in records[0].getMessage()
