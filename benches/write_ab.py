"""The local cluster's data path, A against B: one LocalCluster per Python environment
given (its servers run from that environment's curvefs, the client from this one's), the
cells interleaved and their order alternated from round to round so the noise of a shared
machine spreads over both. Per cell: the rate, and the CPU per op of the client and of the
three chunkservers together (user + system of their processes), and the chunkservers'
context switches per op.

    python benches/write_ab.py --servers old=/path/to/venv-old/bin/python \\
        new=/path/to/venv-new/bin/python [--seconds 3] [--rounds 4]

Workloads (`--kinds`, all by default): 4 KiB random writes by 1 and by 8 threads over
128 MiB written beforehand (`randwrite1`, `randwrite`), 1 MiB sequential writes by one
thread over 256 MiB written beforehand (`seqwrite`; overwrites: a fresh region each cell
would make the figure depend on how much dirty page cache the cells before it left, i.e.
on writeback throttling), and 4 KiB random reads by 8 threads of the 128 MiB
(`randread`). Each cell's client-visible p99 latency is reported too. Not a test; a
comparison of two builds.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # a sibling script, not a package

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# kind -> (threads, block size)
KINDS = {
    "randwrite1": (1, 4 * KiB),
    "randwrite": (8, 4 * KiB),
    "seqwrite": (1, MiB),
    "randread": (8, 4 * KiB),
}
RAND_OFF, RAND_SPAN = 8 * GiB, 128 * MiB
SEQ_SPAN = 256 * MiB
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        for line in status.splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


class Side:
    """A cluster whose servers run from `python`, and a volume on it."""

    def __init__(self, name: str, python: str) -> None:
        self.name = name
        # LocalCluster starts its servers with sys.executable.
        saved, sys.executable = sys.executable, python
        try:
            self.cluster = LocalCluster()
            self.cluster.__enter__()
        finally:
            sys.executable = saved
        self.pids = [self.cluster.pid(f"chunkserver-{i}") for i in self.cluster.chunkserver_ids]
        self.cbd = curvefs.CBDClient()
        if self.cbd.Init(self.cluster.conf_path) != 0:
            raise SystemExit(f"{name}: CBDClient.Init failed")
        self.user = curvefs.UserInfo_t()
        self.user.owner = "bench"
        if (rc := self.cbd.Create("/ab", self.user, 10 * GiB)) != 0:
            raise SystemExit(f"{name}: Create: {rc}")
        self.fd = self.cbd.Open("/ab", self.user)
        if self.fd < 0:
            raise SystemExit(f"{name}: Open: {self.fd}")
        self.cursor = 0

    def write(self, offset: int, data: bytes) -> None:
        if (rc := self.cbd.Write(self.fd, data, offset, len(data))) != len(data):
            raise RuntimeError(f"{self.name}: Write at {offset}: {rc}")

    def fill(self) -> None:
        data = os.urandom(MiB)
        for off in [*range(RAND_OFF, RAND_OFF + RAND_SPAN, MiB), *range(0, SEQ_SPAN, MiB)]:
            self.write(off, data)

    def read(self, offset: int, length: int) -> None:
        got = self.cbd.Read(self.fd, "", offset, length)
        if not isinstance(got, bytes) or len(got) != length:
            raise RuntimeError(f"{self.name}: Read at {offset}: {got!r:.40}")

    def cell(self, kind: str, seconds: float) -> dict[str, float]:
        threads, bs = KINDS[kind]
        data = os.urandom(bs)
        cpu0 = sum(process_cpu(p) for p in self.pids)
        switches0 = sum(context_switches(p) for p in self.pids)

        def op(rng: random.Random) -> None:
            if kind == "seqwrite":
                off = self.cursor * bs % SEQ_SPAN
                self.cursor += 1
            else:
                off = RAND_OFF + rng.randrange(RAND_SPAN // bs) * bs
            if kind == "randread":
                self.read(off, bs)
            else:
                self.write(off, data)

        run = _harness.run_threads(threads, seconds, op)
        ops = max(run.ops, 1)
        return {
            "rate": run.ops * bs / MiB / run.elapsed if kind == "seqwrite" else run.rate,
            "p99_us": run.p99_us,
            "server_us": (sum(process_cpu(p) for p in self.pids) - cpu0) / ops * 1e6,
            "client_us": run.cpu_us_per_op,
            "switches": (sum(context_switches(p) for p in self.pids) - switches0) / ops,
        }

    def close(self) -> None:
        self.cbd.Close(self.fd)
        self.cbd.UnInit()
        self.cluster.__exit__(None, None, None)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--servers", nargs="+", required=True, metavar="NAME=PYTHON")
    parser.add_argument("--seconds", type=float, default=3.0, help="per cell (default 3)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the medians as a Markdown table there "
        "(benches/results/write_ab.md is what the docs include)",
    )
    args = parser.parse_args()
    sides: list[Side] = []
    try:
        for spec in args.servers:
            name, _, python = spec.partition("=")
            sides.append(Side(name, python))
        time.sleep(3)  # leaders elected and followers caught up before the fill
        for side in sides:
            side.fill()
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for kind in args.kinds.split(","):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    c = side.cell(kind, args.seconds)
                    results.setdefault((kind, side.name), []).append(c)
                    print(
                        f"round {r} {kind:10} {side.name:8} {c['rate']:8.0f}  p99 "
                        f"{c['p99_us']:8.0f} µs  server "
                        f"{c['server_us']:7.1f} µs/op  client {c['client_us']:6.1f} µs/op  "
                        f"switches {c['switches']:5.2f}/op",
                        flush=True,
                    )
        print(
            "medians (randwrite1/randwrite/randread: IOPS, 4 KiB x 1/8/8 threads; "
            "seqwrite: MiB/s, 1 MiB; µs per op):"
        )
        for (kind, name), cells in sorted(results.items()):

            def median(field: str, cells: list[dict[str, float]] = cells) -> float:
                return upper_median([c[field] for c in cells])

            print(
                f"{kind:10} {name:8} {median('rate'):8.0f}  p99 {median('p99_us'):8.0f} µs"
                f"  server {median('server_us'):7.1f}"
                f"  client {median('client_us'):6.1f}  switches {median('switches'):5.2f}"
            )
        if args.out:
            args.out.write_text(table(results, [s.name for s in sides], args), encoding="utf-8")
    finally:
        for side in sides:
            side.close()
    return 0


def upper_median(values: list[float]) -> float:
    """The middle value, the upper one of an even count (a value some round measured)."""
    return sorted(values)[len(values) // 2]


UNITS = {"randwrite1": "IOPS", "randwrite": "IOPS", "seqwrite": "MiB/s", "randread": "IOPS"}
WHAT = {
    "randwrite1": "4 KiB random writes, 1 thread",
    "randwrite": "4 KiB random writes, 8 threads",
    "seqwrite": "1 MiB sequential writes, 1 thread",
    "randread": "4 KiB random reads, 8 threads",
}


def table(
    results: dict[tuple[str, str], list[dict[str, float]]],
    names: list[str],
    args: argparse.Namespace,
) -> str:
    """The medians per workload and side, and each side's rate as a ratio of the first
    side's (the median of the per-round ratios: each round ran both back to back)."""
    base = names[0]
    command = (
        "python benches/write_ab.py --servers "
        + " ".join(f"{n}=…" for n in names)
        + f" --rounds {args.rounds} --seconds {args.seconds:g} --out …"
    )
    lines = [
        "# Data path, build against build",
        "",
        f"`{command}` — {args.rounds} rounds of {args.seconds:g} s cells, cells interleaved; "
        "medians. Server CPU: the three chunkservers' user + system time per op; client: "
        f"the bench process's. Ratio: the rate over {base}'s in the same round.",
        "",
        "| workload | servers | rate | p99 µs | server CPU µs/op | client CPU µs/op | "
        f"rate ÷ {base} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind in KINDS:
        if (kind, base) not in results:
            continue
        for name in names:
            cells = results[(kind, name)]
            ratio = upper_median(
                [c["rate"] / b["rate"] for c, b in zip(cells, results[(kind, base)], strict=True)]
            )
            lines.append(
                f"| {WHAT[kind]} | {name} | {upper_median([c['rate'] for c in cells]):,.0f} "
                f"{UNITS[kind]} | {upper_median([c['p99_us'] for c in cells]):,.0f} | "
                f"{upper_median([c['server_us'] for c in cells]):,.1f} | "
                f"{upper_median([c['client_us'] for c in cells]):,.1f} | {ratio:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
