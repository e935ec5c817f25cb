"""4 KiB random writes by 8 Python threads on one fd of a fresh LocalCluster, for a few
seconds: one number (IOPS) to compare two builds of the chunkserver's write path (not a
test; run it alternately from each build's environment).

    python benches/write_iops.py [seconds]
"""

from __future__ import annotations

import random
import sys
import threading
import time

import curvefs
from curvefs.testing import LocalCluster

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
        done = [0] * THREADS
        stop = time.monotonic() + seconds

        def run(t: int) -> None:
            rng = random.Random(t)
            data = rng.randbytes(BLOCK)
            while time.monotonic() < stop:
                off = rng.randrange(SPAN // BLOCK) * BLOCK
                assert cbd.Write(fd, data, off, BLOCK) == BLOCK
                done[t] += 1

        threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        print(f"4 KiB random write, {THREADS} threads: {sum(done) / seconds:.0f} IOPS")
        cbd.Close(fd)
        cbd.UnInit()


if __name__ == "__main__":
    main()
