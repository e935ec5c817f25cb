"""asyncio and AIO callbacks against plain threads, side by side on one local cluster.

    python benches/bench_asyncio.py [--seconds 3] [--rounds 3] [--quick] [--pin]

Cells (4 KiB random IO on a prefilled region of one volume):

- ``threads``: 8 threads, each a loop of blocking calls (``Volume.pread``/``pwrite``);
- ``asyncio``: one thread, one event loop, 32 calls in flight (``pread_async``/``pwrite_async``);
- ``cbd threads``: 8 threads of ``CBDClient.Read``/``Write``;
- ``aio callbacks``: one thread submits 32 ``CBDClient.AioRead``/``AioWrite``; each callback
  submits the next, so 32 stay in flight until the time is up.

Client CPU is this process's user + system time over the cell. Targets (issue 17): the
one-thread cell's IOPS ≥ the 8 threads', at ≤ 1.2× their client CPU per op. Cells are
interleaved and each pair's ratio is the median over ``--rounds``. With ``--pin`` the client
process runs on CPU 0 and the local cluster's servers on the others, so both modes get the
same CPU whatever the servers take (on a 2-core machine unpinned, a single event-loop
thread competes with the servers' threads for the cores, and IOPS measure the scheduler).
The results land in ``benches/results/bench_asyncio.md`` (the docs include that file) and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # sibling scripts, not a package

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4 * KiB
SPAN = 64 * MiB
THREADS = 8
IN_FLIGHT = 32
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Cell:
    ops: int
    elapsed: float
    cpu: float

    @property
    def iops(self) -> float:
        return self.ops / self.elapsed

    @property
    def cpu_us(self) -> float:
        return self.cpu / max(self.ops, 1) * 1e6


def _offset(rng: random.Random) -> int:
    return rng.randrange(SPAN // BLOCK) * BLOCK


def threads_cell(vol: curvefs.Volume, write: bool, seconds: float) -> Cell:
    data = b"w" * BLOCK

    def op(rng: random.Random) -> None:
        if write:
            vol.pwrite(data, _offset(rng))
        else:
            vol.pread(BLOCK, _offset(rng))

    run = _harness.run_threads(THREADS, seconds, op)
    return Cell(run.ops, run.elapsed, run.cpu)


def asyncio_cell(vol: curvefs.Volume, write: bool, seconds: float) -> Cell:
    data = b"a" * BLOCK

    async def worker(i: int, stop: float, counts: list[int]) -> None:
        rng = random.Random(i + 1)
        while time.monotonic() < stop:
            if write:
                await vol.pwrite_async(data, _offset(rng))
            else:
                await vol.pread_async(BLOCK, _offset(rng))
            counts[i] += 1

    async def run() -> Cell:
        counts = [0] * IN_FLIGHT
        cpu0, start = _harness.cpu_seconds(), time.perf_counter()
        stop = time.monotonic() + seconds
        await asyncio.gather(*(worker(i, stop, counts) for i in range(IN_FLIGHT)))
        return Cell(sum(counts), time.perf_counter() - start, _harness.cpu_seconds() - cpu0)

    return asyncio.run(run())


def cbd_threads_cell(cbd: curvefs.CBDClient, fd: int, write: bool, seconds: float) -> Cell:
    data = b"c" * BLOCK

    def op(rng: random.Random) -> None:
        off = _offset(rng)
        got = cbd.Write(fd, data, off, BLOCK) if write else cbd.Read(fd, "", off, BLOCK)
        if isinstance(got, int) and got < 0:
            raise OSError(got, "IO failed")

    run = _harness.run_threads(THREADS, seconds, op)
    return Cell(run.ops, run.elapsed, run.cpu)


def aio_cell(cbd: curvefs.CBDClient, fd: int, write: bool, seconds: float) -> Cell:
    """32 AIO contexts kept in flight by their own callbacks (each resubmits itself)."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    done = threading.Event()
    state = {"ops": 0, "live": IN_FLIGHT, "error": 0}
    op = curvefs.CURVE_OP_WRITE if write else curvefs.CURVE_OP_READ
    submit = cbd.AioWrite if write else cbd.AioRead

    def finished(ctx: curvefs.AioContext_t) -> None:
        with lock:
            if ctx.ret < 0:
                state["error"] = ctx.ret
            else:
                state["ops"] += 1
        if state["error"] == 0 and time.monotonic() < stop:
            ctx.offset = _offset(rngs[id(ctx)])
            if submit(fd, ctx) == 0:
                return
        with lock:
            state["live"] -= 1
            if state["live"] == 0:
                done.set()

    contexts = []
    rngs: dict[int, random.Random] = {}
    for i in range(IN_FLIGHT):
        ctx = curvefs.AioContext_t(0, BLOCK, bytearray(b"x" * BLOCK), finished)
        ctx.op = op
        rngs[id(ctx)] = random.Random(i + 1)
        ctx.offset = _offset(rngs[id(ctx)])
        contexts.append(ctx)
    cpu0, start = _harness.cpu_seconds(), time.perf_counter()
    for ctx in contexts:
        if submit(fd, ctx) != 0:
            raise OSError("AIO submit failed")
    if not done.wait(seconds + 60):
        raise TimeoutError("AIO contexts still in flight 60 s after the cell's end")
    elapsed, cpu = time.perf_counter() - start, _harness.cpu_seconds() - cpu0
    if state["error"]:
        raise OSError(state["error"], "AIO failed")
    return Cell(state["ops"], elapsed, cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 s cells, 1 round")
    ap.add_argument(
        "--pin", action="store_true", help="the client on CPU 0, the servers on the others"
    )
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    pairs = {(w, kind): [] for w in ("read", "write") for kind in ("Volume", "CBDClient")}  # type: dict[tuple[str, str], list[tuple[Cell, Cell]]]
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) < 2:
        ap.error("--pin needs two CPUs")
    with LocalCluster() as cluster, curvefs.Client(cluster.conf_path, user="bench") as client:
        if args.pin:
            _harness.pin(0, {cpus[0]})
            for server in cluster.server_names:
                _harness.pin(cluster.pid(server), set(cpus[1:]))
        client.create("/bench", 10 * GiB)
        with client.open("/bench") as vol:
            chunk = b"p" * MiB
            for off in range(0, SPAN, MiB):
                vol.pwrite(chunk, off)
            cbd = curvefs.CBDClient()
            assert cbd.Init(cluster.conf_path) == 0
            fd = cbd.Open("/bench", curvefs.UserInfo_t("bench"))
            assert fd >= 0, fd
            try:
                for r in range(args.rounds):
                    for w in ("read", "write"):
                        write = w == "write"
                        one = [
                            partial(threads_cell, vol, write, args.seconds),
                            partial(asyncio_cell, vol, write, args.seconds),
                        ]
                        two = [
                            partial(cbd_threads_cell, cbd, fd, write, args.seconds),
                            partial(aio_cell, cbd, fd, write, args.seconds),
                        ]
                        for kind, cells in (("Volume", one), ("CBDClient", two)):
                            # Alternate which runs first, so drift spreads over both.
                            order = cells if r % 2 == 0 else cells[::-1]
                            a, b = (f() for f in order)
                            t, s = (a, b) if r % 2 == 0 else (b, a)
                            pairs[(w, kind)].append((t, s))
            finally:
                cbd.Close(fd)
                cbd.UnInit()
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for (w, kind), runs in pairs.items():
        iops_ratio = statistics.median(s.iops / t.iops for t, s in runs)
        cpu_ratio = statistics.median(s.cpu_us / t.cpu_us for t, s in runs)
        t = max(runs, key=lambda p: p[0].iops)[0]
        s = max(runs, key=lambda p: p[1].iops)[1]
        rows.append(
            {
                "io": f"4 KiB random {w}",
                "api": kind,
                "threads_iops": t.iops,
                "threads_cpu_us": t.cpu_us,
                "one_thread_iops": s.iops,
                "one_thread_cpu_us": s.cpu_us,
                "iops_ratio": iops_ratio,
                "cpu_ratio": cpu_ratio,
                "pass": iops_ratio >= 1.0 and cpu_ratio <= 1.2,
                "runs": [[asdict(t), asdict(s)] for t, s in runs],
            }
        )
    command = "python benches/bench_asyncio.py" + (" --quick" if args.quick else "")
    command += " --pin" if args.pin else ""
    lines = [
        "# asyncio and AIO callbacks against threads",
        "",
        f"`{command}` — curvefs {curvefs.__version__}, {platform.machine()}, "
        f"{args.seconds:g} s cells, {args.rounds} round(s), medians of the per-round ratios. "
        f"One thread with {IN_FLIGHT} calls in flight (`asyncio`: `Volume.pread_async`/"
        f"`pwrite_async` under one event loop; AIO: `CBDClient.AioRead`/`AioWrite`, each "
        f"callback submitting the next) against {THREADS} threads of blocking calls "
        "(`Volume.pread`/`pwrite`; `CBDClient.Read`/`Write`). Client CPU: this process's "
        "user + system time per op. Target (issue 17): IOPS ratio ≥ 1, CPU ratio ≤ 1.2.",
        "",
        "| IO | API | 8 threads IOPS | CPU µs/op | one thread, 32 in flight IOPS | CPU µs/op "
        "| IOPS ratio | CPU ratio | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['io']} | {'asyncio' if row['api'] == 'Volume' else 'AIO callbacks'} "
            f"({row['api']}) | {row['threads_iops']:,.0f} | {row['threads_cpu_us']:.0f} | "
            f"{row['one_thread_iops']:,.0f} | {row['one_thread_cpu_us']:.0f} | "
            f"{row['iops_ratio']:.2f} | {row['cpu_ratio']:.2f} | "
            f"{'PASS' if row['pass'] else 'MISS'} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "bench_asyncio.md").write_text(text, encoding="utf-8")
    (RESULTS / "bench_asyncio.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
