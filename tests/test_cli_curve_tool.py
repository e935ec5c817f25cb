"""The ``curve`` command (upstream's curvefs_tool.py): every subcommand's success and failure,
run as a subprocess against a real local cluster, and upstream's smoke script through it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB

CURVE = str(Path(sys.executable).parent / "curve")
# opencurve/curve's curvefs_python/test.py at 46d4b59b, verbatim (Apache-2.0; its header kept).


def curve(
    conf: str | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [CURVE, *(["--confpath", conf] if conf else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def ok(conf: str, *args: str) -> str:
    p = curve(conf, *args)
    assert (p.returncode, p.stderr) == (0, ""), p
    return p.stdout


def fails(conf: str, *args: str, code: int, name: str) -> None:
    p = curve(conf, *args)
    assert p.returncode == 1, p
    assert p.stdout == f"{args[0]} fail, ret = {code}, {name}\n"


@pytest.fixture
def conf(cluster: LocalCluster) -> str:
    return cluster.conf_path


@pytest.fixture
def cbd(cluster: LocalCluster) -> Iterator[curvefs.CBDClient]:
    client = curvefs.CBDClient()
    assert client.Init(cluster.conf_path) == 0
    yield client
    client.UnInit()


def stat(cbd: curvefs.CBDClient, path: str, owner: str = "curve") -> curvefs.FileInfo_t | None:
    info = curvefs.FileInfo_t()
    return info if cbd.StatFile(path, curvefs.UserInfo_t(owner), info) == 0 else None


def test_console_script_is_installed() -> None:
    assert os.access(CURVE, os.X_OK)
    assert shutil.which("curve", path=str(Path(CURVE).parent)) == CURVE


# -- create ----------------------------------------------------------------------------


def test_create(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    assert ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10") == ""
    info = stat(cbd, name)
    assert info is not None and info.length == 10 * GiB and info.stripeCount == 0
    fails(conf, "create", "--user", "curve", "--filename", name, "--length", "10", code=-1,
          name="EXISTS")  # fmt: skip
    fails(conf, "create", "--user", "curve", "--filename", f"{name}x", "--length", "5", code=-24,
          name="LENGTH_NOT_SUPPORT")  # fmt: skip


def test_create_striped(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    args = ["create", "--user", "curve", "--filename", name, "--length", "10"]
    assert ok(conf, *args, "--stripeUnit", "1048576", "--stripeCount", "4") == ""
    info = stat(cbd, name)
    assert info is not None and (info.stripeUnit, info.stripeCount) == (1 << 20, 4)
    # Upstream passes None for the missing one (a TypeError); here it reaches the MDS as 0.
    fails(conf, *args[:4], f"{name}x", *args[5:], "--stripeUnit", "1048576", code=-16,
          name="PARAM_ERROR")  # fmt: skip


# -- delete / recover ------------------------------------------------------------------


def test_delete_and_recover(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10")
    assert ok(conf, "delete", "--user", "curve", "--filename", name) == ""
    assert stat(cbd, name) is None
    fails(conf, "delete", "--user", "curve", "--filename", name, code=-6, name="NOTEXIST")
    assert ok(conf, "recover", "--user", "curve", "--filename", name) == ""
    assert stat(cbd, name) is not None
    fails(conf, "recover", "--user", "curve", "--filename", name, code=-6, name="NOTEXIST")


def test_recover_by_id(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10")
    info = stat(cbd, name)
    assert info is not None
    ok(conf, "delete", "--user", "curve", "--filename", name)
    # No entry of that id in the recycle bin: the SDK answers UNKNOWN (-100), as CBDClient does.
    fails(conf, "recover", "--user", "curve", "--filename", name, "--id", str(info.id + 1000),
          code=-100, name="UNKNOWN")  # fmt: skip
    assert ok(conf, "recover", "--user", "curve", "--filename", name, "--id", str(info.id)) == ""
    recovered = stat(cbd, name)
    assert recovered is not None and recovered.id == info.id


# -- extend ----------------------------------------------------------------------------


def test_extend(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10")
    assert ok(conf, "extend", "--user", "curve", "--filename", name, "--length", "12") == ""
    info = stat(cbd, name)
    assert info is not None and info.length == 12 * GiB
    fails(conf, "extend", "--user", "curve", "--filename", name, "--length", "11", code=-13,
          name="NO_SHRINK_BIGGER_FILE")  # fmt: skip


# -- stat ------------------------------------------------------------------------------


def test_stat_prints_upstreams_lines(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10",
       "--stripeUnit", "65536", "--stripeCount", "2")  # fmt: skip
    info = stat(cbd, name)
    assert info is not None
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.ctime // 1_000_000))
    assert ok(conf, "stat", "--user", "curve", "--filename", name) == (
        f"id: {info.id}\n"
        f"parentid: 0\n"
        f"filetype: INODE_PAGEFILE\n"
        f"length(GB): 10\n"
        f"createtime: {created}\n"
        f"user: curve\n"
        f"filename: {name[1:]}\n"
        f"fileStatus: Created\n"
        f"stripeUnit: 65536\n"
        f"stripeCount: 2\n"
    )


def test_stat_of_a_directory(conf: str, name: str) -> None:
    ok(conf, "mkdir", "--user", "curve", "--dirname", name)
    out = ok(conf, "stat", "--user", "curve", "--filename", name)
    assert "filetype: INODE_DIRECTORY\n" in out and "length(GB): 0\n" in out


def test_stat_failures(conf: str, name: str) -> None:
    fails(conf, "stat", "--user", "curve", "--filename", name, code=-6, name="NOTEXIST")
    ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10")
    fails(conf, "stat", "--user", "other", "--filename", name, code=-4, name="AUTHFAIL")


# -- rename ----------------------------------------------------------------------------


def test_rename(conf: str, cbd: curvefs.CBDClient, name: str) -> None:
    ok(conf, "create", "--user", "curve", "--filename", name, "--length", "10")
    new = f"{name}-renamed"
    assert ok(conf, "rename", "--user", "curve", "--filename", name, "--newname", new) == ""
    assert stat(cbd, name) is None and stat(cbd, new) is not None
    fails(conf, "rename", "--user", "curve", "--filename", name, "--newname", new, code=-6,
          name="NOTEXIST")  # fmt: skip


# -- mkdir / rmdir / list --------------------------------------------------------------


def test_mkdir_list_rmdir(conf: str, name: str) -> None:
    assert ok(conf, "mkdir", "--user", "curve", "--dirname", name) == ""
    fails(conf, "mkdir", "--user", "curve", "--dirname", name, code=-1, name="EXISTS")
    for entry in ("b", "a"):
        ok(conf, "create", "--user", "curve", "--filename", f"{name}/{entry}", "--length", "10")
    assert sorted(ok(conf, "list", "--user", "curve", "--dirname", name).split("\n")) == [
        "",
        "a",
        "b",
    ]
    fails(conf, "rmdir", "--user", "curve", "--dirname", name, code=-12, name="NOT_EMPTY")
    for entry in ("a", "b"):
        ok(conf, "delete", "--user", "curve", "--filename", f"{name}/{entry}")
    assert ok(conf, "list", "--user", "curve", "--dirname", name) == ""
    assert ok(conf, "rmdir", "--user", "curve", "--dirname", name) == ""
    fails(conf, "rmdir", "--user", "curve", "--dirname", name, code=-6, name="NOTEXIST")
    fails(conf, "list", "--user", "curve", "--dirname", name, code=-6, name="NOTEXIST")


def test_list_root_needs_roots_password(conf: str, cluster: LocalCluster) -> None:
    fails(conf, "list", "--user", "curve", "--dirname", "/", code=-4, name="AUTHFAIL")
    fails(conf, "list", "--user", "root", "--dirname", "/", code=-4, name="AUTHFAIL")
    out = ok(conf, "list", "--user", "root", "--dirname", "/", "--password", cluster.root_password)
    assert "RecycleBin" in out.split("\n")


def test_bad_path_is_param_error(conf: str) -> None:
    fails(conf, "mkdir", "--user", "curve", "--dirname", "relative", code=-16, name="PARAM_ERROR")


# -- init, arguments, conf -------------------------------------------------------------


def test_init_fail(tmp_path: Path) -> None:
    p = curve(str(tmp_path / "missing.conf"), "mkdir", "--user", "curve", "--dirname", "/x")
    assert (p.returncode, p.stdout) == (1, "init fail\n")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["mkdir", "--dirname", "/x"],  # --user is required
        ["create", "--user", "u", "--filename", "/x"],  # --length is required
        ["create", "--user", "u", "--filename", "/x", "--length", "ten"],
        ["copy", "--user", "u"],
        ["stat", "--user", "u", "--dirname", "/x"],  # stat takes --filename
    ],
)
def test_bad_arguments_exit_2(conf: str, args: list[str]) -> None:
    p = curve(conf, *args)
    assert p.returncode == 2 and p.stdout == "" and "usage: curve" in p.stderr


def test_confpath_defaults_to_the_environment(
    cluster: LocalCluster, tmp_path: Path, name: str
) -> None:
    env = dict(os.environ, CURVEFS_CONF=cluster.conf_path)
    assert curve(None, "mkdir", "--user", "curve", "--dirname", name, env=env).returncode == 0
    # --confpath wins over the environment.
    p = curve(str(tmp_path / "none.conf"), "rmdir", "--user", "curve", "--dirname", name, env=env)
    assert (p.returncode, p.stdout) == (1, "init fail\n")
    assert curve(None, "rmdir", "--user", "curve", "--dirname", name, env=env).returncode == 0
    env.pop("CURVEFS_CONF")
    help_text = curve(None, "--help", env=env).stdout
    assert "/etc/curve/client.conf" in " ".join(help_text.split())


# -- upstream's smoke script -----------------------------------------------------------

# curvefs_python/test.py's commands, with whether each exits 0.
SMOKE = [
    ("curve mkdir --user k8s --dirname /k8s", True),
    ("curve create --user k8s --filename /k8s/volume1 --length 10", True),
    ("curve extend --user k8s --filename /k8s/volume1 --length 11", True),
    ("curve rename --user k8s --filename /k8s/volume1 --newname /k8s/volume2", True),
    ("curve list --user k8s --dirname /k8s", True),
    ("curve list --user k8s --dirname /", False),  # not root
    ("curve list --user root --dirname /", False),  # root without its password
    ("curve list --user root --dirname / --password root_password", True),
    ("curve stat --user k8s --filename /k8s/volume2", True),
    ("curve delete --user k8s --filename /k8s/volume2", True),
    ("curve rmdir --user k8s --dirname /k8s", True),
]


@pytest.fixture
def smoke_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of its own (the script's fixed names), with the script's root password."""
    with LocalCluster(str(tmp_path / "cluster"), root_password="root_password") as c:
        yield c


def test_upstream_smoke_sequence(smoke_cluster: LocalCluster) -> None:
    conf = smoke_cluster.conf_path
    outputs = []
    for command, succeeds in SMOKE:
        p = curve(conf, *command.split()[1:])
        assert p.returncode == (0 if succeeds else 1), (command, p)
        outputs.append(p.stdout)
    assert outputs[4] == "volume2\n"
    assert outputs[5] == outputs[6] == "list fail, ret = -4, AUTHFAIL\n"
    assert sorted(outputs[7].split()) == ["RecycleBin", "k8s"]
    assert "length(GB): 11\n" in outputs[8] and "filename: volume2\n" in outputs[8]
