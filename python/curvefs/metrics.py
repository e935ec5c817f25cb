"""Typed, frozen snapshots of a client's and a volume's metrics.

The counters are upstream libcurve's per-file and MDS-client bvars (``client_metric.h``),
kept in the Rust core with atomics: ``Client.metrics()`` and ``Volume.metrics()`` read
them without stopping IO. Counts are totals since the volume was opened (or the client
made); compute rates from two snapshots (or let Prometheus: see ``curvefs.prometheus``).
Latencies are in seconds, read from a log-linear histogram whose quantiles are within
6.25 % of the truth and never above ``max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

_US = 1e-6


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency of the calls that succeeded, in seconds."""

    count: int
    sum: float
    p50: float
    p99: float
    p999: float
    max: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    @classmethod
    def _from_native(cls, d: dict[str, int]) -> Latency:
        return cls(
            count=d["count"],
            sum=d["sum"] * _US,
            p50=d["p50"] * _US,
            p99=d["p99"] * _US,
            p999=d["p999"] * _US,
            max=d["max"] * _US,
        )


@dataclass(frozen=True, slots=True)
class OpStats:
    """One kind of call (upstream's ``InterfaceMetric``).

    ``ops`` succeeded, ``errors`` failed (timeouts and redirects included: an RPC that
    timed out or was redirected is retried, and counts again), ``bytes`` were moved by
    the ones that succeeded.
    """

    ops: int
    errors: int
    bytes: int
    timeouts: int
    redirects: int
    latency: Latency

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> OpStats:
        return cls(
            ops=d["ops"],
            errors=d["errors"],
            bytes=d["bytes"],
            timeouts=d["timeouts"],
            redirects=d["redirects"],
            latency=Latency._from_native(d["latency_us"]),
        )


@dataclass(frozen=True, slots=True)
class IoMetrics:
    """A volume's IO (upstream's ``FileMetric``), or the sum over a client's volumes.

    ``read``/``write``/``discard`` are user calls (``pread``, ``pwrite`` and
    ``write_zeroes``, ``discard``); ``read_rpc``/``write_rpc`` are the chunk RPCs they
    were split into, each attempt counted. ``inflight_rpcs`` is a gauge;
    ``get_leader_retries`` counts leader lookups after a failed or redirected RPC;
    ``slow_requests`` counts user calls slower than ``chunkserver.slowRequestThresholdMS``.
    """

    read: OpStats
    write: OpStats
    discard: OpStats
    read_rpc: OpStats
    write_rpc: OpStats
    inflight_rpcs: int
    get_leader_retries: int
    slow_requests: int

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> IoMetrics:
        return cls(
            read=OpStats._from_native(d["read"]),
            write=OpStats._from_native(d["write"]),
            discard=OpStats._from_native(d["discard"]),
            read_rpc=OpStats._from_native(d["read_rpc"]),
            write_rpc=OpStats._from_native(d["write_rpc"]),
            inflight_rpcs=d["inflight_rpcs"],
            get_leader_retries=d["get_leader_retries"],
            slow_requests=d["slow_requests"],
        )


@dataclass(frozen=True, slots=True)
class MdsMetrics:
    """The MDS client (upstream's ``MDSClientMetric``): one ``OpStats`` per RPC method
    called so far (``OpenFile``, ``GetFileInfo``, …; latency per call, retries
    included), the number of failovers to another MDS, and the MDS in use."""

    methods: MappingProxyType[str, OpStats]
    failovers: int
    current_addr: str

    @classmethod
    def _from_native(cls, d: dict[str, Any]) -> MdsMetrics:
        return cls(
            methods=MappingProxyType({k: OpStats._from_native(v) for k, v in d["methods"].items()}),
            failovers=d["failovers"],
            current_addr=d["current_addr"],
        )


@dataclass(frozen=True, slots=True)
class ClientMetrics:
    """A client's metrics: ``io`` summed over every volume it opened (closed ones
    included), its MDS client's, and each volume open now, by path."""

    io: IoMetrics
    mds: MdsMetrics
    volumes: MappingProxyType[str, IoMetrics]


__all__ = ["ClientMetrics", "IoMetrics", "Latency", "MdsMetrics", "OpStats"]
