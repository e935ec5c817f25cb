"""A snapshot's seqNum reaches an open volume's writes on a real local cluster: the MDS's
CreateSnapShot bumps the volume's seqNum, the client adopts it from RefreshSession, and
the next write carries it to the chunkservers, which record a chunk's highest written sn
in its ``chunk_<id>.sn`` sidecar (8 bytes, little endian)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import curvefs
from curvefs import exceptions as ex
from curvefs.testing import LocalCluster
from tests.helpers import GiB


def sidecar_sns(data_dir: Path) -> list[int]:
    """The sn of every chunk replica written so far in the cluster."""
    return [int.from_bytes(p.read_bytes()[:8], "little") for p in data_dir.rglob("chunk_*.sn")]


def test_write_after_snapshot_carries_the_new_sn(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "cluster", copysets=4) as cluster:
        data_dir = Path(cluster.data_dir)
        with curvefs.Client(cluster.conf_path, user="snap") as client:
            client.create("/snapvol", 10 * GiB)
            with client.open("/snapvol") as vol:
                vol.pwrite(b"a" * 4096, 0)
                before = sidecar_sns(data_dir)
                assert before and all(sn == 1 for sn in before), before

                seq = client._h.create_mds_snapshot("/snapvol")
                assert seq == 1
                with pytest.raises(ex.CurveError):
                    client._h.create_mds_snapshot("/snapvol")

                # The client adopts seqNum 2 at a RefreshSession (every lease/4); until
                # then its writes still carry 1. Write until the sidecars say 2.
                deadline = time.monotonic() + 20
                while True:
                    vol.pwrite(b"b" * 4096, 0)
                    after = sidecar_sns(data_dir)
                    if after and all(sn == 2 for sn in after):
                        break
                    assert time.monotonic() < deadline, f"writes still carry {after}"
                    time.sleep(0.1)
                assert vol.pread(4096, 0) == b"b" * 4096
