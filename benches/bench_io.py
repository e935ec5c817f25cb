"""IO benchmark of CBDClient against the local cluster (not a test: run it by hand).

    python benches/bench_io.py [--seconds 3] [--conf client.conf]

Measures, in one run and side by side: sequential 1 MiB write and read throughput, and
4 KiB random read and write IOPS at 1, 2, 4 and 8 Python threads sharing one fd. Each
figure is also given as a ratio to the single-thread figure of the same kind, which is
what stays comparable across these shared, noisy machines. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable

import curvefs
from curvefs.testing import LocalCluster

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 4096
SPAN = 256 * MiB  # the region random IO touches (pre-written so reads hit real chunks)


def run_threads(threads: int, seconds: float, work: Callable[[random.Random], int]) -> float:
    """Run ``work`` in a loop on ``threads`` threads; return operations per second."""
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

    start = time.monotonic()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return sum(counts) / (time.monotonic() - start)


def bench(conf: str, seconds: float) -> list[tuple[str, int, float, str]]:
    cbd = curvefs.CBDClient()
    if cbd.Init(conf) != 0:
        raise SystemExit("Init failed")
    user = curvefs.UserInfo_t()
    user.owner = "bench"
    path = f"/bench-{uuid.uuid4().hex[:8]}"
    if cbd.Create(path, user, 10 * GiB) != 0:
        raise SystemExit("Create failed")
    fd = cbd.Open(path, user)
    rows: list[tuple[str, int, float, str]] = []

    mib = os.urandom(MiB)
    pos = [0]
    limit = [8 * GiB]  # sequential reads wrap inside what the write phase wrote

    def seq_write(_: random.Random) -> int:
        off = pos[0] % (8 * GiB)
        pos[0] += MiB
        return cbd.Write(fd, mib, off, MiB)

    def seq_read(_: random.Random) -> int:
        off = pos[0] % limit[0]
        pos[0] += MiB
        got = cbd.Read(fd, "", off, MiB)
        return got if isinstance(got, int) else len(got)

    rate = run_threads(1, seconds, seq_write)
    rows.append(("sequential write 1 MiB", 1, rate, "MiB/s"))
    limit[0] = max(MiB, min(pos[0], 8 * GiB))
    pos[0] = 0
    rate = run_threads(1, seconds, seq_read)
    rows.append(("sequential read 1 MiB", 1, rate, "MiB/s"))

    # pre-write the random region so random reads hit written chunks
    for off in range(0, SPAN, MiB):
        cbd.Write(fd, mib, 8 * GiB + off, MiB)
    block = os.urandom(BLOCK)

    def rand_write(rng: random.Random) -> int:
        return cbd.Write(fd, block, 8 * GiB + rng.randrange(SPAN // BLOCK) * BLOCK, BLOCK)

    def rand_read(rng: random.Random) -> int:
        got = cbd.Read(fd, "", 8 * GiB + rng.randrange(SPAN // BLOCK) * BLOCK, BLOCK)
        return got if isinstance(got, int) else len(got)

    for label, fn in (("4 KiB random write", rand_write), ("4 KiB random read", rand_read)):
        for threads in (1, 2, 4, 8):
            rows.append((label, threads, run_threads(threads, seconds, fn), "IOPS"))

    cbd.Close(fd)
    cbd.Unlink(path, user)
    cbd.UnInit()
    return rows


def report(rows: list[tuple[str, int, float, str]]) -> str:
    base: dict[str, float] = {}
    out = ["| workload | threads | result | × 1 thread |", "|---|---:|---:|---:|"]
    for label, threads, rate, unit in rows:
        base.setdefault(label, rate)
        out.append(f"| {label} | {threads} | {rate:,.0f} {unit} | {rate / base[label]:.2f} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--conf", help="client.conf of a running cluster (default: a local one)")
    args = parser.parse_args()
    if args.conf:
        rows = bench(args.conf, args.seconds)
    else:
        with LocalCluster() as cluster:
            rows = bench(cluster.conf_path, args.seconds)
    print(f"curvefs {curvefs.__version__}, {os.cpu_count()} CPUs, {args.seconds:g} s per figure")
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
