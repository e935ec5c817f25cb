"""The ``curvefs`` commands of the snapshot/clone service (``clone``/``flatten`` through the
service, ``task``, ``snapshot``): run as subprocesses of the installed console script against
a local cluster's service, their output and exit statuses checked, the volumes' bytes read
back through the client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import curvefs
from curvefs.cli import SNAPSHOT_CLONE_ENV, Exit
from curvefs.testing import LocalCluster
from tests.service_api import module_client, module_cluster

CURVEFS = str(Path(sys.executable).parent / "curvefs")
GiB = 1 << 30
BLOCK = 4096
# Blocks of the source volume, at offsets in different chunks and segments.
SOURCE = {0: b"\x11" * BLOCK, 5 * (1 << 20): b"\x22" * BLOCK, GiB + 8192: b"\x33" * BLOCK}


cluster = module_cluster("cli-sc", copysets=8)
client = module_client()


def curvefs_cmd(
    cluster: LocalCluster, *args: str, service: bool = True
) -> subprocess.CompletedProcess[str]:
    """``curvefs ARGS --user curve``, with the service's address in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVEFS_")}
    if "CURVEFS_TRANSPORT" in os.environ:
        env["CURVEFS_TRANSPORT"] = os.environ["CURVEFS_TRANSPORT"]
    env["CURVEFS_CONF"] = cluster.conf_path
    if service:
        assert cluster.snapshot_clone_addr is not None
        env[SNAPSHOT_CLONE_ENV] = cluster.snapshot_clone_addr
    return subprocess.run(
        [CURVEFS, *args, "--user", "curve"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def ok(cluster: LocalCluster, *args: str) -> str:
    p = curvefs_cmd(cluster, *args)
    assert (p.returncode, p.stderr) == (0, ""), p
    return p.stdout


def ok_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(ok(cluster, *args, "--json"))


def fails(
    cluster: LocalCluster, *args: str, status: Exit, match: str, service: bool = True
) -> None:
    p = curvefs_cmd(cluster, *args, service=service)
    assert p.returncode == status, p
    assert p.stdout == "", p
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("curvefs ") and match in line, p


def write_source(client: curvefs.Client, path: str) -> None:
    client.create(path, 10 * GiB)
    with client.open(path) as vol:
        for offset, data in SOURCE.items():
            vol.pwrite(data, offset)


def read(client: curvefs.Client, path: str) -> dict[int, bytes]:
    with client.open(path) as vol:
        return {offset: vol.pread(BLOCK, offset) for offset in SOURCE}


def test_a_lazy_clone_its_task_and_flatten_from_the_shell(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    write_source(client, "/cli-src")
    task = ok_json(cluster, "clone", "/cli-src", "/cli-dst")
    assert task["status"] == "META_INSTALLED" and task["lazy"] is True
    assert (task["type"], task["file"], task["source"]) == ("CLONE", "/cli-dst", "/cli-src")
    assert read(client, "/cli-dst") == SOURCE
    uuid = task["uuid"]

    # The task is found by its UUID or by the volume it made, in a list or alone.
    listed = ok_json(cluster, "task", "list")
    assert [t["uuid"] for t in listed if t["file"] == "/cli-dst"] == [uuid]
    assert ok_json(cluster, "task", "info", "/cli-dst")["uuid"] == uuid
    table = ok(cluster, "task", "list", "/cli-dst").splitlines()
    assert table[0].split() == ["UUID", "TYPE", "VOLUME", "SOURCE", "STATUS", "PROGRESS", "KIND"]
    assert table[1].split()[:5] == [uuid, "clone", "/cli-dst", "/cli-src", "meta_installed"]
    # Unfinished: the service refuses to clean it (its code -17, a busy target).
    fails(cluster, "task", "clean", uuid, status=Exit.BUSY, match="code -17")

    assert ok(cluster, "flatten", "/cli-dst", "--wait") == ""
    done = ok_json(cluster, "task", "info", uuid)
    assert (done["status"], done["progress"], done["next_step"]) == ("DONE", 100, "END")
    assert read(client, "/cli-dst") == SOURCE
    assert client.stat("/cli-dst").status is curvefs.FileStatus.CLONED

    assert ok(cluster, "task", "clean", "/cli-dst") == ""
    assert [t for t in ok_json(cluster, "task", "list") if t["uuid"] == uuid] == []
    fails(cluster, "task", "info", uuid, status=Exit.NOT_FOUND, match="code -8")


def test_a_full_clone_waits_and_refusals_have_their_exit_statuses(
    cluster: LocalCluster, client: curvefs.Client
) -> None:
    write_source(client, "/cli-full-src")
    uuid = ok(cluster, "clone", "/cli-full-src", "/cli-full-dst", "--no-lazy", "--wait").strip()
    info = ok_json(cluster, "task", "info", uuid)
    assert (info["status"], info["lazy"], info["file"]) == ("DONE", False, "/cli-full-dst")
    assert read(client, "/cli-full-dst") == SOURCE

    fails(cluster, "clone", "/cli-full-src", "/cli-full-src",
          status=Exit.EXISTS, match="code -19")  # fmt: skip
    fails(cluster, "clone", "/no-such-volume", "/cli-x",
          status=Exit.NOT_FOUND, match="code -8")  # fmt: skip
    fails(cluster, "task", "info", "/cli-full-src",
          status=Exit.NOT_FOUND, match="no clone or recover task made /cli-full-src")  # fmt: skip
    # Without an address: the service's commands say what is missing; a full clone cannot
    # be made directly.
    fails(cluster, "task", "list", service=False,
          status=Exit.USAGE, match=f"${SNAPSHOT_CLONE_ENV}")  # fmt: skip
    fails(cluster, "clone", "/cli-full-src", "/cli-y", "--no-lazy", service=False,
          status=Exit.USAGE, match="--no-lazy and --wait are tasks")  # fmt: skip
    assert ok_json(cluster, "snapshot", "list") == []


def test_no_service_answering_is_an_error_naming_the_addresses(cluster: LocalCluster) -> None:
    p = subprocess.run(
        [
            CURVEFS,
            "task",
            "list",
            "--user",
            "curve",
            "--snapshot-clone",
            "127.0.0.1:1",
            "--request-timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CURVEFS_CONF": cluster.conf_path},
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == Exit.ERROR, p
    assert "no snapshot/clone service answered at 127.0.0.1:1" in p.stderr, p


@pytest.mark.parametrize(
    "command",
    [["snapshot", *a] for a in ([], ["create"], ["list"], ["info"], ["delete"], ["cancel"])]
    + [["task", *a] for a in ([], ["list"], ["info"], ["wait"], ["clean"])],
    ids=" ".join,
)
def test_help_on_every_service_command(command: list[str]) -> None:
    p = subprocess.run([CURVEFS, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p
    assert p.stdout.startswith(f"usage: curvefs {' '.join(command)}"), p
