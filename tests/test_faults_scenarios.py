"""Issue 9's fault scenarios, each against its own LocalCluster with a bound on its time.

The numbers follow the issue's list (shared/reference/fault-scenarios.md has the
expectations behind them). Every data scenario ends with a byte-for-byte check of the
volume against a model of what was acknowledged: an acknowledged write must read back
exactly; a write that returned an error may have landed or not (old or new bytes, never
anything else); a slot never written reads as zeros.

The figures (time until IO resumes after a leader is killed or paused) are printed as
`FIGURE name=value` lines: `pytest -s -q tests/test_faults_scenarios.py | grep FIGURE`.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import curvefs
from curvefs.testing import FaultProxy, LocalCluster
from tests.helpers import GiB, MiB, bytes_queued_at, conf_with, make_user, readline
from tests.helpers import child as start_child

KiB = 1 << 10
CHUNK = 16 * MiB
SLOT = 16 * KiB  # the unit every workload write covers: one thread owns each slot
ZERO_SLOT = bytes(SLOT)
THREADS = 8

# The client's budget for one IO (curvefs's `chunkserver.maxRetryTimeMS`): no IO may take
# longer than this plus scheduling slack, whatever the fault.
IO_BUDGET_S = 30.0
IO_SLACK_S = 10.0
CLIENT_OPTIONS = {"chunkserver.maxRetryTimeMS": int(IO_BUDGET_S * 1000)}

FILE_OCCUPIED = -curvefs.CURVE_ERROR_FILE_OCCUPIED
EXISTS = -curvefs.CURVE_ERROR_EXISTS


def figure(name: str, value: float, unit: str = "s") -> None:
    print(f"FIGURE {name}={value:.2f}{unit}", flush=True)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(every)


@dataclass
class Record:
    thread: int
    slot: int
    start: float
    end: float
    rc: int


@dataclass
class Workload:
    """THREADS threads writing whole random slots of the first `slots` slots of one fd,
    thread t owning the slots t, t+THREADS, ... so the model needs no locking."""

    cbd: curvefs.CBDClient
    fd: int
    slots: int
    records: list[Record] = field(default_factory=list)
    # slot -> the contents it may hold: [acknowledged] or, after failed writes, more.
    model: dict[int, list[bytes]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        for t in range(THREADS):
            th = threading.Thread(target=self._run, args=(t,), name=f"writer-{t}", daemon=True)
            th.start()
            self.threads.append(th)

    def _run(self, t: int) -> None:
        rng = random.Random(t * 7919 + self.slots)
        mine = range(t, self.slots, THREADS)
        try:
            while not self.stop.is_set():
                slot = rng.choice(mine)
                data = rng.randbytes(SLOT)
                start = time.monotonic()
                rc = self.cbd.Write(self.fd, data, slot * SLOT, SLOT)
                end = time.monotonic()
                self.records.append(Record(t, slot, start, end, rc))
                if rc == SLOT:
                    self.model[slot] = [data]
                else:
                    assert rc < 0, f"Write returned {rc}, neither {SLOT} nor an error code"
                    self.model[slot] = [*self.model.get(slot, [ZERO_SLOT]), data]
        except BaseException as e:  # reported by finish()
            self.errors.append(e)

    def finish(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=IO_BUDGET_S + IO_SLACK_S)
        hung = [th.name for th in self.threads if th.is_alive()]
        assert not hung, f"writes hung past their deadline: {hung}"
        if self.errors:
            raise self.errors[0]
        worst = max((r.end - r.start for r in self.records), default=0.0)
        assert worst <= IO_BUDGET_S + IO_SLACK_S, f"a write took {worst:.1f} s"

    def completed_since(self, t0: float) -> Counter[int]:
        """Per thread, the successful writes that started after `t0`."""
        return Counter(r.thread for r in list(self.records) if r.start >= t0 and r.rc == SLOT)

    def wait_all_threads_progress(self, t0: float, writes: int, timeout: float) -> None:
        wait_for(
            lambda: len(c := self.completed_since(t0)) == THREADS and min(c.values()) >= writes,
            timeout,
            f"every writer completing {writes} writes",
        )

    def stall_after(self, t0: float) -> float:
        """The longest any write waited on account of an event at `t0`: over the writes
        still running at `t0` or started after it, completion minus max(start, t0)."""
        return max(
            (r.end - max(r.start, t0) for r in list(self.records) if r.end >= t0),
            default=0.0,
        )

    def failed(self) -> int:
        return sum(1 for r in self.records if r.rc != SLOT)

    def verify(self, cbd: curvefs.CBDClient, fd: int, who: str) -> None:
        """Reads the whole region back and checks every slot against the model."""
        step = 256  # slots per read: 4 MiB
        for first in range(0, self.slots, step):
            n = min(step, self.slots - first)
            t = time.monotonic()
            got = cbd.Read(fd, "", first * SLOT, n * SLOT)
            took = time.monotonic() - t
            assert isinstance(got, bytes) and len(got) == n * SLOT, (
                f"{who}: read at {first * SLOT} returned {got!r:.80} after {took:.1f} s"
            )
            for i in range(n):
                slot = first + i
                allowed = self.model.get(slot, [ZERO_SLOT])
                actual = got[i * SLOT : (i + 1) * SLOT]
                if actual not in allowed:
                    kind = "acknowledged" if len(allowed) == 1 and slot in self.model else "any"
                    pytest.fail(
                        f"{who}: slot {slot} (offset {slot * SLOT}) does not hold {kind} data"
                    )


@contextmanager
def volume(cluster: LocalCluster, path: str = "/vol") -> Iterator[tuple[curvefs.CBDClient, int]]:
    user = make_user("curve")
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    try:
        rc = cbd.Create(path, user, 10 * GiB)
        assert rc in (0, -curvefs.CURVE_ERROR_EXISTS)
        fd = cbd.Open(path, user)
        assert fd >= 0
        yield cbd, fd
        cbd.Close(fd)
    finally:
        cbd.UnInit()


def leaders(cluster: LocalCluster) -> dict[int, int]:
    return {c: cluster.copyset_leader(c) for c in cluster.copyset_ids}


def settled_leaders(
    cluster: LocalCluster, quiet: float = 3.0, timeout: float = 60.0
) -> dict[int, int]:
    """The copysets' leaders once no leadership moved for `quiet` seconds. After a start,
    a leader that is not its copyset's first member in the layout hands leadership to
    that member once it has caught up (every 0.5 s check); a victim picked before then
    would lose copysets for reasons other than the fault under test."""
    deadline = time.monotonic() + timeout
    seen, since = leaders(cluster), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"leaders still moving after {timeout} s: {seen}"
        time.sleep(0.25)
        now = leaders(cluster)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def busiest_leader(cluster: LocalCluster) -> tuple[int, list[int]]:
    """The chunkserver leading the most copysets once leaderships settled, and those
    copysets."""
    by_copyset = settled_leaders(cluster)
    victim, _ = Counter(by_copyset.values()).most_common(1)[0]
    return victim, sorted(c for c, leader in by_copyset.items() if leader == victim)


# The workload's region: 12 chunks of one segment, placed round robin over 12 copysets,
# so every copyset (and every chunkserver as a leader) is busy.
COPYSETS = 12
REGION_SLOTS = COPYSETS * CHUNK // SLOT


def leader_fault_run(tmp_path: Path, fault: str) -> None:
    with (
        LocalCluster(tmp_path / "c", copysets=COPYSETS, client_options=CLIENT_OPTIONS) as cluster,
        volume(cluster) as (cbd, fd),
    ):
        work = Workload(cbd, fd, REGION_SLOTS)
        work.start()
        try:
            # Warm up: every thread writing, every chunk of the region allocated.
            work.wait_all_threads_progress(0.0, 20, timeout=60)
            victim, led = busiest_leader(cluster)
            before = max(r.end - r.start for r in list(work.records))
            t0 = time.monotonic()
            if fault == "kill":
                cluster.kill_chunkserver(victim, signal.SIGKILL)
            else:
                cluster.pause_chunkserver(victim)
            # IO resumed: every thread completed writes started after the fault.
            work.wait_all_threads_progress(t0, 20, timeout=IO_BUDGET_S + IO_SLACK_S)
            resumed = work.stall_after(t0)
            if fault == "pause":
                # Writes acknowledged while the old leader was frozen, then it thaws with
                # stale chunks and a belief that it leads; writes go on across the thaw.
                cluster.resume_chunkserver(victim)
                t1 = time.monotonic()
                work.wait_all_threads_progress(t1, 20, timeout=IO_BUDGET_S + IO_SLACK_S)
        finally:
            work.finish()
        figure(f"leader_{fault}_io_resumed", resumed)
        figure(f"leader_{fault}_worst_write_before_fault", before)
        print(
            f"FIGURE leader_{fault}_victim=chunkserver-{victim} leading copysets {led}; "
            f"{len(work.records)} writes, {work.failed()} failed",
            flush=True,
        )
        # The fault is bounded by the failover, well under the IO budget.
        assert resumed < IO_BUDGET_S
        work.verify(cbd, fd, "the writing client")
        # A client that knows no leader yet asks every member, the thawed or restarted
        # one included: it must not be served old bytes by it.
        with volume(cluster) as (other, ofd):
            work.verify(other, ofd, "a new client")
        if fault == "kill":
            cluster.start_chunkserver(victim)
        # Once caught up, the preferred leader takes its copysets back: read them there.
        wait_for(
            lambda: cluster.copyset_leader(led[0]) == victim,
            60,
            f"chunkserver-{victim} leading copyset {led[0]} again",
            every=0.2,
        )
        with volume(cluster) as (other, ofd):
            work.verify(other, ofd, "a new client after the old leader led again")


# ---------------------------------------------------------------------------------------
# 1. The leader of busy copysets killed under an 8-thread write workload.


@pytest.mark.timeout(240)
def test_leader_killed_during_writes(tmp_path: Path) -> None:
    leader_fault_run(tmp_path, "kill")


# ---------------------------------------------------------------------------------------
# 2. The same with the leader hung (SIGSTOP), then resumed: no stale reads.


@pytest.mark.timeout(240)
def test_leader_paused_during_writes(tmp_path: Path) -> None:
    leader_fault_run(tmp_path, "pause")


# ---------------------------------------------------------------------------------------
# 3. A follower down, then back: writes go on; after catch-up the replicas are equal.


def chunk_files(cluster: LocalCluster, cs_id: int) -> dict[str, Path]:
    root = Path(cluster.chunkserver_data_dir(cs_id)) / "copysets"
    return {
        f"{p.parent.name}/{p.name}": p
        for p in root.glob("*/chunk_*")
        if p.suffix == "" and p.name[len("chunk_") :].isdigit()
    }


def chunk_bytes(path: Path) -> bytes:
    # A chunk file is sparse and as long as its last written byte; beyond is zeros.
    data = path.read_bytes()
    return data + bytes(CHUNK - len(data))


def replicas_differ(cluster: LocalCluster) -> list[str]:
    """Chunk files missing on a replica or holding other bytes than on another."""
    files = {cs: chunk_files(cluster, cs) for cs in cluster.chunkserver_ids}
    names = set().union(*files.values())
    differ = []
    for name in sorted(names):
        if any(name not in f for f in files.values()):
            differ.append(f"{name}: missing on some replica")
            continue
        contents = {cs: chunk_bytes(f[name]) for cs, f in files.items()}
        if len(set(contents.values())) != 1:
            differ.append(f"{name}: {describe_difference(contents)}")
    return differ


def describe_difference(contents: dict[int, bytes]) -> str:
    """Which replica holds other bytes than the others, and in which slots (a stale
    write applied late reads differently from a torn or misplaced one)."""
    parts = []
    for cs, data in contents.items():
        others = [d for c, d in contents.items() if c != cs]
        slots = [
            i
            for i in range(CHUNK // SLOT)
            if all(data[i * SLOT : (i + 1) * SLOT] != d[i * SLOT : (i + 1) * SLOT] for d in others)
        ]
        if slots:
            zero = sum(data[i * SLOT : (i + 1) * SLOT] == ZERO_SLOT for i in slots)
            parts.append(
                f"chunkserver-{cs} alone differs in {len(slots)} slots {slots[:8]} "
                f"({zero} of them zeros there)"
            )
    return "; ".join(parts) or f"{len(set(contents.values()))} different contents"


@pytest.mark.timeout(240)
def test_follower_down_then_back(tmp_path: Path) -> None:
    # Two copysets over three chunkservers: 1 leads copyset 1, 2 leads copyset 2, and 3
    # follows in both, so stopping 3 moves no leader.
    slots = 4 * CHUNK // SLOT
    with (
        LocalCluster(tmp_path / "c", copysets=2, client_options=CLIENT_OPTIONS) as cluster,
        volume(cluster) as (cbd, fd),
    ):
        work = Workload(cbd, fd, slots)
        work.start()
        try:
            work.wait_all_threads_progress(0.0, 20, timeout=60)
            follower = next(
                cs for cs in cluster.chunkserver_ids if cs not in set(leaders(cluster).values())
            )
            t0 = time.monotonic()
            cluster.kill_chunkserver(follower, signal.SIGKILL)
            work.wait_all_threads_progress(t0, 50, timeout=IO_BUDGET_S + IO_SLACK_S)
            stall = work.stall_after(t0)
            cluster.start_chunkserver(follower)
            t1 = time.monotonic()
            work.wait_all_threads_progress(t1, 50, timeout=IO_BUDGET_S + IO_SLACK_S)
        finally:
            work.finish()
        figure("follower_kill_worst_write", stall)
        assert work.failed() == 0, "a write failed though a majority was up throughout"
        assert stall < 10.0, f"writes stalled {stall:.2f} s when a follower was killed"
        work.verify(cbd, fd, "the writing client")
        # Catch-up copies the chunks the follower missed; poll until the replicas agree.
        deadline = time.monotonic() + 60
        while differ := replicas_differ(cluster):
            assert time.monotonic() < deadline, f"replicas still differ: {differ[:5]}"
            time.sleep(0.5)
        assert chunk_files(cluster, follower), "no chunk files to compare"


# ---------------------------------------------------------------------------------------
# 4. The active MDS killed under an 8-thread write workload: IO on allocated segments goes
# on; metadata calls, segment allocation and session refreshes move to the standby.

MDS_RECORD_S = 2.0  # the MDSes' file-record lifetime: the clients' lease and refresh pace


def refuses(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2.0)
        return s.connect_ex((host, int(port))) != 0


def metadata_round(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, tag: str) -> None:
    """Create, StatFile, Mkdir, Listdir and Open/Close: each must succeed."""
    assert cbd.StatFile("/vol", user, curvefs.FileInfo_t()) == 0
    assert cbd.Mkdir(f"/{tag}", user) == 0
    assert cbd.Create(f"/{tag}/file", user, 10 * GiB) == 0
    assert cbd.Listdir(f"/{tag}", user) == ["file"]
    fd = cbd.Open(f"/{tag}/file", user)
    assert fd >= 0, fd
    assert cbd.Close(fd) == 0


@pytest.mark.timeout(240)
def test_active_mds_killed_during_io(tmp_path: Path) -> None:
    user = make_user("curve")
    with (
        LocalCluster(
            tmp_path / "c",
            mds_count=2,
            copysets=COPYSETS,
            client_options=CLIENT_OPTIONS,
            mds_options={"file_record_expire_us": int(MDS_RECORD_S * 1e6)},
        ) as cluster,
        volume(cluster) as (cbd, fd),
    ):
        assert cluster.active_mds() == 0 and refuses(cluster.mds_addrs[1])
        # Allocate the region's segment and learn every chunk's copyset before the fault
        # (zeros: the model's slots read as zeros until the workload writes them).
        for c in range(COPYSETS):
            assert cbd.Write(fd, bytes(SLOT), c * CHUNK, SLOT) == SLOT
        work = Workload(cbd, fd, REGION_SLOTS)
        allocated: dict[int, bytes] = {}
        alloc_took: list[float] = []
        work.start()
        try:
            work.wait_all_threads_progress(0.0, 20, timeout=60)
            t0 = time.monotonic()
            cluster.kill_mds()  # the active one

            # A write into a never-written segment needs GetOrAllocateSegment: the standby.
            def allocate() -> None:
                data = random.Random(4).randbytes(SLOT)
                rc = cbd.Write(fd, data, GiB, SLOT)
                alloc_took.append(time.monotonic() - t0)
                if rc == SLOT:
                    allocated[GiB] = data

            allocator = threading.Thread(target=allocate, name="allocator", daemon=True)
            allocator.start()
            # The first metadata call after the kill waits out the takeover, then succeeds.
            assert cbd.StatFile("/vol", user, curvefs.FileInfo_t()) == 0
            metadata_resumed = time.monotonic() - t0
            assert refuses(cluster.mds_addrs[0]), "the killed MDS's port still accepts"
            assert cluster.active_mds() == 1
            metadata_round(cbd, user, "after-kill")
            allocator.join(timeout=IO_BUDGET_S + IO_SLACK_S)
            assert allocated, f"the write into a new segment failed after {alloc_took}"
            data = random.Random(5).randbytes(SLOT)
            assert cbd.Write(fd, data, 2 * GiB + CHUNK, SLOT) == SLOT
            allocated[2 * GiB + CHUNK] = data

            # Session refreshes: the new MDS learns that /vol is open only from this
            # client's refreshes. Past its start-up window (one record lifetime, during
            # which the client retries the refusal), another client's Rename of the open
            # volume is FILE_OCCUPIED only if those refreshes reached it.
            other = curvefs.CBDClient()
            assert other.Init(cluster.conf_path) == 0
            try:
                assert other.Rename(user, "/vol", "/vol-moved") == FILE_OCCUPIED
            finally:
                other.UnInit()
            # Well past a lease without the old MDS: IO goes on.
            work.wait_all_threads_progress(t0, 20, timeout=IO_BUDGET_S + IO_SLACK_S)
        finally:
            work.finish()
        stall = work.stall_after(t0)
        figure("mds_kill_metadata_resumed", metadata_resumed)
        figure("mds_kill_segment_allocated", alloc_took[0])
        figure("mds_kill_worst_write", stall)
        print(
            f"FIGURE mds_kill_writes={len(work.records)} writes, {work.failed()} failed",
            flush=True,
        )
        assert work.failed() == 0, "a write on an allocated segment failed"
        # Nothing on their path waits for the MDS; the bound guards that with a margin for
        # a loaded machine, it is not a speed target.
        assert stall < 10.0, f"writes on allocated segments stalled {stall:.2f} s"
        assert metadata_resumed < IO_BUDGET_S
        work.verify(cbd, fd, "the writing client")
        for offset, data in allocated.items():
            assert cbd.Read(fd, "", offset, SLOT) == data
        with volume(cluster) as (other_cbd, ofd):
            work.verify(other_cbd, ofd, "a new client")

        # The killed MDS comes back as a standby; killing the active one hands back.
        cluster.start_mds(0)
        assert cluster.active_mds() == 1 and refuses(cluster.mds_addrs[0])
        t1 = time.monotonic()
        cluster.kill_mds()
        metadata_round(cbd, user, "after-second-kill")
        figure("mds_kill_back_metadata_resumed", time.monotonic() - t1)
        assert cluster.active_mds() == 0


# ---------------------------------------------------------------------------------------
# 5. Sessions: an open file is FILE_OCCUPIED for others until closed, or until the lease
# of a client that died without closing it runs out.

HOLDER = """
import sys, curvefs
cbd = curvefs.CBDClient()
assert cbd.Init(sys.argv[1]) == 0
user = curvefs.UserInfo_t()
user.owner = "curve"
fd = cbd.Open(sys.argv[2], user)
assert fd >= 0, fd
assert cbd.Write(fd, b"h" * 4096, 0, 4096) == 4096
print("open", flush=True)
sys.stdin.readline()
"""


@pytest.mark.timeout(120)
def test_open_file_is_occupied_until_closed_or_its_lease_runs_out(tmp_path: Path) -> None:
    lease_s = 2.0
    user = make_user("curve")
    with LocalCluster(
        tmp_path / "c", copysets=4, mds_options={"file_record_expire_us": int(lease_s * 1e6)}
    ) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        other = curvefs.CBDClient()
        assert other.Init(cluster.conf_path) == 0
        try:
            # Closed by its holder: free at once.
            assert cbd.Create("/a", user, 10 * GiB) == 0
            fd = cbd.Open("/a", user)
            assert fd >= 0
            assert other.Unlink("/a", user) == FILE_OCCUPIED
            assert other.Rename(user, "/a", "/b") == FILE_OCCUPIED
            assert cbd.Close(fd) == 0
            assert other.Rename(user, "/a", "/b") == 0
            assert other.Unlink("/b", user) == 0

            # Held by a process that is SIGKILLed: occupied until its record expires.
            assert cbd.Create("/held", user, 10 * GiB) == 0
            with start_child(
                [sys.executable, "-c", HOLDER, cluster.conf_path, "/held"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ) as holder:
                assert holder.stdout is not None
                assert readline(holder.stdout, 60, "the holder's open").strip() == "open"
                assert other.Unlink("/held", user) == FILE_OCCUPIED
                holder.kill()
                holder.wait(timeout=10)
                killed = time.monotonic()
            assert other.Rename(user, "/held", "/moved") == FILE_OCCUPIED
            deadline = killed + lease_s + 15
            while (rc := other.Rename(user, "/held", "/moved")) != 0:
                assert rc == FILE_OCCUPIED, rc
                assert time.monotonic() < deadline, "the dead client's lease never ran out"
                time.sleep(0.1)
            freed = time.monotonic() - killed
            figure("dead_client_file_freed_after", freed)
            assert other.Unlink("/moved", user) == 0
            # The record cannot lapse before its lifetime (less the refresh that may
            # have just happened: a quarter of it).
            assert freed >= lease_s * 0.5
        finally:
            other.UnInit()
            cbd.UnInit()


# ---------------------------------------------------------------------------------------
# 7. An unreachable, a wrong and a blackholed MDS: the first call fails within the
# configured budget (Init reads the conf only and makes no RPC).

MDS_RETRY_MS = 3000
MDS_MAX_RPC_MS = 1000


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def blackhole() -> Iterator[int]:
    """A listening socket that is never accepted from: the kernel completes connections,
    nothing ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_bad_mds_addresses_fail_within_the_budget(tmp_path: Path) -> None:
    user = make_user("curve")
    budget = MDS_RETRY_MS / 1000 + MDS_MAX_RPC_MS / 1000
    with LocalCluster(tmp_path / "c", copysets=2) as cluster, blackhole() as hole:
        targets = {
            "refused": f"127.0.0.1:{closed_port()}",
            "not_an_mds": cluster.chunkserver_addr(1),
            "blackholed": f"127.0.0.1:{hole}",
            "blackholed_then_good": f"127.0.0.1:{hole},{cluster.mds_addr}",
        }
        for kind, addrs in targets.items():
            conf = conf_with(
                cluster,
                tmp_path,
                {
                    "mds.listen.addr": addrs,
                    "mds.maxRetryMS": MDS_RETRY_MS,
                    "mds.rpcTimeoutMS": 300,
                    "mds.maxRPCTimeoutMS": MDS_MAX_RPC_MS,
                    # Upstream's sample value (the core's default is 5): after three
                    # timeouts (0.3 + 0.6 + 1 s) the client moves past the blackhole
                    # within the budget.
                    "mds.maxFailedTimesBeforeChangeMDS": 2,
                },
            )
            cbd = curvefs.CBDClient()
            t = time.monotonic()
            assert cbd.Init(conf) == 0
            assert time.monotonic() - t < 1.0, "Init made an RPC"
            try:
                for call in ("Create", "StatFile", "Open"):
                    t = time.monotonic()
                    if call == "StatFile":
                        rc = cbd.StatFile(f"/{kind}", user, curvefs.FileInfo_t())
                    elif call == "Create":
                        rc = cbd.Create(f"/{kind}", user, 10 * GiB)
                    else:
                        rc = cbd.Open(f"/{kind}", user)
                    took = time.monotonic() - t
                    if kind == "blackholed_then_good":
                        # The client walks the address list past the silent one.
                        assert rc >= 0, (call, rc)
                    else:
                        assert rc < 0, (kind, call, rc)
                    assert took < budget + 3.0, f"{kind} {call}: {took:.1f} s"
                    if call == "Create":
                        figure(f"mds_{kind}_first_call", took)
            finally:
                cbd.UnInit()


