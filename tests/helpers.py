"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

import curvefs
from curvefs.testing import LocalCluster

GiB = 1 << 30
MiB = 1 << 20


def conf_with(cluster: LocalCluster, where: Path, overrides: Mapping[str, str | int]) -> str:
    """A copy of the cluster's client.conf with some keys replaced (later keys win)."""
    text = Path(cluster.conf_path).read_text(encoding="utf-8")
    extra = "".join(f"{k}={v}\n" for k, v in overrides.items())
    path = where / f"client-{uuid.uuid4().hex[:8]}.conf"
    path.write_text(text + extra, encoding="utf-8")
    return str(path)


def make_user(owner: str, password: str = "") -> curvefs.UserInfo_t:
    u = curvefs.UserInfo_t()
    u.owner = owner
    u.password = password
    return u
