"""The stubs promise these types; mypy --strict checks the promises, pytest the values."""

from __future__ import annotations

from typing_extensions import assert_type

import curvefs
from tests.helpers import GiB


def test_return_types(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert_type(cbd.Create(name, user, 10 * GiB), int)
    info = curvefs.FileInfo_t()
    assert_type(cbd.StatFile(name, user, info), int)
    assert_type(info.length, int)
    assert_type(info.filename, str)
    fd = cbd.Open(name, user)
    assert_type(fd, int)
    got = cbd.Read(fd, "", 0, 4096)
    assert_type(got, bytes | int)
    assert isinstance(got, bytes)
    assert_type(cbd.Write(fd, got, 0, 4096), int)
    assert_type(cbd.Close(fd), int)
    assert_type(cbd.GetClusterId(), str)
    assert_type(cbd.ListPoolset(), list[str])
    names = cbd.Listdir("/", make_root(cbd))
    assert_type(names, list[str])
    assert all(type(n) is str for n in names)
    assert type(cbd.Create(name, user, 10 * GiB)) is int
    assert type(info.length) is int and type(info.filename) is str


def make_root(cbd: curvefs.CBDClient) -> curvefs.UserInfo_t:
    # root_password is the LocalCluster default
    u = curvefs.UserInfo_t()
    u.owner = "root"
    u.password = "root_password"
    return u