# ---------------------------------------------------------------------------------------
# 8. Close and UnInit under IO in flight, and a process exiting with IO in flight.


def hammer(
    cbd: curvefs.CBDClient, fd: int, stop: threading.Event, results: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        off = rng.randrange(0, 4 * CHUNK // SLOT) * SLOT
        if rng.random() < 0.5:
            rc = cbd.Write(fd, rng.randbytes(SLOT), off, SLOT)
        else:
            got = cbd.Read(fd, "", off, SLOT)
            rc = len(got) if isinstance(got, bytes) else got
        results.append(rc)
        if rc < 0:
            return  # the fd is gone: every later call would say so too


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["Close", "UnInit"])
@pytest.mark.parametrize("stalled", [False, True], ids=["flowing", "stalled"])
def test_close_and_uninit_with_io_in_flight(tmp_path: Path, how: str, stalled: bool) -> None:
    # `stalled`: a chunkserver is paused first, so IO to the copysets it leads is stuck
    # in retries when the fd or the client goes away.
    user = make_user("curve")
    with LocalCluster(tmp_path / "c", copysets=3, client_options=CLIENT_OPTIONS) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        fd = cbd.Open("/vol", user)
        assert cbd.Write(fd, bytes(4 * CHUNK), 0, 4 * CHUNK) == 4 * CHUNK
        stop = threading.Event()
        results: list[list[int]] = [[] for _ in range(THREADS)]
        threads = [
            threading.Thread(target=hammer, args=(cbd, fd, stop, results[i], i), daemon=True)
            for i in range(THREADS)
        ]
        for th in threads:
            th.start()
        wait_for(lambda: all(len(r) >= 5 for r in results), 60, "every thread doing IO")
        if stalled:
            frozen = cluster.copyset_leader(1)
            cluster.pause_chunkserver(frozen)
            port = int(cluster.chunkserver_addr(frozen).rsplit(":", 1)[1])
            wait_for(lambda: bytes_queued_at(port) > 0, 30, "IO waiting at the frozen leader")
        t = time.monotonic()
        if how == "Close":
            assert cbd.Close(fd) in (0, -curvefs.CURVE_ERROR_FAILED)
        else:
            cbd.UnInit()
        closed_in = time.monotonic() - t
        for th in threads:
            th.join(timeout=IO_BUDGET_S + IO_SLACK_S)
        assert not any(th.is_alive() for th in threads), "IO hung after the fd went away"
        stop.set()
        for r in results:
            # Every IO ended with its length or an error code; each thread met the end.
            assert all(rc == SLOT or rc < 0 for rc in r), r
            assert r[-1] < 0
        figure(f"{how}_{'stalled' if stalled else 'flowing'}_returned_after", closed_in)
        assert closed_in < IO_BUDGET_S + IO_SLACK_S
        # The client (or a new one) still works.
        if how == "Close":
            fd = cbd.Open("/vol", user)
            assert fd >= 0
            got = cbd.Read(fd, "", CHUNK, SLOT)
            assert isinstance(got, bytes) and len(got) == SLOT
            cbd.Close(fd)
        cbd.UnInit()
        if stalled:
            for cs in cluster.chunkserver_ids:
                if cluster.is_paused(f"chunkserver-{cs}"):
                    cluster.resume_chunkserver(cs)


EXITER = """
import os, random, sys, threading, curvefs
cbd = curvefs.CBDClient()
assert cbd.Init(sys.argv[1]) == 0
user = curvefs.UserInfo_t()
user.owner = "curve"
fd = cbd.Open("/vol", user)
assert fd >= 0, fd
count = [0]
def run(seed):
    rng = random.Random(seed)
    n = 0
    while True:
        slot = rng.randrange(0, 256)
        # A 16-byte tag naming the slot, repeated: a torn or misplaced write shows.
        tag = f"{slot:05d}{seed}{n:010d}".encode()
        cbd.Write(fd, tag * 1024, slot * 16384, 16384)
        count[0] += 1
        n += 1
for i in range(8):
    threading.Thread(target=run, args=(i,), daemon=True).start()
while count[0] < 50:
    threading.Event().wait(0.01)
print("busy", flush=True)
sys.stdin.readline()
# {how}: the interpreter goes away under 8 threads inside Write.
{exit}
"""


# Found by this test: before Python 3.14 a daemon thread that re-takes the GIL during
# finalization is ended with pthread_exit, and its forced unwind through PyO3's frames
# aborted the process ("FATAL: exception not rethrown", SIGABRT; python/cpython#87135,
# PyO3/pyo3#4874). The binding's atexit hook now lets the threads already on their way back
# re-attach first and parks every later one (runtime.rs `note_exiting`): every way out must
# exit cleanly.


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "how",
    [
        "sys.exit",
        "os._exit",
        "main_returns",
    ],
)
def test_process_exits_with_io_in_flight(tmp_path: Path, how: str) -> None:
    user = make_user("curve")
    exit_line = {"sys.exit": "sys.exit(0)", "os._exit": "os._exit(0)", "main_returns": "pass"}
    with LocalCluster(tmp_path / "c", copysets=3) as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        assert cbd.Create("/vol", user, 10 * GiB) == 0
        script = EXITER.replace("{how}", how).replace("{exit}", exit_line[how])
        with start_child(
            [sys.executable, "-c", script, cluster.conf_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None and child.stdin is not None
            assert readline(child.stdout, 60, "the exiter's busy").strip() == "busy"
            t = time.monotonic()
            child.stdin.write("exit\n")
            child.stdin.flush()
            try:
                rc = child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                pytest.fail("the process did not exit with IO in flight (deadlock)")
            took = time.monotonic() - t
            stderr = child.stderr.read() if child.stderr is not None else ""
        assert rc == 0, f"exit status {rc}: {stderr[-2000:]}"
        figure(f"exit_{how}_took", took)
        # Its file record is left to expire; the volume is intact for the next client:
        # every 4 KiB block of the 256 slots holds zeros or whole tags of one write to that
        # slot, and the writes acknowledged before the exit are there (one at least).
        fd = cbd.Open("/vol", user)
        assert fd >= 0
        got = cbd.Read(fd, "", 0, 256 * SLOT)
        assert isinstance(got, bytes) and len(got) == 256 * SLOT
        cbd.Close(fd)
        cbd.UnInit()
        written = 0
        for slot in range(256):
            for b in range(SLOT // 4096):
                block = got[slot * SLOT + b * 4096 : slot * SLOT + (b + 1) * 4096]
                if block == bytes(4096):
                    continue
                tag = block[:16]
                assert block == tag * 256 and tag[:5] == f"{slot:05d}".encode(), (
                    f"slot {slot}, block {b}: not one whole write to this slot: {block[:48]!r}"
                )
                written += 1
        assert written >= 4, f"{written} blocks hold writes: 50 were acknowledged before the exit"


# ---------------------------------------------------------------------------------------
# 6. Connections delayed, dropped, reset mid-request and blackholed on the clients' path
# to a copyset leader and to the MDS (LocalCluster(proxied=True): a FaultProxy in front
# of every server; replication between chunkservers does not cross it).

NET_FAULTS = ["delay", "drop", "reset_mid_request", "blackhole"]


def apply_net_fault(
    proxy: FaultProxy, fault: str, seconds: float, on: threading.Event | None = None
) -> float:
    """Runs `fault` on `proxy` for about `seconds`; returns when the path was whole again.
    `on` is set once the fault is in effect."""
    end = time.monotonic() + seconds
    if fault == "delay":
        # A round trip of 1.2 s: longer than the first try's timeout on either wire.
        proxy.delay(upstream=0.6, downstream=0.6)
        if on is not None:
            on.set()
        time.sleep(seconds)  # the fault's length, not a wait for anything
    elif fault == "blackhole":
        proxy.blackhole()
        if on is not None:
            on.set()
        time.sleep(seconds)
    else:
        while time.monotonic() < end:
            if fault == "drop":
                proxy.drop()
            else:
                proxy.reset(mid_request=True)
            if on is not None:
                on.set()
            time.sleep(0.3)  # the fault's cadence: a drop (or a cut) every 0.3 s
    proxy.pass_through()
    return time.monotonic()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", NET_FAULTS)
def test_network_faults_on_the_path_to_a_leader(tmp_path: Path, fault: str) -> None:
    with (
        LocalCluster(
            tmp_path / "c", copysets=COPYSETS, client_options=CLIENT_OPTIONS, proxied=True
        ) as cluster,
        volume(cluster) as (cbd, fd),
    ):
        work = Workload(cbd, fd, REGION_SLOTS)
        work.start()
        try:
            work.wait_all_threads_progress(0.0, 20, timeout=60)
            victim, led = busiest_leader(cluster)
            proxy = cluster.fault_proxy(f"chunkserver-{victim}")
            accepted = proxy.accepted
            t0 = time.monotonic()
            t1 = apply_net_fault(proxy, fault, 3.0)
            work.wait_all_threads_progress(t1, 20, timeout=IO_BUDGET_S + IO_SLACK_S)
            resumed = work.stall_after(t1)
            # The leaders did not move: the fault was on the clients' path only.
            moved = {c: cluster.copyset_leader(c) for c in led}
        finally:
            work.finish()
        figure(f"net_{fault}_leader_io_resumed", resumed)
        figure(f"net_{fault}_leader_worst_write", work.stall_after(t0))
        print(
            f"FIGURE net_{fault}_leader_victim=chunkserver-{victim} leading copysets {led}; "
            f"{len(work.records)} writes, {work.failed()} failed, "
            f"{proxy.accepted - accepted} new connections, "
            f"{proxy.discarded_bytes} bytes discarded in the proxy",
            flush=True,
        )
        assert set(moved.values()) == {victim}, moved
        assert work.failed() == 0, "a write failed on a fault far shorter than its budget"
        if fault in ("drop", "reset_mid_request"):
            assert proxy.accepted > accepted, "the client never reconnected"
        assert resumed < 10.0
        work.verify(cbd, fd, "the writing client")
        with volume(cluster) as (other, ofd):
            work.verify(other, ofd, "a new client")
        deadline = time.monotonic() + 60
        while differ := replicas_differ(cluster):
            assert time.monotonic() < deadline, f"replicas differ: {differ[:5]}"
            time.sleep(0.5)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", NET_FAULTS)
def test_network_faults_on_the_path_to_the_mds(tmp_path: Path, fault: str) -> None:
    """IO on allocated segments goes on through an MDS fault; metadata calls, the
    allocation of new segments and the session refreshes retry and succeed after it, and
    each takes effect once (a retried Create finding its own file is the one risk)."""
    user = make_user("curve")
    with (
        LocalCluster(
            tmp_path / "c", copysets=COPYSETS, client_options=CLIENT_OPTIONS, proxied=True
        ) as cluster,
        volume(cluster) as (cbd, fd),
    ):
        work = Workload(cbd, fd, REGION_SLOTS)
        work.start()
        meta: list[tuple[str, int, float]] = []
        stop = threading.Event()

        def metadata() -> None:
            i = 0
            while not stop.is_set():
                t = time.monotonic()
                rc = cbd.Create(f"/m{i}", user, 10 * GiB)
                meta.append((f"create /m{i}", rc, time.monotonic() - t))
                t = time.monotonic()
                rc = cbd.StatFile(f"/m{i}", user, curvefs.FileInfo_t())
                meta.append((f"stat /m{i}", rc, time.monotonic() - t))
                i += 1

        try:
            work.wait_all_threads_progress(0.0, 20, timeout=60)
            proxy = cluster.fault_proxy("mds")
            meta_thread = threading.Thread(target=metadata, daemon=True)
            meta_thread.start()
            t0 = time.monotonic()
            # A write to a segment not allocated yet needs the MDS during the fault.
            new_segment = threading.Thread(
                target=lambda: meta.append(
                    ("write to a new segment", cbd.Write(fd, b"n" * SLOT, 5 * GiB, SLOT), 0.0)
                ),
                daemon=True,
            )
            fault_on = threading.Event()
            faulted = threading.Thread(
                target=apply_net_fault, args=(proxy, fault, 3.0, fault_on), daemon=True
            )
            faulted.start()
            assert fault_on.wait(10), f"the {fault} did not take effect within 10 s"
            new_segment.start()
            work.wait_all_threads_progress(t0, 20, timeout=IO_BUDGET_S + IO_SLACK_S)
            during = work.stall_after(t0)
            faulted.join(30)
            assert not faulted.is_alive(), f"the {fault} did not end within 30 s"
            t1 = time.monotonic()
            new_segment.join(IO_BUDGET_S + IO_SLACK_S)
            assert not new_segment.is_alive(), "a write to a new segment hung"
            # Metadata calls succeed again after the fault.
            wait_for(
                lambda: (
                    sum(1 for m in meta[:] if m[0].startswith("create") and m[1] == 0) >= 3
                    and any(m[0].startswith("create") for m in meta[:] if m[2] < 1.0)
                ),
                30,
                "metadata calls succeeding after the fault",
            )
            stop.set()
            meta_thread.join(IO_BUDGET_S + IO_SLACK_S)
            assert not meta_thread.is_alive(), "a metadata call hung"
        finally:
            stop.set()
            work.finish()
        resumed = max((d for _, _, d in meta), default=0.0)
        figure(f"net_{fault}_mds_worst_write_on_allocated_segments", during)
        figure(f"net_{fault}_mds_slowest_metadata_call", resumed)
        print(f"FIGURE net_{fault}_mds_calls={len(meta)} after={t1 - t0:.1f}s", flush=True)
        assert work.failed() == 0
        assert during < 5.0, "IO on allocated segments waited on the MDS fault"
        # A CreateFile is not idempotent: when its first try reached the MDS and the
        # answer was lost (dropped, reset, or later than the timeout), the retry finds
        # the file and says EXISTS. The file is there, once; nothing else may fail.
        own_exists = [m for m in meta if m[0].startswith("create") and m[1] == EXISTS]
        failed = [
            m
            for m in meta
            if m[1] != (SLOT if m[0].startswith("write") else 0) and m not in own_exists
        ]
        assert not failed, f"metadata calls failed: {failed[:5]}"
        print(f"FIGURE net_{fault}_mds_retried_create_saw_its_own_file={len(own_exists)}")
        work.verify(cbd, fd, "the writing client")
        assert cbd.Read(fd, "", 5 * GiB, SLOT) == b"n" * SLOT
        for name, _, _ in own_exists:
            assert cbd.StatFile(name.split()[1], user, curvefs.FileInfo_t()) == 0, name


def slot_on_replicas(cluster: LocalCluster, copyset: str, slot: int) -> dict[int, bytes]:
    """The bytes of `slot` (of the volume's first chunk) in every replica's chunk file."""
    out = {}
    for cs in cluster.chunkserver_ids:
        for name, path in chunk_files(cluster, cs).items():
            if name.startswith(copyset + "/"):
                with open(path, "rb") as f:
                    f.seek(slot * SLOT)
                    out[cs] = f.read(SLOT).ljust(SLOT, b"\0")
    return out


@pytest.mark.timeout(180)
def test_a_write_held_past_its_timeout_never_lands_over_a_newer_one(tmp_path: Path) -> None:
    """The duplicate-write hazard: a write to a leader whose bytes the network holds
    past the client's RPC timeout while that leader is stopped and replaced; the client
    retries at the new leader, then writes newer bytes to the same slot; the held
    original reaches the old leader's socket, where it finds it first thing on resuming,
    still believing it leads. It must land on no replica: watched from the moment the
    old leader resumes, no chunk file ever holds the older bytes, and after catch-up
    every replica holds the newer ones."""
    rng = random.Random(6)
    first, older, newer = (rng.randbytes(SLOT) for _ in range(3))
    with (
        LocalCluster(
            tmp_path / "c", copysets=3, client_options=CLIENT_OPTIONS, proxied=True
        ) as cluster,
        volume(cluster) as (cbd, fd),
    ):
        assert cbd.Write(fd, first, 0, SLOT) == SLOT
        (copyset,) = {
            name.split("/")[0]
            for cs in cluster.chunkserver_ids
            for name in chunk_files(cluster, cs)
        }
        copyset_id = int(copyset.split("-")[1])
        old_leader = cluster.copyset_leader(copyset_id)
        proxy = cluster.fault_proxy(f"chunkserver-{old_leader}")
        proxy.blackhole()
        held_from = proxy.forwarded("upstream")
        taken_in = proxy.received("upstream")
        result: list[int] = []
        t0 = time.monotonic()
        writer = threading.Thread(target=lambda: result.append(cbd.Write(fd, older, 0, SLOT)))
        writer.start()
        # The whole write (its payload at least) is in the proxy, held: nothing forwarded.
        proxy.wait_received("upstream", taken_in + SLOT, timeout=30)
        assert proxy.forwarded("upstream") == held_from, "the blackhole let bytes through"
        cluster.pause_chunkserver(old_leader)
        writer.join(IO_BUDGET_S + IO_SLACK_S)
        assert result == [SLOT], f"the held write was not retried to success: {result}"
        retried = time.monotonic() - t0
        assert cluster.copyset_leader(copyset_id) != old_leader
        assert cbd.Write(fd, newer, 0, SLOT) == SLOT
        # A Raft follower applies after the leader has answered: let the live replicas
        # hold the newer bytes before watching, so that a lagging follower's copy of the
        # retried write is not taken for the held one.
        live = set(cluster.chunkserver_ids) - {old_leader}
        wait_for(
            lambda: all(
                b == newer for cs, b in slot_on_replicas(cluster, copyset, 0).items() if cs in live
            ),
            30,
            "the live replicas hold the newer bytes",
        )
        # The held bytes go on to the stopped leader's socket.
        proxy.pass_through()
        wait_for(lambda: proxy.forwarded("upstream") > held_from, 10, "the held write delivered")
        cluster.resume_chunkserver(old_leader)
        figure("net_held_write_retried_at_new_leader", retried)
        # Watch closely: a catch-up copy would soon mend a replica the late write reached.
        watch_until = time.monotonic() + 2.0
        while time.monotonic() < watch_until:
            landed = [cs for cs, b in slot_on_replicas(cluster, copyset, 0).items() if b == older]
            assert not landed, f"the held write landed after a newer one on {landed}"
            time.sleep(0.01)
        assert cbd.Read(fd, "", 0, SLOT) == newer
        deadline = time.monotonic() + 30
        while set(slot_on_replicas(cluster, copyset, 0).values()) != {newer}:
            assert time.monotonic() < deadline, "the replicas never all held the newer bytes"
            time.sleep(0.2)
