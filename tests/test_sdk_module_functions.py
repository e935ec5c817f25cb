"""Upstream's module-level API (curvefs.Init, curvefs.Open, …) over one process-wide client:
each function's success and failure, against a real local cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import curvefs
from curvefs import _c_api
from curvefs.testing import LocalCluster
from tests.helpers import GiB, make_user

EXISTS, FAILED, AUTHFAIL, NOTEXIST = -1, -2, -4, -6
NOT_SUPPORT, NOT_EMPTY, NO_SHRINK, PARAM_ERROR, BAD_FD = -11, -12, -13, -16, -23

# Every public name of upstream's SWIG module (curvefs_python/curvefs.py at opencurve/curve
# 46d4b59b) plus OpenDir/CloseDir, which its extension has and libcurvefs.h declares.
# fmt: off
UPSTREAM_NAMES = [
    *(f"CURVE_ERROR_{n}" for n in [
        "OK", "EXISTS", "FAILED", "DISABLEIO", "AUTHFAIL", "DELETING", "NOTEXIST",
        "UNDER_SNAPSHOT", "NOT_UNDERSNAPSHOT", "DELETE_ERROR", "NOT_ALLOCATE", "NOT_SUPPORT",
        "NOT_EMPTY", "NO_SHRINK_BIGGER_FILE", "SESSION_NOTEXISTS", "FILE_OCCUPIED",
        "PARAM_ERROR", "INTERNAL_ERROR", "CRC_ERROR", "INVALID_REQUEST", "DISK_FAIL",
        "NO_SPACE", "NOT_ALIGNED", "BAD_FD", "LENGTH_NOT_SUPPORT", "UNKNOWN",
    ]),
    "CURVE_INODE_DIRECTORY", "CURVE_INODE_PAGEFILE", "CURVEINODE_APPENDFILE",
    "CURVE_INODE_APPENDECFILE", "CURVE_FILE_CREATED", "CURVE_FILE_DELETING",
    "CURVE_FILE_CLONING", "CURVE_FILE_CLONEMETAINSTALLED", "CURVE_FILE_CLONED",
    "CURVE_FILE_BEINGCLONED", "CURVE_OP_READ", "CURVE_OP_WRITE", "CLUSTERIDMAX",
    "AioContext_t", "UserInfo_t", "FileInfo_t", "DirInfos_t", "CreateContext",
    "Init", "Open4Qemu", "Open", "Create", "Read", "Write", "AioRead", "AioWrite",
    "StatFile4Qemu", "StatFile", "ChangeOwner", "Close", "Rename", "Extend", "Unlink",
    "Recover", "DeleteForce", "OpenDir", "CloseDir", "Listdir", "Mkdir", "Rmdir", "UnInit",
    "GetClusterId", "CBDClient",
]
# fmt: on
NOT_YET: set[str] = set()


@pytest.fixture
def api(cluster: LocalCluster) -> Iterator[None]:
    """The process-wide client, initialised for one test and dropped after it."""
    curvefs.UnInit()
    assert curvefs.Init(cluster.conf_path) == 0
    yield
    curvefs.UnInit()


@pytest.fixture
def vol(api: None, user: curvefs.UserInfo_t, name: str) -> str:
    assert curvefs.Create(name, user, 10 * GiB) == 0
    return name


def test_upstream_names_exist() -> None:
    missing = {n for n in UPSTREAM_NAMES if not hasattr(curvefs, n)}
    assert missing <= NOT_YET, missing - NOT_YET
    assert curvefs.CLUSTERIDMAX == 256
    assert set(_c_api.__all__) <= set(curvefs.__all__)


# -- Init / UnInit ----------------------------------------------------------------------


def test_init_and_uninit(cluster: LocalCluster, user: curvefs.UserInfo_t, name: str) -> None:
    curvefs.UnInit()
    assert curvefs.Init(cluster.conf_path) == 0
    try:
        # A second Init keeps the first client, whatever its argument, as GlobalInit does.
        assert curvefs.Init("/no/such/client.conf") == 0
        assert curvefs.Create(name, user, 10 * GiB) == 0
    finally:
        curvefs.UnInit()
    assert curvefs.StatFile(name, user, curvefs.FileInfo_t()) == FAILED
    curvefs.UnInit()  # a second UnInit does nothing


def test_init_with_a_bad_conf_fails_and_leaves_no_client(
    tmp_path: Path, user: curvefs.UserInfo_t
) -> None:
    curvefs.UnInit()
    assert curvefs.Init(str(tmp_path / "missing.conf")) == -1
    assert curvefs.Mkdir("/x", user) == FAILED
    (tmp_path / "empty.conf").write_text("global.logLevel=0\n")
    assert curvefs.Init(tmp_path / "empty.conf") == -1
    assert curvefs.OpenDir("/", user) is None


def _calls(user: curvefs.UserInfo_t) -> list[tuple[str, Callable[[], object]]]:
    d = curvefs.DirInfos_t("/", user)
    f = curvefs.FileInfo_t()
    return [
        ("Open4Qemu", lambda: curvefs.Open4Qemu("/v_curve_")),
        ("Open", lambda: curvefs.Open("/v", user)),
        ("Create", lambda: curvefs.Create("/v", user, 10 * GiB)),
        ("Read", lambda: curvefs.Read(0, "", 0, 4096)),
        ("Write", lambda: curvefs.Write(0, b"a" * 4096, 0, 4096)),
        ("StatFile4Qemu", lambda: curvefs.StatFile4Qemu("/v_curve_", f)),
        ("StatFile", lambda: curvefs.StatFile("/v", user, f)),
        ("ChangeOwner", lambda: curvefs.ChangeOwner("/v", "x", user)),
        ("Close", lambda: curvefs.Close(0)),
        ("Rename", lambda: curvefs.Rename(user, "/v", "/w")),
        ("Extend", lambda: curvefs.Extend("/v", user, 20 * GiB)),
        ("Unlink", lambda: curvefs.Unlink("/v", user)),
        ("Recover", lambda: curvefs.Recover("/v", user, 0)),
        ("DeleteForce", lambda: curvefs.DeleteForce("/v", user)),
        ("Listdir(dirinfo)", lambda: curvefs.Listdir(d)),
        ("Mkdir", lambda: curvefs.Mkdir("/d", user)),
        ("Rmdir", lambda: curvefs.Rmdir("/d", user)),
        ("GetClusterId", lambda: curvefs.GetClusterId()),
    ]


def test_every_call_before_init_is_failed(user: curvefs.UserInfo_t) -> None:
    curvefs.UnInit()
    results = {label: call() for label, call in _calls(user)}
    assert results == dict.fromkeys(results, FAILED)
    assert curvefs.OpenDir("/", user) is None
    with pytest.raises(curvefs.CurveError) as err:
        curvefs.Listdir("/", user)
    assert err.value.code == FAILED
    curvefs.CloseDir(None)  # nothing to do, no error


# -- Open4Qemu / StatFile4Qemu ----------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/vol_curve_", ("/vol", "curve")),
        ("/my_vol_curve_", ("/my_vol", "curve")),
        ("/dir/vol_k8s_", ("/dir/vol", "k8s")),
        ("/vol_curve_tail", ("/vol", "curve")),  # what follows the last "_" is dropped
        ("/vol__", ("/vol", "")),
        ("_curve", ("", "curve")),  # find_last_of at npos finds the same "_"
        ("/vol_curve", None),
        ("/vol", None),
        ("", None),
    ],
)
def test_owner_in_filename(filename: str, expected: tuple[str, str] | None) -> None:
    assert _c_api._split_owner(filename) == expected


def test_open4qemu(vol: str) -> None:
    fd = curvefs.Open4Qemu(f"{vol}_curve_")
    assert fd >= 0
    assert curvefs.Write(fd, b"q" * 4096, 0, 4096) == 4096
    assert curvefs.Read(fd, "", 0, 4096) == b"q" * 4096
    assert curvefs.Close(fd) == 0


def test_open4qemu_failures(vol: str) -> None:
    assert curvefs.Open4Qemu(vol) == FAILED  # no owner in the name
    assert curvefs.Open4Qemu(f"{vol}_other_") == AUTHFAIL
    assert curvefs.Open4Qemu(f"{vol}-missing_curve_") == NOTEXIST


def test_statfile4qemu(vol: str) -> None:
    info = curvefs.FileInfo_t()
    assert curvefs.StatFile4Qemu(f"{vol}_curve_", info) == 0
    assert (info.filename, info.owner, info.length) == (vol[1:], "curve", 10 * GiB)
    assert info.filetype == curvefs.CURVE_INODE_PAGEFILE


def test_statfile4qemu_failures(vol: str) -> None:
    info = curvefs.FileInfo_t()
    assert curvefs.StatFile4Qemu(f"{vol}_curve", info) == FAILED
    assert curvefs.StatFile4Qemu(f"{vol}x_curve_", info) == NOTEXIST
    assert curvefs.StatFile4Qemu(f"{vol}_other_", info) == AUTHFAIL
    assert info.id == 0 and info.filename == ""


# -- Files and IO -----------------------------------------------------------------------


def test_create_and_stat(api: None, user: curvefs.UserInfo_t, name: str) -> None:
    assert curvefs.Create(name, user, 10 * GiB) == 0
    info = curvefs.FileInfo_t()
    assert curvefs.StatFile(name, user, info) == 0
    assert (info.filename, info.length, info.owner) == (name[1:], 10 * GiB, "curve")
    assert curvefs.Create(name, user, 10 * GiB) == EXISTS
    assert curvefs.StatFile(f"{name}x", user, curvefs.FileInfo_t()) == NOTEXIST


def test_open_read_write_close(vol: str, user: curvefs.UserInfo_t) -> None:
    fd = curvefs.Open(vol, user)
    assert fd >= 0
    assert curvefs.Write(fd, "ab" * 4096, 4096, 8192) == 8192
    assert curvefs.Read(fd, "", 0, 12288) == bytes(4096) + b"ab" * 4096
    assert curvefs.Write(fd, b"x" * 100, 0, 100) == -22  # NOT_ALIGNED
    assert curvefs.Close(fd) == 0
    assert curvefs.Read(fd, "", 0, 4096) == BAD_FD
    assert curvefs.Write(fd, b"x" * 4096, 0, 4096) == BAD_FD
    assert curvefs.Close(fd) == BAD_FD
    assert curvefs.Open(f"{vol}x", user) == NOTEXIST


def test_extend(vol: str, user: curvefs.UserInfo_t) -> None:
    assert curvefs.Extend(vol, user, 20 * GiB) == 0
    info = curvefs.FileInfo_t()
    assert curvefs.StatFile(vol, user, info) == 0 and info.length == 20 * GiB
    assert curvefs.Extend(vol, user, 10 * GiB) == NO_SHRINK


def test_rename(vol: str, user: curvefs.UserInfo_t) -> None:
    assert curvefs.Rename(user, vol, f"{vol}-new") == 0
    assert curvefs.StatFile(vol, user, curvefs.FileInfo_t()) == NOTEXIST
    assert curvefs.Rename(user, vol, f"{vol}-other") == NOTEXIST


def test_change_owner(vol: str, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t) -> None:
    assert curvefs.ChangeOwner(vol, "other", user) == AUTHFAIL
    assert curvefs.ChangeOwner(vol, "other", root) == 0
    info = curvefs.FileInfo_t()
    assert curvefs.StatFile(vol, make_user("other"), info) == 0 and info.owner == "other"


def test_unlink_recover_deleteforce(
    vol: str, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t
) -> None:
    assert curvefs.Unlink(vol, user) == 0
    assert curvefs.Unlink(vol, user) == NOTEXIST
    assert curvefs.Recover(vol, user, 0) == 0
    assert curvefs.StatFile(vol, user, curvefs.FileInfo_t()) == 0
    assert curvefs.Recover(f"{vol}x", user) == NOTEXIST
    assert curvefs.DeleteForce(vol, root) == NOT_SUPPORT  # only inside /RecycleBin
    assert curvefs.Unlink(vol, user) == 0
    trashed = [n for n in curvefs.Listdir("/RecycleBin", root) if n.startswith(vol[1:] + "-")]
    assert len(trashed) == 1
    assert curvefs.DeleteForce(f"/RecycleBin/{trashed[0]}", user) == AUTHFAIL
    assert curvefs.DeleteForce(f"/RecycleBin/{trashed[0]}", root) == 0
    assert curvefs.Recover(vol, user, 0) == NOTEXIST


def test_mkdir_listdir_rmdir(api: None, user: curvefs.UserInfo_t, name: str) -> None:
    assert curvefs.Mkdir(name, user) == 0
    assert curvefs.Mkdir(name, user) == EXISTS
    assert curvefs.Create(f"{name}/b", user, 10 * GiB) == 0
    assert curvefs.Create(f"{name}/a", user, 10 * GiB) == 0
    assert sorted(curvefs.Listdir(name, user)) == ["a", "b"]
    assert curvefs.Rmdir(name, user) == NOT_EMPTY
    with pytest.raises(curvefs.CurveNotExistError) as err:
        curvefs.Listdir(f"{name}/missing", user)
    assert err.value.code == NOTEXIST
    for entry in ("a", "b"):
        assert curvefs.Unlink(f"{name}/{entry}", user) == 0
    assert curvefs.Rmdir(name, user) == 0
    assert curvefs.Rmdir(name, user) == NOTEXIST


def test_get_cluster_id(api: None, cluster: LocalCluster) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Init(cluster.conf_path) == 0
    try:
        expected = cbd.GetClusterId()
    finally:
        cbd.UnInit()
    assert len(expected) == 36
    assert curvefs.GetClusterId() == expected
    assert curvefs.GetClusterId(None, 0) == expected
    assert curvefs.GetClusterId("", 37) == expected  # the id and its NUL fit
    assert curvefs.GetClusterId("", 36) == FAILED  # one byte short
    assert curvefs.GetClusterId(None, curvefs.CLUSTERIDMAX) == expected


# -- OpenDir / Listdir(dirinfo) / CloseDir ----------------------------------------------


def test_opendir_listdir_closedir(api: None, user: curvefs.UserInfo_t, name: str) -> None:
    assert curvefs.Mkdir(name, user) == 0
    assert curvefs.Create(f"{name}/vol", user, 10 * GiB) == 0
    assert curvefs.Mkdir(f"{name}/sub", user) == 0
    d = curvefs.OpenDir(name, user)
    assert d is not None and d.dirpath == name and d.userinfo is user
    assert (d.dirsize, d.fileinfo) == (0, [])  # no RPC until Listdir
    assert curvefs.Listdir(d) == 0
    assert d.dirsize == 2 == len(d.fileinfo)
    by_name = {f.filename: f for f in d.fileinfo}
    assert set(by_name) == {"vol", "sub"}
    for entry, info in by_name.items():
        direct = curvefs.FileInfo_t()
        assert curvefs.StatFile(f"{name}/{entry}", user, direct) == 0
        assert repr(info) == repr(direct)
    assert by_name["vol"].filetype == curvefs.CURVE_INODE_PAGEFILE
    assert by_name["vol"].length == 10 * GiB
    assert by_name["sub"].filetype == curvefs.CURVE_INODE_DIRECTORY
    curvefs.CloseDir(d)
    assert (d.dirsize, d.fileinfo) == (0, [])
    assert curvefs.Listdir(d) == FAILED  # closed


def test_listdir_dirinfo_failures(
    api: None, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert curvefs.Listdir(None) == FAILED
    missing = curvefs.OpenDir(f"{name}-missing", user)
    assert missing is not None
    assert curvefs.Listdir(missing) == NOTEXIST
    assert (missing.dirsize, missing.fileinfo) == (0, [])
    not_mine = curvefs.OpenDir("/", user)
    assert not_mine is not None
    assert curvefs.Listdir(not_mine) == AUTHFAIL
    assert curvefs.Listdir(dirinfo=curvefs.OpenDir("/", root)) == 0


def test_listdir_dirinfo_keeps_entries_the_caller_cannot_stat(
    api: None, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert curvefs.Mkdir(name, user) == 0
    assert curvefs.Create(f"{name}/mine", user, 10 * GiB) == 0
    assert curvefs.Create(f"{name}/roots", root, 10 * GiB) == 0
    d = curvefs.OpenDir(name, user)
    assert d is not None and curvefs.Listdir(d) == 0
    by_name = {f.filename: f for f in d.fileinfo}
    assert d.dirsize == 2 and set(by_name) == {"mine", "roots"}
    assert by_name["mine"].length == 10 * GiB and by_name["mine"].owner == "curve"
    assert by_name["roots"].id == 0 and by_name["roots"].owner == ""  # only its name


def test_wrong_argument_types_raise(api: None, user: curvefs.UserInfo_t) -> None:
    with pytest.raises(TypeError):
        curvefs.Open(1, user)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        curvefs.Listdir("/", user, 3)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        curvefs.Listdir(5)  # type: ignore[call-overload]
