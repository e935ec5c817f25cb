"""Fixtures: a real LocalCluster over loopback, shared by the session, and clients of it.

The wire its client.conf selects follows `CURVEFS_TRANSPORT` (baidu_std by default; CI
also runs the data-path tests with `CURVEFS_TRANSPORT=grpc`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import curvefs
from curvefs.testing import LocalCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as c:
        yield c


@pytest.fixture
def cbd(cluster: LocalCluster) -> Iterator[curvefs.CBDClient]:
    client = curvefs.CBDClient()
    assert client.Init(cluster.conf_path) == 0
    yield client
    client.UnInit()


@pytest.fixture
def user() -> curvefs.UserInfo_t:
    u = curvefs.UserInfo_t()
    u.owner = "curve"
    return u


@pytest.fixture
def root(cluster: LocalCluster) -> curvefs.UserInfo_t:
    u = curvefs.UserInfo_t()
    u.owner = "root"
    u.password = cluster.root_password
    return u


@pytest.fixture
def name() -> str:
    """A top-level path no other test uses."""
    return f"/t-{uuid.uuid4().hex[:12]}"
