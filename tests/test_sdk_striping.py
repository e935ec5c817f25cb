"""Striped volumes: Create2 with a CreateContext, and IO laid out by Curve's striping rules."""

from __future__ import annotations

import os
import random

import pytest

import curvefs
from tests.helpers import GiB, MiB

PARAM_ERROR, EXISTS = -16, -1


def context(name: str, user: curvefs.UserInfo_t, unit: int, count: int) -> curvefs.CreateContext:
    ctx = curvefs.CreateContext()
    ctx.name = name
    ctx.length = 10 * GiB
    ctx.user = user
    ctx.poolset = ""
    ctx.stripeUnit = unit
    ctx.stripeCount = count
    return ctx


def test_create2_records_the_stripe(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create2(context(name, user, 64 * 1024, 4)) == 0
    info = curvefs.FileInfo_t()
    assert cbd.StatFile(name, user, info) == 0
    assert (info.stripeUnit, info.stripeCount, info.length) == (64 * 1024, 4, 10 * GiB)
    assert cbd.Create2(context(name, user, 64 * 1024, 4)) == EXISTS


def test_create2_without_stripe_is_create(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create2(context(name, user, 0, 0)) == 0
    info = curvefs.FileInfo_t()
    assert cbd.StatFile(name, user, info) == 0
    assert (info.stripeUnit, info.stripeCount) == (0, 0)


@pytest.mark.parametrize(
    ("unit", "count"),
    [(1000, 4), (64 * 1024, 0), (0, 4), (32 * MiB, 2), (64 * 1024, 3)],
    ids=["unit-unaligned", "no-count", "no-unit", "unit-above-chunk", "count-not-dividing"],
)
def test_create2_refuses_bad_stripes(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str, unit: int, count: int
) -> None:
    assert cbd.Create2(context(name, user, unit, count)) == PARAM_ERROR
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == -6


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, 4096),
        (60 * 1024, 8192),  # across one stripe unit into the next chunk
        (64 * 1024 * 4 - 4096, 3 * 64 * 1024),  # across a whole stripe
        (16 * MiB * 4 - 128 * 1024, 512 * 1024),  # across a stripe group of chunks
        (GiB - MiB, 2 * MiB),  # across a segment
        (3 * MiB + 4096, 9 * MiB),
    ],
)
def test_striped_io_round_trips(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str, offset: int, length: int
) -> None:
    assert cbd.Create2(context(name, user, 64 * 1024, 4)) == 0
    fd = cbd.Open(name, user)
    data = os.urandom(length)
    assert cbd.Write(fd, data, offset, length) == length
    assert cbd.Read(fd, "", offset, length) == data
    if offset:
        assert cbd.Read(fd, "", offset - 4096, 4096) == b"\0" * 4096
    assert cbd.Read(fd, "", offset + length, 4096) == b"\0" * 4096
    assert cbd.Close(fd) == 0


def test_striped_and_plain_files_hold_the_same_bytes(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    # The same random pattern of writes on a striped and a plain volume must read back
    # identically: striping changes where bytes live, never what the volume holds.
    assert cbd.Create2(context(name + "-s", user, 16 * 1024, 8)) == 0
    assert cbd.Create(name + "-p", user, 10 * GiB) == 0
    fds = [cbd.Open(name + "-s", user), cbd.Open(name + "-p", user)]
    rng = random.Random(7)
    for _ in range(40):
        off = rng.randrange(0, 64 * MiB // 4096) * 4096
        ln = rng.randrange(1, 64) * 4096
        data = os.urandom(ln)
        for fd in fds:
            assert cbd.Write(fd, data, off, ln) == ln
    whole = [cbd.Read(fd, "", 0, 64 * MiB + 256 * 1024) for fd in fds]
    assert whole[0] == whole[1]
    for fd in fds:
        assert cbd.Close(fd) == 0
