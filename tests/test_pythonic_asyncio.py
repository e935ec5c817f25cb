"""asyncio twins over the same core calls: many in flight; a cancelled read releases the
caller's buffer at once and leaves the volume usable."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[curvefs.Client]:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        yield c


def test_namespace_calls_awaited(client: curvefs.Client, name: str) -> None:
    async def main() -> None:
        await client.mkdir_async(name)
        await client.create_async(f"{name}/v", 10 * GiB)
        info = await client.stat_async(f"{name}/v")
        assert info.length == 10 * GiB and info.file_type is curvefs.FileType.PAGEFILE
        await client.extend_async(f"{name}/v", 20 * GiB)
        await client.rename_async(f"{name}/v", f"{name}/w")
        assert await client.listdir_async(name) == ["w"]
        with pytest.raises(FileNotFoundError):
            await client.stat_async(f"{name}/v")
        assert await client.cluster_id_async() == client.cluster_id()
        assert await client.poolsets_async() == client.poolsets()
        vol = await client.open_async(f"{name}/w")
        assert vol.size == 20 * GiB
        vol.close()
        await client.remove_async(f"{name}/w")
        await client.recover_async(f"{name}/w")
        assert await client.listdir_async(name) == ["w"]

    asyncio.run(main())


def test_256_concurrent_reads_and_writes(client: curvefs.Client, name: str) -> None:
    client.create(name, 10 * GiB)
    blocks = [os.urandom(4096 + i) for i in range(256)]  # unaligned lengths too

    async def main() -> None:
        with await client.open_async(name) as vol:
            offsets = [i * 9000 + 17 for i in range(256)]
            written = await asyncio.gather(
                *(vol.pwrite_async(b, o) for b, o in zip(blocks, offsets, strict=True))
            )
            assert written == [len(b) for b in blocks]
            got = await asyncio.gather(
                *(vol.pread_async(len(b), o) for b, o in zip(blocks, offsets, strict=True))
            )
            assert got == blocks
            bufs = [bytearray(len(b)) for b in blocks]
            n = await asyncio.gather(
                *(vol.preadinto_async(buf, o) for buf, o in zip(bufs, offsets, strict=True))
            )
            assert n == [len(b) for b in blocks] and [bytes(b) for b in bufs] == blocks
            assert await vol.pread_async(10, vol.size) == b""

    asyncio.run(main())


def test_cancelled_reads_release_their_buffers_and_leave_the_volume_usable(
    cluster: LocalCluster, name: str
) -> None:
    # Reads cancelled while their requests are out, then the same volume used again.
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        c.create(name, 10 * GiB)
        vol = c.open(name)
        data = os.urandom(MiB)
        vol.pwrite(data, 0)

        async def main() -> None:
            buf = bytearray(MiB)
            # Segment 3 was never looked up: the read asks the MDS first.
            task = asyncio.create_task(vol.preadinto_async(buf, 3 * GiB))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The export is gone: a bytearray with a live export cannot be resized.
            buf.extend(b"x")
            many = [asyncio.create_task(vol.pread_async(4096, i * 4096)) for i in range(64)]
            await asyncio.sleep(0)
            for t in many[::2]:
                t.cancel()
            done = await asyncio.gather(*many, return_exceptions=True)
            for i, r in enumerate(done):
                if isinstance(r, bytes):
                    assert r == data[i * 4096 : (i + 1) * 4096]
                else:
                    assert isinstance(r, asyncio.CancelledError) and i % 2 == 0
            assert await vol.pread_async(MiB, 0) == data

        asyncio.run(main())
        vol.close()


def test_async_errors_are_the_same_exceptions(client: curvefs.Client, name: str) -> None:
    async def main() -> None:
        with pytest.raises(FileNotFoundError) as e:
            await client.open_async(name)
        assert isinstance(e.value, curvefs.CurveError)
        assert e.value.code == -6 and name in str(e.value)
        client.create(name, 10 * GiB)
        vol = await client.open_async(name, read_only=True)
        with pytest.raises(Exception, match="read-only"):
            await vol.pwrite_async(b"x", 0)
        vol.close()
        with pytest.raises(ValueError, match="closed"):
            await vol.pread_async(1, 0)

    asyncio.run(main())
