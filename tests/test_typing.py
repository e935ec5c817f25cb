"""The stubs promise these types; mypy --strict checks the promises, pytest the values."""

from __future__ import annotations

import datetime as dt
from typing import assert_type

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB


def test_return_types(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert_type(cbd.Create(name, user, 10 * GiB), int)
    info = curvefs.FileInfo_t()
    assert_type(cbd.StatFile(name, user, info), int)
    assert_type(info.length, int)
    assert_type(info.filename, str)
    assert_type(info.cloneSource, str)
    assert_type(info.cloneLength, int)
    assert type(info.cloneSource) is str and type(info.cloneLength) is int
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


def test_pythonic_return_types(cluster: LocalCluster, name: str) -> None:
    with curvefs.Client(cluster.conf_path, user="curve") as client:
        assert_type(client.create(name, 10 * GiB), None)
        info = client.stat(name)
        assert_type(info, curvefs.FileInfo)
        assert_type(info.ctime, dt.datetime)
        assert_type(info.file_type, curvefs.FileType)
        assert_type(info.status, curvefs.FileStatus)
        assert_type(info.clone_source, str)
        assert_type(info.clone_length, int)
        assert type(info.clone_source) is str and type(info.clone_length) is int
        assert type(info.file_type) is curvefs.FileType and type(info.length) is int
        with curvefs.Client(cluster.conf_path, user="root", password="root_password") as root:
            assert_type(root.listdir("/"), list[str])
        assert_type(client.cluster_id(), str)
        assert_type(client.poolsets(), list[str])
        with client.open(name) as vol:
            assert_type(vol, curvefs.Volume)
            data = vol.pread(4, 0)
            assert_type(data, bytes)
            assert type(data) is bytes
            assert_type(vol.pwrite(b"abcd", 1), int)
            assert_type(vol.preadinto(bytearray(4), 1), int)
            assert_type(vol.size, int)
            assert_type(vol.stat(), curvefs.FileInfo)
