"""Every blocking method of Client and Volume has a typed async twin, and each runs.

The call of every twin below is checked by ``mypy --strict`` (the tests are in its files)
and its result by ``assert_type``, so a twin's stub and its behaviour cannot drift apart."""

from __future__ import annotations

import asyncio
import inspect
from typing import assert_type

import pytest

import curvefs
from curvefs.testing import LocalCluster

GiB = 1 << 30

# The file protocol (io.RawIOBase) works on a position; pread/pwrite are its twins'
# blocking forms, and they have async twins.
FILE_PROTOCOL = {
    "readable",
    "writable",
    "seekable",
    "tell",
    "seek",
    "truncate",
    "readinto",
    "write",
}
# Not calls at all: a snapshot of counters kept in memory, taken without any IO or wait.
NO_IO = {"metrics"}


def _blocking(cls: type) -> set[str]:
    return (
        {
            n
            for n, v in vars(cls).items()
            if callable(v) and not n.startswith("_") and not n.endswith("_async")
        }
        - FILE_PROTOCOL
        - NO_IO
    )


@pytest.mark.parametrize("cls", [curvefs.Client, curvefs.Volume])
def test_every_blocking_method_has_an_async_twin_with_its_parameters(cls: type) -> None:
    for name in sorted(_blocking(cls)):
        twin = getattr(cls, f"{name}_async", None)
        assert twin is not None, f"{cls.__name__}.{name} has no async twin"
        assert inspect.iscoroutinefunction(twin), name
        blocking = inspect.signature(getattr(cls, name)).parameters
        assert inspect.signature(twin).parameters.keys() == blocking.keys(), name


def test_the_native_handles_have_no_untyped_call() -> None:
    # One typed method per call: no string-dispatched entry point is left.
    assert not hasattr(curvefs._core.ClientHandle, "call_async")


def test_every_async_twin_runs(cluster: LocalCluster, name: str) -> None:
    async def main() -> None:
        root = curvefs.Client(cluster.conf_path, user="root", password=cluster.root_password)
        client = curvefs.Client(cluster.conf_path, user="curve")
        try:
            assert_type(await client.create_async(name, 10 * GiB), None)
            info = await client.stat_async(name)
            assert_type(info, curvefs.FileInfo)
            assert info.length == 10 * GiB
            assert_type(await client.extend_async(name, 20 * GiB), None)
            directory = name + "_dir"
            assert_type(await client.mkdir_async(directory), None)
            names = await client.listdir_async(directory)
            assert_type(names, list[str])
            assert names == []
            assert_type(await client.rmdir_async(directory), None)
            cid = await client.cluster_id_async()
            assert_type(cid, str)
            assert cid
            pools = await client.poolsets_async()
            assert_type(pools, list[str])

            vol = await client.open_async(name)
            assert_type(vol, curvefs.Volume)
            assert_type(await vol.pwrite_async(b"x" * 4096, 0), int)
            assert_type(await vol.pread_async(4096, 0), bytes)
            buf = bytearray(4096)
            assert_type(await vol.preadinto_async(buf, 0), int)
            assert bytes(buf) == b"x" * 4096
            assert_type(await vol.write_zeroes_async(0, 4096), None)
            assert_type(await vol.discard_async(4096, 4096), None)
            vinfo = await vol.stat_async()
            assert_type(vinfo, curvefs.FileInfo)
            assert vinfo.length == 20 * GiB
            assert_type(await vol.close_async(), None)
            assert vol.closed

            source = name + "_src"
            await client.create_async(source, 10 * GiB)
            clone = name + "_clone"
            assert_type(await root.clone_volume_async(source, clone, owner="curve"), None)
            assert_type(await root.flatten_async(clone), None)
            renamed = name + "_renamed"
            assert_type(await client.rename_async(name, renamed), None)
            assert_type(await root.change_owner_async(renamed, "other"), None)
            assert_type(await root.change_owner_async(renamed, "curve"), None)
            assert_type(await client.remove_async(renamed), None)
            assert_type(await client.recover_async(renamed), None)
            await client.open_async(renamed)
            assert_type(await client.close_async(), None)
        finally:
            client.close()
            root.close()

    asyncio.run(main())


def test_calls_ending_together_resolve_on_one_loop(cluster: LocalCluster, name: str) -> None:
    """Many calls in flight on one loop, and a second loop in another run: every future is
    resolved with its own call's result (the loop's completion queue is not shared)."""

    async def main(tag: int) -> None:
        with curvefs.Client(cluster.conf_path, user="curve") as client:
            path = f"{name}_{tag}"
            await client.create_async(path, 10 * GiB)
            vol = await client.open_async(path)
            blocks = [bytes([tag, i]) * 2048 for i in range(64)]
            await asyncio.gather(*(vol.pwrite_async(b, i * 4096) for i, b in enumerate(blocks)))
            got = await asyncio.gather(*(vol.pread_async(4096, i * 4096) for i in range(64)))
            assert got == blocks
            await vol.close_async()

    asyncio.run(main(1))
    asyncio.run(main(2))
