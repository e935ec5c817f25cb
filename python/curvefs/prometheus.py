"""A ``prometheus_client`` collector for curvefs clients (``pip install curvefs[prometheus]``).

::

    from prometheus_client import start_http_server
    import curvefs.prometheus

    client = curvefs.Client(conf_path, user="curve")
    curvefs.prometheus.register(client, name="images")
    start_http_server(9100)

Upstream libcurve's bvars (``src/client/client_metric.h``), translated to Prometheus
conventions: the file name moves from the metric name into a ``volume`` label, per-second
windows become ``_total`` counters (take ``rate()``), ``_lat`` recorders become
``_latency_seconds`` summaries (quantiles 0.5, 0.99, 0.999) with a ``_max`` gauge, and each
series carries the ``client`` name given at registration.

=====================================  ================================================
upstream (``curve_client_<file>…``)    Prometheus
=====================================  ================================================
``_read_qps``/``_eps``/``_bps``        ``curve_client_read_total``, ``…_errors_total``,
                                       ``…_bytes_total`` (also ``write``, ``discard``)
``_read_timeout_qps``                  ``curve_client_read_timeouts_total``
``_read_redirect_qps``                 ``curve_client_read_redirects_total``
``_read_lat``                          ``curve_client_read_latency_seconds`` (+ ``_max``)
``_read_rpc_*``, ``_write_rpc_*``      ``curve_client_read_rpc_*``, ``curve_client_write_rpc_*``
``_inflight_rpc_num``                  ``curve_client_inflight_rpcs``
``_get_leader_retry_rpc``              ``curve_client_get_leader_retries_total``
``_slow_request_total``                ``curve_client_slow_requests_total``
``curve_mds_client_<method>_*``        ``curve_mds_client_requests_total{method=…}`` and
                                       ``…_errors_total``, ``…_timeouts_total``,
                                       ``…_latency_seconds``
``mds_server_change_times``            ``curve_mds_client_failovers_total``
``current_metaserver_addr``            ``curve_mds_client_info{current_addr=…}`` (1)
=====================================  ================================================

Per-volume series exist while the volume is open, as upstream's per-file bvars do.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator

from prometheus_client.core import REGISTRY, CollectorRegistry, Metric

from curvefs.client import Client
from curvefs.metrics import IoMetrics, OpStats

_QUANTILES = (("0.5", "p50"), ("0.99", "p99"), ("0.999", "p999"))
_IO_OPS = ("read", "write", "discard", "read_rpc", "write_rpc")


class _Families:
    """The metric families of one scrape, filled series by series."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def family(self, name: str, doc: str, kind: str) -> Metric:
        m = self._by_name.get(name)
        if m is None:
            m = self._by_name[name] = Metric(name, doc, kind)
        return m

    def counter(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        self.family(name, doc, "counter").add_sample(name + "_total", labels, value)

    def gauge(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        self.family(name, doc, "gauge").add_sample(name, labels, value)

    def op(self, prefix: str, what: str, labels: dict[str, str], s: OpStats) -> None:
        self.counter(prefix, f"{what} that succeeded", labels, s.ops)
        self.counter(prefix + "_errors", f"{what} that failed", labels, s.errors)
        self.counter(prefix + "_bytes", f"bytes moved by {what}", labels, s.bytes)
        self.counter(prefix + "_timeouts", f"{what} that timed out", labels, s.timeouts)
        self.counter(prefix + "_redirects", f"{what} redirected", labels, s.redirects)
        name = prefix + "_latency_seconds"
        summary = self.family(name, f"latency of {what} that succeeded", "summary")
        for q, attr in _QUANTILES:
            summary.add_sample(name, {**labels, "quantile": q}, getattr(s.latency, attr))
        summary.add_sample(name + "_count", labels, s.latency.count)
        summary.add_sample(name + "_sum", labels, s.latency.sum)
        self.gauge(name + "_max", f"slowest of {what}", labels, s.latency.max)

    def io(self, labels: dict[str, str], m: IoMetrics) -> None:
        for op in _IO_OPS:
            level = "chunk RPCs" if op.endswith("_rpc") else "user calls"
            self.op(
                f"curve_client_{op}", f"{op.removesuffix('_rpc')} {level}", labels, getattr(m, op)
            )
        self.gauge("curve_client_inflight_rpcs", "chunk RPCs in flight", labels, m.inflight_rpcs)
        self.counter(
            "curve_client_get_leader_retries",
            "leader lookups after a failed or redirected chunk RPC",
            labels,
            m.get_leader_retries,
        )
        self.counter(
            "curve_client_slow_requests",
            "user calls slower than chunkserver.slowRequestThresholdMS",
            labels,
            m.slow_requests,
        )

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._by_name.values())


class CurvefsCollector:
    """Collects the metrics of the clients added to it (held weakly: a client that is
    gone stops being reported)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, weakref.ref[Client]] = {}

    def add(self, client: Client, name: str = "default") -> None:
        """Reports ``client`` with the label ``client=name`` (unique per collector)."""
        with self._lock:
            if name in self._clients and self._clients[name]() is not None:
                raise ValueError(f"a client named {name!r} is already collected")
            self._clients[name] = weakref.ref(client)

    def remove(self, name: str) -> None:
        with self._lock:
            self._clients.pop(name, None)

    def describe(self) -> Iterable[Metric]:
        # No description up front: the families depend on what the clients called.
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            clients = [(n, r()) for n, r in self._clients.items()]
        out = _Families()
        for name, client in clients:
            if client is None:
                continue
            try:
                m = client.metrics()
            except ValueError:  # closed since it was added
                continue
            labels = {"client": name}
            for volume, io in sorted(m.volumes.items()):
                out.io({**labels, "volume": volume}, io)
            for method, s in sorted(m.mds.methods.items()):
                ml = {**labels, "method": method}
                out.counter("curve_mds_client_requests", "MDS calls that succeeded", ml, s.ops)
                out.counter(
                    "curve_mds_client_requests_errors", "MDS calls that failed", ml, s.errors
                )
                out.counter(
                    "curve_mds_client_requests_timeouts",
                    "MDS attempts that timed out",
                    ml,
                    s.timeouts,
                )
                lat = "curve_mds_client_requests_latency_seconds"
                summary = out.family(lat, "latency of MDS calls that succeeded", "summary")
                for q, attr in _QUANTILES:
                    summary.add_sample(lat, {**ml, "quantile": q}, getattr(s.latency, attr))
                summary.add_sample(lat + "_count", ml, s.latency.count)
                summary.add_sample(lat + "_sum", ml, s.latency.sum)
            out.counter(
                "curve_mds_client_failovers", "switches to another MDS", labels, m.mds.failovers
            )
            out.gauge(
                "curve_mds_client_info",
                "the MDS the client calls first",
                {**labels, "current_addr": m.mds.current_addr},
                1,
            )
        return list(out)


def register(
    client: Client, name: str = "default", registry: CollectorRegistry = REGISTRY
) -> CurvefsCollector:
    """Reports ``client`` in ``registry`` (the default one unless given), through one
    collector per registry; returns it."""
    collector = _COLLECTORS.get(id(registry))
    if collector is None:
        collector = CurvefsCollector()
        registry.register(collector)
        _COLLECTORS[id(registry)] = collector
    collector.add(client, name)
    return collector


_COLLECTORS: dict[int, CurvefsCollector] = {}

__all__ = ["CurvefsCollector", "register"]
