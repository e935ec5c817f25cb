"""The NBD export against the direct path, side by side, on one local cluster.

    python benches/bench_nbd.py [--seconds 3] [--out benches/results]

Direct: ``CBDClient`` called from N Python threads (queue depth N). Export: fio's ``nbd``
engine at iodepth N against ``curvefs.nbd.serve`` running in this process. Workloads:
4 KiB random read and write at depth 1 and 32 over a 256 MiB span written beforehand,
and 1 MiB sequential read and write at depth 1.

CPU per operation is this process's user + system time over the run divided by the
operations done. For the direct path that is the client core and the Python threads that
call it (the application's side of that path); for the export it is the NBD server and
the same client core under it, while fio (the application there) is a process of its
own and not charged. Issue 19's target: the export at most 1.2x the direct CPU per op.

Writes ``bench_nbd.md`` and ``bench_nbd.json`` into ``--out``. Needs fio with the nbd
engine (Debian's fio).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import _harness

import curvefs
from curvefs import nbd
from curvefs.testing import LocalCluster

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
VOLUME = 10 * GiB
SPAN = 256 * MiB

# (name, fio rw, block size, depth)
WORKLOADS = [
    ("4k randread qd1", "randread", 4 * KiB, 1),
    ("4k randwrite qd1", "randwrite", 4 * KiB, 1),
    ("4k randread qd32", "randread", 4 * KiB, 32),
    ("4k randwrite qd32", "randwrite", 4 * KiB, 32),
    ("1M read qd1", "read", MiB, 1),
    ("1M write qd1", "write", MiB, 1),
]


@dataclass
class Cell:
    iops: float
    mib_s: float
    p50_us: float
    cpu_us_per_op: float


def direct(cbd: curvefs.CBDClient, fd: int, rw: str, bs: int, depth: int, seconds: float) -> Cell:
    data = random.randbytes(bs)
    blocks = SPAN // bs
    seq = [0]

    def offset(rng: random.Random) -> int:
        if rw.startswith("rand"):
            return rng.randrange(blocks) * bs
        seq[0] = (seq[0] + 1) % blocks
        return seq[0] * bs

    def op(rng: random.Random) -> None:
        at = offset(rng)
        if "read" in rw:
            cbd.Read(fd, "", at, bs)
        elif cbd.Write(fd, data, at, bs) != bs:
            raise OSError(f"write at {at} failed")

    run = _harness.run_threads(depth, seconds, op)
    return Cell(run.rate, run.rate * bs / MiB, run.p50_us, run.cpu_us_per_op)


def through_nbd(fio: str, uri: str, rw: str, bs: int, depth: int, seconds: float) -> Cell:
    args = [
        fio,
        "--name=nbd",
        "--ioengine=nbd",
        f"--uri={uri}",
        f"--rw={rw}",
        f"--bs={bs}",
        f"--iodepth={depth}",
        f"--size={SPAN}",
        "--time_based=1",
        f"--runtime={seconds}",
        "--output-format=json",
    ]
    cpu0 = _harness.cpu_seconds()
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    cpu = _harness.cpu_seconds() - cpu0
    job = json.loads(out[out.index("{") :])["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    ops = side["total_ios"]
    return Cell(
        side["iops"],
        side["bw_bytes"] / MiB,
        side["clat_ns"]["percentile"].get("50.000000", 0) / 1e3,
        cpu / max(ops, 1) * 1e6,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    fio = shutil.which("fio")
    if fio is None:
        sys.exit("fio is not installed (Debian package fio)")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with LocalCluster() as cluster:
        cbd = curvefs.CBDClient()
        cbd.Init(cluster.conf_path)
        user = curvefs.UserInfo_t()
        user.owner = "bench"
        path = "/bench-nbd"
        assert cbd.Create(path, user, VOLUME) == 0
        fd = cbd.Open(path, user)
        block = random.randbytes(MiB)
        for at in range(0, SPAN, MiB):
            assert cbd.Write(fd, block, at, MiB) == MiB
        for name, rw, bs, depth in WORKLOADS:
            results[name] = {"direct": asdict(direct(cbd, fd, rw, bs, depth, args.seconds))}
        cbd.Close(fd)
        cbd.UnInit()
        sock = Path(tempfile.mkdtemp(prefix="nbd-bench-")) / "s"
        with (
            curvefs.Client(cluster.conf_path, user="bench") as client,
            nbd.serve(client, path, socket=sock) as served,
        ):
            for name, rw, bs, depth in WORKLOADS:
                cell = through_nbd(fio, served.uri, rw, bs, depth, args.seconds)
                results[name]["nbd"] = asdict(cell)
        shutil.rmtree(sock.parent, ignore_errors=True)
    lines = [
        "| workload | direct IOPS | NBD IOPS | direct MiB/s | NBD MiB/s "
        "| direct p50 µs | NBD p50 µs | direct CPU µs/op | NBD CPU µs/op | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, cells in results.items():
        d, n = cells["direct"], cells["nbd"]
        ratio = n["cpu_us_per_op"] / max(d["cpu_us_per_op"], 1e-9)
        verdict = "PASS" if ratio <= 1.2 else "MISS"
        lines.append(
            f"| {name} | {d['iops']:,.0f} | {n['iops']:,.0f} | {d['mib_s']:,.1f} | "
            f"{n['mib_s']:,.1f} | {d['p50_us']:,.0f} | {n['p50_us']:,.0f} | "
            f"{d['cpu_us_per_op']:,.1f} | {n['cpu_us_per_op']:,.1f} | {ratio:.2f} {verdict} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_nbd.md").write_text(
        "# The NBD export against CBDClient threads\n\n"
        f"`python benches/bench_nbd.py --seconds {args.seconds}` on a local cluster "
        "(MDS + 3 chunkservers on loopback). CPU: this process's user + system time per "
        "op (direct: the client and its calling threads; NBD: the server and its client "
        "core; fio's own CPU is not counted). Target (issue 19): NBD CPU ≤ 1.2× direct.\n\n"
        + table
        + "\n"
    )
    (out / "bench_nbd.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
