"""Every error code the snapshot/clone service can answer, provoked with plain HTTP GETs
(no curvefs code on the client side of the API) against a real local cluster: the body's
``Code`` and ``Message`` as ``rust/curve-snapshotclone/src/codes.rs`` has them (upstream's
``code2Msg``) and upstream's HTTP status (400 for a bad request, 500 for the rest).

The codes no request can get are listed in ``NEVER_ANSWERED`` with why; the table and that
list together cover every code of ``codes.rs``. What a clone task that fails in stage 1
leaves of its volume source is checked at the end."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import curvefs
from curvefs import FileStatus
from curvefs.testing import LocalCluster
from tests.service_api import (
    SHORT_LEASE,
    USER,
    call,
    create,
    module_client,
    module_cluster,
    ok,
    task,
    wait_snapshot,
    wait_task,
)

GiB = 1 << 30
ERROR = 5  # clone task status error (upstream's CloneStatus)
# Snapshots per volume: the third of one volume is refused (-18).
MAX_SNAPSHOTS = 2
CODES_RS = Path(__file__).parents[1] / "rust" / "curve-snapshotclone" / "src" / "codes.rs"

cluster = module_cluster(
    "sccodes",
    copysets=4,
    mds_options=SHORT_LEASE,
    snapshot_clone_options={"server.maxSnapshotLimit": MAX_SNAPSHOTS},
)
client = module_client()


def service_codes() -> dict[int, str]:
    """Code -> message, as codes.rs's table has them (its Rust string escapes undone)."""
    found = re.findall(r'^\s*[A-Z_]+ = (-?\d+), "((?:[^"\\]|\\.)*)";$', CODES_RS.read_text(), re.M)
    codes = {int(code): message.replace('\\"', '"') for code, message in found}
    assert sorted(codes) == list(range(-21, 1)), codes
    return codes


# Codes the service has in its table but never answers, and why (upstream's the same).
NEVER_ANSWERED = {
    -2: "server init failure: the process exits and answers nothing",
    -3: "server start failure: the process exits and answers nothing",
    # An instance answers it only while it stops (its lease lost mid-request or as a
    # request arrives): no request can be made to meet that window deterministically.
    -4: "a stopping instance, between losing its lease and closing its port",
    -6: "a retry of an existing task: the service turns it into success (UUID of the task)",
    -10: "chunk size not a multiple of the split size: a task's failure, never an answer",
    -12: "DeleteSnapshot of a pending snapshot cancels it instead",
    -13: "a snapshot task's failure to delete an earlier failed one: the task's, not an answer",
    -20: "defined upstream and never returned by any of its code paths",
    -21: "a snapshot task's failure (a client too old for snapshots): the task's, not an answer",
}


def fails_with(cluster: LocalCluster, code: int, **query: str) -> dict[str, Any]:
    """One request that must fail with `code`: its body."""
    status, body = call(cluster, **query)
    assert (body["Code"], body["Message"]) == (str(code), service_codes()[code]), body
    assert status == (400 if code == -5 else 500), (status, body)
    assert body["RequestId"] and "UUID" in body, body
    return body


def volume(client: curvefs.Client, path: str) -> str:
    client.create(path, 10 * GiB)
    return path


def snapshot_of(cluster: LocalCluster, client: curvefs.Client, path: str) -> str:
    """A done snapshot of a new volume `path`."""
    uuid = create(cluster, volume(client, path), "s")
    wait_snapshot(cluster, uuid)
    return uuid


def lazy_clone(cluster: LocalCluster, source: str, dest: str) -> str:
    body = ok(cluster, Action="Clone", User=USER, Source=source, Destination=dest, Lazy="true")
    return str(body["UUID"])


def internal_error(cluster: LocalCluster, client: curvefs.Client) -> None:
    # The MDS refuses CreateCloneFile in a poolset it does not have.
    body = fails_with(cluster, -1, Action="Clone", Version="1", User=USER,
                      Source=volume(client, "/c1-src"), Destination="/c1-dst", Lazy="true",
                      Poolset="no-such-poolset")  # fmt: skip
    assert task(cluster, body["UUID"])["TaskStatus"] == ERROR


def invalid_request(cluster: LocalCluster, client: curvefs.Client) -> None:
    fails_with(cluster, -5, Version="1")  # no Action


def invalid_user(cluster: LocalCluster, client: curvefs.Client) -> None:
    fails_with(cluster, -7, Action="CreateSnapshot", Version="1", User="intruder",
               File=volume(client, "/c7"), Name="s")  # fmt: skip


def file_not_exist(cluster: LocalCluster, client: curvefs.Client) -> None:
    fails_with(cluster, -8, Action="Clone", Version="1", User=USER, Source="/c8-no-such",
               Destination="/c8-dst", Lazy="true")  # fmt: skip


def file_status_invalid(cluster: LocalCluster, client: curvefs.Client) -> None:
    # A lazy clone (CloneMetaInstalled) cannot be snapshotted.
    lazy_clone(cluster, volume(client, "/c9-src"), "/c9-dst")
    fails_with(cluster, -9, Action="CreateSnapshot", Version="1", User=USER, File="/c9-dst",
               Name="s")  # fmt: skip


