"""What logging costs on the IO path: the same workloads with the core's events filtered
out entirely (``logging.disable``: nothing crosses to Python) and with the ``curvefs``
logger at WARNING and a handler (the usual production setting: DEBUG and INFO events
stop at their call sites in Rust, with no GIL taken), side by side in one run, cells
interleaved, the order alternating per round. DEBUG on is shown too, for contrast. Not a
test.

    python benches/logging_cost.py [--seconds 2] [--rounds 3]

Ratios are IOPS at WARNING (or DEBUG) over IOPS with logging off (1.00 = no cost), one
per round, and their median.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import statistics
import sys
from pathlib import Path

import curvefs
from curvefs import _core
from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # sibling scripts, not a package

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SPAN = 32 * MiB
BLOCK = 4 * KiB


def set_mode(mode: str, handler: logging.Handler) -> None:
    logger = logging.getLogger("curvefs")
    logging.disable(logging.NOTSET)
    if mode == "off":
        logging.disable(logging.CRITICAL)
    else:
        logger.setLevel(logging.WARNING if mode == "warning" else logging.DEBUG)
    if handler not in logger.handlers:
        logger.addHandler(handler)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    # A handler that formats every record it gets, as a real one would.
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    modes = ["off", "warning", "debug"]
    cells = {
        "randread 4K x1": (False, 1),
        "randread 4K x4": (False, 4),
        "randwrite 4K x4": (True, 4),
    }
    iops: dict[tuple[str, str], list[float]] = {(c, m): [] for c in cells for m in modes}
    with LocalCluster() as cluster, curvefs.Client(cluster.conf_path, user="curve") as client:
        client.create("/logging-cost", 10 * GiB)
        with client.open("/logging-cost") as vol:
            data = os.urandom(MiB)
            for off in range(0, SPAN, MiB):
                vol.pwrite(data, off)
            block = os.urandom(BLOCK)
            for r in range(args.rounds):
                for name, (write, threads) in cells.items():
                    order = modes if r % 2 == 0 else modes[::-1]
                    for mode in order:
                        set_mode(mode, handler)

                        def op(rng: random.Random, write: bool = write) -> None:
                            off = rng.randrange(SPAN // BLOCK) * BLOCK
                            if write:
                                vol.pwrite(block, off)
                            else:
                                vol.pread(BLOCK, off)

                        run = _harness.run_threads(threads, args.seconds, op)
                        iops[(name, mode)].append(run.rate)
                        print(
                            f"round {r + 1} {name:16s} {mode:8s} filter<={_core._log_level():2d}"
                            f" {run.rate:10,.0f} IOPS  p50 {run.p50_us:7.1f} µs"
                            f"  p99 {run.p99_us:7.1f} µs",
                            flush=True,
                        )
    logging.disable(logging.NOTSET)
    print("\nmedian IOPS ratio over logging off (1.00 = no cost):")
    print(f"  {'cell':16s} {'WARNING':>8s} {'DEBUG':>8s}   rounds (WARNING)")
    for name in cells:
        w = [a / b for a, b in zip(iops[(name, "warning")], iops[(name, "off")], strict=True)]
        d = [a / b for a, b in zip(iops[(name, "debug")], iops[(name, "off")], strict=True)]
        print(
            f"  {name:16s} {statistics.median(w):8.2f} {statistics.median(d):8.2f}"
            f"   {', '.join(f'{x:.2f}' for x in w)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
