"""How the cost of one curvefs client grows with what it holds open.

    python benches/bench_scale.py [--quick] [--out benches/results]

Starts a local cluster (its MDS logging one trace event per RPC, so RefreshSession calls
are counted where they arrive) and measures, with one ``curvefs.Client`` in this process:

- **open volumes**: 1, 100 and 1,000 volumes open at once — this process's RSS per open
  volume, the MDS's RSS per open volume, the RefreshSession calls per second the MDS
  receives over a window of several lease periods, and the MDS's and this process's CPU
  per second while the volumes sit idle;
- **a directory listed**: 100, 1,000 and 10,000 files in one directory — the time of one
  ``listdir`` (best of three) and the memory its result and the call take;
- **threads on one volume**: 4 KiB random reads by 1, 16 and 64 threads sharing one
  volume — IOPS, p50/p99 latency, client CPU per op, and this process's RSS with the
  threads running.

Each row also says how the figure grew against the row before it, divided by how much
the load grew (1.0 = linear). Writes ``bench_scale.md`` and ``bench_scale.json`` into
``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import curvefs
from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # a sibling script, not a package

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4096
VOLUME = 10 * GiB
REPO = Path(__file__).resolve().parent.parent
# The MDS's per-RPC trace events (rust/curve-mds/src/service.rs) and nothing else extra.
MDS_LOG_FILTER = "info,curve_mds::rpc=trace"


def status_bytes(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KiB
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def proc_cpu_seconds(pid: int) -> float:
    """User + system time of another process (fields 14 and 15 of /proc/pid/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_in_use() -> int:
    """Bytes malloc has handed out and not had back (glibc's mallinfo2): the Rust core's
    heap, which RSS shows only coarsely (freed pages stay resident)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


def count_in_log(path: Path, start: int, needle: str) -> tuple[int, int]:
    """Lines holding ``needle`` in ``path`` from byte ``start``; and the end offset."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    return data.count(needle.encode()), start + len(data)


def growth(prev: float, cur: float, prev_n: float, cur_n: float) -> float:
    """How much a total grew per unit of load grown: 1.0 is linear, > 1 faster."""
    if prev <= 0 or prev_n <= 0:
        return float("nan")
    return (cur / prev) / (cur_n / prev_n)


def create_many(client: curvefs.Client, paths: list[str], size: int) -> None:
    """Creates ``paths`` with a few threads: the MDS commits each create on its own."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in pool.map(lambda p: client.create(p, size), paths):
            pass


# ---------------------------------------------------------------------------------------
# 1. Open volumes


def measure_open_volumes(
    cluster: LocalCluster, client: curvefs.Client, counts: list[int], window: float, log: Any
) -> list[dict[str, float]]:
    mds_pid = cluster.pid("mds")
    mds_log = Path(cluster.log_path("mds"))
    rows: list[dict[str, float]] = []
    volumes: list[curvefs.Volume] = []
    paths = [f"/scale_open_{i:05d}" for i in range(max(counts))]
    log(f"creating {len(paths)} volumes")
    create_many(client, paths, VOLUME)
    # Warm the client (connections, runtime) so the first row measures volumes only.
    warm = client.open(paths[0])
    warm.close()
    time.sleep(0.5)
    base_rss = status_bytes("self", "VmRSS")
    base_heap = malloc_in_use()
    base_mds = status_bytes(mds_pid, "VmRSS")
    for n in counts:
        t0 = time.perf_counter()
        while len(volumes) < n:
            volumes.append(client.open(paths[len(volumes)]))
        open_s = time.perf_counter() - t0
        # Let every refresher reach its steady period before counting.
        time.sleep(1.5)
        rss = status_bytes("self", "VmRSS")
        heap = malloc_in_use()
        mds_rss = status_bytes(mds_pid, "VmRSS")
        _, offset = count_in_log(mds_log, 0, "")
        cpu0, mds_cpu0, w0 = _harness.cpu_seconds(), proc_cpu_seconds(mds_pid), time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - w0
        cpu, mds_cpu = _harness.cpu_seconds() - cpu0, proc_cpu_seconds(mds_pid) - mds_cpu0
        refreshes, _ = count_in_log(mds_log, offset, "RefreshSession")
        row = {
            "volumes": n,
            "open_seconds": open_s,
            "client_rss_mib": (rss - base_rss) / MiB,
            "client_heap_mib": (heap - base_heap) / MiB,
            "client_heap_kib_per_volume": (heap - base_heap) / KiB / n,
            "mds_rss_mib": (mds_rss - base_mds) / MiB,
            "mds_kib_per_volume": (mds_rss - base_mds) / KiB / n,
            "refresh_per_s": refreshes / elapsed,
            "refresh_per_s_per_volume": refreshes / elapsed / n,
            "mds_cpu_ms_per_s": mds_cpu / elapsed * 1e3,
            "client_cpu_ms_per_s": cpu / elapsed * 1e3,
        }
        rows.append(row)
        log(
            f"{n} open: client heap +{row['client_heap_mib']:.2f} MiB, "
            f"{row['refresh_per_s']:.1f} RefreshSession/s, "
            f"MDS CPU {row['mds_cpu_ms_per_s']:.0f} ms/s"
        )
    t0 = time.perf_counter()
    for v in volumes:
        v.close()
    log(f"closed {len(volumes)} volumes in {time.perf_counter() - t0:.1f} s")
    return rows


# ---------------------------------------------------------------------------------------
# 2. A directory listed


def measure_listdir(client: curvefs.Client, counts: list[int], log: Any) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    client.mkdir("/scale_dir")
    made = 0
    for n in counts:
        log(f"creating files {made}..{n} in /scale_dir")
        create_many(client, [f"/scale_dir/f{i:05d}" for i in range(made, n)], VOLUME)
        made = n
        times = []
        rss_before = status_bytes("self", "VmRSS")
        names: list[str] = []
        for _ in range(3):
            del names
            t0 = time.perf_counter()
            names = client.listdir("/scale_dir")
            times.append(time.perf_counter() - t0)
        if len(names) != n:
            raise RuntimeError(f"listdir returned {len(names)} names, expected {n}")
        held = sys.getsizeof(names) + sum(sys.getsizeof(s) for s in names)
        rss_after = status_bytes("self", "VmRSS")
        del names
        best = min(times)
        rows.append(
            {
                "files": n,
                "seconds": best,
                "us_per_file": best / n * 1e6,
                "result_kib": held / KiB,
                "rss_growth_kib": (rss_after - rss_before) / KiB,
            }
        )
        log(f"listdir of {n}: {best * 1e3:.1f} ms, result {held / KiB:.0f} KiB")
    return rows


# ---------------------------------------------------------------------------------------
# 3. Threads on one volume


def run_threads(
    threads: int, seconds: float, op: Callable[[random.Random], None]
) -> dict[str, float]:
    peak_rss = [0]

    def sample_rss() -> None:
        peak_rss[0] = max(peak_rss[0], status_bytes("self", "VmRSS"))

    run = _harness.run_threads(threads, seconds, op, while_running=sample_rss)
    return {
        "threads": threads,
        "iops": run.rate,
        "mean_us": run.mean_us,
        "p50_us": run.p50_us,
        "p99_us": run.p99_us,
        "cpu_us_per_op": run.cpu_us_per_op,
        "peak_rss_mib": peak_rss[0] / MiB,
    }


def measure_threads(
    client: curvefs.Client, counts: list[int], seconds: float, span: int, log: Any
) -> list[dict[str, float]]:
    client.create("/scale_threads", VOLUME)
    vol = client.open("/scale_threads")
    try:
        log(f"filling {span // MiB} MiB of /scale_threads")
        chunk = os.urandom(MiB)
        for off in range(0, span, MiB):
            vol.pwrite(chunk, off)
        blocks = span // BLOCK

        def op(rng: random.Random) -> None:
            vol.pread(BLOCK, rng.randrange(blocks) * BLOCK)

        rows = []
        for n in counts:
            row = run_threads(n, seconds, op)
            rows.append(row)
            log(
                f"{n} threads: {row['iops']:,.0f} IOPS, p99 {row['p99_us']:,.0f} µs, "
                f"CPU {row['cpu_us_per_op']:.0f} µs/op"
            )
        return rows
    finally:
        vol.close()


# ---------------------------------------------------------------------------------------
# Report


def md_table(rows: list[dict[str, float]], cols: list[tuple[str, str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for h, _, _ in cols) + " |"]
    out.append("|" + "|".join("---:" for _ in cols) + "|")
    for r in rows:
        cells = ("—" if r[k] != r[k] else format(r[k], f) for _, k, f in cols)  # NaN: none
        out.append("| " + " | ".join(cells) + " |")
    return out


def add_growth(rows: list[dict[str, float]], load: str, totals: dict[str, str]) -> None:
    """For each total ``k``, ``growth[k]`` of each row against the row before it."""
    for prev, cur in itertools.pairwise(rows):
        for k, name in totals.items():
            cur[name] = growth(prev[k], cur[k], prev[load], cur[load])
    for name in totals.values():
        rows[0][name] = float("nan")


def report(res: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# How cost grows with scale",
        "",
        f"`{meta['command']}` — curvefs {meta['version']}, {meta['cpus']} CPUs "
        f"({meta['machine']}), {meta['wall']:.0f} s. One client in one process; the local "
        "cluster (MDS, 3 chunkservers) on the same machine. Growth columns: how much the "
        "total grew against the row before, divided by how much the load grew (1.00 = linear).",
        "",
        "## Open volumes (idle, lease "
        f"{meta['lease_s']:g} s, refreshed {meta['refresh_times']} times per lease)",
        "",
    ]
    lines += md_table(
        res["open_volumes"],
        [
            ("open volumes", "volumes", ",.0f"),
            ("open all (s)", "open_seconds", ".2f"),
            ("client RSS (MiB)", "client_rss_mib", ".1f"),
            ("client heap KiB / volume", "client_heap_kib_per_volume", ".1f"),
            ("MDS RSS (MiB)", "mds_rss_mib", ".1f"),
            ("RefreshSession / s at the MDS", "refresh_per_s", ",.1f"),
            ("… per volume", "refresh_per_s_per_volume", ".3f"),
            ("MDS CPU (ms/s)", "mds_cpu_ms_per_s", ".1f"),
            ("client CPU (ms/s)", "client_cpu_ms_per_s", ".1f"),
            ("growth: client heap", "g_heap", ".2f"),
            ("growth: refreshes", "g_refresh", ".2f"),
            ("growth: MDS CPU", "g_mds_cpu", ".2f"),
        ],
    )
    lines += ["", "## One directory listed (`Client.listdir`, best of 3)", ""]
    lines += md_table(
        res["listdir"],
        [
            ("files", "files", ",.0f"),
            ("listdir (ms)", "seconds_ms", ",.1f"),
            ("µs / file", "us_per_file", ".1f"),
            ("result held (KiB)", "result_kib", ",.0f"),
            ("RSS growth over 3 calls (KiB)", "rss_growth_kib", ",.0f"),
            ("growth: time", "g_time", ".2f"),
        ],
    )
    lines += [
        "",
        "## Threads on one volume (4 KiB random `Volume.pread`)",
        "",
        "With the IOPS flat, the mean latency must grow as threads ÷ IOPS (Little's law); "
        "the cost of one op is the CPU column.",
        "",
    ]
    lines += md_table(
        res["threads"],
        [
            ("threads", "threads", ",.0f"),
            ("IOPS", "iops", ",.0f"),
            ("p50 (µs)", "p50_us", ",.0f"),
            ("p99 (µs)", "p99_us", ",.0f"),
            ("client CPU / op (µs)", "cpu_us_per_op", ",.1f"),
            ("peak RSS (MiB)", "peak_rss_mib", ",.1f"),
            ("mean (µs)", "mean_us", ",.0f"),
            ("threads ÷ IOPS (µs)", "little_us", ",.0f"),
            ("CPU / op ÷ row before", "g_cpu", ".2f"),
        ],
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, short windows")
    parser.add_argument("--out", default=str(REPO / "benches" / "results"), help="results folder")
    args = parser.parse_args()
    quick = args.quick
    open_counts = [1, 20, 100] if quick else [1, 100, 1000]
    dir_counts = [100, 1000] if quick else [100, 1000, 10000]
    thread_counts = [1, 16, 64]
    seconds = 1.0 if quick else 3.0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    def log(msg: str) -> None:
        print(f"{time.monotonic() - t_start:6.1f}s {msg}", file=sys.stderr, flush=True)

    os.environ["CURVEFS_LOG"] = MDS_LOG_FILTER
    with LocalCluster() as cluster:
        conf = {
            k.strip(): v.strip()
            for k, _, v in (
                line.partition("=")
                for line in Path(cluster.conf_path).read_text(encoding="utf-8").splitlines()
                if "=" in line and not line.startswith("#")
            )
        }
        refresh_times = int(conf.get("mds.refreshTimesPerLease", "4"))
        with curvefs.Client(cluster.conf_path, user="bench") as client:
            res: dict[str, Any] = {}
            # Lease 5 s at the local MDS: a window of two leases holds 8 refresh periods.
            res["open_volumes"] = measure_open_volumes(
                cluster, client, open_counts, 5.0 if quick else 10.0, log
            )
            add_growth(
                res["open_volumes"],
                "volumes",
                {
                    "client_heap_mib": "g_heap",
                    "refresh_per_s": "g_refresh",
                    "mds_cpu_ms_per_s": "g_mds_cpu",
                },
            )
            res["listdir"] = measure_listdir(client, dir_counts, log)
            for r in res["listdir"]:
                r["seconds_ms"] = r["seconds"] * 1e3
            add_growth(res["listdir"], "files", {"seconds": "g_time"})
            res["threads"] = measure_threads(
                client, thread_counts, seconds, 32 * MiB if quick else 128 * MiB, log
            )
            # Per-op figures: their growth is the plain ratio to the row before (1.00 =
            # the cost of one op did not change); latency is set against Little's law.
            rows = res["threads"]
            for prev, cur in itertools.pairwise(rows):
                cur["g_cpu"] = cur["cpu_us_per_op"] / prev["cpu_us_per_op"]
            rows[0]["g_cpu"] = float("nan")
            for r in rows:
                r["little_us"] = r["threads"] / r["iops"] * 1e6
    command = "python benches/bench_scale.py" + (" --quick" if quick else "")
    meta = {
        "version": curvefs.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "wall": time.monotonic() - t_start,
        "command": command,
        "lease_s": 5.0,
        "refresh_times": refresh_times,
    }
    md = report(res, meta)
    (out / "bench_scale.md").write_text(md, encoding="utf-8")
    (out / "bench_scale.json").write_text(
        json.dumps({"meta": meta, "results": res}, indent=1), encoding="utf-8"
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
