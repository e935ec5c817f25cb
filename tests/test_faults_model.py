"""Model-based test (issue 9): random sequences of calls against a Python model of the
namespace and of every byte, with chunkserver faults in the background.

A hypothesis state machine drives create, extend, open, write (aligned through
``CBDClient``, unaligned through the Pythonic ``Volume``), read, close, rename, remove,
recover (from ``/RecycleBin``), purge (``DeleteForce``), stat, listdir, write_zeroes and
discard, each through either API where both have it, lazy clones and their flatten (a few
per run), plus batches of IO run at once on several threads. The model knows what every
call must return (its code, or which exception) and what every byte holds; reads must agree
byte for byte. Where the API gives no order (concurrent writes over the same blocks) the
model accepts each block as any serial order of the writes touching it leaves it, and takes
what the read shows. Each fd's segment cache is modelled too: a segment it found
unallocated reads as zeros through it until it writes there itself (upstream's cache for an
exclusive open, which assumes one writer). The regions straddle the places where IO is
split: the first chunk boundary, the first segment boundary, the file's end (which moves
with extend), on plain and striped files.

Meanwhile a background thread injects faults at random steps: a chunkserver (often a
copyset's leader) SIGKILLed and restarted, stopped cleanly and restarted, or paused and
resumed (each of which moves leaders), or a copyset's leadership moved (TransferLeader). At
most one fault runs at a time, so a majority of every copyset stays up and no IO may fail.

One LocalCluster serves the whole run. Each example works in its own directory; its files
are checked whole at its end, and once more at the end of the run with a fresh client, the
recycle bin's entries too. ``CURVEFS_MODEL_STEPS`` sets the number of steps (2,000 by
default: the CI run), ``CURVEFS_MODEL_SEED`` replays a run's choices (faults and thread
timing still differ). The run prints ``FIGURE`` lines: steps, faults, time.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import errors as hypothesis_errors
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import curvefs
from curvefs import snapshot_clone as sc
from curvefs.exceptions import CurveError
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, make_user

KiB = 1 << 10
BLOCK = 4096
CHUNK = 16 * MiB
SEGMENT = GiB
MIN_LENGTH = 10 * GiB
MAX_LENGTH = 14 * GiB  # extends stop here, to keep the run's allocation modest
WINDOW = 256 * KiB
MAX_IO = 80 * KiB
STRIPE = (64 * KiB, 4)
NAMES = ("a", "b", "c", "d")

STEPS = int(os.environ.get("CURVEFS_MODEL_STEPS", "2000"))
STEPS_PER_EXAMPLE = 100
ROUND_EXAMPLES = 20
MAX_ROUNDS = 4 + 2 * -(-STEPS // (ROUND_EXAMPLES * STEPS_PER_EXAMPLE))
COPYSETS = 6

OK = 0
EXISTS = -curvefs.CURVE_ERROR_EXISTS
FAILED = -curvefs.CURVE_ERROR_FAILED
NOTEXIST = -curvefs.CURVE_ERROR_NOTEXIST
OCCUPIED = -curvefs.CURVE_ERROR_FILE_OCCUPIED
NO_SHRINK = -curvefs.CURVE_ERROR_NO_SHRINK_BIGGER_FILE
LENGTH_NOT_SUPPORT = -curvefs.CURVE_ERROR_LENGTH_NOT_SUPPORT
UNKNOWN = -curvefs.CURVE_ERROR_UNKNOWN  # kExtentUnitError and kFileIdNotMatch map here
DELETE_BEING_CLONED = -curvefs.CURVE_ERROR_DELETE_BEING_CLONED
STATUS_NOT_MATCH = -curvefs.CURVE_ERROR_STATUS_NOT_MATCH
# A flatten copies every chunk of the source's allocated segments (up to 3 GiB here): a
# run's budget of them keeps it within CI's time.
MAX_FLATTENS = int(os.environ.get("CURVEFS_MODEL_FLATTENS", "4"))
CLONES_PER_EXAMPLE = 4
# A snapshot through the snapshot/clone service waits two client leases (10 s here) for the
# volume's clients to take up its seqNum: one per run by default.
MAX_SNAPSHOTS = int(os.environ.get("CURVEFS_MODEL_SNAPSHOTS", "1"))

RECYCLE_BIN = "/RecycleBin"


def figure(name: str, value: object) -> None:
    print(f"FIGURE model_{name}={value}", flush=True)


# -- the model ----------------------------------------------------------------------------


class Contents:
    """A volume's bytes as 4 KiB blocks; a block never written reads as zeros."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}

    def block(self, b: int) -> bytes:
        return self.blocks.get(b, bytes(BLOCK))

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            b, inner = divmod(offset + pos, BLOCK)
            n = min(BLOCK - inner, len(data) - pos)
            if inner == 0 and n == BLOCK:
                self.blocks[b] = data[pos : pos + n]
            else:
                blk = bytearray(self.block(b))
                blk[inner : inner + n] = data[pos : pos + n]
                self.blocks[b] = bytes(blk)
            pos += n

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            b, inner = divmod(pos, BLOCK)
            n = min(BLOCK - inner, end - pos)
            out += self.block(b)[inner : inner + n]
            pos += n
        return bytes(out)

    def runs(self) -> list[tuple[int, int]]:
        """The written blocks as [start, end) byte ranges."""
        out: list[tuple[int, int]] = []
        for b in sorted(self.blocks):
            if out and out[-1][1] == b * BLOCK:
                out[-1] = (out[-1][0], (b + 1) * BLOCK)
            else:
                out.append((b * BLOCK, (b + 1) * BLOCK))
        return out