def file_name_not_match(cluster: LocalCluster, client: curvefs.Client) -> None:
    uuid = snapshot_of(cluster, client, "/c11")
    fails_with(cluster, -11, Action="DeleteSnapshot", Version="1", User=USER, UUID=uuid,
               File="/c11-other")  # fmt: skip


def cannot_cancel_finished(cluster: LocalCluster, client: curvefs.Client) -> None:
    uuid = snapshot_of(cluster, client, "/c14")
    fails_with(cluster, -14, Action="CancelSnapshot", Version="1", User=USER, UUID=uuid,
               File="/c14")  # fmt: skip


def invalid_snapshot(cluster: LocalCluster, client: curvefs.Client) -> None:
    # A recover from a snapshot of another volume.
    uuid = snapshot_of(cluster, client, "/c15")
    fails_with(cluster, -15, Action="Recover", Version="1", User=USER, Source=uuid,
               Destination=volume(client, "/c15-other"), Lazy="true")  # fmt: skip


def cannot_delete_cloning(cluster: LocalCluster, client: curvefs.Client) -> None:
    # A lazy clone of the snapshot still reads it.
    uuid = snapshot_of(cluster, client, "/c16")
    lazy_clone(cluster, uuid, "/c16-dst")
    fails_with(cluster, -16, Action="DeleteSnapshot", Version="1", User=USER, UUID=uuid)


def cannot_clean_unfinished(cluster: LocalCluster, client: curvefs.Client) -> None:
    uuid = lazy_clone(cluster, volume(client, "/c17-src"), "/c17-dst")
    fails_with(cluster, -17, Action="CleanCloneTask", Version="1", User=USER, UUID=uuid)


def snapshot_count_reach_limit(cluster: LocalCluster, client: curvefs.Client) -> None:
    path = volume(client, "/c18")
    for i in range(MAX_SNAPSHOTS):
        wait_snapshot(cluster, create(cluster, path, f"s{i}"))
    fails_with(cluster, -18, Action="CreateSnapshot", Version="1", User=USER, File=path,
               Name="one-too-many")  # fmt: skip


def file_exist(cluster: LocalCluster, client: curvefs.Client) -> None:
    fails_with(cluster, -19, Action="Clone", Version="1", User=USER,
               Source=volume(client, "/c19-src"), Destination=volume(client, "/c19-dst"),
               Lazy="false")  # fmt: skip


PROVOKED: dict[int, Callable[[LocalCluster, curvefs.Client], None]] = {
    -1: internal_error,
    -5: invalid_request,
    -7: invalid_user,
    -8: file_not_exist,
    -9: file_status_invalid,
    -11: file_name_not_match,
    -14: cannot_cancel_finished,
    -15: invalid_snapshot,
    -16: cannot_delete_cloning,
    -17: cannot_clean_unfinished,
    -18: snapshot_count_reach_limit,
    -19: file_exist,
}


def test_every_error_code_is_provoked_here_or_said_never_to_be_answered() -> None:
    errors = set(service_codes()) - {0}
    assert set(PROVOKED) | set(NEVER_ANSWERED) == errors
    assert not set(PROVOKED) & set(NEVER_ANSWERED)


@pytest.mark.parametrize("code", sorted(PROVOKED, reverse=True))
def test_the_service_answers_the_code(
    code: int, cluster: LocalCluster, client: curvefs.Client
) -> None:
    PROVOKED[code](cluster, client)


@pytest.mark.parametrize("lazy", [True, False])
def test_a_clone_failing_in_stage_1_leaves_its_source_created(
    lazy: bool, cluster: LocalCluster, client: curvefs.Client
) -> None:
    """Upstream's HandleCloneError: a task no longer reading its volume source sets it
    back from BeingCloned to Created (no other task reads it), so the source can be
    renamed and snapshotted again. The clone's stage 1 fails at CreateCloneFile: the MDS
    has no such poolset."""
    source = volume(client, f"/fail-src-{lazy}")
    query = {"Action": "Clone", "User": USER, "Source": source,
             "Destination": f"/fail-dst-{lazy}", "Lazy": str(lazy).lower(),
             "Poolset": "no-such-poolset"}  # fmt: skip
    if lazy:
        uuid = fails_with(cluster, -1, Version="1", **query)["UUID"]
    else:
        uuid = ok(cluster, **query)["UUID"]
        deadline = time.monotonic() + 60
        while task(cluster, uuid)["TaskStatus"] != ERROR:
            assert time.monotonic() < deadline, task(cluster, uuid)
            time.sleep(0.05)
    assert task(cluster, uuid)["TaskStatus"] == ERROR
    assert client.stat(source).status == FileStatus.CREATED
    with pytest.raises(curvefs.CurveNotExistError):
        client.stat(f"/fail-dst-{lazy}")
    # Another task on the source keeps it BeingCloned past a failed one's end.
    kept = lazy_clone(cluster, source, f"/fail-kept-{lazy}")
    assert client.stat(source).status == FileStatus.BEING_CLONED
    ok(cluster, Action="CleanCloneTask", User=USER, UUID=uuid)
    assert client.stat(source).status == FileStatus.BEING_CLONED
    # Its flatten done, the source is Created again (upstream's HandleCloneSuccess).
    ok(cluster, Action="Flatten", User=USER, UUID=kept)
    wait_task(cluster, kept, 0)
    assert client.stat(source).status == FileStatus.CREATED
    client.rename(source, source + "-moved")
