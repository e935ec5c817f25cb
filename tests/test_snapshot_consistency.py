"""A snapshot taken through the snapshot/clone service while eight threads write the
volume: checked byte for byte against a model of the acknowledged writes.

The snapshot is read back through a lazy clone of it (the service's Clone with the
snapshot's UUID as its Source), as a user would read it. Every 4 KiB block of the
snapshot must hold the last write acknowledged to that block before CreateSnapshot was
sent, or one of the writes to it that were still in flight then or started later (the
MDS takes its snapshot some time after the request is sent, and a client's writes copy
old pages aside only once it has picked up the new seqNum): never an older value, never
a write acknowledged before the request missing, never a block mixed from two writes.
Each thread writes its own disjoint range of blocks, so the order of the writes to a
block is the order of one thread's calls, and the live volume afterwards must equal the
last write to every block."""

from __future__ import annotations

import random
import threading
import time

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB
from tests.service_api import SHORT_LEASE, USER, create, module_cluster, ok, wait_snapshot

BLOCK = 4096
THREADS = 8
# Each thread's own range: two per 16 MiB chunk, four chunks in all.
REGION = 8 * MiB
SPAN = THREADS * REGION
BLOCKS = SPAN // BLOCK
MAX_WRITE = MiB

# One block's value: the payload of a write and where in it the block starts.
Ref = tuple[bytes, int]


cluster = module_cluster("snapcons", copysets=4, mds_options=SHORT_LEASE)


class Model:
    """What the writes acknowledged so far say each block holds, split at the moment
    CreateSnapshot is sent (`sent_at`, set once)."""

    def __init__(self, initial: bytes) -> None:
        self.lock = threading.Lock()
        self.sent_at: float | None = None
        start: list[Ref] = [(initial, b * BLOCK) for b in range(BLOCKS)]
        # The last write acknowledged before the request was sent.
        self.before: list[Ref] = list(start)
        # Every write to the block acknowledged after that (in flight then, or later).
        self.after: list[list[Ref]] = [[] for _ in range(BLOCKS)]
        # The last write acknowledged: what the volume holds once the writers stop.
        self.last: list[Ref] = list(start)
        self.writes_before = self.writes_after = 0

    def send_snapshot_request(self) -> None:
        """Marks the moment CreateSnapshot is sent: call it just before sending."""
        with self.lock:
            self.sent_at = time.monotonic()

    def acknowledged(self, offset: int, data: bytes, acked_at: float) -> None:
        with self.lock:
            before = self.sent_at is None or acked_at < self.sent_at
            if before:
                self.writes_before += 1
            else:
                self.writes_after += 1
            first = offset // BLOCK
            for i in range(len(data) // BLOCK):
                ref = (data, i * BLOCK)
                self.last[first + i] = ref
                if before:
                    self.before[first + i] = ref
                else:
                    self.after[first + i].append(ref)


def value(ref: Ref) -> bytes:
    data, at = ref
    return data[at : at + BLOCK]


def writer(vol: curvefs.Volume, model: Model, index: int, stop: threading.Event) -> None:
    """Writes random 4 KiB-aligned ranges of 4 KiB to 1 MiB inside thread `index`'s own
    range until `stop`."""
    r = random.Random(index)
    base = index * REGION
    while not stop.is_set():
        length = r.randrange(1, MAX_WRITE // BLOCK + 1) * BLOCK
        offset = base + r.randrange(0, (REGION - length) // BLOCK + 1) * BLOCK
        data = r.randbytes(length)
        assert vol.pwrite(data, offset) == length
        model.acknowledged(offset, data, time.monotonic())


@pytest.mark.timeout(240)
def test_a_snapshot_under_eight_writing_threads_holds_every_acknowledged_write(
    cluster: LocalCluster,
) -> None:
    path, clone = "/cons-vol", "/cons-clone"
    initial = random.Random(99).randbytes(SPAN)
    with curvefs.Client(cluster.conf_path, user=USER) as client:
        client.create(path, 10 * GiB)
        with client.open(path) as vol:
            for at in range(0, SPAN, 4 * MiB):
                vol.pwrite(initial[at : at + 4 * MiB], at)
            model = Model(initial)
            stop = threading.Event()
            errors: list[BaseException] = []

            def run(index: int) -> None:
                try:
                    writer(vol, model, index, stop)
                except BaseException as e:
                    errors.append(e)
                    stop.set()

            threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
            for t in threads:
                t.start()
            try:
                # Writes flowing, then the snapshot among them; the writers go on until
                # it is done.
                time.sleep(1.0)
                model.send_snapshot_request()
                uuid = create(cluster, path, "under-load")
                wait_snapshot(cluster, uuid, timeout=150)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=60)
            assert not any(t.is_alive() for t in threads), "a writer did not stop"
            assert not errors, errors[0]
            live = vol.pread(SPAN, 0)
        assert model.writes_before > 0 and model.writes_after > 0, (
            model.writes_before, model.writes_after,
        )  # fmt: skip

        # The live volume: the last write to every block.
        wrong = [
            b for b in range(BLOCKS) if live[b * BLOCK : (b + 1) * BLOCK] != value(model.last[b])
        ]
        assert not wrong, f"{len(wrong)} volume blocks are not their last write: {wrong[:10]}"

        # The snapshot, through a lazy clone of it.
        ok(cluster, Action="Clone", User=USER, Source=uuid, Destination=clone, Lazy="true")
        with client.open(clone) as vol:
            snap = vol.pread(SPAN, 0)
    bad: list[str] = []
    changed = 0
    for b in range(BLOCKS):
        got = snap[b * BLOCK : (b + 1) * BLOCK]
        if got != value(model.last[b]):
            changed += 1
        if got == value(model.before[b]) or any(got == value(r) for r in model.after[b]):
            continue
        if len(bad) < 10:
            older = got == initial[b * BLOCK : (b + 1) * BLOCK]
            bad.append(
                f"block {b} (offset {b * BLOCK}): none of its {1 + len(model.after[b])} "
                f"candidates{' (it holds the volume before any write)' if older else ''}"
            )
    assert not bad, "snapshot blocks with no candidate value:\n" + "\n".join(bad)
    # The writes after the snapshot copied old pages aside: the snapshot is not the volume.
    assert changed > 0, "every block of the snapshot equals the live volume"
