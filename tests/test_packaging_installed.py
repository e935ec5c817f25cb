"""The installed package ships its typed contract and its command line."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import curvefs
from tests.helpers import child, interruptible, readline

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_stubs_and_py_typed() -> None:
    files = importlib.resources.files("curvefs")
    assert files.joinpath("py.typed").is_file()
    stub = files.joinpath("_core.pyi").read_text(encoding="utf-8")
    assert "class CBDClient" in stub


def test_version_comes_from_cargo() -> None:
    # The workspace's version, as Cargo.toml of this checkout says it, is the package's.
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    version = cargo["workspace"]["package"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version)
    assert curvefs.__version__ == version
    assert importlib.metadata.version("curvefs") == version


def test_constants_match_upstream() -> None:
    assert curvefs.CURVE_FILE_CREATED == 0 and curvefs.CURVE_FILE_BEINGCLONED == 5
    assert curvefs.CURVE_INODE_DIRECTORY == 0 and curvefs.CURVE_INODE_PAGEFILE == 1
    assert curvefs.CURVE_ERROR_EXISTS == 1 and curvefs.CURVE_ERROR_NOT_ALIGNED == 22
    assert curvefs.CURVE_ERROR_BAD_FD == 23 and curvefs.CURVE_ERROR_UNKNOWN == 100


def test_errors_are_catchable_as_builtins() -> None:
    err = curvefs.CurveError.from_code(-6, "no such file")
    assert isinstance(err, OSError)
    assert isinstance(err, FileNotFoundError)
    assert err.code == -6
    assert isinstance(curvefs.CurveError.from_code(-1, "x"), FileExistsError)
    assert isinstance(curvefs.CurveError.from_code(-4, "x"), PermissionError)


def test_cli_cluster_start_prints_conf_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "cli.log"
    with (
        open(log, "w") as err,
        child(
            interruptible(
                [sys.executable, "-m", "curvefs", "cluster", "start", "--dir", str(tmp_path / "d")]
            ),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        ) as proc,
    ):
        try:
            assert proc.stdout is not None
            conf = readline(proc.stdout, 60, "the conf path `cluster start` prints").strip()
            assert os.path.isfile(conf), log.read_text()
            cbd = curvefs.CBDClient()
            assert cbd.Init(conf) == 0
            assert cbd.GetClusterId() != ""
            cbd.UnInit()
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
    # the cluster's servers are gone with it: nothing listens on the MDS address any more
    text = Path(conf).read_text(encoding="utf-8")
    addr = re.search(r"^mds\.listen\.addr=([\d.]+):(\d+)", text, re.M)
    assert addr is not None
    with socket.socket() as s:
        assert s.connect_ex((addr.group(1), int(addr.group(2)))) != 0
