"""IO benchmark of CBDClient over baidu_std and over gRPC, side by side (not a test).

    python benches/bench_io.py [--seconds 2] [--conf client.conf] [--rounds 1]

Against one local cluster (or the cluster of ``--conf``), two clients, one per wire
(``mds.transport``/``chunkserver.transport``), each on a volume of its own, run the same
workloads: sequential 1 MiB write and read, and 4 KiB random write and read at 1, 4 and 8
Python threads sharing one fd. Cells are interleaved (baidu_std then gRPC, then gRPC then
baidu_std for the next cell) so that the machine's noise spreads over both. Besides the
rate, each cell reports the client's own CPU per operation — user + system time of this
process, which holds the client but not the servers — so the client's cost shows even
where the servers on the same cores are the bottleneck. Prints a Markdown table; the
ratio column (baidu_std ÷ gRPC) is what stays comparable across runs on shared machines.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 4096
SPAN = 256 * MiB  # the region random IO touches (pre-written so reads hit real chunks)
SEQ_SPAN = 4 * GiB  # sequential IO wraps inside this
WIRES = ("baidu_std", "grpc")


@dataclass
class Cell:
    rate: float  # operations per second
    cpu_us: float  # client CPU per operation


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def run_threads(threads: int, seconds: float, work: Callable[[random.Random], int]) -> Cell:
    """Run ``work`` in a loop on ``threads`` threads; its rate and CPU per call."""
    stop = time.monotonic() + seconds
    counts = [0] * threads
    errors: list[str] = []

    def loop(i: int) -> None:
        rng = random.Random(i)
        n = 0
        while time.monotonic() < stop:
            rc = work(rng)
            if rc < 0:
                errors.append(f"IO failed with {rc}")
                return
            n += 1
        counts[i] = n

    cpu0, start = cpu_seconds(), time.monotonic()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed, cpu = time.monotonic() - start, cpu_seconds() - cpu0
    if errors:
        raise RuntimeError(errors[0])
    ops = max(sum(counts), 1)
    return Cell(rate=ops / elapsed, cpu_us=cpu / ops * 1e6)


class Volume:
    """One client over one wire, with a volume of its own."""

    def __init__(self, conf: str, wire: str) -> None:
        self.cbd = curvefs.CBDClient()
        if self.cbd.Init(conf) != 0:
            raise SystemExit(f"Init over {wire} failed")
        self.user = curvefs.UserInfo_t()
        self.user.owner = "bench"
        self.path = f"/bench-{wire}-{uuid.uuid4().hex[:8]}"
        if self.cbd.Create(self.path, self.user, 10 * GiB) != 0:
            raise SystemExit("Create failed")
        self.fd = self.cbd.Open(self.path, self.user)
        if self.fd < 0:
            raise SystemExit(f"Open failed: {self.fd}")
        self.pos = 0
        self.written = MiB
        self.mib = os.urandom(MiB)
        self.block = os.urandom(BLOCK)
        # Pre-write the random region so random reads hit written chunks.
        for off in range(0, SPAN, MiB):
            self.cbd.Write(self.fd, self.mib, 8 * GiB + off, MiB)

    def seq_write(self, _: random.Random) -> int:
        off = self.pos % SEQ_SPAN
        self.pos += MiB
        self.written = max(self.written, min(self.pos, SEQ_SPAN))
        return self.cbd.Write(self.fd, self.mib, off, MiB)

    def seq_read(self, _: random.Random) -> int:
        off = self.pos % self.written
        self.pos += MiB
        got = self.cbd.Read(self.fd, "", off, MiB)
        return got if isinstance(got, int) else len(got)

    def rand_write(self, rng: random.Random) -> int:
        off = 8 * GiB + rng.randrange(SPAN // BLOCK) * BLOCK
        return self.cbd.Write(self.fd, self.block, off, BLOCK)

    def rand_read(self, rng: random.Random) -> int:
        off = 8 * GiB + rng.randrange(SPAN // BLOCK) * BLOCK
        got = self.cbd.Read(self.fd, "", off, BLOCK)
        return got if isinstance(got, int) else len(got)

    def close(self) -> None:
        self.cbd.Close(self.fd)
        self.cbd.Unlink(self.path, self.user)
        self.cbd.UnInit()


Row = tuple[str, int, str, dict[str, Cell]]


def bench(conf: str, seconds: float, rounds: int) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="curvefs-bench-"))
    text = Path(conf).read_text(encoding="utf-8")
    vols: dict[str, Volume] = {}
    for wire in WIRES:
        wire_conf = tmp / f"{wire}.conf"
        wire_conf.write_text(
            text + f"mds.transport={wire}\nchunkserver.transport={wire}\n", encoding="utf-8"
        )
        vols[wire] = Volume(str(wire_conf), wire)
    plan: list[tuple[str, int, str, str]] = [
        ("sequential write 1 MiB", 1, "MiB/s", "seq_write"),
        ("sequential read 1 MiB", 1, "MiB/s", "seq_read"),
    ]
    for threads in (1, 4, 8):
        plan.append(("4 KiB random write", threads, "IOPS", "rand_write"))
    for threads in (1, 4, 8):
        plan.append(("4 KiB random read", threads, "IOPS", "rand_read"))
    rows: list[Row] = []
    for n, (label, threads, unit, method) in enumerate(plan):
        if method == "seq_read":
            for v in vols.values():
                v.pos = 0
        sums: dict[str, list[Cell]] = {w: [] for w in WIRES}
        for r in range(rounds):
            order = WIRES if (n + r) % 2 == 0 else WIRES[::-1]
            for wire in order:
                work: Callable[[random.Random], int] = getattr(vols[wire], method)
                sums[wire].append(run_threads(threads, seconds, work))
        cells = {
            w: Cell(
                rate=sum(c.rate for c in cs) / len(cs),
                cpu_us=sum(c.cpu_us for c in cs) / len(cs),
            )
            for w, cs in sums.items()
        }
        rows.append((label, threads, unit, cells))
    for v in vols.values():
        v.close()
    return rows


def report(rows: list[Row]) -> str:
    out = [
        "| workload | threads | baidu_std | gRPC | baidu_std ÷ gRPC "
        "| client CPU/op baidu_std | client CPU/op gRPC |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, threads, unit, cells in rows:
        b, g = cells["baidu_std"], cells["grpc"]
        out.append(
            f"| {label} | {threads} | {b.rate:,.0f} {unit} | {g.rate:,.0f} {unit} "
            f"| {b.rate / g.rate:.2f} | {b.cpu_us:,.0f} µs | {g.cpu_us:,.0f} µs |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of each cell")
    parser.add_argument("--conf", help="client.conf of a running cluster (default: a local one)")
    args = parser.parse_args()
    if args.conf:
        rows = bench(args.conf, args.seconds, args.rounds)
    else:
        with LocalCluster() as cluster:
            rows = bench(cluster.conf_path, args.seconds, args.rounds)
    print(
        f"curvefs {curvefs.__version__}, {os.cpu_count()} CPUs, "
        f"{args.seconds:g} s per cell, {args.rounds} round(s)"
    )
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
