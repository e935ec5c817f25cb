"""Fixtures: a real LocalCluster over loopback, shared by the session, and clients of it.

The wire its client.conf selects follows `CURVEFS_TRANSPORT` (baidu_std by default; CI
also runs the data-path tests with `CURVEFS_TRANSPORT=grpc`).

A failing test's report carries the tail of the server logs of every LocalCluster it
started (and of the session's cluster if it used it), as a "server logs" section."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Generator, Iterator

import pytest

import curvefs
from curvefs import testing
from curvefs.testing import LocalCluster

# Lines of each server's log shown under a failed test.
_LOG_LINES = 40

# A run started in the background by a non-interactive shell (`pytest &`, CI scripts)
# ignores SIGINT, and an ignored signal stays ignored across exec: the children the tests
# Ctrl-C would never see it. Give this process, and so its children, the usual handling.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Every local cluster's client.conf, including those of clusters started in other
# processes: 2 s per MDS call instead of upstream's 500 ms (`mds.rpcTimeoutMS`). On a
# loaded 2-core CI machine an MDS call can take longer than 500 ms; the client then
# retries it, and a retried CreateFile or Mkdir answers kFileExists for what the first
# attempt made. Tests of the timeouts themselves name theirs in `client_options`.
os.environ.setdefault(testing.CLIENT_OPTIONS_ENV, "mds.rpcTimeoutMS=2000")


# The slow tests, left out of the development loop (`pytest -m "not slow"`, see
# docs/development.md) and run by CI with all the others: the fault files, the model, the
# wheel build, the NBD tools' runs, any test that kills, pauses or restarts a server, and
# any that copies a whole volume's data (a flatten, a full clone: seconds each).
_SLOW_FILES = {
    "test_faults_server_loss.py",
    "test_faults_scenarios.py",
    "test_faults_model.py",
    "test_packaging_wheel.py",
    "test_cluster_restart.py",
    "test_nbd.py",
}
_SLOW_WORDS = ("killed", "paused", "fault", "restart", "flatten", "full_clone")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in _SLOW_FILES or any(w in item.name for w in _SLOW_WORDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _clusters_marker(request: pytest.FixtureRequest) -> None:
    # Which clusters a test started: those started after this marker.
    request.node._curvefs_clusters_before = testing.clusters_started()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    # The standard recipe: fixtures can read item.rep_setup / rep_call / rep_teardown.
    setattr(item, f"rep_{rep.when}", rep)
    if rep.when == "call" and rep.failed:
        since = getattr(item, "_curvefs_clusters_before", None)
        if since is not None:
            used_shared = "cluster" in getattr(item, "fixturenames", ())
            logs = testing.recent_server_logs(since, lines=_LOG_LINES, running=used_shared)
            if logs:
                text = "\n".join(
                    f"--- {server} ({where}), last {len(lines)} lines ---\n" + "\n".join(lines)
                    for where, server, lines in logs
                )
                rep.sections.append(("server logs", text))
    return rep


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
