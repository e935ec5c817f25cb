"""The original SDK's documented examples, in Python 3 syntax, against a fresh cluster.

Paths and values are the documentation's own (shared/seed/curve-client-python-api.md), so
this module gets a cluster of its own where "/curve" and friends are free.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

import curvefs
from curvefs.testing import LocalCluster


@pytest.fixture(scope="module")
def doc_cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as c:
        yield c


@pytest.fixture
def cbd(doc_cluster: LocalCluster) -> Iterator[curvefs.CBDClient]:
    cbd = curvefs.CBDClient()
    # "return 0 if initialized successfully"
    assert cbd.Init(doc_cluster.conf_path) == 0
    yield cbd
    cbd.UnInit()


def test_two_clients_can_be_created(doc_cluster: LocalCluster) -> None:
    # Two clients of one cluster, each with its own fd table and state: closing or
    # ending one leaves the other's open files working.
    cbd1 = curvefs.CBDClient()
    cbd2 = curvefs.CBDClient()
    assert cbd1 is not cbd2
    assert cbd1.Init(doc_cluster.conf_path) == 0 and cbd2.Init(doc_cluster.conf_path) == 0
    user = curvefs.UserInfo_t("curve", "")
    assert cbd1.Create("/two-clients", user, 10 * 1024**3) == 0
    fd1 = cbd1.Open("/two-clients", user)
    fd2 = cbd2.Open("/two-clients", user)
    assert fd1 >= 0 and fd2 >= 0
    assert cbd1.Write(fd1, b"1" * 4096, 0, 4096) == 4096
    assert cbd1.Close(fd1) == 0
    assert cbd2.Read(fd2, "", 0, 4096) == b"1" * 4096  # fd2 is not fd1's: still open
    cbd1.UnInit()
    assert cbd2.Write(fd2, b"2" * 4096, 0, 4096) == 4096  # nor did UnInit end cbd2
    assert cbd2.Read(fd2, "", 0, 4096) == b"2" * 4096
    assert cbd2.Close(fd2) == 0
    cbd2.UnInit()


def test_init_failure_returns_minus_one() -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Init("/etc/curve/does-not-exist.conf") == -1


def test_documented_namespace_examples(cbd: curvefs.CBDClient) -> None:
    user = curvefs.UserInfo_t()
    user.owner = "curve"
    user.password = ""
    assert cbd.Create("/curve", user, 10 * 1024 * 1024 * 1024) == 0

    finfo = curvefs.FileInfo_t()
    assert cbd.StatFile("/curve", user, finfo) == 0
    assert finfo.filetype == curvefs.CURVE_INODE_PAGEFILE
    assert finfo.length == 10 * 1024 * 1024 * 1024
    assert finfo.ctime > 1_600_000_000 * 1_000_000  # µs since the epoch
    assert finfo.filename == "curve"
    assert finfo.owner == "curve"
    assert finfo.fileStatus == curvefs.CURVE_FILE_CREATED

    assert cbd.Extend("/curve", user, 20 * 1024 * 1024 * 1024) == 0
    finfo = curvefs.FileInfo_t()
    assert cbd.StatFile("/curve", user, finfo) == 0
    assert finfo.length == 20 * 1024 * 1024 * 1024

    assert cbd.Unlink("/curve", user) == 0
    assert cbd.StatFile("/curve", user, curvefs.FileInfo_t()) == -6
    assert cbd.Recover("/curve", user, 0) == 0
    assert cbd.StatFile("/curve", user, curvefs.FileInfo_t()) == 0

    assert cbd.Rename(user, "/curve", "/curve-new") == 0
    assert cbd.StatFile("/curve-new", user, curvefs.FileInfo_t()) == 0

    assert cbd.Mkdir("/curvedir", user) == 0
    assert cbd.Rmdir("/curvedir", user) == 0

    assert cbd.Mkdir("/test", user) == 0
    assert cbd.Create("/test/a", user, 10 * 1024 * 1024 * 1024) == 0
    assert cbd.Mkdir("/test/b", user) == 0
    files = cbd.Listdir("/test", user)
    assert sorted(files) == ["a", "b"]
    for f in files:
        assert isinstance(f, str)

    cluster_id = cbd.GetClusterId()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", cluster_id)


def test_documented_io_examples(cbd: curvefs.CBDClient) -> None:
    user = curvefs.UserInfo_t()
    user.owner = "user1"
    assert cbd.Create("/tmp1", user, 10 * 1024 * 1024 * 1024) == 0

    fd = cbd.Open("/tmp1", user)
    assert fd >= 0
    assert cbd.Write(fd, "aaaaaaaa" * 512, 0, 4096) == 4096
    assert cbd.Write(fd, "bbbbbbbb" * 512, 4096, 4096) == 4096
    assert cbd.Read(fd, "", 0, 4096) == b"a" * 4096
    assert cbd.Read(fd, "", 4096, 4096) == b"b" * 4096
    assert cbd.Close(fd) == 0
