"""curvefs against what a user would otherwise use, and against the machine, in one run.

    python benches/bench_compare.py [--seconds 3] [--quick] [--out benches/results]

Starts a local cluster and runs the same workloads through five clients, each on a volume
of its own: ``CBDClient`` over baidu_std (the default wire) and over gRPC
(``mds.transport``/``chunkserver.transport=grpc``); a pure-Python client on ``grpcio``
(``benches/grpcio_client.py``, code generated from ``protos/`` at run time); and the Rust
core called directly (``rust/curve-bench``, built here with ``cargo build --release``) over
both wires. Workloads: 4 KiB random read and write at 1, 2, 4, 8 and 16 threads sharing one
fd (IOPS, p50/p99 latency; the 1-thread cells are the latency of one call at queue depth 1),
and 64 KiB, 1 MiB and 4 MiB sequential write and read by one thread. Every cell runs the
five clients back to back, in an order rotated from cell to cell, so the noise of a shared
2-core machine spreads over all of them.

Alongside, the machine's ceilings from ``curve-bench``: one loopback TCP stream's bandwidth
(1 MiB writes; a replicated write moves its bytes over loopback three times, so a third of
it bounds writes) and small-message round trips per second (pinned to two CPUs and not),
measured before and after the cells. Each cell also reports the client's own CPU (user +
system time of the process that holds the client — this one for the Python clients, the
``curve-bench`` process for the Rust core; the servers are processes of their own) per
operation and per MiB. Finally a child process measures the memory peak of a 64 MiB
``Read`` and of a ``preadinto`` into a preallocated buffer.

Writes ``bench_compare.md`` (tables, ratios, PASS/MISS against the targets of issue 10),
``bench_compare.json`` and three PNG plots into ``--out``. Needs the ``bench`` extra
(matplotlib, grpcio, grpcio-tools) and cargo.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import curvefs
from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # sibling scripts, not a package
import grpcio_client

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4096
VOLUME = 10 * GiB
RAND_OFF = 8 * GiB  # random IO stays in [RAND_OFF, RAND_OFF + span), written beforehand
SEQ_SPAN = 4 * GiB  # sequential IO wraps inside [0, SEQ_SPAN)
THREADS = (1, 2, 4, 8, 16)
SEQ_SIZES = (64 * KiB, MiB, 4 * MiB)
REPO = Path(__file__).resolve().parent.parent

# name → (label, colour) in tables and plots
CLIENTS = {
    "cbd_baidu": ("CBDClient baidu_std", "tab:blue"),
    "cbd_grpc": ("CBDClient gRPC", "tab:cyan"),
    "grpcio": ("grpcio (pure Python)", "tab:red"),
    "rust_baidu": ("Rust core baidu_std", "tab:green"),
    "rust_grpc": ("Rust core gRPC", "tab:olive"),
}


@dataclass
class Cell:
    ops: int
    bytes: int
    elapsed: float
    cpu: float  # client CPU seconds over the cell
    mean_us: float
    p50_us: float
    p99_us: float
    context_switches: int = 0  # the client process's, over the cell (curve-bench's only)

    @property
    def iops(self) -> float:
        return self.ops / self.elapsed

    @property
    def mib_s(self) -> float:
        return self.bytes / MiB / self.elapsed

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu / max(self.ops, 1) * 1e6

    @property
    def cpu_us_per_mib(self) -> float:
        return self.cpu / max(self.bytes / MiB, 1e-9) * 1e6


def run_threads(threads: int, seconds: float, op: Callable[[random.Random], None]) -> Cell:
    """``op`` in a loop on ``threads`` threads for ``seconds``; every call timed."""
    run = _harness.run_threads(threads, seconds, op)
    return Cell(
        ops=run.ops,
        bytes=0,
        elapsed=run.elapsed,
        cpu=run.cpu,
        mean_us=run.mean_us,
        p50_us=run.p50_us,
        p99_us=run.p99_us,
    )


class PyBench:
    """The offsets of every workload, over a client's read(off, n) and write(off, data)."""

    def __init__(self, span: int) -> None:
        self.span = span
        self.written = 0  # how far sequential writes reached; reads stay inside
        self.cursor = itertools.count()  # next() is atomic under the GIL
        self.blocks: dict[int, bytes] = {}

    def read(self, offset: int, length: int) -> None:
        raise NotImplementedError

    def write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def fill(self) -> None:
        data = os.urandom(MiB)
        for off in range(RAND_OFF, RAND_OFF + self.span, MiB):
            self.write(off, data)

    def run(self, kind: str, bs: int, threads: int, seconds: float) -> Cell:
        data = self.blocks.setdefault(bs, os.urandom(bs))
        self.cursor = itertools.count()
        nblocks = self.span // bs
        op: Callable[[random.Random], None]
        if kind == "randread":

            def op(rng: random.Random) -> None:
                self.read(RAND_OFF + rng.randrange(nblocks) * bs, bs)
        elif kind == "randwrite":

            def op(rng: random.Random) -> None:
                self.write(RAND_OFF + rng.randrange(nblocks) * bs, data)
        elif kind == "seqwrite":

            def op(_: random.Random) -> None:
                off = next(self.cursor) * bs % SEQ_SPAN
                self.written = max(self.written, off + bs)
                self.write(off, data)
        else:
            extent = max(self.written // bs, 1) * bs

            def op(_: random.Random) -> None:
                self.read(next(self.cursor) * bs % extent, bs)

        cell = run_threads(threads, seconds, op)
        cell.bytes = cell.ops * bs
        return cell


class CbdBench(PyBench):
    def __init__(self, conf: str, wire: str, span: int) -> None:
        super().__init__(span)
        self.cbd = curvefs.CBDClient()
        if self.cbd.Init(conf) != 0:
            raise SystemExit(f"CBDClient.Init over {wire} failed")
        self.user = curvefs.UserInfo_t()
        self.user.owner = "bench"
        self.path = f"/cbd-{wire}-{uuid.uuid4().hex[:8]}"
        if (rc := self.cbd.Create(self.path, self.user, VOLUME)) != 0:
            raise SystemExit(f"Create {self.path}: {rc}")
        self.fd = self.cbd.Open(self.path, self.user)
        if self.fd < 0:
            raise SystemExit(f"Open {self.path}: {self.fd}")

    def read(self, offset: int, length: int) -> None:
        got = self.cbd.Read(self.fd, "", offset, length)
        if isinstance(got, int):
            raise RuntimeError(f"Read at {offset}: {got}")

    def write(self, offset: int, data: bytes) -> None:
        rc = self.cbd.Write(self.fd, data, offset, len(data))
        if rc != len(data):
            raise RuntimeError(f"Write at {offset}: {rc}")

    def close(self) -> None:
        self.cbd.Close(self.fd)
        self.cbd.Unlink(self.path, self.user)
        self.cbd.UnInit()


class GrpcioBench(PyBench):
    def __init__(self, mds_addr: str, span: int) -> None:
        super().__init__(span)
        self.client = grpcio_client.GrpcioClient(mds_addr, "bench")
        self.path = f"/grpcio-{uuid.uuid4().hex[:8]}"
        self.client.create(self.path, VOLUME)
        self.file = self.client.open(self.path)

    def read(self, offset: int, length: int) -> None:
        self.file.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.file.write(offset, data)

    def close(self) -> None:
        self.file.close()
        self.client.close()


class RustBench:
    """A ``curve-bench`` process holding one client and one volume; one JSON line per cell."""

    def __init__(self, binary: Path, conf: str | None, wire: str, span: int) -> None:
        self.span = span
        self.proc = subprocess.Popen(
            [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if conf is not None:
            path = f"/rust-{wire}-{uuid.uuid4().hex[:8]}"
            self.call(op="open", conf=conf, path=path, size=VOLUME, user="bench")

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"curve-bench exited ({self.proc.wait()}) on {cmd}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"curve-bench {cmd['op']}: {reply.get('error')}")
        return reply

    def fill(self) -> None:
        self.call(op="fill", offset=RAND_OFF, len=self.span)

    def run(self, kind: str, bs: int, threads: int, seconds: float) -> Cell:
        r = self.call(
            op="io",
            kind=kind,
            bs=bs,
            threads=threads,
            seconds=seconds,
            span_off=RAND_OFF,
            span_len=self.span,
        )
        return Cell(
            ops=r["ops"],
            bytes=r["bytes"],
            elapsed=r["elapsed"],
            cpu=r["cpu"],
            mean_us=r["mean_us"],
            p50_us=r["p50_us"],
            p99_us=r["p99_us"],
            context_switches=r.get("vcsw", 0) + r.get("ivcsw", 0),
        )

    def close(self) -> None:
        try:
            self.call(op="close")
        finally:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


Bench = PyBench | RustBench


def build_rust() -> Path:
    """``cargo build --release -p curve-bench``; the binary's path, from cargo's own report."""
    cmd = [
        "cargo",
        "build",
        "--release",
        "--locked",
        "-p",
        "curve-bench",
        "--message-format=json-render-diagnostics",
    ]
    out = subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if (
            msg.get("reason") == "compiler-artifact"
            and msg.get("executable")
            and msg["target"]["name"] == "curve-bench"
        ):
            return Path(msg["executable"])
    raise SystemExit("cargo built no curve-bench executable")


def ceilings(rust: RustBench, seconds: float) -> dict[str, float]:
    bw = rust.call(op="tcp_bw", seconds=seconds, size=MiB)
    rtt = rust.call(op="tcp_rtt", seconds=seconds / 2, size=64)
    pinned = rust.call(op="tcp_rtt", seconds=seconds / 2, size=64, pin=True)
    return {
        "tcp_bw_mib_s": bw["bytes_per_s"] / MiB,
        "rtt_per_s": rtt["per_s"],
        "rtt_p50_us": rtt["p50_us"],
        "rtt_pinned_per_s": pinned["per_s"],
        "rtt_pinned_p50_us": pinned["p50_us"],
    }


def plan() -> list[tuple[str, int, int]]:
    """(kind, block size, threads) of every cell, in running order."""
    cells = [("randread", BLOCK, t) for t in THREADS]
    cells += [("randwrite", BLOCK, t) for t in THREADS]
    for bs in SEQ_SIZES:
        cells += [("seqwrite", bs, 1), ("seqread", bs, 1)]
    return cells


Results = dict[str, dict[str, Cell]]  # cell key → client → Cell


def key(kind: str, bs: int, threads: int) -> str:
    return f"{kind}/{bs}/{threads}"


def measure(clients: dict[str, Bench], seconds: float, log: Callable[[str], None]) -> Results:
    results: Results = {}
    names = list(clients)
    cells = plan()
    for n, (kind, bs, threads) in enumerate(cells):
        order = names[n % len(names) :] + names[: n % len(names)]
        row: dict[str, Cell] = {}
        for name in order:
            row[name] = clients[name].run(kind, bs, threads, seconds)
        results[key(kind, bs, threads)] = {name: row[name] for name in names}
        summary = ", ".join(
            f"{name} {c.iops:,.0f}/s" if bs == BLOCK else f"{name} {c.mib_s:,.0f} MiB/s"
            for name, c in results[key(kind, bs, threads)].items()
        )
        log(f"[{n + 1}/{len(cells)}] {kind} {fmt_size(bs)} x{threads}: {summary}")
    return results


# ---------------------------------------------------------------------------------------
# Memory of large reads, each in a fresh child process of its own.

PROBE = 64 * MiB


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KiB
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_now() -> int:
    """The current RSS; first resets the peak to it where the kernel allows (clear_refs 5).

    The peak is VmHWM, this process's own; not ``ru_maxrss``, which a child started from
    a larger parent inherits across exec.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass  # then VmHWM may include an earlier peak: the figure errs high, not low
    return _status_kib("VmRSS")


def rss_peak() -> int:
    return _status_kib("VmHWM")


def memory_probe(conf: str, path: str, how: str) -> dict[str, float]:
    """In the child: the peak RSS a 64 MiB ``Read`` (``how="read"``) or a ``preadinto`` of
    N MiB into a preallocated buffer (``"intoN"``) adds over the RSS just before it."""
    if how == "fill":
        with curvefs.Client(conf, user="bench") as client:
            client.create(path, VOLUME)
            with client.open(path) as vol:
                chunk = os.urandom(MiB)
                for off in range(0, PROBE, MiB):
                    vol.pwrite(chunk, off)
        return {}
    if how.startswith("into"):
        size = int(how[4:]) * MiB
        with curvefs.Client(conf, user="bench") as client, client.open(path) as vol:
            buf = bytearray(size)  # allocated and touched before the baseline
            vol.preadinto(memoryview(buf)[:BLOCK], 0)
            base = rss_now()
            vol.preadinto(buf, 0)
            return {"extra": rss_peak() - base}
    cbd = curvefs.CBDClient()
    cbd.Init(conf)
    user = curvefs.UserInfo_t()
    user.owner = "bench"
    fd = cbd.Open(path, user)
    cbd.Read(fd, "", 0, BLOCK)
    base = rss_now()
    data = cbd.Read(fd, "", 0, PROBE)
    extra = rss_peak() - base
    ok = not isinstance(data, int) and len(data) == PROBE
    cbd.Close(fd)
    cbd.UnInit()
    return {"extra": extra if ok else float("nan")}


def run_memory_probe(conf: str) -> dict[str, float]:
    path = f"/mem-{uuid.uuid4().hex[:8]}"
    got: dict[str, float] = {}
    for how in ("fill", "into16", f"into{PROBE // MiB}", "read"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-probe", conf, path, how],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        reply: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        if how == "into16":
            got["preadinto16_extra"] = reply["extra"]
        elif how != "fill":
            got["read_extra" if how == "read" else "preadinto_extra"] = reply["extra"]
    return got


# ---------------------------------------------------------------------------------------
# Ratios, targets, tables, plots.


def fmt_size(bs: int) -> str:
    return f"{bs // MiB} MiB" if bs >= MiB else f"{bs // KiB} KiB"


@dataclass
class Target:
    name: str
    value: float
    limit: float
    at_least: bool  # value ≥ limit passes; else value ≤ limit passes
    detail: str

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def shortfall(self) -> str:
        if self.passed:
            return ""
        if self.at_least:
            return f"{self.limit / self.value:.2f}× short of the limit"
        return f"{self.value / self.limit:.2f}× over the limit"


def targets(r: Results, ceil: dict[str, float], mem: dict[str, float]) -> list[Target]:
    def c(kind: str, bs: int, threads: int, who: str) -> Cell:
        return r[key(kind, bs, threads)][who]

    out: list[Target] = []
    for kind, word in (("randread", "read"), ("randwrite", "write")):
        cbd, py = c(kind, BLOCK, 8, "cbd_baidu"), c(kind, BLOCK, 8, "grpcio")
        out.append(
            Target(
                f"4 KiB {word} IOPS at 8 threads, CBDClient ÷ grpcio",
                cbd.iops / py.iops,
                3.0,
                True,
                f"{cbd.iops:,.0f} vs {py.iops:,.0f} IOPS",
            )
        )
        out.append(
            Target(
                f"4 KiB {word} client CPU/op at 8 threads, CBDClient ÷ grpcio",
                cbd.cpu_us_per_op / py.cpu_us_per_op,
                0.2,
                False,
                f"{cbd.cpu_us_per_op:,.0f} vs {py.cpu_us_per_op:,.0f} µs",
            )
        )
    for kind, word in (("seqread", "read"), ("seqwrite", "write")):
        cbd, py = c(kind, MiB, 1, "cbd_baidu"), c(kind, MiB, 1, "grpcio")
        out.append(
            Target(
                f"1 MiB sequential {word}, CBDClient ÷ grpcio",
                cbd.mib_s / py.mib_s,
                2.0,
                True,
                f"{cbd.mib_s:,.0f} vs {py.mib_s:,.0f} MiB/s",
            )
        )
    one, four = c("randread", BLOCK, 1, "cbd_baidu"), c("randread", BLOCK, 4, "cbd_baidu")
    out.append(
        Target(
            "4 KiB read scaling, CBDClient 4 threads ÷ 1 thread",
            four.iops / one.iops,
            1.6,
            True,
            f"{four.iops:,.0f} vs {one.iops:,.0f} IOPS",
        )
    )
    # The Python layer's cost: CBDClient against the same core without Python, same wire.
    for kind, bs, threads, what in (
        ("randread", BLOCK, 1, "4 KiB read at QD1 (mean latency)"),
        ("randwrite", BLOCK, 1, "4 KiB write at QD1 (mean latency)"),
        ("randread", BLOCK, 8, "4 KiB read at 8 threads (time per op)"),
        ("randwrite", BLOCK, 8, "4 KiB write at 8 threads (time per op)"),
        ("seqread", MiB, 1, "1 MiB sequential read (time per MiB)"),
        ("seqwrite", MiB, 1, "1 MiB sequential write (time per MiB)"),
    ):
        cbd, rust = c(kind, bs, threads, "cbd_baidu"), c(kind, bs, threads, "rust_baidu")
        if threads == 1 and bs == BLOCK:
            ratio, detail = (
                cbd.mean_us / rust.mean_us,
                f"{cbd.mean_us:,.0f} vs {rust.mean_us:,.0f} µs",
            )
        else:
            unit = "IOPS" if bs == BLOCK else "MiB/s"
            rc, rr = (cbd.iops, rust.iops) if bs == BLOCK else (cbd.mib_s, rust.mib_s)
            ratio = rr / rc
            detail = f"{rc:,.0f} vs {rr:,.0f} {unit}"
        out.append(Target(f"Python layer over the Rust core: {what}", ratio, 1.10, False, detail))
    bw = ceil["tcp_bw_mib_s"]
    rd, wr = c("seqread", MiB, 1, "cbd_baidu"), c("seqwrite", MiB, 1, "cbd_baidu")
    out.append(
        Target(
            "1 MiB sequential read ÷ loopback TCP bandwidth",
            rd.mib_s / bw,
            0.5,
            True,
            f"{rd.mib_s:,.0f} of {bw:,.0f} MiB/s",
        )
    )
    out.append(
        Target(
            "1 MiB sequential write ÷ (loopback TCP bandwidth / 3)",
            wr.mib_s / (bw / 3),
            0.4,
            True,
            f"{wr.mib_s:,.0f} of {bw / 3:,.0f} MiB/s",
        )
    )
    out.append(
        Target(
            "64 MiB Read: extra peak memory ÷ size",
            mem["read_extra"] / PROBE,
            1.5,
            False,
            f"{mem['read_extra'] / MiB:,.1f} MiB",
        )
    )
    # "Nothing proportional to the size": what a 64 MiB preadinto adds beyond a 16 MiB one
    # (the in-flight pieces are bounded by the RPC limit, not by the size), per MiB more.
    grown = (mem["preadinto_extra"] - mem["preadinto16_extra"]) / (PROBE - 16 * MiB)
    out.append(
        Target(
            "preadinto a preallocated buffer: extra peak memory per MiB more read, 16 → 64 MiB",
            max(grown, 0.0),
            0.1,
            False,
            f"{mem['preadinto16_extra'] / MiB:,.1f} MiB at 16 MiB, "
            f"{mem['preadinto_extra'] / MiB:,.1f} MiB at 64 MiB",
        )
    )
    return out


def table(r: Results, names: list[str], value: Callable[[str, Cell], str], cells: Any) -> str:
    head = "| workload | threads | " + " | ".join(CLIENTS[n][0] for n in names) + " |"
    out = [head, "|---|---:|" + "---:|" * len(names)]
    for kind, bs, threads in cells:
        row = r[key(kind, bs, threads)]
        vals = " | ".join(value(kind, row[n]) for n in names)
        out.append(f"| {kind} {fmt_size(bs)} | {threads} | {vals} |")
    return "\n".join(out)


def report(
    r: Results,
    ceil: list[dict[str, float]],
    mem: dict[str, float],
    tgs: list[Target],
    meta: dict[str, Any],
) -> str:
    names = list(CLIENTS)
    cells = plan()
    rand = [c for c in cells if c[1] == BLOCK]
    seq = [c for c in cells if c[1] != BLOCK]
    lines = [
        f"curvefs {meta['version']}, {meta['cpus']} CPUs ({meta['machine']}), "
        f"{meta['seconds']:g} s per cell, {meta['wall']:.0f} s in all; "
        f"`{meta['command']}`",
        "",
        "**Rate** (IOPS for 4 KiB random, MiB/s for sequential):",
        "",
        table(
            r,
            names,
            lambda k, c: f"{c.iops:,.0f}" if k.startswith("rand") else f"{c.mib_s:,.0f}",
            cells,
        ),
        "",
        "**Latency p50 / p99, µs** (the 1-thread rows: one call at queue depth 1):",
        "",
        table(r, names, lambda k, c: f"{c.p50_us:,.0f} / {c.p99_us:,.0f}", cells),
        "",
        "**Client CPU** (user + system of the client's process): µs per 4 KiB op, µs per MiB:",
        "",
        table(r, names, lambda k, c: f"{c.cpu_us_per_op:,.0f}", rand),
        "",
        table(r, names, lambda k, c: f"{c.cpu_us_per_mib:,.0f}", seq),
        "",
        "**Machine ceilings** (curve-bench, before / after the cells):",
        "",
        "| ceiling | before | after |",
        "|---|---:|---:|",
        f"| loopback TCP, 1 stream, 1 MiB writes | {ceil[0]['tcp_bw_mib_s']:,.0f} MiB/s "
        f"| {ceil[1]['tcp_bw_mib_s']:,.0f} MiB/s |",
        f"| … a third of it (each written byte crosses loopback 3×) "
        f"| {ceil[0]['tcp_bw_mib_s'] / 3:,.0f} MiB/s | {ceil[1]['tcp_bw_mib_s'] / 3:,.0f} MiB/s |",
        f"| 64 B round trips, QD1, unpinned | {ceil[0]['rtt_per_s']:,.0f}/s "
        f"(p50 {ceil[0]['rtt_p50_us']:.1f} µs) | {ceil[1]['rtt_per_s']:,.0f}/s "
        f"(p50 {ceil[1]['rtt_p50_us']:.1f} µs) |",
        f"| 64 B round trips, QD1, ends pinned to CPUs 0 and 1 "
        f"| {ceil[0]['rtt_pinned_per_s']:,.0f}/s (p50 {ceil[0]['rtt_pinned_p50_us']:.1f} µs) "
        f"| {ceil[1]['rtt_pinned_per_s']:,.0f}/s (p50 {ceil[1]['rtt_pinned_p50_us']:.1f} µs) |",
        "",
        f"**Memory**: a 64 MiB `Read` raised the peak RSS by {mem['read_extra'] / MiB:.1f} "
        f"MiB; a `preadinto` into a preallocated buffer by "
        f"{mem['preadinto16_extra'] / MiB:.1f} MiB at 16 MiB and "
        f"{mem['preadinto_extra'] / MiB:.1f} MiB at 64 MiB (each in a fresh process, over its RSS "
        "just before).",
        "",
        "**Targets** (issue 10; the ratios use the mean of the two ceiling measurements):",
        "",
        "| target | value | limit | result | figures |",
        "|---|---:|---:|---|---|",
    ]
    for t in tgs:
        mark = "PASS" if t.passed else f"MISS — {t.shortfall()}"
        sign = "≥" if t.at_least else "≤"
        lines.append(f"| {t.name} | {t.value:.2f} | {sign} {t.limit:g} | {mark} | {t.detail} |")
    _ = seq
    return "\n".join(lines) + "\n"


def plots(r: Results, ceil: dict[str, float], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(CLIENTS)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, ("randread", "randwrite"), strict=True):
        for n in names:
            label, colour = CLIENTS[n]
            ys = [r[key(kind, BLOCK, t)][n].iops for t in THREADS]
            ax.plot(THREADS, ys, marker="o", label=label, color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xticks(THREADS, [str(t) for t in THREADS])
        ax.set_xlabel("threads")
        ax.set_ylabel("IOPS")
        ax.set_ylim(bottom=0)
        ax.set_title(f"4 KiB random {'read' if kind == 'randread' else 'write'}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "iops_vs_threads.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(names)
    for ax, kind, ceiling, cname in (
        (axes[0], "seqread", ceil["tcp_bw_mib_s"], "loopback TCP"),
        (axes[1], "seqwrite", ceil["tcp_bw_mib_s"] / 3, "loopback TCP / 3"),
    ):
        for i, n in enumerate(names):
            label, colour = CLIENTS[n]
            ys = [r[key(kind, bs, 1)][n].mib_s for bs in SEQ_SIZES]
            xs = [j + (i - len(names) / 2 + 0.5) * width for j in range(len(SEQ_SIZES))]
            ax.bar(xs, ys, width, label=label, color=colour)
        ax.axhline(ceiling, color="black", linestyle="--", linewidth=1, label=cname)
        ax.set_xticks(range(len(SEQ_SIZES)), [fmt_size(bs) for bs in SEQ_SIZES])
        ax.set_ylabel("MiB/s")
        ax.set_title(f"sequential {'read' if kind == 'seqread' else 'write'}, 1 thread")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "throughput.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, kind in zip(axes, ("randread", "randwrite"), strict=True):
        for n in names:
            label, colour = CLIENTS[n]
            p50 = [r[key(kind, BLOCK, t)][n].p50_us for t in THREADS]
            p99 = [r[key(kind, BLOCK, t)][n].p99_us for t in THREADS]
            ax.plot(THREADS, p50, marker="o", color=colour, label=f"{label} p50")
            ax.plot(THREADS, p99, marker="x", linestyle="--", color=colour, label=f"{label} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(THREADS, [str(t) for t in THREADS])
        ax.set_xlabel("threads")
        ax.set_ylabel("latency, µs")
        ax.set_title(f"4 KiB random {'read' if kind == 'randread' else 'write'}: p50 —, p99 --")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7)
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, help="duration of each cell (default 3, quick 0.8)"
    )
    parser.add_argument("--quick", action="store_true", help="short cells, a small random span")
    parser.add_argument("--out", default=str(REPO / "benches" / "results"), help="results folder")
    parser.add_argument("--memory-probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe)))
        return 0
    seconds = args.seconds if args.seconds is not None else (0.8 if args.quick else 3.0)
    span = 32 * MiB if args.quick else 128 * MiB
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"{time.monotonic() - t_start:6.1f}s {msg}", file=sys.stderr, flush=True)

    log("building curve-bench (cargo build --release)")
    binary = build_rust()
    tmp = Path(tempfile.mkdtemp(prefix="curvefs-compare-"))
    clients: dict[str, Bench] = {}
    try:
        with LocalCluster() as cluster:
            text = Path(cluster.conf_path).read_text(encoding="utf-8")
            confs = {"baidu": cluster.conf_path, "grpc": str(tmp / "grpc.conf")}
            Path(confs["grpc"]).write_text(
                text + "mds.transport=grpc\nchunkserver.transport=grpc\n", encoding="utf-8"
            )
            clients["cbd_baidu"] = CbdBench(confs["baidu"], "baidu", span)
            clients["cbd_grpc"] = CbdBench(confs["grpc"], "grpc", span)
            clients["grpcio"] = GrpcioBench(cluster.mds_addr, span)
            clients["rust_baidu"] = RustBench(binary, confs["baidu"], "baidu", span)
            clients["rust_grpc"] = RustBench(binary, confs["grpc"], "grpc", span)
            ceiling_probe = RustBench(binary, None, "none", span)
            log(f"filling {span // MiB} MiB of each of {len(clients)} volumes")
            for c in clients.values():
                c.fill()
            log("ceilings")
            ceil = [ceilings(ceiling_probe, 2.0 if not args.quick else 1.0)]
            results = measure(clients, seconds, log)
            ceil.append(ceilings(ceiling_probe, 2.0 if not args.quick else 1.0))
            ceiling_probe.close()
            log("memory probe")
            mem = run_memory_probe(confs["baidu"])
            for c in clients.values():
                c.close()
            clients.clear()
    finally:
        for c in clients.values():
            try:
                c.close()
            except Exception as e:  # the first failure is the one to see
                print(f"closing: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    mean_ceil = {k: (ceil[0][k] + ceil[1][k]) / 2 for k in ceil[0]}
    tgs = targets(results, mean_ceil, mem)
    command = "python benches/bench_compare.py" + (" --quick" if args.quick else "")
    if args.seconds is not None:
        command += f" --seconds {args.seconds:g}"
    meta = {
        "version": curvefs.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "seconds": seconds,
        "wall": time.monotonic() - t_start,
        "command": command,
    }
    md = report(results, ceil, mem, tgs, meta)
    (out / "bench_compare.md").write_text(md, encoding="utf-8")
    (out / "bench_compare.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "ceilings": ceil,
                "memory": mem,
                "cells": {k: {n: asdict(c) for n, c in row.items()} for k, row in results.items()},
                "targets": [asdict(t) | {"passed": t.passed} for t in tgs],
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    for p in plots(results, mean_ceil, out):
        log(f"wrote {p}")
    print(md)
    passed = sum(t.passed for t in tgs)
    print(f"{passed} of {len(tgs)} targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
