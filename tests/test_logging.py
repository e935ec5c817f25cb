"""The core's events in Python's logging: at the levels an operator expects, with their
fields as LogRecord attributes, and the Rust-side filter following the loggers' level.

One private cluster with a standby MDS and two copysets: the tests move leaders, pause
chunkservers and kill the active MDS, which the shared cluster must not see."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest

import curvefs
from curvefs import _core, _logging
from curvefs.testing import LocalCluster

KiB = 1024
GiB = 1 << 30


class Records(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def matching(self, logger: str, level: int, text: str) -> list[logging.LogRecord]:
        return [
            r
            for r in self.records
            if r.name == logger and r.levelno == level and text in r.getMessage()
        ]

    def wait_for(
        self, logger: str, level: int, text: str, timeout: float = 20.0
    ) -> logging.LogRecord:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(logger, level, text)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                seen = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records)
                raise AssertionError(
                    f"no {logging.getLevelName(level)} {text!r} on {logger}; saw:\n{seen}"
                )
            time.sleep(0.05)


@pytest.fixture
def records() -> Iterator[Records]:
    """A DEBUG handler on the ``curvefs`` logger, set to DEBUG for the test."""
    logger = logging.getLogger("curvefs")
    handler = Records()
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("logging"), copysets=2, mds_count=2) as c:
        yield c


def test_the_filter_follows_the_curvefs_loggers_level() -> None:
    logger = logging.getLogger("curvefs")
    child = logging.getLogger("curvefs.curve_client.chunk")
    before = (logger.level, child.level)
    try:
        logger.setLevel(logging.WARNING)
        child.setLevel(logging.NOTSET)
        assert _core._log_level() == logging.WARNING
        logger.setLevel(logging.DEBUG)
        assert _core._log_level() == logging.DEBUG
        logger.setLevel(logging.ERROR)
        assert _core._log_level() == logging.ERROR
        # A more verbose descendant widens the filter; Python's loggers still decide.
        child.setLevel(logging.INFO)
        assert _core._log_level() == logging.INFO
        logging.disable(logging.CRITICAL)  # nothing may cross: the filter is off
        assert _core._log_level() > logging.ERROR
    finally:
        logging.disable(logging.NOTSET)
        logger.setLevel(before[0])
        child.setLevel(before[1])
    assert _core._log_level() == _logging.effective_level()


def test_a_missing_file_is_a_debug_event_with_its_path(
    cluster: LocalCluster, records: Records, name: str
) -> None:
    with curvefs.Client(cluster.conf_path, user="curve") as c, pytest.raises(FileNotFoundError):
        c.stat(name)
    r = records.wait_for("curvefs.curve_client.mds", logging.DEBUG, "GetFileInfo")
    assert r.path == name  # type: ignore[attr-defined]
    assert r.status == "kFileNotExists"  # type: ignore[attr-defined]
    assert r.method == "GetFileInfo"  # type: ignore[attr-defined]


def test_at_warning_no_debug_event_reaches_python(cluster: LocalCluster, name: str) -> None:
    logger = logging.getLogger("curvefs")
    handler = Records()
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        assert _core._log_level() == logging.WARNING
        with curvefs.Client(cluster.conf_path, user="curve") as c:
            with pytest.raises(FileNotFoundError):
                c.stat(name)
            c.create(name, 10 * GiB)
            with c.open(name) as vol:
                vol.pwrite(b"x" * 4096, 0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
    assert [r for r in handler.records if r.levelno < logging.WARNING] == []


def _other_chunkserver(cluster: LocalCluster, copyset: int) -> tuple[int, int]:
    leader = cluster.copyset_leader(copyset)
    return leader, next(i for i in cluster.chunkserver_ids if i != leader)


def test_a_leader_change_is_a_warning_naming_the_copyset(
    private: LocalCluster, records: Records
) -> None:
    with curvefs.Client(private.conf_path, user="curve") as c:
        c.create("/leader", 10 * GiB)
        with c.open("/leader") as vol:
            data = os.urandom(64 * KiB)
            vol.pwrite(data, 0)  # the client learns the leaders
            # A leader change within a second of the last one logged is held back (the
            # rate limit): move leaders until one is seen, a bounded number of times.
            for _ in range(5):
                moved = {}
                for cs in private.copyset_ids:
                    old, new = _other_chunkserver(private, cs)
                    private.transfer_leader(cs, new)
                    moved[cs] = (private.chunkserver_addr(old), private.chunkserver_addr(new))
                assert vol.pread(len(data), 0) == data
                vol.pwrite(data, 0)
                found = records.matching(
                    "curvefs.curve_client.metacache", logging.WARNING, "leader changed"
                )
                if found:
                    break
                # Not a synchronisation: the rate limit's window must pass.
                time.sleep(1.1)
            else:
                raise AssertionError("no leader change was logged in 5 rounds")
    fields = vars(found[-1])
    assert fields["copyset"] in moved
    assert fields["endpoint"] == moved[fields["copyset"]][1]
    assert fields["from"] == moved[fields["copyset"]][0]
    assert fields["logical_pool"] == private.logical_pool_id


def test_a_call_that_gives_up_is_an_error_with_volume_offset_and_cause(
    private: LocalCluster, records: Records
) -> None:
    options: dict[str, int] = {
        "chunkserver_rpc_timeout_ms": 200,
        "chunkserver_max_rpc_timeout_ms": 400,
        "chunkserver_max_retry_time_ms": 2500,
        # Leader lookups that give up fast, so the request is retried within its budget.
        "metacache_get_leader_timeout_ms": 100,
        "metacache_get_leader_retry": 1,
    }
    with curvefs.Client(private.conf_path, user="curve", **options) as c:  # type: ignore[arg-type]
        c.create("/gives-up", 10 * GiB)
        with c.open("/gives-up") as vol:
            vol.pwrite(b"y" * 4096, 8192)
            for cs in private.chunkserver_ids:
                private.pause_chunkserver(cs)
            try:
                with pytest.raises(curvefs.CurveError):
                    vol.pwrite(b"z" * 4096, 8192)
            finally:
                for cs in private.chunkserver_ids:
                    private.resume_chunkserver(cs)
    r = records.wait_for("curvefs.curve_client.file", logging.ERROR, "failed")
    assert r.volume == "/gives-up"  # type: ignore[attr-defined]
    assert r.offset == 8192 and r.len == 4096  # type: ignore[attr-defined]
    assert r.cause == "TimedOut"  # type: ignore[attr-defined]
    retries = records.matching("curvefs.curve_client.chunk", logging.WARNING, "retrying WriteChunk")
    assert retries, "no retry warning before the give-up"
    timed_out = [r for r in retries if "timed out" in r.cause]  # type: ignore[attr-defined]
    assert timed_out, "no retry warning for the timeouts"
    assert all(r.copyset in private.copyset_ids for r in timed_out)  # type: ignore[attr-defined]
    assert all(r.attempt >= 1 and r.suppressed >= 0 for r in timed_out)  # type: ignore[attr-defined]


def test_an_mds_failover_is_a_warning_naming_both_addresses(
    private: LocalCluster, records: Records
) -> None:
    with curvefs.Client(private.conf_path, user="curve") as c:
        c.mkdir("/before-failover")
        first, second = private.mds_addrs
        assert c.metrics().mds.current_addr == first
        private.kill_mds(index=0)
        assert private.wait_for_active_mds(timeout=30) == 1
        c.stat("/before-failover")
        r = records.wait_for("curvefs.curve_client.mds", logging.WARNING, "MDS failover")
        assert getattr(r, "from") == first
        assert r.to == second  # type: ignore[attr-defined]
        m = c.metrics().mds
        assert m.failovers >= 1
        assert m.current_addr == second
    private.start_mds(0)  # back as a standby
