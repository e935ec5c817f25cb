"""Random IO checked byte for byte against a model of the volume (an fsx in miniature).

Hypothesis draws sequences of aligned writes and reads that straddle chunk, segment and
stripe boundaries; every read must return exactly what the model says the volume holds:
the last write to each byte, zeros where nothing was written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, make_user

BLOCK = 4096
# Windows around the places where IO is split: a chunk boundary (16 MiB), a segment
# boundary (1 GiB) and the file's last bytes.
WINDOWS = [16 * MiB - 256 * 1024, GiB - 256 * 1024, 10 * GiB - 512 * 1024]
WINDOW = 512 * 1024

op = st.tuples(
    st.sampled_from(["write", "read"]),
    st.sampled_from(WINDOWS),
    st.integers(0, WINDOW // BLOCK - 1),  # first block inside the window
    st.integers(1, 48),  # blocks
    st.integers(0, 255),  # fill byte seed
)


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[curvefs.CBDClient]:
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    yield cbd
    cbd.UnInit()


def run_model(cbd: curvefs.CBDClient, fd: int, ops: list[tuple[str, int, int, int, int]]) -> None:
    model: dict[int, bytes] = {}  # block offset -> contents
    for kind, window, first, blocks, seed in ops:
        offset = window + first * BLOCK
        length = min(blocks * BLOCK, 10 * GiB - offset)
        if kind == "write":
            data = b"".join(bytes([(seed + i) % 256]) * BLOCK for i in range(length // BLOCK))
            assert cbd.Write(fd, data, offset, length) == length
            for i in range(length // BLOCK):
                model[offset + i * BLOCK] = data[i * BLOCK : (i + 1) * BLOCK]
        else:
            got = cbd.Read(fd, "", offset, length)
            assert isinstance(got, bytes), got
            want = b"".join(
                model.get(offset + i * BLOCK, b"\0" * BLOCK) for i in range(length // BLOCK)
            )
            assert got == want, f"read [{offset}, {offset + length}) differs from the model"


@pytest.mark.parametrize("stripe", [(0, 0), (64 * 1024, 4)], ids=["plain", "striped"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_random_io_matches_the_model(
    client: curvefs.CBDClient, stripe: tuple[int, int], ops: list[tuple[str, int, int, int, int]]
) -> None:
    user = make_user("model")
    ctx = curvefs.CreateContext()
    ctx.name = f"/model-{uuid.uuid4().hex[:12]}"
    ctx.length = 10 * GiB
    ctx.user = user
    ctx.stripeUnit, ctx.stripeCount = stripe
    assert client.Create2(ctx) == 0
    fd = client.Open(ctx.name, user)
    assert fd >= 0
    try:
        run_model(client, fd, ops)
    finally:
        assert client.Close(fd) == 0
