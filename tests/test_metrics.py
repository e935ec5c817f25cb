"""Client and volume metrics against known workloads (counts exact, latencies plausible),
and the Prometheus collector scraped over HTTP by prometheus_client's own server."""

from __future__ import annotations

import os
import urllib.request
from typing import assert_type

import pytest

import curvefs
from curvefs.metrics import ClientMetrics, IoMetrics, Latency, OpStats
from curvefs.testing import LocalCluster

KiB = 1024
MiB = 1 << 20
GiB = 1 << 30


def plausible(lat: Latency, count: int) -> None:
    assert lat.count == count
    if count == 0:
        assert (lat.p50, lat.p99, lat.max, lat.sum) == (0.0, 0.0, 0.0, 0.0)
        return
    # On loopback an IO takes more than a microsecond and less than the IO budget.
    assert 1e-6 <= lat.p50 <= lat.p99 <= lat.p999 <= lat.max < 60.0
    assert lat.max * count >= lat.sum > 0
    assert lat.p50 <= lat.max


def test_a_known_workload_is_counted_exactly(cluster: LocalCluster, name: str) -> None:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        c.create(name, 10 * GiB)
        with c.open(name) as vol:
            fresh = vol.metrics()
            assert fresh.write.ops == fresh.read.ops == fresh.write_rpc.ops == 0
            data = os.urandom(4 * KiB)
            for i in range(50):  # aligned, one chunk request each
                assert vol.pwrite(data, i * 4 * KiB) == 4 * KiB
            for i in range(30):
                assert vol.pread(4 * KiB, i * 4 * KiB) == data
            m = vol.metrics()
            assert (m.write.ops, m.write.bytes, m.write.errors) == (50, 50 * 4 * KiB, 0)
            assert (m.read.ops, m.read.bytes, m.read.errors) == (30, 30 * 4 * KiB, 0)
            assert (m.write_rpc.ops, m.write_rpc.bytes) == (50, 50 * 4 * KiB)
            assert (m.read_rpc.ops, m.read_rpc.bytes) == (30, 30 * 4 * KiB)
            plausible(m.write.latency, 50)
            plausible(m.read.latency, 30)
            plausible(m.write_rpc.latency, 50)
            assert m.inflight_rpcs == 0
            assert m.slow_requests == 0

            # Unaligned: one user write, made of a read and a write of its block.
            vol.pwrite(b"abc", 10)
            m2 = vol.metrics()
            assert (m2.write.ops, m2.write.bytes) == (51, 50 * 4 * KiB + 3)
            assert m2.read.ops == 30  # the read-modify-write's read is no user read
            assert m2.read_rpc.ops == 31 and m2.write_rpc.ops == 51
            vol.pwrite(os.urandom(8 * KiB), 64 * KiB)
            vol.discard(16 * MiB, MiB)
            vol.write_zeroes(0, 4 * KiB)
            m3 = vol.metrics()
            assert (m3.discard.ops, m3.discard.bytes) == (1, MiB)
            assert m3.write.ops == 53
            assert m3.write_rpc.ops >= 53
            assert m3.write_rpc.errors >= m3.write_rpc.redirects + m3.write_rpc.timeouts

        total = c.metrics()
        assert isinstance(total, ClientMetrics)
        # The client's IO is the sum over every volume it opened, closed ones included.
        assert total.io.write.ops == 53 and total.io.read.ops == 30
        assert total.volumes == {}
        assert total.mds.failovers == 0
        assert total.mds.current_addr == cluster.mds_addr
        for method in ("CreateFile", "OpenFile", "CloseFile", "RefreshSession"):
            s = total.mds.methods[method]
            assert s.ops >= 1 and s.errors == 0
            plausible(s.latency, s.ops)
        assert total.mds.methods["CreateFile"].ops == 1


