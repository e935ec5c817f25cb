"""Lazy clones of a volume, read and written through every API against a real local
cluster: ``LocalCluster.clone_volume`` makes the clone as Curve's snapshot/clone service
does (the source BeingCloned, the clone CloneMetaInstalled and owning no data), and the
client must read every range it has not written from the source, as upstream's does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import curvefs
from curvefs import exceptions as ex
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, make_user
from tests.test_cli_curvefs import Cli

KiB = 1 << 10
CHUNK = 16 * MiB  # the local cluster's chunk and segment sizes
SEG = GiB

# What the source holds: data in segments 0 and 2, segment 1 never allocated, so the clone
# has chunks with a source (segments 0 and 2) and chunks without one (segment 1).
SOURCE_WRITES = [
    (0, MiB),
    (CHUNK - 64 * KiB, 128 * KiB),  # across the first chunk boundary
    (SEG - 64 * KiB, 64 * KiB),  # the end of segment 0
    (2 * SEG, 64 * KiB),  # the start of segment 2
    (2 * SEG + CHUNK - 4 * KiB, 8 * KiB),
]
# Ranges read back: across chunk and segment boundaries, in allocated and unallocated
# source segments, aligned and not.
READS = [
    (0, MiB + 4 * KiB),
    (CHUNK - 128 * KiB, 256 * KiB),
    (SEG - 128 * KiB, 256 * KiB),  # into segment 1: zeros in the source
    (SEG + 5 * MiB, 64 * KiB),
    (2 * SEG - 64 * KiB, 192 * KiB),  # out of segment 1 into segment 2
    (2 * SEG + CHUNK - 8 * KiB, 16 * KiB),
]
UNALIGNED_READS = [(CHUNK - 1000, 3001), (SEG - 777, 5000), (2 * SEG + 3, 10_000)]
# `curvefs get` copies this much: every write above and the zeros between.
GET_LENGTH = 2 * SEG + 32 * MiB


def pattern(seed: int, n: int) -> bytes:
    """Bytes that differ with the seed and the position, so misplaced blocks show."""
    block = bytes((seed * 131 + i * 7) % 251 + 1 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@dataclass
class Model:
    """The bytes a volume should hold: zeros, then each write in order."""

    writes: list[tuple[int, bytes]] = field(default_factory=list)

    def put(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, bytes(data)))

    def expect(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        for at, data in self.writes:
            lo, hi = max(at, offset), min(at + len(data), offset + length)
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - at : hi - at]
        return bytes(out)

    def copy(self) -> Model:
        return Model(list(self.writes))


@dataclass
class Clone:
    source: str
    dest: str
    source_model: Model
    model: Model


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[curvefs.Client]:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        yield c


def make_clone(cluster: LocalCluster, client: curvefs.Client, name: str) -> Clone:
    client.mkdir(name)
    source, dest = f"{name}/src", f"{name}/dst"
    client.create(source, 10 * GiB)
    model = Model()
    with client.open(source) as vol:
        for i, (off, n) in enumerate(SOURCE_WRITES):
            data = pattern(i + 1, n)
            vol.pwrite(data, off)
            model.put(off, data)
    cluster.clone_volume(source, dest, "curve")
    return Clone(source, dest, model, model.copy())


@pytest.fixture
def clone(cluster: LocalCluster, client: curvefs.Client, name: str) -> Clone:
    return make_clone(cluster, client, name)


def check_volume(vol: curvefs.Volume, model: Model) -> None:
    for off, n in READS + UNALIGNED_READS:
        assert vol.pread(n, off) == model.expect(off, n), f"at {off}+{n}"


# -- what a clone is ----------------------------------------------------------------------


def test_clone_reports_its_source(
    cluster: LocalCluster, client: curvefs.Client, clone: Clone
) -> None:
    info = client.stat(clone.dest)
    assert info.status is curvefs.FileStatus.CLONE_META_INSTALLED
    assert (info.clone_source, info.clone_length) == (clone.source, 10 * GiB)
    src = client.stat(clone.source)
    assert src.status is curvefs.FileStatus.BEING_CLONED
    assert (src.clone_source, src.clone_length) == ("", 0)
    with client.open(clone.dest) as vol:
        assert vol.stat().clone_source == clone.source
    # The SDK's struct, and the curve tool.
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    try:
        finfo = curvefs.FileInfo_t()
        assert cbd.StatFile(clone.dest, make_user("curve"), finfo) == 0
        assert finfo.fileStatus == curvefs.CURVE_FILE_CLONEMETAINSTALLED
        assert (finfo.cloneSource, finfo.cloneLength) == (clone.source, 10 * GiB)
        assert f"cloneSource='{clone.source}'" in repr(finfo)
    finally:
        cbd.UnInit()
    tool = str(Path(sys.executable).parent / "curve")
    out = subprocess.run(
        [
            tool,
            "--confpath",
            cluster.conf_path,
            "stat",
            "--user",
            "curve",
            "--filename",
            clone.dest,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "fileStatus: CloneMetaInstalled\n" in out
    assert out.endswith(f"cloneSource: {clone.source}\ncloneLength(GB): 10\n")
    # The curvefs command.
    sh = Cli(cluster)
    js = json.loads(sh.ok("stat", clone.dest, "--json"))
    assert (js["status"], js["clone_source"], js["clone_length"]) == (
        "CLONE_META_INSTALLED",
        clone.source,
        10 * GiB,
    )
    assert f"clone_source  {clone.source} (10 GiB)\n" in sh.ok("stat", clone.dest)
    assert "clone_source" not in sh.ok("stat", clone.source)


def test_a_source_cannot_be_deleted_while_cloned(client: curvefs.Client, clone: Clone) -> None:
    with pytest.raises(ex.CurveError) as info:
        client.remove(clone.source)
    assert info.value.code_name == "DELETE_BEING_CLONED" and info.value.code == -27


# -- reads before any write equal the source ------------------------------------------------


def test_unwritten_clone_reads_as_source_through_volume(
    cluster: LocalCluster, client: curvefs.Client, clone: Clone
) -> None:
    with client.open(clone.dest) as vol:
        check_volume(vol, clone.model)
        for off, n in READS:
            buf = bytearray(n)
            assert vol.preadinto(buf, off) == n
            assert buf == clone.model.expect(off, n)
    # Read-only opens and a second client read the same.
    with (
        curvefs.Client(cluster.conf_path, user="curve") as other,
        other.open(clone.dest, read_only=True) as vol,
    ):
        check_volume(vol, clone.model)


def test_unwritten_clone_reads_as_source_through_asyncio(
    client: curvefs.Client, clone: Clone
) -> None:
    async def main() -> None:
        vol = await client.open_async(clone.dest)
        try:
            got = await asyncio.gather(*(vol.pread_async(n, off) for off, n in READS))
            for (off, n), data in zip(READS, got, strict=True):
                assert data == clone.model.expect(off, n), f"at {off}+{n}"
            buf = bytearray(3001)
            assert await vol.preadinto_async(buf, CHUNK - 1000) == 3001
            assert buf == clone.model.expect(CHUNK - 1000, 3001)
        finally:
            vol.close()

    asyncio.run(main())


def test_unwritten_clone_reads_as_source_through_cbdclient(
    cluster: LocalCluster, clone: Clone
) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    try:
        fd = cbd.Open(clone.dest, make_user("curve"))
        assert fd >= 0
        for off, n in READS:
            assert cbd.Read(fd, None, off, n) == clone.model.expect(off, n), f"at {off}+{n}"
        left = threading.Semaphore(0)
        ctxs = [
            curvefs.AioContext_t(
                offset=off, length=n, buf=bytearray(n), cb=lambda _: left.release()
            )
            for off, n in READS
        ]
        for ctx in ctxs:
            assert cbd.AioRead(fd, ctx) == 0
        for _ in ctxs:
            assert left.acquire(timeout=60), "an AioRead never completed"
        for ctx in ctxs:
            assert ctx.ret == ctx.length
            assert ctx.buf == clone.model.expect(ctx.offset, ctx.length)
        assert cbd.Close(fd) == 0
    finally:
        cbd.UnInit()


def test_unwritten_clone_reads_as_source_through_module_api(
    cluster: LocalCluster, clone: Clone
) -> None:
    curvefs.UnInit()
    assert curvefs.Init(cluster.conf_path) == 0
    try:
        fd = curvefs.Open(clone.dest, make_user("curve"))
        assert fd >= 0
        for off, n in READS:
            assert curvefs.Read(fd, None, off, n) == clone.model.expect(off, n)
        done = threading.Event()
        ctx = curvefs.AioContext_t(
            offset=CHUNK - 8 * KiB,
            length=16 * KiB,
            buf=bytearray(16 * KiB),
            cb=lambda _: done.set(),
        )
        assert curvefs.AioRead(fd, ctx) == 0
        assert done.wait(60)
        assert ctx.buf == clone.model.expect(CHUNK - 8 * KiB, 16 * KiB)
        assert curvefs.Close(fd) == 0
    finally:
        curvefs.UnInit()


def test_curvefs_get_of_a_clone_is_the_source(
    cluster: LocalCluster, clone: Clone, tmp_path: Path
) -> None:
    # `get` skips only blocks that read as zeros: a chunk the clone has not allocated but
    # its source has data in is data, not a hole.
    sh = Cli(cluster)
    out = tmp_path / "clone.raw"
    got = json.loads(sh.ok("get", clone.dest, str(out), "--length", str(GET_LENGTH), "--json"))
    written = sum(n for _, n in SOURCE_WRITES)
    assert got["bytes"] == GET_LENGTH and got["bytes_written"] >= written
    with open(out, "rb") as f:
        for off, n in READS:
            f.seek(off)
            assert f.read(n) == clone.model.expect(off, n), f"at {off}+{n}"


def test_a_striped_clone_reads_and_writes_as_its_striped_source(
    cluster: LocalCluster, client: curvefs.Client, name: str
) -> None:
    # The clone keeps its source's stripes; its chunk i reads the source's chunk i (the
    # source opened with striping off), so every byte lands where the source has it.
    client.mkdir(name)
    source, dest = f"{name}/src", f"{name}/dst"
    client.create(source, 10 * GiB, stripe_unit=64 * KiB, stripe_count=4)
    model = Model()
    with client.open(source) as vol:
        for i, (off, n) in enumerate(
            [(0, MiB), (3 * 64 * KiB - 4096, 40 * MiB), (SEG - 8192, 16 * KiB)]
        ):
            data = pattern(i + 61, n)
            vol.pwrite(data, off)
            model.put(off, data)
    cluster.clone_volume(source, dest, "curve")
    info = client.stat(dest)
    assert (info.stripe_unit, info.stripe_count) == (64 * KiB, 4)
    reads = [
        (0, 2 * MiB),
        (3 * 64 * KiB - 8192, 41 * MiB),
        (SEG - 12 * KiB, 24 * KiB),
        (777, 70_001),
    ]
    with client.open(dest) as vol:
        for off, n in reads:
            assert vol.pread(n, off) == model.expect(off, n), f"at {off}+{n}"
        data = pattern(69, 100 * KiB + 5)
        vol.pwrite(data, 5 * 64 * KiB - 3)  # unaligned, over several stripe units
        model.put(5 * 64 * KiB - 3, data)
        for off, n in reads:
            assert vol.pread(n, off) == model.expect(off, n), f"at {off}+{n}"


# -- writes into the clone --------------------------------------------------------------


def write_into(vol: curvefs.Volume, model: Model) -> None:
    cases = [
        (8 * KiB, pattern(11, 8 * KiB)),  # aligned, in a chunk the source has data in
        (CHUNK - 1000, pattern(12, 3001)),  # unaligned, straddling chunks 0 and 1
        (SEG - 4 * KiB, pattern(13, 12 * KiB)),  # straddling segments 0 and 1
        (SEG + 5 * MiB, pattern(14, 4 * KiB)),  # where the source has no segment
        (2 * SEG + CHUNK - 2 * KiB, pattern(15, 4 * KiB + 7)),  # unaligned over source data
    ]
    for off, data in cases:
        assert vol.pwrite(data, off) == len(data)
        model.put(off, data)


def test_writes_into_a_clone_keep_the_sources_bytes_around_them(
    cluster: LocalCluster, client: curvefs.Client, clone: Clone
) -> None:
    with client.open(clone.dest) as vol:
        write_into(vol, clone.model)
        check_volume(vol, clone.model)
        # Zeroed ranges read as zeros, not as the source: write_zeroes, and discard (with
        # discard.enable off: zeros written).
        vol.write_zeroes(CHUNK + 4 * KiB, 6000)
        clone.model.put(CHUNK + 4 * KiB, bytes(6000))
        vol.discard(64 * KiB, 128 * KiB)
        clone.model.put(64 * KiB, bytes(128 * KiB))
        check_volume(vol, clone.model)
    # The source is unchanged; a second client sees the clone's bytes.
    with curvefs.Client(cluster.conf_path, user="curve") as other:
        with other.open(clone.source) as vol:
            check_volume(vol, clone.source_model)
        with other.open(clone.dest) as vol:
            check_volume(vol, clone.model)


def test_discard_of_a_whole_segment_with_source_data_reads_zeros() -> None:
    # With discard.enable a whole segment goes back to the pool, after which a clone would
    # read it from its source again: where the source has data it must be zeroed instead.
    # A cluster of its own with 4 MiB segments, so whole segments are cheap to zero.
    small = {"chunk_size": MiB, "segment_size": 4 * MiB, "min_file_length": 16 * MiB}
    with (
        LocalCluster(
            copysets=4, mds_options=small, client_options={"discard.enable": "true"}
        ) as cluster,
        curvefs.Client(cluster.conf_path, user="curve") as c,
    ):
        c.mkdir("/d")
        c.create("/d/src", 16 * MiB)
        model = Model()
        with c.open("/d/src") as vol:
            for seg in (0, 1):
                data = pattern(seg + 51, 8 * KiB)
                vol.pwrite(data, seg * 4 * MiB + MiB - 4 * KiB)  # across a chunk boundary
                model.put(seg * 4 * MiB + MiB - 4 * KiB, data)
        cluster.clone_volume("/d/src", "/d/dst", "curve")
        with c.open("/d/dst") as vol:
            assert vol.pread(16 * MiB, 0) == model.expect(0, 16 * MiB)
            vol.pwrite(pattern(53, 4096), 8 * MiB)  # segment 2: no source data
            vol.discard(4 * MiB, 8 * MiB)  # segments 1 (source data) and 2 (none), whole
            model.put(4 * MiB, bytes(8 * MiB))
            assert vol.pread(16 * MiB, 0) == model.expect(0, 16 * MiB)
        with c.open("/d/dst") as vol:
            assert vol.pread(16 * MiB, 0) == model.expect(0, 16 * MiB)


def test_writes_into_a_clone_through_asyncio_and_cbdclient(
    cluster: LocalCluster, client: curvefs.Client, clone: Clone
) -> None:
    async def main() -> None:
        vol = await client.open_async(clone.dest)
        try:
            data = pattern(21, 5000)
            assert await vol.pwrite_async(data, CHUNK - 2500) == 5000
            clone.model.put(CHUNK - 2500, data)
            await vol.write_zeroes_async(2 * SEG + 4096, 4096)
            clone.model.put(2 * SEG + 4096, bytes(4096))
            await vol.discard_async(SEG - 64 * KiB, 4096)
            clone.model.put(SEG - 64 * KiB, bytes(4096))
        finally:
            vol.close()

    asyncio.run(main())
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    try:
        fd = cbd.Open(clone.dest, make_user("curve"))
        data = pattern(22, 4096)
        assert cbd.Write(fd, data, 12 * KiB, 4096) == 4096
        clone.model.put(12 * KiB, data)
        done = threading.Event()
        w = curvefs.AioContext_t(
            offset=2 * SEG + 8 * KiB, length=4096, buf=pattern(23, 4096), cb=lambda _: done.set()
        )
        assert cbd.AioWrite(fd, w) == 0
        assert done.wait(60) and w.ret == 4096
        clone.model.put(2 * SEG + 8 * KiB, pattern(23, 4096))
        for off, n in READS:
            assert cbd.Read(fd, None, off, n) == clone.model.expect(off, n), f"at {off}+{n}"
        assert cbd.Close(fd) == 0
    finally:
        cbd.UnInit()
    with client.open(clone.dest) as vol:
        check_volume(vol, clone.model)


# -- flatten ----------------------------------------------------------------------------


def test_an_open_clone_reads_the_same_after_a_flatten(
    cluster: LocalCluster, client: curvefs.Client, clone: Clone
) -> None:
    with client.open(clone.dest) as vol:
        # Reads first, so the volume has every segment cached as unallocated, and a write
        # only where the source has none: segments 0 and 2 stay unallocated until the
        # flatten allocates them.
        check_volume(vol, clone.model)
        data = pattern(30, 8 * KiB)
        vol.pwrite(data, SEG + 5 * MiB)
        clone.model.put(SEG + 5 * MiB, data)
        cluster.flatten(clone.dest)
        # The volume learns the new status from its stat (as from its next refresh).
        assert vol.stat().status is curvefs.FileStatus.CLONED
        assert client.stat(clone.dest).status is curvefs.FileStatus.CLONED
        # The open volume follows the status (RefreshSession) and its reads do not change.
        check_volume(vol, clone.model)
        data = pattern(31, 4096)
        vol.pwrite(data, 2 * SEG + 4096)
        clone.model.put(2 * SEG + 4096, data)
        check_volume(vol, clone.model)
        # The source can go, for good, and the clone keeps its bytes.
        source_id = client.stat(clone.source).id
        client.remove(clone.source)
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        try:
            root = make_user("root", cluster.root_password)
            (gone,) = [n for n in cbd.Listdir("/RecycleBin", root) if f"-{source_id}-" in n]
            assert cbd.DeleteForce(f"/RecycleBin/{gone}", root) == 0
        finally:
            cbd.UnInit()
        check_volume(vol, clone.model)
    with client.open(clone.dest) as vol:
        check_volume(vol, clone.model)


# -- never silent zeros -------------------------------------------------------------------


def test_a_source_the_clone_cannot_read_fails_loudly(cluster: LocalCluster, name: str) -> None:
    # The clone's owner may not read its source (another user's volume): reads of the
    # chunks the clone has not allocated fail naming both volumes, never zeros.
    with curvefs.Client(cluster.conf_path, user="other") as other:
        other.mkdir(name)
        other.create(f"{name}/src", 10 * GiB)
        with other.open(f"{name}/src") as vol:
            vol.pwrite(pattern(41, 4096), 0)
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        c.mkdir(f"{name}-c")
        cluster.clone_volume(f"{name}/src", f"{name}-c/dst", "curve")
        with c.open(f"{name}-c/dst") as vol:
            with pytest.raises(ex.CurveError) as info:
                vol.pread(4096, 0)
            assert f"{name}-c/dst" in str(info.value) and f"{name}/src" in str(info.value)
            # A range whose source segment was never allocated reads zeros without it.
            assert vol.pread(4096, SEG) == bytes(4096)


# -- faults -------------------------------------------------------------------------------


def test_clone_reads_and_writes_ride_over_a_killed_then_a_paused_chunkserver() -> None:
    # Reads of a clone go to its source (unallocated chunks) and to clone chunks whose
    # chunkservers read the origin; both must survive a lost and a hung chunkserver, with
    # nothing lost and no hang past the IO deadline. A cluster of its own: servers die.
    with (
        LocalCluster(copysets=4) as cluster,
        curvefs.Client(cluster.conf_path, user="curve") as c,
    ):
        c.mkdir("/f")
        c.create("/f/src", 10 * GiB)
        model = Model()
        with c.open("/f/src") as vol:
            for i, (off, n) in enumerate(SOURCE_WRITES):
                data = pattern(i + 71, n)
                vol.pwrite(data, off)
                model.put(off, data)
        cluster.clone_volume("/f/src", "/f/dst", "curve")
        victim, sleeper = cluster.chunkserver_ids[0], cluster.chunkserver_ids[1]
        with c.open("/f/dst") as vol:
            check_volume(vol, model)
            faults: list[tuple[Callable[[], None], Callable[[], None]]] = [
                (
                    lambda: cluster.kill_chunkserver(victim),
                    lambda: cluster.start_chunkserver(victim),
                ),
                (
                    lambda: cluster.pause_chunkserver(sleeper),
                    lambda: cluster.resume_chunkserver(sleeper),
                ),
            ]
            for step, (fault, heal) in enumerate(faults):
                fault()
                try:
                    # Writes make clone chunks (their rest read from the origin) ...
                    data = pattern(80 + step, 12 * KiB)
                    at = (2 * step + 1) * CHUNK - 6 * KiB
                    vol.pwrite(data, at)
                    model.put(at, data)
                    # ... and every range still reads right, through both paths.
                    check_volume(vol, model)
                    assert vol.pread(2 * CHUNK, 0) == model.expect(0, 2 * CHUNK)
                finally:
                    heal()
        with c.open("/f/dst") as vol:
            check_volume(vol, model)
            assert vol.pread(4 * CHUNK, 0) == model.expect(0, 4 * CHUNK)
