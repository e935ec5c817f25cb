"""4 KiB random writes by 8 Python threads on one fd of a fresh LocalCluster, for a few
seconds: one number (IOPS) to compare two builds of the chunkserver's write path (not a
test; run it alternately from each build's environment).

    python benches/write_iops.py [seconds]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness  # a sibling script, not a package

THREADS = 8
BLOCK = 4096
SPAN = 192 << 20  # 12 chunks: 12 copysets, every chunkserver leading some


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    with LocalCluster(copysets=12) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        user = curvefs.UserInfo_t()
        user.owner = "curve"
        assert cbd.Create("/bench", user, 10 << 30) == 0
        fd = cbd.Open("/bench", user)
        for off in range(0, SPAN, 16 << 20):  # allocate every segment and chunk first
            assert cbd.Write(fd, bytes(BLOCK), off, BLOCK) == BLOCK

        def write(rng: random.Random) -> None:
            off = rng.randrange(SPAN // BLOCK) * BLOCK
            assert cbd.Write(fd, data, off, BLOCK) == BLOCK

        data = random.Random(0).randbytes(BLOCK)
        run = _harness.run_threads(THREADS, seconds, write)
        print(f"4 KiB random write, {THREADS} threads: {run.rate:.0f} IOPS")
        cbd.Close(fd)
        cbd.UnInit()


if __name__ == "__main__":
    main()