def test_a_client_sums_its_volumes_and_lists_the_open_ones(
    cluster: LocalCluster, name: str
) -> None:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        paths = [f"{name}-{i}" for i in range(3)]
        vols = []
        for i, p in enumerate(paths):
            c.create(p, 10 * GiB)
            vol = c.open(p)
            vols.append(vol)
            for j in range(i + 1):
                vol.pwrite(b"v" * 4096, j * 4096)
        m = c.metrics()
        assert sorted(m.volumes) == sorted(paths)
        assert [m.volumes[p].write.ops for p in paths] == [1, 2, 3]
        assert m.io.write.ops == 6 and m.io.write.bytes == 6 * 4096
        vols[0].close()
        assert sorted(c.metrics().volumes) == sorted(paths[1:])
        assert c.metrics().io.write.ops == 6
        for v in vols[1:]:
            v.close()
        with pytest.raises(ValueError):
            vols[0].metrics()  # a closed volume has none to give


def test_snapshots_are_frozen(cluster: LocalCluster) -> None:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        m = c.metrics()
        with pytest.raises(AttributeError):
            m.io = m.io  # type: ignore[misc]
        with pytest.raises(TypeError):
            m.mds.methods["x"] = m.io.read  # type: ignore[index]
        assert isinstance(m.io, IoMetrics) and isinstance(m.io.read, OpStats)


def test_prometheus_scrape(cluster: LocalCluster, name: str) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.parser import text_string_to_metric_families

    import curvefs.prometheus

    registry = CollectorRegistry()
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        c.create(name, 10 * GiB)
        curvefs.prometheus.register(c, name="scraped", registry=registry)
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        try:
            port = server.server_address[1]
            with c.open(name) as vol:
                for i in range(20):
                    vol.pwrite(b"p" * 4096, i * 4096)
                for i in range(7):
                    vol.pread(4096, i * 4096)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    text = r.read().decode()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (("client", "scraped"), ("volume", name))
    assert samples[("curve_client_write_total", labels)] == 20
    assert samples[("curve_client_write_bytes_total", labels)] == 20 * 4096
    assert samples[("curve_client_read_total", labels)] == 7
    assert samples[("curve_client_write_rpc_total", labels)] == 20
    assert samples[("curve_client_inflight_rpcs", labels)] == 0
    assert samples[("curve_client_write_latency_seconds_count", labels)] == 20
    p50 = samples[
        ("curve_client_write_latency_seconds", (*labels[:1], ("quantile", "0.5"), labels[1]))
    ]
    p99 = samples[
        ("curve_client_write_latency_seconds", (*labels[:1], ("quantile", "0.99"), labels[1]))
    ]
    top = samples[("curve_client_write_latency_seconds_max", labels)]
    assert 0 < p50 <= p99 <= top < 60
    cl = (("client", "scraped"),)
    assert samples[("curve_mds_client_failovers_total", cl)] == 0
    assert samples[("curve_mds_client_requests_total", (*cl, ("method", "OpenFile")))] == 1
    assert samples[("curve_mds_client_info", (*cl, ("current_addr", cluster.mds_addr)))] == 1


def test_metric_types(cluster: LocalCluster, name: str) -> None:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        c.create(name, 10 * GiB)
        with c.open(name) as vol:
            m = assert_type(vol.metrics(), IoMetrics)
            assert isinstance(m, IoMetrics)
            assert isinstance(assert_type(m.read, OpStats), OpStats)
            assert isinstance(assert_type(m.read.latency, Latency), Latency)
            assert isinstance(assert_type(m.read.latency.p99, float), float)
            assert isinstance(assert_type(m.inflight_rpcs, int), int)
            cm = assert_type(c.metrics(), ClientMetrics)
            assert isinstance(cm, ClientMetrics)
            assert isinstance(cm.mds.current_addr, str)
            assert all(isinstance(v, OpStats) for v in cm.mds.methods.values())
            assert isinstance(cm.volumes[name], IoMetrics)