@dataclass
class FileModel:
    id: int
    length: int
    striped: bool
    ctime: int  # the MDS's creation time: recover by path takes the newest entry
    contents: Contents = field(default_factory=Contents)
    # Segments the MDS has allocated: those some write reached.
    allocated: set[int] = field(default_factory=set)
    # A lazy clone not flattened yet: the file it reads unwritten ranges from. The model
    # makes no write to a file while a clone reads from it (writes there become reads), so
    # a clone's bytes are its source's at the clone, overlaid with its own writes.
    source: FileModel | None = None
    # Made a clone source (status BeingCloned): it stays so after its clones are
    # flattened (curvefs's clone task keeps no reference count), so it cannot be renamed.
    being_cloned: bool = False

    def windows(self) -> list[int]:
        """Where the test's IO goes: around the first chunk boundary, the first segment
        boundary and the end, and at the start."""
        return [0, CHUNK - WINDOW // 2, SEGMENT - WINDOW // 2, self.length - WINDOW]


@dataclass
class BinEntry:
    """A file in /RecycleBin: removed (``<name>-<id>-<secs>``) or replaced by a rename
    (``<name>-<id>``), recoverable to ``origin``."""

    origin: str
    file: FileModel

    def matches(self, bin_name: str, base: str) -> bool:
        prefix = f"{base}-{self.file.id}"
        return bin_name == prefix or bin_name.startswith(prefix + "-")


@dataclass
class Handle:
    """An open file: a CBDClient fd (aligned IO) or a Pythonic Volume (any IO)."""

    serial: int
    api: str  # "cbd" | "py"
    name: str
    file: FileModel
    fd: int = -1
    vol: curvefs.Volume | None = None
    # The length the Volume is known to have seen (its size clamps reads).
    seen_length: int = 0
    # The fd's segment cache: True for allocated, False for a hole. A read of a segment
    # the MDS had not allocated caches a hole, and the fd reads zeros there until it
    # writes there itself, whatever another client writes meanwhile: upstream's cache
    # for an exclusive open (its default), which assumes no other writer.
    segments: dict[int, bool] = field(default_factory=dict)


@dataclass
class Op:
    """One IO of a step or a batch."""

    handle: Handle
    write: bool
    offset: int
    length: int
    data: bytes = b""

    def blocks(self) -> range:
        return range(self.offset // BLOCK, -(-(self.offset + self.length) // BLOCK))

    def segments(self) -> range:
        # Striped or not, a segment holds the file's bytes [i GiB, (i + 1) GiB): a stripe
        # group (unit x count) of chunks never straddles a segment.
        return range(self.offset // SEGMENT, (self.offset + self.length - 1) // SEGMENT + 1)

    def edges(self) -> list[int]:
        """The partial blocks an unaligned write reads, patches and writes back."""
        first, last = self.offset // BLOCK, (self.offset + self.length - 1) // BLOCK
        out = []
        if self.offset % BLOCK or first == last:
            out.append(first)
        if (self.offset + self.length) % BLOCK and last != first:
            out.append(last)
        return out

    def aligned(self) -> bool:
        return self.offset % BLOCK == 0 and self.length % BLOCK == 0

    def __repr__(self) -> str:
        h = self.handle
        kind = "write" if self.write else "read"
        return f"{kind}(h{h.serial} {h.api} {h.name} [{self.offset}, +{self.length}))"


# -- faults -------------------------------------------------------------------------------


@dataclass
class Fault:
    at: int  # the step at which it starts (drawn within its example, then the run's)
    kind: str
    chunkserver: int | None  # None: the leader of `copyset`
    copyset: int
    hold: float  # seconds between the fault and its repair


def _kill_restart(cluster: LocalCluster, cs: int, f: Fault) -> None:
    cluster.kill_chunkserver(cs, signal.SIGKILL)
    time.sleep(f.hold)
    cluster.start_chunkserver(cs)


def _stop_start(cluster: LocalCluster, cs: int, f: Fault) -> None:
    cluster.stop_chunkserver(cs)
    time.sleep(f.hold)
    cluster.start_chunkserver(cs)


def _pause_resume(cluster: LocalCluster, cs: int, f: Fault) -> None:
    cluster.pause_chunkserver(cs)
    time.sleep(f.hold)
    cluster.resume_chunkserver(cs)


def _move_leader(cluster: LocalCluster, cs: int, f: Fault) -> None:
    # TransferLeader of the copyset to `cs`, or on to the next member if `cs` leads it
    # (every chunkserver is a member of every copyset). The transferee must have caught up.
    ids = cluster.chunkserver_ids
    if cluster.copyset_leader(f.copyset) == cs:
        cs = ids[(ids.index(cs) + 1) % len(ids)]
    cluster.transfer_leader(f.copyset, cs, timeout=30.0)


# The faults the run draws from; each takes the chunkserver it hits.
FAULTS: dict[str, Callable[[LocalCluster, int, Fault], None]] = {
    "kill": _kill_restart,
    "stop": _stop_start,
    "pause": _pause_resume,
    "move leader": _move_leader,
}


class FaultRunner:
    """Runs one fault at a time on a background thread, while the steps go on."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.thread: threading.Thread | None = None
        self.log: list[str] = []
        self.counts: Counter[str] = Counter()
        self.errors: list[BaseException] = []

    def idle(self) -> bool:
        return self.thread is None or not self.thread.is_alive()

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]

    def start(self, fault: Fault, step: int, steps: Callable[[], int]) -> None:
        self.check()
        self.thread = threading.Thread(
            target=self._run, args=(fault, step, steps), name="model-fault", daemon=True
        )
        self.thread.start()

    def _run(self, f: Fault, step: int, steps: Callable[[], int]) -> None:
        try:
            t0 = time.monotonic()
            cs = f.chunkserver
            who = f"chunkserver-{cs}"
            if cs is None:
                cs = self.cluster.copyset_leader(f.copyset)
                who = f"chunkserver-{cs} (leader of copyset {f.copyset})"
            held = "" if f.kind == "move leader" else f" for {f.hold:.2f} s"
            self.log.append(f"step {step}: {f.kind} {who} (copyset {f.copyset}){held}")
            FAULTS[f.kind](self.cluster, cs, f)
            # Settled once every copyset has a leader again.
            for c in self.cluster.copyset_ids:
                self.cluster.copyset_leader(c, timeout=30.0)
            self.counts[f.kind] += 1
            self.log.append(
                f"step {steps()}: {f.kind} {who} repaired, settled after "
                f"{time.monotonic() - t0:.1f} s"
            )
        except BaseException as e:
            self.errors.append(e)

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=120)
            assert not self.thread.is_alive(), "a fault did not end within 120 s"
        self.check()
        # Whatever happened, every chunkserver serves again.
        for cs in self.cluster.chunkserver_ids:
            if self.cluster.is_paused(f"chunkserver-{cs}"):
                self.cluster.resume_chunkserver(cs)
            self.cluster.start_chunkserver(cs)


# -- the run's shared state ----------------------------------------------------------------


@dataclass
class Run:
    cluster: LocalCluster
    cbd: curvefs.CBDClient
    py: curvefs.Client
    user: curvefs.UserInfo_t
    root: curvefs.UserInfo_t
    pool: ThreadPoolExecutor
    faults: FaultRunner
    seed: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    round: int = 0
    rounds_cut: int = 0
    steps: int = 0
    examples: int = 0
    ios: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    # Faults waiting for their step, or for the one running to end.
    planned: deque[Fault] = field(default_factory=deque)
    # Every example's files and recycle-bin entries as it left them, for the final check.
    files: list[tuple[str, FileModel]] = field(default_factory=list)
    recycled: list[BinEntry] = field(default_factory=list)
    serials: Iterator[int] = field(default_factory=itertools.count)
    flattens: int = 0
    snapshots: int = 0
    # Every exception a rule's check raised, in order: the run fails on the first whatever
    # Hypothesis makes of it (a live cluster does not replay, so Hypothesis may report a
    # real failure as its own flakiness and drop the rule's error).
    failures: list[BaseException] = field(default_factory=list)


def py_call(fn: Callable[[], object]) -> int:
    """A Pythonic call's outcome as an SDK code (0, or the raised error's code)."""
    try:
        fn()
    except CurveError as e:
        return e.code
    return OK


def cbd_read(cbd: curvefs.CBDClient, fd: int, offset: int, length: int) -> bytes | int:
    return cbd.Read(fd, "", offset, length)


@contextmanager
def recorded(failures: list[BaseException]) -> Iterator[None]:
    """Runs a rule's checks, keeping what they raise in `failures` for ``run_round``: the
    checks' own exceptions, not Hypothesis's (``StopTest``, a draw found inconsistent)."""
    try:
        yield
    except hypothesis_errors.HypothesisException:
        raise
    except Exception as e:
        failures.append(e)
        raise


# -- the state machine ---------------------------------------------------------------------

name_st = st.sampled_from(NAMES)
api_st = st.sampled_from(["cbd", "py"])
pick_st = st.integers(0, 63)  # an index into whatever is there to choose from


class VolumeModel(RuleBasedStateMachine):
    run: Run  # set by the test before hypothesis builds any machine

    def __init__(self) -> None:
        super().__init__()
        r = self.run
        r.examples += 1
        self.dir = f"/model-{r.tag}-{r.examples}"
        self.files: dict[str, FileModel] = {}
        self.bin: list[BinEntry] = []
        self.handles: list[Handle] = []
        self.step = 0
        self.clone_steps = 0
        self.recent: deque[str] = deque(maxlen=30)
        self.failed = False
        assert r.cbd.Mkdir(self.dir, r.user) == OK

    def path(self, name: str) -> str:
        return f"{self.dir}/{name}"

    @contextmanager
    def _step(self, what: str, count: bool = True) -> Iterator[None]:
        """Counts a step; a failure inside it carries where the run was."""
        r = self.run
        r.faults.check()
        if count:
            self.step += 1
            r.steps += 1
            r.rules[what.split("(")[0].split()[0]] += 1
            if r.planned and r.planned[0].at <= r.steps and r.faults.idle():
                r.faults.start(r.planned.popleft(), r.steps, lambda: r.steps)
        self.recent.append(f"{r.steps}: {what}")
        try:
            with recorded(r.failures):
                yield
        except BaseException as e:
            self.failed = True
            e.add_note(
                f"model run: CURVEFS_MODEL_SEED={r.seed}, round {r.round}, example "
                f"{r.examples}, its step {self.step}, run step {r.steps}: {what}\n"
                "last steps:\n  " + "\n  ".join(self.recent) + "\n"
                "faults:\n  " + "\n  ".join(r.faults.log[-10:] or ["none"])
            )
            raise

    # -- IO --------------------------------------------------------------------------

    def _handle(self, pick: int, api: str | None = None) -> Handle | None:
        hs = [h for h in self.handles if api is None or h.api == api]
        return hs[pick % len(hs)] if hs else None

    def _region(self, h: Handle, window: int, start: int, length: int, aligned: bool) -> Op:
        base = h.file.windows()[window % 4]
        if aligned:
            start -= start % BLOCK
            length = max(BLOCK, length - length % BLOCK)
        return Op(h, False, base + start, length)

    def _io(self, op: Op) -> bytes | int:
        """Runs one IO; returns the bytes read, or the write's length, or an error code."""
        h = op.handle
        if h.api == "cbd":
            if op.write:
                return self.run.cbd.Write(h.fd, op.data, op.offset, op.length)
            return cbd_read(self.run.cbd, h.fd, op.offset, op.length)
        assert h.vol is not None
        try:
            if op.write:
                return h.vol.pwrite(op.data, op.offset)
            return h.vol.pread(op.length, op.offset)
        except CurveError as e:
            return e.code

    @staticmethod
    def _look_up(h: Handle, segments: range) -> None:
        # What a read finds in the fd's segment cache, asking the MDS on a miss.
        for seg in segments:
            h.segments.setdefault(seg, seg in h.file.allocated)

    def _model(self, op: Op) -> bytes | int:
        """What `op` returns by the model; a write is applied to it (a write the model
        refuses changes nothing)."""
        h, f = op.handle, op.handle.file
        end = op.offset + op.length
        if op.write:
            if end > f.length:
                return FAILED
            if h.api == "py" and not op.aligned():
                for b in op.edges():
                    seg = b * BLOCK // SEGMENT
                    self._look_up(h, range(seg, seg + 1))
                    if not h.segments[seg]:
                        # Read back as zeros (a clone: as its source), patched.
                        f.contents.blocks[b] = self._source_bytes(f, seg, b * BLOCK, BLOCK)
            f.contents.write(op.offset, op.data)
            for seg in op.segments():
                f.allocated.add(seg)
                h.segments[seg] = True
            return op.length
        if h.api == "py":
            # A Volume's read stops at the end of the volume.
            n = max(0, min(op.length, f.length - op.offset))
            if n == 0:
                return b""
        elif end > f.length:
            return FAILED
        else:
            n = op.length
        span = Op(h, False, op.offset, n)
        self._look_up(h, span.segments())
        out = bytearray(f.contents.read(op.offset, n))
        for seg in span.segments():
            if not h.segments[seg]:
                lo = max(op.offset, seg * SEGMENT) - op.offset
                hi = min(op.offset + n, (seg + 1) * SEGMENT) - op.offset
                out[lo:hi] = self._source_bytes(f, seg, op.offset + lo, hi - lo)
        return bytes(out)

    def _sync_size(self, op: Op) -> None:
        # A Volume learns of another client's extend at its next lease refresh; a read
        # past what it has seen asks the MDS first, so the model knows where it stops.
        h = op.handle
        if h.vol is not None and op.offset + op.length > h.seen_length:
            h.vol.stat()
            h.seen_length = h.file.length

    @staticmethod
    def _compare(op: Op, got: bytes | int, want: bytes | int) -> None:
        if isinstance(want, bytes) and isinstance(got, bytes):
            if got != want:
                diff = next(
                    (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                    min(len(got), len(want)),
                )
                pytest.fail(
                    f"{op} differs from the model at byte {op.offset + diff} "
                    f"(got {len(got)} bytes, want {len(want)}; "
                    f"got {got[diff : diff + 8]!r}, want {want[diff : diff + 8]!r})"
                )
        else:
            assert got == want, f"{op} returned {got!r:.60}, the model says {want!r:.60}"

    def _op(
        self,
        h: Handle,
        write: bool,
        window: int,
        start: int,
        length: int,
        aligned: bool,
        seed_: int,
    ) -> Op:
        op = self._region(h, window, start, length, aligned or h.api == "cbd")
        op.write = write and not self._frozen(h.file)
        if op.write:
            op.data = random.Random(seed_).randbytes(op.length)
        else:
            self._sync_size(op)
        return op

    def _live_clones(self, f: FileModel) -> list[FileModel]:
        """The clones that still read from `f`, in the recycle bin too."""
        return [g for g in [*self.files.values(), *(e.file for e in self.bin)] if g.source is f]

    def _frozen(self, f: FileModel) -> bool:
        return bool(self._live_clones(f))

    @staticmethod
    def _source_bytes(f: FileModel, seg: int, offset: int, length: int) -> bytes:
        """What a clone's fd reads of a segment it found unallocated: its source's bytes
        where the source has the segment, else zeros (and zeros for a plain file)."""
        if f.source is not None and seg in f.source.allocated:
            return f.source.contents.read(offset, length)
        return bytes(length)

    def _one(self, op: Op) -> None:
        self.run.ios["write" if op.write else "read"] += 1
        want = self._model(op)
        self._compare(op, self._io(op), want)

    @precondition(lambda self: bool(self.handles))
    @rule(
        pick=pick_st,
        window=st.integers(0, 3),
        block=st.integers(0, WINDOW // BLOCK - 1),
        blocks=st.integers(1, MAX_IO // BLOCK),
        seed_=st.integers(0, 2**32),
    )
    def write_aligned(self, pick: int, window: int, block: int, blocks: int, seed_: int) -> None:
        """Whole blocks: CBDClient.Write, or Volume.pwrite's aligned path."""
        h = self._handle(pick)
        assert h is not None
        op = self._op(h, True, window, block * BLOCK, blocks * BLOCK, True, seed_)
        with self._step(repr(op)):
            self._one(op)

    @precondition(lambda self: any(h.api == "py" for h in self.handles))
    @rule(
        pick=pick_st,
        window=st.integers(0, 3),
        start=st.integers(0, WINDOW - 1),
        length=st.integers(1, MAX_IO),
        seed_=st.integers(0, 2**32),
    )
    def write_unaligned(self, pick: int, window: int, start: int, length: int, seed_: int) -> None:
        """Any offset and length through Volume.pwrite (partial blocks read, patched and
        written back)."""
        h = self._handle(pick, "py")
        assert h is not None
        op = self._op(h, True, window, start, length, False, seed_)
        with self._step(repr(op)):
            self._one(op)

    @precondition(lambda self: bool(self.handles))
    @rule(
        pick=pick_st,
        window=st.integers(0, 3),
        start=st.integers(0, WINDOW - 1),
        length=st.integers(1, MAX_IO),
    )
    def read(self, pick: int, window: int, start: int, length: int) -> None:
        """CBDClient.Read (whole blocks) or Volume.pread (any span)."""
        h = self._handle(pick)
        assert h is not None
        op = self._op(h, False, window, start, length, False, 0)
        with self._step(repr(op)):
            self._one(op)

    @precondition(lambda self: any(h.api == "py" for h in self.handles))
    @rule(
        pick=pick_st,
        window=st.integers(0, 3),
        start=st.integers(0, WINDOW - 1),
        length=st.integers(1, 2 * MAX_IO),
        discard=st.booleans(),
    )
    def zero(self, pick: int, window: int, start: int, length: int, discard: bool) -> None:
        """Volume.write_zeroes or Volume.discard (the same with discard.enable off)."""
        h = self._handle(pick, "py")
        assert h is not None and h.vol is not None
        if self._frozen(h.file):
            return  # a clone reads from it
        op = self._region(h, window, start, length, False)
        what = "discard" if discard else "write_zeroes"
        with self._step(f"{what}(h{h.serial} py {h.name} [{op.offset}, +{op.length}))"):
            self.run.ios["zero"] += 1
            want = self._model_zero(op)
            call = h.vol.discard if discard else h.vol.write_zeroes
            got = py_call(lambda: call(op.offset, op.length))
            assert got == want, f"{what} returned {got}, the model says {want}"

    def _model_zero(self, op: Op) -> int:
        """The core's zero_range: a plain file's segments the fd sees as holes are
        skipped (they read as zeros: to this fd) unless it is a clone whose source has
        the segment, the rest written with zeros in pieces that end on 1 MiB boundaries;
        a striped file is written with zeros throughout."""
        h, f = op.handle, op.handle.file
        end = op.offset + op.length
        if end > f.length:
            return FAILED
        at = op.offset
        while at < end:
            seg_end = min(end, (at // SEGMENT + 1) * SEGMENT)
            seg = at // SEGMENT
            if not f.striped:
                self._look_up(h, range(seg, seg + 1))
            from_source = f.source is not None and seg in f.source.allocated
            if f.striped or h.segments[seg] or from_source:
                pos = at
                while pos < seg_end:
                    n = min(seg_end - pos, MiB - pos % MiB)
                    piece = Op(h, True, pos, n, bytes(n))
                    assert self._model(piece) == n
                    pos += n
            at = seg_end
        return OK

    @precondition(lambda self: bool(self.handles))
    @rule(
        writer=pick_st,
        reader=pick_st,
        window=st.integers(0, 3),
        start=st.integers(0, WINDOW - 1),
        length=st.integers(1, MAX_IO),
        seed_=st.integers(0, 2**32),
    )
    def write_then_read_elsewhere(
        self, writer: int, reader: int, window: int, start: int, length: int, seed_: int
    ) -> None:
        """A write, then a read of its span through another open handle of the file when
        there is one (the other client, or the other API)."""
        w = self._handle(writer)
        assert w is not None
        others = [h for h in self.handles if h.file is w.file and h is not w] or [w]
        r = others[reader % len(others)]
        wop = self._op(w, True, window, start, length, False, seed_)
        rop = Op(r, False, wop.offset, wop.length)
        if r.api == "cbd":
            rop.offset -= rop.offset % BLOCK
            rop.length = -(-(wop.offset + wop.length - rop.offset) // BLOCK) * BLOCK
        self._sync_size(rop)
        with self._step(f"{wop} then {rop}"):
            self._one(wop)
            self._one(rop)

    @precondition(lambda self: bool(self.handles))
    @rule(
        ops=st.lists(
            st.tuples(
                pick_st,
                st.booleans(),
                st.integers(0, 3),
                st.integers(0, WINDOW - 1),
                st.integers(1, MAX_IO),
                st.booleans(),
                st.integers(0, 2**32),
            ),
            min_size=2,
            max_size=4,
        )
    )
    def concurrent(self, ops: list[tuple[int, bool, int, int, int, bool, int]]) -> None:
        """A batch of IO started at once on several threads; every IO stays inside the
        file. Writes over the same blocks are kept only where the API orders them per
        block (all aligned, or all through one Volume, whose read-modify-writes lock their
        blocks); reads avoid the blocks the batch writes, and the segments whose first
        write (by another handle) would race their lookup."""
        batch: list[Op] = []
        for pick, write, window, start, length, aligned, seed_ in ops:
            h = self._handle(pick)
            assert h is not None
            op = self._op(h, write, window, start, length, aligned, seed_)
            if op.offset + op.length > h.file.length:
                op.length = h.file.length - op.offset
                op.data = op.data[: op.length]
            if self._fits(batch, op):
                batch.append(op)
        with self._step(f"concurrent {batch}"):
            self.run.ios["concurrent batch"] += 1
            self.run.ios["concurrent IO"] += len(batch)
            # The reads' answers come from the model as it stands before the batch.
            wants = [None if op.write else self._model(op) for op in batch]
            barrier = threading.Barrier(len(batch))

            def go(op: Op) -> bytes | int:
                barrier.wait(timeout=30)
                return self._io(op)

            results = list(self.run.pool.map(go, batch, timeout=120))
            for op, got, want in zip(batch, results, wants, strict=True):
                if op.write:
                    assert got == op.length, f"{op} returned {got!r}"
                else:
                    assert want is not None
                    self._compare(op, got, want)
            self._apply_writes([op for op in batch if op.write])

    @staticmethod
    def _fits(batch: list[Op], op: Op) -> bool:
        h, f = op.handle, op.handle.file
        # A stale hole (cached by this fd, written by another since) makes the outcome
        # depend on which of the fd's IOs looks it up first.
        if any(h.segments.get(seg) is False and seg in f.allocated for seg in op.segments()):
            return False
        blocks = set(op.blocks())
        for other in batch:
            if other.handle.file is not f or not (op.write or other.write):
                continue
            if blocks & set(other.blocks()):
                if not (op.write and other.write):
                    return False  # a read racing a write over its blocks
                same_volume = h is other.handle and h.api == "py"
                if not (same_volume or (op.aligned() and other.aligned())):
                    return False
            if other.handle is not h and not (op.write and other.write):
                reader = other.handle if op.write else h
                for seg in set(op.segments()) & set(other.segments()):
                    if seg not in f.allocated and reader.segments.get(seg) is None:
                        return False  # the read may find the segment a hole or not
        return True

    def _apply_writes(self, writes: list[Op]) -> None:
        """The model after a batch's writes: blocks one write touched hold its bytes;
        blocks several touched hold what some serial order of them leaves, as read."""
        touched: dict[tuple[int, int], list[Op]] = {}
        for op in writes:
            for b in op.blocks():
                touched.setdefault((op.handle.file.id, b), []).append(op)
        contested = {k: ops for k, ops in touched.items() if len(ops) > 1}
        before = {k: ops[0].handle.file.contents.block(k[1]) for k, ops in contested.items()}
        for op in writes:
            assert self._model(op) == op.length
        for (fid, b), ops in contested.items():
            allowed = set()
            for order in itertools.permutations(ops):
                c = Contents()
                c.blocks[b] = before[(fid, b)]
                for op in order:
                    c.write(op.offset, op.data)
                allowed.add(c.block(b))
            # A writer's fd has the segment cached as allocated: it reads what is there.
            check = Op(ops[0].handle, False, b * BLOCK, BLOCK)
            self._sync_size(check)
            got = self._io(check)
            assert isinstance(got, bytes) and got in allowed, (
                f"block {b} of {ops[0].handle.name} holds no serial order of {ops}"
            )
            ops[0].handle.file.contents.blocks[b] = got

    # -- open and close ----------------------------------------------------------------

    @initialize(
        first=name_st,
        second=name_st,
        striped=st.booleans(),
        faults=st.lists(
            st.builds(
                Fault,
                at=st.integers(0, STEPS_PER_EXAMPLE - 1),
                kind=st.sampled_from(sorted(FAULTS)),
                chunkserver=st.sampled_from([None, 1, 2, 3]),
                copyset=st.integers(1, COPYSETS),
                hold=st.floats(0.2, 3.0),
            ),
            min_size=1,
            max_size=2,
        ),
    )
    def start(self, first: str, second: str, striped: bool, faults: list[Fault]) -> None:
        """Two files, open through both APIs, so that every example does IO whatever
        rules hypothesis's swarm testing leaves enabled; and the example's faults, each
        started at its step or, if a fault is still running then, once it ends."""
        r = self.run
        for f in sorted(faults, key=lambda f: f.at):
            f.at += r.steps
            r.planned.append(f)
        self.create(first, "cbd", 10, striped)
        self.open(first, "cbd")
        if second != first:
            self.create(second, "py", 11, not striped)
        self.open(second, "py")

    @rule(name=name_st, api=api_st)
    def open(self, name: str, api: str) -> None:
        # One open per file and client: a client's file record is one per path, so a
        # second open's close would end the first one's claim on the file until its next
        # refresh, a window no model can place. A file open in both clients is stat'ed.
        if any(h.name == name and h.api == api for h in self.handles):
            api = "py" if api == "cbd" else "cbd"
            if any(h.name == name and h.api == api for h in self.handles):
                self.look(name, api, False)
                return
        r = self.run
        f = self.files.get(name)
        with self._step(f"open {name} via {api}"):
            h = Handle(next(r.serials), api, name, f or FileModel(0, 0, False, 0))
            if api == "cbd":
                h.fd = r.cbd.Open(self.path(name), r.user)
                rc = OK if h.fd >= 0 else h.fd
            else:

                def py_open() -> None:
                    h.vol = r.py.open(self.path(name))

                rc = py_call(py_open)
            assert rc == (OK if f is not None else NOTEXIST), f"open returned {rc}"
            if f is not None:
                h.seen_length = f.length
                self.handles.append(h)

    @precondition(lambda self: bool(self.handles))
    @rule(pick=pick_st)
    def close(self, pick: int) -> None:
        h = self._handle(pick)
        assert h is not None
        with self._step(f"close h{h.serial} ({h.api} {h.name})"):
            self.handles.remove(h)
            self._close(h)

    def _close(self, h: Handle) -> None:
        if h.api == "cbd":
            assert self.run.cbd.Close(h.fd) == OK
        else:
            assert h.vol is not None
            h.vol.close()

    # -- the namespace -----------------------------------------------------------------

    def _open_names(self) -> set[str]:
        return {h.name for h in self.handles}

    def _stat(self, name: str) -> curvefs.FileInfo_t:
        fi = curvefs.FileInfo_t()
        assert self.run.cbd.StatFile(self.path(name), self.run.user, fi) == OK
        return fi

    @rule(name=name_st, api=api_st, size=st.sampled_from([10, 11, 10.5, 5]), striped=st.booleans())
    def create(self, name: str, api: str, size: float, striped: bool) -> None:
        r = self.run
        length = int(size * GiB)
        ok_length = length >= MIN_LENGTH and length % SEGMENT == 0
        want = LENGTH_NOT_SUPPORT if not ok_length else EXISTS if name in self.files else OK
        su, sc = STRIPE if striped else (0, 0)
        with self._step(f"create {name} {size} GiB{' striped' if striped else ''} via {api}"):
            if api == "cbd":
                ctx = curvefs.CreateContext()
                ctx.name, ctx.length, ctx.user = self.path(name), length, r.user
                ctx.stripeUnit, ctx.stripeCount = su, sc
                rc = r.cbd.Create2(ctx)
            else:
                rc = py_call(
                    lambda: r.py.create(self.path(name), length, stripe_unit=su, stripe_count=sc)
                )
            assert rc == want, f"create returned {rc}, the model says {want}"
            if rc == OK:
                fi = self._stat(name)
                assert fi.length == length
                self.files[name] = FileModel(fi.id, length, striped, fi.ctime)

    @rule(
        name=name_st, api=api_st, change=st.sampled_from(["+1", "+2", "same", "shrink", "+chunk"])
    )
    def extend(self, name: str, api: str, change: str) -> None:
        r = self.run
        f = self.files.get(name)
        length = f.length if f else MIN_LENGTH
        if change.startswith("+") and length >= MAX_LENGTH:
            change = "same"
        new = {
            "+1": length + GiB,
            "+2": length + 2 * GiB,
            "same": length,
            "shrink": length - GiB,
            "+chunk": length + CHUNK,
        }[change]
        want = (
            NOTEXIST
            if f is None
            else NO_SHRINK
            if change == "shrink"
            else UNKNOWN
            if change == "+chunk"
            else OK
        )
        with self._step(f"extend {name} {change} via {api}"):
            if api == "cbd":
                rc = r.cbd.Extend(self.path(name), r.user, new)
            else:
                rc = py_call(lambda: r.py.extend(self.path(name), new))
            assert rc == want, f"extend returned {rc}, the model says {want}"
            if f is not None and rc == OK:
                f.length = new

    def _recycle(self, name: str, f: FileModel) -> None:
        self.bin.append(BinEntry(self.path(name), f))

    @rule(name=name_st, api=api_st)
    def remove(self, name: str, api: str) -> None:
        r = self.run
        f = self.files.get(name)
        busy = name in self._open_names()
        if f is not None and f.being_cloned:
            if not self._live_clones(f) and busy:
                # Upstream's rule: a clone source no clone reads from is deleted without
                # the open-file check, which would leave the model an fd on no file.
                return
            want = DELETE_BEING_CLONED if self._live_clones(f) else OK
        else:
            want = NOTEXIST if f is None else OCCUPIED if busy else OK
        with self._step(f"remove {name} via {api}"):
            if api == "cbd":
                rc = r.cbd.Unlink(self.path(name), r.user)
            else:
                rc = py_call(lambda: r.py.remove(self.path(name)))
            assert rc == want, f"remove returned {rc}, the model says {want}"
            if f is not None and rc == OK:
                del self.files[name]
                self._recycle(name, f)

    @rule(src=name_st, dst=name_st, api=api_st)
    def rename(self, src: str, dst: str, api: str) -> None:
        r = self.run
        busy = self._open_names()
        replacing = self.files.get(dst)
        if src not in self.files:
            want = NOTEXIST
        elif src == dst:
            want = EXISTS
        elif self.files[src].being_cloned:
            want = DELETE_BEING_CLONED
        elif src in busy:
            want = OCCUPIED
        elif replacing is not None and replacing.being_cloned:
            want = DELETE_BEING_CLONED
        elif dst in busy:
            want = OCCUPIED
        else:
            want = OK
        with self._step(f"rename {src} -> {dst} via {api}"):
            replaced = self.files.get(dst) if want == OK else None
            if api == "cbd":
                rc = r.cbd.Rename(r.user, self.path(src), self.path(dst))
            else:
                rc = py_call(lambda: r.py.rename(self.path(src), self.path(dst)))
            assert rc == want, f"rename returned {rc}, the model says {want}"
            if rc == OK:
                if replaced is not None:
                    self._recycle(dst, replaced)
                self.files[dst] = self.files.pop(src)

    @rule(name=name_st, api=api_st, how=st.sampled_from(["path", "id", "bad id"]), pick=pick_st)
    def recover(self, name: str, api: str, how: str, pick: int) -> None:
        """RecoverFile: by path, the newest entry removed from there; by id, that entry,
        wherever it came from; an id the bin does not hold falls back to the path's entry
        and then fails the id check."""
        r = self.run
        path = self.path(name)
        file_id = 0
        entry: BinEntry | None
        if how == "id" and self.bin:
            entry = self.bin[pick % len(self.bin)]
            file_id = entry.file.id
        else:
            from_here = [e for e in self.bin if e.origin == path]
            entry = max(from_here, key=lambda e: e.file.ctime) if from_here else None
            if how == "bad id":
                file_id = 1 << 40
        if entry is None:
            want = NOTEXIST
        elif name in self.files:
            want = EXISTS
        elif how == "bad id":
            want = UNKNOWN
        elif entry.file.source is not None:
            # kRecoverFileCloneMetaInstalled, which the client maps to UNKNOWN (as upstream).
            want = UNKNOWN
        else:
            want = OK
        with self._step(f"recover {name} by {how} (id {file_id}) via {api}"):
            if api == "cbd":
                rc = r.cbd.Recover(path, r.user, file_id)
            else:
                rc = py_call(lambda: r.py.recover(path, file_id))
            assert rc == want, f"recover returned {rc}, the model says {want}"
            if entry is not None and rc == OK:
                self.bin.remove(entry)
                self.files[name] = entry.file
                entry.file.being_cloned = False  # recovered as a plain file

    def _bin_listing(self) -> list[str]:
        return self.run.cbd.Listdir(RECYCLE_BIN, self.run.root)

    def _bin_name(self, entry: BinEntry, listing: list[str]) -> str:
        base = entry.origin.rsplit("/", 1)[1]
        names = [n for n in listing if entry.matches(n, base)]
        assert len(names) == 1, f"/RecycleBin holds {names} for {entry.origin} id {entry.file.id}"
        return names[0]

    @precondition(lambda self: bool(self.bin))
    @rule(pick=pick_st)
    def purge(self, pick: int) -> None:
        """DeleteForce (root) of a recycle-bin entry: it cannot be recovered after."""
        entry = self.bin[pick % len(self.bin)]
        with self._step(f"purge {entry.origin} id {entry.file.id}"):
            bin_name = self._bin_name(entry, self._bin_listing())
            rc = self.run.cbd.DeleteForce(f"{RECYCLE_BIN}/{bin_name}", self.run.root)
            assert rc == OK, f"DeleteForce returned {rc}"
            self.bin.remove(entry)

    @precondition(lambda self: self.clone_steps < CLONES_PER_EXAMPLE)
    @rule(src=name_st, dst=name_st)
    def clone(self, src: str, dst: str) -> None:
        """A lazy clone of `src` at `dst`, made as the snapshot/clone service does (a few
        per example: a source takes no writes while a clone reads from it)."""
        r = self.run
        self.clone_steps += 1
        f = self.files.get(src)
        if f is None:
            want = NOTEXIST
        elif f.source is not None:
            want = STATUS_NOT_MATCH  # no clone of a clone still reading its source
        elif dst in self.files:
            want = EXISTS
        else:
            want = OK
        with self._step(f"clone {src} -> {dst}"):
            rc = py_call(lambda: r.cluster.clone_volume(self.path(src), self.path(dst)))
            assert rc == want, f"clone returned {rc}, the model says {want}"
            if f is not None and rc == OK:
                fi = self._stat(dst)
                assert (fi.length, fi.fileStatus) == (f.length, 3), "not CloneMetaInstalled"
                copy = Contents()
                copy.blocks = dict(f.contents.blocks)
                self.files[dst] = FileModel(fi.id, f.length, f.striped, fi.ctime, copy, source=f)
                f.being_cloned = True

    @precondition(
        lambda self: (
            self.run.flattens < MAX_FLATTENS
            and any(
                f.source is not None and n not in self._open_names() for n, f in self.files.items()
            )
        )
    )
    @rule(pick=pick_st)
    def flatten(self, pick: int) -> None:
        """Flattens a clone no fd has open (an open fd learns of it only at its next
        lease refresh, a moment no model can place)."""
        r = self.run
        names = sorted(
            n for n, f in self.files.items() if f.source is not None and n not in self._open_names()
        )
        name = names[pick % len(names)]
        f = self.files[name]
        with self._step(f"flatten {name}"):
            r.flattens += 1
            rc = py_call(lambda: r.cluster.flatten(self.path(name)))
            assert rc == OK, f"flatten returned {rc}"
            assert self._stat(name).fileStatus == 4, "not Cloned"
            assert f.source is not None
            f.allocated |= f.source.allocated
            f.source = None

    def _snapshottable(self) -> list[str]:
        """Files worth the run's few snapshots: written to, and neither a clone source
        (BeingCloned) nor a clone still reading its source (CloneMetaInstalled), which
        upstream refuses (-9)."""
        return sorted(
            n
            for n, f in self.files.items()
            if f.contents.blocks and not f.being_cloned and f.source is None
        )

    @precondition(lambda self: self.run.snapshots < MAX_SNAPSHOTS and self._snapshottable())
    @rule(pick=pick_st)
    def snapshot(self, pick: int) -> None:
        """A snapshot through the snapshot/clone service (CreateSnapshot, then wait until
        done), read back through a lazy clone of it outside the example's folder: it holds
        the model's bytes as of the snapshot (no IO runs during a step, so those are the
        bytes at the request), and is checked again at the end of the run."""
        r = self.run
        names = self._snapshottable()
        name = names[pick % len(names)]
        f = self.files[name]
        assert r.cluster.snapshot_clone_addr is not None
        service = sc.SnapshotCloneClient(r.cluster.snapshot_clone_addr, user=r.user.owner)
        with self._step(f"snapshot {name}"):
            r.snapshots += 1
            at_snapshot = Contents()
            at_snapshot.blocks = dict(f.contents.blocks)
            uuid = service.create_snapshot(self.path(name), f"model-{r.snapshots}")
            done = service.wait_snapshot(uuid, timeout=120, interval=0.1)
            assert done.status is sc.SnapshotStatus.DONE, done
            dest = f"/model-{r.tag}-snapshot-{r.snapshots}"
            service.clone(uuid, dest, lazy=True)
            fi = curvefs.FileInfo_t()
            assert r.cbd.StatFile(dest, r.user, fi) == OK
            clone = FileModel(fi.id, f.length, f.striped, fi.ctime, at_snapshot)
            verify_file(r.cbd, r.user, dest, clone)
            r.files.append((dest, clone))

    @rule(name=name_st, api=api_st, listing=st.booleans())
    def look(self, name: str, api: str, listing: bool) -> None:
        """StatFile of a name (or the Pythonic stat), or a listing of the directory."""
        r = self.run
        if listing:
            with self._step(f"listdir via {api}"):
                names = r.cbd.Listdir(self.dir, r.user) if api == "cbd" else r.py.listdir(self.dir)
                assert sorted(names) == sorted(self.files), f"listdir says {names}"
            return
        f = self.files.get(name)
        with self._step(f"stat {name} via {api}"):
            if api == "cbd":
                fi = curvefs.FileInfo_t()
                rc = r.cbd.StatFile(self.path(name), r.user, fi)
                got = (fi.id, fi.length, fi.filename) if rc == OK else None
            else:
                try:
                    info = r.py.stat(self.path(name))
                    rc, got = OK, (info.id, info.length, info.name)
                except CurveError as e:
                    rc, got = e.code, None
            if f is None:
                assert rc == NOTEXIST, f"stat returned {rc}"
            else:
                assert rc == OK and got == (f.id, f.length, name), f"stat says {got}"

    # -- the end of an example --------------------------------------------------------------

    def teardown(self) -> None:
        r = self.run
        with self._step("teardown: close all, check every file and the bin", count=False):
            for h in self.handles:
                self._close(h)
            self.handles.clear()
            if self.failed:
                return  # the failure is reported; a check of what it left would repeat it
            assert sorted(r.cbd.Listdir(self.dir, r.user)) == sorted(self.files)
            for name, f in self.files.items():
                verify_file(r.cbd, r.user, self.path(name), f)
                r.files.append((self.path(name), f))
            listing = self._bin_listing()
            for entry in self.bin:
                self._bin_name(entry, listing)
            r.recycled += self.bin


def verify_file(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, path: str, f: FileModel) -> int:
    """Reads back every written block and every window of `path`; returns bytes read."""
    fd = cbd.Open(path, user)
    assert fd >= 0, f"open {path}: {fd}"
    try:
        fi = curvefs.FileInfo_t()
        assert cbd.StatFile(path, user, fi) == OK
        assert (fi.id, fi.length) == (f.id, f.length), f"{path} is {fi.id}/{fi.length}"
        spans = sorted(f.contents.runs() + [(w, w + WINDOW) for w in f.windows()])
        merged: list[tuple[int, int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        total = 0
        for s, e in merged:
            for pos in range(s, e, MiB):
                n = min(MiB, e - pos)
                got = cbd_read(cbd, fd, pos, n)
                assert isinstance(got, bytes), f"read {path} [{pos}, +{n}): {got}"
                if got != f.contents.read(pos, n):
                    bad = next(i for i in range(n) if got[i] != f.contents.read(pos + i, 1)[0])
                    pytest.fail(f"{path}: byte {pos + bad} differs from the model")
                total += n
        return total
    finally:
        assert cbd.Close(fd) == OK


# -- the test --------------------------------------------------------------------------------


def _harness_settings() -> settings:
    return settings(
        max_examples=5,
        stateful_step_count=10,
        deadline=None,
        phases=[Phase.generate],
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )


def _flaky_machine(failures: list[BaseException]) -> type[RuleBasedStateMachine]:
    """A machine whose third step fails its check once, as a live cluster does: Hypothesis's
    replay of the failing example then draws differently and ends in its own error."""
    calls = [0]

    class LiveLike(RuleBasedStateMachine):
        @rule(data=st.data())
        def step(self, data: st.DataObject) -> None:
            calls[0] += 1
            with recorded(failures):
                if calls[0] == 3:
                    data.draw(st.integers(0, 10))
                    raise AssertionError("the cluster returned wrong bytes")
                if calls[0] > 3:
                    data.draw(st.booleans())
                    data.draw(st.text())

    return seed(1)(LiveLike)


def test_a_rule_failure_hypothesis_reports_as_flaky_fails_the_run() -> None:
    # The premise: Hypothesis alone turns the rule's failure into FlakyStrategyDefinition,
    # which the model run once caught and passed over.
    with pytest.raises(FlakyStrategyDefinition):
        run_state_machine_as_test(_flaky_machine([]), settings=_harness_settings())
    # What the run does with it: fail, with the rule's own error as the cause.
    failures: list[BaseException] = []
    with pytest.raises(AssertionError, match="wrong bytes") as raised:
        run_round(_flaky_machine(failures), _harness_settings(), failures)
    assert isinstance(raised.value.__cause__, AssertionError)
    assert [str(f) for f in failures] == ["the cluster returned wrong bytes"]


def test_a_round_cut_short_by_hypothesis_alone_passes() -> None:
    # Hypothesis's own inconsistency with no rule failed: the round ends, the run goes on.
    calls = [0]

    class Inconsistent(RuleBasedStateMachine):
        @rule(data=st.data())
        def step(self, data: st.DataObject) -> None:
            calls[0] += 1
            if calls[0] == 3:
                data.draw(st.integers(0, 10))
                raise hypothesis_errors.FlakyStrategyDefinition("drew differently")

    assert run_round(seed(1)(Inconsistent), _harness_settings(), []) is False


def test_a_rule_failure_hypothesis_swallows_still_fails_the_run() -> None:
    failures: list[BaseException] = [AssertionError("recorded, never raised to Hypothesis")]

    class Quiet(RuleBasedStateMachine):
        @rule()
        def step(self) -> None:
            pass

    with pytest.raises(AssertionError, match="recorded, never raised"):
        run_round(seed(1)(Quiet), _harness_settings(), failures)


def _settle_mds(start: float) -> None:
    # A young MDS refuses deletes and renames for one record lifetime (5 s): its records
    # of open files are in memory, so an open file would look closed.
    time.sleep(max(0.0, start + 5.5 - time.monotonic()))


def run_round(
    machine: type[RuleBasedStateMachine], how: settings, failures: list[BaseException]
) -> bool:
    """Runs one round of examples; False if Hypothesis cut it short for a reason of its own.

    Raises the first check that failed in any rule, whatever Hypothesis raised around it:
    replaying a failing example on a live cluster draws differently, and Hypothesis then
    raises ``FlakyStrategyDefinition`` with the rule's error only in ``__context__``.
    `failures` is where the rules record what they raised (``VolumeModel._step``).
    """
    try:
        run_state_machine_as_test(machine, settings=how)
    except FlakyStrategyDefinition as e:
        cause = next(iter(failures), None) or _first_check_in_chain(e)
        if cause is not None:
            raise AssertionError(
                f"a rule's check failed and Hypothesis reported it as {type(e).__name__}: "
                f"{type(cause).__name__}: {cause}"
            ) from cause
        # Hypothesis's own bookkeeping (a prefix of choices it saw before drew
        # differently), with no rule failed: every step it ran was checked.
        print(f"model run: a round ended by hypothesis: {e}", flush=True)
        return False
    if failures:  # a failure Hypothesis swallowed some other way: never pass it
        raise AssertionError(f"a rule's check failed: {failures[0]!r}") from failures[0]
    return True


def _first_check_in_chain(e: BaseException) -> BaseException | None:
    """The first non-Hypothesis exception in e's ``__context__``/``__cause__`` chain."""
    seen: set[int] = set()
    at: BaseException | None = e
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, Exception) and not type(at).__module__.startswith("hypothesis"):
            return at
        at = at.__cause__ or at.__context__
    return None


@pytest.mark.timeout(max(600, STEPS // 4))
def test_model_with_background_faults(tmp_path: Path) -> None:
    started = time.monotonic()
    with LocalCluster(tmp_path / "c", copysets=COPYSETS) as cluster:
        model_run(cluster, started)


def model_run(model_cluster: LocalCluster, started: float) -> None:
    run_seed = int(os.environ.get("CURVEFS_MODEL_SEED") or random.getrandbits(32))
    print(f"model run: seed {run_seed}, {STEPS} steps", flush=True)
    cbd = curvefs.CBDClient()
    assert cbd.Init(model_cluster.conf_path) == OK
    py = curvefs.Client(model_cluster.conf_path, user="model")
    root = make_user("root", model_cluster.root_password)
    run = Run(
        model_cluster,
        cbd,
        py,
        make_user("model"),
        root,
        ThreadPoolExecutor(4),
        FaultRunner(model_cluster),
        run_seed,
    )
    _settle_mds(started)
    VolumeModel.run = run
    try:
        # Examples run in rounds of at most ROUND_EXAMPLES (a fresh hypothesis engine
        # each; round k draws from seed run_seed + k) until the steps are done: hypothesis
        # ends an example early once its choices fill most of its buffer.
        for k in range(MAX_ROUNDS):
            if run.steps >= STEPS:
                break
            run.round = k
            examples = min(ROUND_EXAMPLES, -(-(STEPS - run.steps) // STEPS_PER_EXAMPLE))
            if not run_round(
                seed(run_seed + k)(VolumeModel),
                settings(
                    max_examples=examples,
                    stateful_step_count=STEPS_PER_EXAMPLE,
                    deadline=None,
                    # A live cluster cannot replay a failure exactly: no shrinking;
                    # the failure's notes say where the run was.
                    phases=[Phase.generate],
                    database=None,
                    suppress_health_check=list(HealthCheck),
                    report_multiple_bugs=False,
                ),
                run.failures,
            ):
                run.rounds_cut += 1
        run.faults.finish()
        took = time.monotonic() - started
        # The whole run once more, through a client that never saw it.
        checked = 0
        fresh = curvefs.CBDClient()
        assert fresh.Init(model_cluster.conf_path) == OK
        try:
            for path, f in run.files:
                checked += verify_file(fresh, run.user, path, f)
            for entry in run.recycled:
                back = f"/model-{run.tag}-recovered-{entry.file.id}"
                if entry.file.source is not None:
                    # A clone still reading its source is not recovered, as upstream.
                    assert fresh.Recover(back, run.user, entry.file.id) == UNKNOWN
                    continue
                assert fresh.Recover(back, run.user, entry.file.id) == OK
                checked += verify_file(fresh, run.user, back, entry.file)
        finally:
            fresh.UnInit()
        assert run.steps >= STEPS, f"only {run.steps} of {STEPS} steps ran"
        figure("steps", run.steps)
        figure("examples", f"{run.examples} in {run.round + 1} rounds, {run.rounds_cut} cut short")
        figure("faults", dict(run.faults.counts))
        figure("faults_planned_not_run", len(run.planned))
        figure("io", dict(run.ios))
        figure("rules", dict(run.rules))
        figure("files_checked_at_end", f"{len(run.files)}+{len(run.recycled)} recycled")
        figure("bytes_checked_at_end", checked)
        figure("seconds", f"{took:.0f}")
    finally:
        run.pool.shutdown(wait=False, cancel_futures=True)
        py.close()
        cbd.UnInit()
