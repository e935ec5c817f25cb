"""What the Python layer costs over the Rust core on reads: ``CBDClient.Read`` and
``curve-bench`` (the Rust core called directly) on one local cluster, cells interleaved,
each cell run ``--rounds`` times with the order alternating. Not a test; a focused probe
for the read rows of ``bench_compare.py``'s targets (the same two clients, the same
workloads), with context switches per op beside client CPU per op.

    python benches/read_overhead.py [--seconds 2] [--rounds 3]

Cells: 4 KiB random read at 1 and 8 threads, 1 MiB sequential read by one thread, and a
4 KiB read at queue depth 1 from Python's main thread (the Rust core has no main-thread
case; it is compared with the same Rust cell). Ratios are the Python layer's time per op
over the Rust core's (1.00 = no cost), one per round, and their median.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # sibling scripts, not a package
import bench_compare as bc

KiB, MiB = 1 << 10, 1 << 20


def main_thread_cell(cbd: bc.CbdBench, seconds: float) -> tuple[bc.Cell, int]:
    """4 KiB random reads at QD1 on the calling (main) thread."""
    nblocks = cbd.span // bc.BLOCK

    def read(rng: random.Random) -> None:
        cbd.read(bc.RAND_OFF + rng.randrange(nblocks) * bc.BLOCK, bc.BLOCK)

    c0 = _harness.context_switches()
    run = _harness.run_here(seconds, read)
    cell = bc.Cell(
        ops=run.ops,
        bytes=run.ops * bc.BLOCK,
        elapsed=run.elapsed,
        cpu=run.cpu,
        mean_us=run.mean_us,
        p50_us=run.p50_us,
        p99_us=run.p99_us,
    )
    return cell, _harness.context_switches() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="comma-separated cell names to run")
    args = ap.parse_args()
    binary = bc.build_rust()
    span = 32 * MiB
    cells = {
        "randread 4K x1": ("randread", bc.BLOCK, 1),
        "randread 4K x1 main": ("randread", bc.BLOCK, 1),
        "randread 4K x8": ("randread", bc.BLOCK, 8),
        "seqread 1M x1": ("seqread", MiB, 1),
    }
    if args.only:
        cells = {k: v for k, v in cells.items() if k in args.only.split(",")}
    ratios: dict[str, list[float]] = {k: [] for k in cells}
    with LocalCluster() as cluster:
        cbd = bc.CbdBench(cluster.conf_path, "baidu", span)
        rust = bc.RustBench(binary, cluster.conf_path, "baidu", span)
        for c in (cbd, rust):
            c.fill()
            c.run("seqwrite", MiB, 1, 1.0)  # a sequential extent for the seqread cells
        for r in range(args.rounds):
            for name, (kind, bs, threads) in cells.items():
                order = ["py", "rust"] if r % 2 == 0 else ["rust", "py"]
                got: dict[str, tuple[bc.Cell, int]] = {}
                for who in order:
                    if who == "py":
                        if name.endswith("main"):
                            got[who] = main_thread_cell(cbd, args.seconds)
                        else:
                            c0 = _harness.context_switches()
                            cell = cbd.run(kind, bs, threads, args.seconds)
                            got[who] = (cell, _harness.context_switches() - c0)
                    else:
                        cell = rust.run(kind, bs, threads, args.seconds)
                        got[who] = (cell, cell.context_switches)
                (p, pcs), (q, qcs) = got["py"], got["rust"]
                if threads == 1 and bs == bc.BLOCK:
                    ratio = p.mean_us / q.mean_us
                    what = f"mean {p.mean_us:.1f} vs {q.mean_us:.1f} µs"
                else:
                    ratio = (q.ops / q.elapsed) / (p.ops / p.elapsed)
                    what = (
                        f"{p.ops / p.elapsed:,.0f} vs {q.ops / q.elapsed:,.0f} IOPS"
                        if bs == bc.BLOCK
                        else f"{p.mib_s:,.0f} vs {q.mib_s:,.0f} MiB/s"
                    )
                ratios[name].append(ratio)
                print(
                    f"round {r + 1} {name:20s} {ratio:5.2f}x  {what};"
                    f" cpu/op {p.cpu_us_per_op:.1f} vs {q.cpu_us_per_op:.1f} µs;"
                    f" csw/op {pcs / max(p.ops, 1):.2f} vs {qcs / max(q.ops, 1):.2f}",
                    flush=True,
                )
        cbd.close()
        rust.close()
    print("median Python-layer ratio (time per op, Python ÷ Rust core):")
    for name, rs in ratios.items():
        print(f"  {name:20s} {statistics.median(rs):5.2f}x  ({', '.join(f'{x:.2f}' for x in rs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
