"""Bad input gets the SDK's error code or a TypeError, promptly; never a crash or a hang."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB

FAILED, AUTHFAIL, BAD_FD, PARAM_ERROR, LENGTH_NOT_SUPPORT = -2, -4, -23, -16, -24
SDK_CODES = {0, *(-c for c in range(1, 32)), -100}

BAD_PATHS = [
    "",
    "relative",
    "/trailing/",
    "//double",
    "/a//b",
    "/a/../b",
    "/a/./b",
    "/..",
    "/" + "x" * 256,
    "/" + "/".join(["d" * 200] * 25),  # > 4096 bytes
    "/bad\udcff",  # not encodable as UTF-8
    "/nul\x00byte",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_param_error(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, path: str
) -> None:
    assert cbd.Create(path, user, 10 * GiB) == PARAM_ERROR
    assert cbd.Mkdir(path, user) == PARAM_ERROR
    assert cbd.StatFile(path, user, curvefs.FileInfo_t()) == PARAM_ERROR
    assert cbd.Extend(path, user, 20 * GiB) == PARAM_ERROR
    assert cbd.Unlink(path, user) == PARAM_ERROR
    assert cbd.Rmdir(path, user) == PARAM_ERROR
    assert cbd.Recover(path, user, 0) == PARAM_ERROR
    assert cbd.Rename(user, path, "/fine") == PARAM_ERROR
    assert cbd.Rename(user, "/fine", path) == PARAM_ERROR
    assert cbd.Open(path, user) == PARAM_ERROR
    assert cbd.ChangeOwner(path, "x", user) == PARAM_ERROR


def test_negative_and_unaligned_sizes(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, -1) == PARAM_ERROR
    assert cbd.Create(name, user, 1 << 70) == PARAM_ERROR
    assert cbd.Create(name, user, 10 * GiB + 1) == LENGTH_NOT_SUPPORT
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.Extend(name, user, -GiB) == PARAM_ERROR
    assert cbd.Recover(name, user, -1) == PARAM_ERROR


def test_empty_owner_is_authfail(cbd: curvefs.CBDClient, name: str) -> None:
    nobody = curvefs.UserInfo_t()
    assert cbd.Create(name, nobody, 10 * GiB) == AUTHFAIL
    assert cbd.StatFile(name, nobody, curvefs.FileInfo_t()) == AUTHFAIL


@pytest.mark.parametrize(
    "call",
    [
        lambda c, u: c.Create(123, u, 10 * GiB),
        lambda c, u: c.Create("/x", "curve", 10 * GiB),
        lambda c, u: c.Create("/x", u, "10"),
        lambda c, u: c.StatFile("/x", u, None),
        lambda c, u: c.StatFile("/x", u, u),
        lambda c, u: c.Rename("/x", "/y", u),
        lambda c, u: c.Listdir(b"/", u),
        lambda c, u: c.Open(None, u),
        lambda c, u: c.Write(0, 12345, 0, 4096),
        lambda c, u: c.Write(0, [1, 2, 3], 0, 4096),
        lambda c, u: c.Read("0", "", 0, 4096),
        lambda c, u: c.Close("0"),
        lambda c, u: c.Init(None),
    ],
)
def test_wrong_types_raise_type_error(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, call: Any
) -> None:
    with pytest.raises(TypeError):
        call(cbd, user)


def test_user_attributes_are_typed() -> None:
    u = curvefs.UserInfo_t()
    with pytest.raises(TypeError):
        u.owner = 5  # type: ignore[assignment]


def test_calls_before_init(user: curvefs.UserInfo_t) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Create("/x", user, 10 * GiB) == FAILED
    assert cbd.StatFile("/x", user, curvefs.FileInfo_t()) == FAILED
    assert cbd.Open("/x", user) == FAILED
    assert cbd.Read(0, "", 0, 4096) == BAD_FD
    assert cbd.Write(0, b"\0" * 4096, 0, 4096) == BAD_FD
    assert cbd.Close(0) == BAD_FD
    assert cbd.GetClusterId() == ""
    with pytest.raises(curvefs.CurveError):
        cbd.Listdir("/", user)
    cbd.UnInit()  # harmless without Init


def test_calls_after_uninit(cluster: LocalCluster, user: curvefs.UserInfo_t, name: str) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    assert cbd.Create(name, user, 10 * GiB) == 0
    fd = cbd.Open(name, user)
    assert fd >= 0
    cbd.UnInit()
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == FAILED
    assert cbd.Read(fd, "", 0, 4096) == BAD_FD
    assert cbd.Write(fd, b"\0" * 4096, 0, 4096) == BAD_FD
    assert cbd.GetClusterId() == ""
    # and it can be initialised again
    assert cbd.Init(cluster.conf_path) == 0
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == 0
    cbd.UnInit()


def test_unreachable_mds_fails_promptly(tmp_path: Path, user: curvefs.UserInfo_t) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "client.conf"
    conf.write_text(f"mds.listen.addr=127.0.0.1:{port}\nmds.maxRetryMS=1000\n")
    cbd = curvefs.CBDClient()
    assert cbd.Init(str(conf)) == 0  # Init makes no RPC, as upstream
    start = time.monotonic()
    assert cbd.StatFile("/x", user, curvefs.FileInfo_t()) == FAILED
    assert cbd.Open("/x", user) == FAILED
    assert cbd.GetClusterId() == ""
    took = time.monotonic() - start
    assert took < 10, f"two calls with a 1 s retry budget took {took:.1f} s"
    cbd.UnInit()


def test_conf_with_garbage_values_fails_init(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text("mds.listen.addr=127.0.0.1:1\nmds.rpcTimeoutMS=soon\n")
    assert curvefs.CBDClient().Init(str(conf)) == -1
    conf.write_text("# no MDS address at all\n")
    assert curvefs.CBDClient().Init(str(conf)) == -1


@settings(max_examples=150, deadline=None)
@given(path=st.text(max_size=300), size=st.integers(min_value=-(1 << 66), max_value=1 << 66))
def test_any_path_and_size_get_an_sdk_code(cluster: LocalCluster, path: str, size: int) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    u = curvefs.UserInfo_t()
    u.owner = "fuzz"
    try:
        assert cbd.StatFile(path, u, curvefs.FileInfo_t()) in SDK_CODES
        assert cbd.Extend(path, u, size) in SDK_CODES
    finally:
        cbd.UnInit()
