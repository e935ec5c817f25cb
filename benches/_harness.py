"""How every bench here times a workload: one operation in a loop on N threads for a
while, every call timed, and the client process's own CPU over the run (not a test;
imported by the sibling scripts).

The threads start together behind a barrier, and the clock and the CPU count start once
they all run, so starting threads is not charged to the workload.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


def cpu_seconds() -> float:
    """User + system CPU of this process: the client's own cost (the local cluster's
    servers are processes of their own)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def context_switches() -> int:
    """Voluntary and involuntary context switches of this process so far, every
    thread's."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_nvcsw + u.ru_nivcsw


def pin(pid: int, cpus: set[int]) -> None:
    """Moves every thread of process `pid` (0: this one) onto `cpus`; threads it starts
    later inherit the mask of the thread that starts them."""
    for task in os.listdir(f"/proc/{pid or os.getpid()}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task), cpus)


def percentile(sorted_ns: list[int], p: float) -> float:
    """The ``p`` quantile of sorted nanosecond latencies, in µs."""
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(round((len(sorted_ns) - 1) * p), len(sorted_ns) - 1)] / 1e3


@dataclass
class ThreadRun:
    latencies_ns: list[int]  # every call's, sorted
    elapsed: float  # seconds, from the threads' start to the last one's end
    cpu: float  # client CPU seconds over the same time

    @property
    def ops(self) -> int:
        return len(self.latencies_ns)

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed

    @property
    def mean_us(self) -> float:
        return sum(self.latencies_ns) / max(self.ops, 1) / 1e3

    @property
    def p50_us(self) -> float:
        return percentile(self.latencies_ns, 0.5)

    @property
    def p99_us(self) -> float:
        return percentile(self.latencies_ns, 0.99)

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu / max(self.ops, 1) * 1e6


def run_threads(
    threads: int,
    seconds: float,
    op: Callable[[random.Random], None],
    *,
    while_running: Callable[[], None] | None = None,
) -> ThreadRun:
    """``op`` in a loop on ``threads`` threads (thread ``i`` with ``Random(i + 1)``) for
    ``seconds``; ``while_running`` is called every 0.2 s meanwhile (to sample memory).
    The first exception an ``op`` raises ends its thread and is raised here."""
    lat: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    started = threading.Barrier(threads + 1)
    stop = [0.0]

    def loop(i: int) -> None:
        rng = random.Random(i + 1)
        mine = lat[i]
        clock = time.perf_counter_ns
        started.wait()
        try:
            while time.monotonic() < stop[0]:
                t0 = clock()
                op(rng)
                mine.append(clock() - t0)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    # Set before the barrier releases the threads, which read it after.
    stop[0] = time.monotonic() + seconds
    cpu0, start = cpu_seconds(), time.perf_counter()
    started.wait()
    if while_running is not None:
        while any(t.is_alive() for t in pool):
            while_running()
            time.sleep(0.2)
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    if errors:
        raise errors[0]
    return ThreadRun(sorted(ns for mine in lat for ns in mine), elapsed, cpu)


def run_here(seconds: float, op: Callable[[random.Random], None], seed: int = 7) -> ThreadRun:
    """``op`` in a loop on the calling thread (Python's main thread, when called from
    it) for ``seconds``; every call timed."""
    rng = random.Random(seed)
    lat: list[int] = []
    clock = time.perf_counter_ns
    cpu0, start = cpu_seconds(), time.perf_counter()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        t0 = clock()
        op(rng)
        lat.append(clock() - t0)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    return ThreadRun(sorted(lat), elapsed, cpu)
