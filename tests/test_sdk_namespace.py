"""Each namespace call of CBDClient: its success and every error code it can return."""

from __future__ import annotations

import re
import time

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, make_user

EXISTS, FAILED, AUTHFAIL, NOTEXIST = -1, -2, -4, -6
NOT_SUPPORT, NOT_EMPTY, NO_SHRINK, PARAM_ERROR, LENGTH_NOT_SUPPORT, UNKNOWN = (
    -11,
    -12,
    -13,
    -16,
    -24,
    -100,
)


def stat(cbd: curvefs.CBDClient, path: str, user: curvefs.UserInfo_t) -> curvefs.FileInfo_t:
    info = curvefs.FileInfo_t()
    assert cbd.StatFile(path, user, info) == 0
    return info


# -- Create ---------------------------------------------------------------------------


def test_create_makes_a_page_file(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    before = time.time()
    assert cbd.Create(name, user, 10 * GiB) == 0
    info = stat(cbd, name, user)
    assert info.filetype == curvefs.CURVE_INODE_PAGEFILE
    assert info.length == 10 * GiB
    assert info.filename == name[1:]
    assert info.owner == "curve"
    assert info.parentid == 0
    assert info.id > 1  # 0 is "/", 1 is /RecycleBin
    assert info.fileStatus == curvefs.CURVE_FILE_CREATED
    assert before - 5 <= info.ctime / 1e6 <= time.time() + 5


def test_create_existing_is_exists(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.Create(name, user, 10 * GiB) == EXISTS
    assert cbd.Mkdir(name, user) == EXISTS


@pytest.mark.parametrize(
    "size",
    [0, 9 * GiB, 10 * GiB + 4096, 11 * GiB + GiB // 2, 21_990_232_555_520 + GiB],
    ids=["zero", "below-min", "unaligned", "half-segment", "above-max"],
)
def test_create_size_rules(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str, size: int
) -> None:
    assert cbd.Create(name, user, size) == LENGTH_NOT_SUPPORT
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == NOTEXIST


def test_create_largest_file(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Create(name, user, 21_990_232_555_520) == 0


def test_create_under_missing_parent(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(f"{name}/vol", user, 10 * GiB) == NOTEXIST


def test_create_under_a_file(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    # kNotDirectory: upstream maps it to UNKNOWN
    assert cbd.Create(f"{name}/vol", user, 10 * GiB) == UNKNOWN


def test_create_in_someone_elses_dir(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Create(f"{name}/vol", make_user("mallory"), 10 * GiB) == AUTHFAIL


# -- StatFile ---------------------------------------------------------------------------


def test_stat_missing(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == NOTEXIST


def test_stat_foreign_file_is_authfail(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.StatFile(name, make_user("mallory"), curvefs.FileInfo_t()) == AUTHFAIL


def test_stat_directory(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Mkdir(name, user) == 0
    info = stat(cbd, name, user)
    assert info.filetype == curvefs.CURVE_INODE_DIRECTORY
    assert info.filename == name[1:]


def test_root_sees_every_file(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert stat(cbd, name, root).owner == "curve"


def test_root_with_wrong_password_is_authfail(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.StatFile(name, make_user("root", "wrong"), curvefs.FileInfo_t()) == AUTHFAIL
    assert cbd.StatFile(name, make_user("root", ""), curvefs.FileInfo_t()) == AUTHFAIL


# -- Extend ---------------------------------------------------------------------------


def test_extend_grows(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.Extend(name, user, 12 * GiB) == 0
    assert stat(cbd, name, user).length == 12 * GiB
    assert cbd.Extend(name, user, 12 * GiB) == 0  # same size: a no-op


def test_extend_errors(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Create(name, user, 11 * GiB) == 0
    assert cbd.Extend(name, user, 10 * GiB) == NO_SHRINK
    assert cbd.Extend(name, user, 11 * GiB + 4096) == UNKNOWN  # kExtentUnitError
    assert cbd.Extend(name, user, 21_990_232_555_520 + GiB) == LENGTH_NOT_SUPPORT
    assert cbd.Extend(name + "-missing", user, 12 * GiB) == NOTEXIST
    assert cbd.Extend(name, make_user("mallory"), 12 * GiB) == AUTHFAIL
    assert stat(cbd, name, user).length == 11 * GiB


def test_extend_directory_not_supported(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Extend(name, user, 20 * GiB) == NOT_SUPPORT


# -- Unlink, the recycle bin, Recover, DeleteForce ---------------------------------------


def recycled(cbd: curvefs.CBDClient, root: curvefs.UserInfo_t, base: str) -> list[str]:
    return [n for n in cbd.Listdir("/RecycleBin", root) if n.startswith(base + "-")]


def test_unlink_moves_to_recycle_bin(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    file_id = stat(cbd, name, user).id
    assert cbd.Unlink(name, user) == 0
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == NOTEXIST
    [entry] = recycled(cbd, root, name[1:])
    assert re.fullmatch(re.escape(name[1:]) + rf"-{file_id}-\d+", entry)
    assert stat(cbd, f"/RecycleBin/{entry}", root).id == file_id


def test_unlink_errors(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Unlink(name, user) == NOTEXIST
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Create(f"{name}/v", user, 10 * GiB) == 0
    assert cbd.Unlink(name, user) == NOT_EMPTY
    assert cbd.Unlink(f"{name}/v", make_user("mallory")) == AUTHFAIL


def test_recover_by_name_and_by_id(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    file_id = stat(cbd, name, user).id
    assert cbd.Unlink(name, user) == 0
    assert cbd.Recover(name, user, 0) == 0
    assert stat(cbd, name, user).id == file_id
    assert recycled(cbd, root, name[1:]) == []

    assert cbd.Unlink(name, user) == 0
    other = name + "-restored"
    assert cbd.Recover(other, user, file_id) == 0  # by id, to the requested path
    assert stat(cbd, other, user).id == file_id


def test_recover_errors(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Recover(name, user, 0) == NOTEXIST
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.Unlink(name, user) == 0
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.Recover(name, user, 0) == EXISTS


def test_delete_force_purges_recycle_bin_entry(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.DeleteForce(name, user) == NOT_SUPPORT  # only inside /RecycleBin
    assert cbd.Unlink(name, user) == 0
    [entry] = recycled(cbd, root, name[1:])
    assert cbd.DeleteForce(f"/RecycleBin/{entry}", root) == 0
    assert recycled(cbd, root, name[1:]) == []
    assert cbd.Recover(name, user, 0) == NOTEXIST


# -- Rename ---------------------------------------------------------------------------


def test_rename(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    file_id = stat(cbd, name, user).id
    assert cbd.Rename(user, name, name + "-new") == 0
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == NOTEXIST
    assert stat(cbd, name + "-new", user).id == file_id


def test_rename_replaces_existing_destination(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name + "-a", user, 10 * GiB) == 0
    assert cbd.Create(name + "-b", user, 10 * GiB) == 0
    a_id = stat(cbd, name + "-a", user).id
    b_id = stat(cbd, name + "-b", user).id
    assert cbd.Rename(user, name + "-a", name + "-b") == 0
    assert stat(cbd, name + "-b", user).id == a_id
    assert f"{name[1:]}-b-{b_id}" in cbd.Listdir("/RecycleBin", root)


def test_rename_errors(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Rename(user, name, name + "-x") == NOTEXIST
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.Rename(user, name, name) == EXISTS
    assert cbd.Rename(user, name, f"{name}-missing/x") == NOTEXIST
    assert cbd.Rename(user, "/", name + "-x") == PARAM_ERROR
    assert cbd.Rename(make_user("mallory"), name, name + "-x") == AUTHFAIL
    assert cbd.Mkdir(name + "-d", user) == 0
    assert cbd.Rename(user, name + "-d", name + "-d2") == NOT_SUPPORT
    assert cbd.Rename(user, name + "-d", f"{name}-d/inner") == PARAM_ERROR


def test_rename_of_directory_answers_at_once(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    # Upstream retries kNotSupported for 8 s; the answer cannot change, so we do not.
    assert cbd.Mkdir(name, user) == 0
    start = time.monotonic()
    assert cbd.Rename(user, name, name + "-2") == NOT_SUPPORT
    took = time.monotonic() - start
    assert took < 4, f"NOT_SUPPORT came after {took:.1f} s: retried as upstream's 8 s"


# -- Mkdir, Rmdir, Listdir ---------------------------------------------------------------


def test_mkdir_rmdir(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Mkdir(name, user) == EXISTS
    assert cbd.Mkdir(f"{name}/a/b", user) == NOTEXIST
    assert cbd.Mkdir(f"{name}/a", user) == 0
    assert cbd.Rmdir(name, user) == NOT_EMPTY
    assert cbd.Rmdir(f"{name}/a", make_user("mallory")) == AUTHFAIL
    assert cbd.Rmdir(f"{name}/a", user) == 0
    assert cbd.Rmdir(name, user) == 0
    assert cbd.Rmdir(name, user) == NOTEXIST


def test_listdir(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Listdir(name, user) == []
    for child in ("b", "a", "c"):
        assert cbd.Create(f"{name}/{child}", user, 10 * GiB) == 0
    assert cbd.Mkdir(f"{name}/d", user) == 0
    names = cbd.Listdir(name, user)
    assert sorted(names) == ["a", "b", "c", "d"]
    assert all(isinstance(n, str) for n in names)


@pytest.mark.parametrize(
    ("setup", "owner", "code"),
    [("none", "curve", NOTEXIST), ("file", "curve", UNKNOWN), ("dir", "mallory", AUTHFAIL)],
)
def test_listdir_errors_raise_with_code(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str, setup: str, owner: str, code: int
) -> None:
    if setup == "file":
        assert cbd.Create(name, user, 10 * GiB) == 0
    elif setup == "dir":
        assert cbd.Mkdir(name, user) == 0
    with pytest.raises(curvefs.CurveError) as err:
        cbd.Listdir(name, make_user(owner))
    assert err.value.code == code


def test_root_lists_root_dir_with_recycle_bin(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Mkdir(name, user) == 0
    names = cbd.Listdir("/", root)
    assert "RecycleBin" in names and name[1:] in names
    with pytest.raises(curvefs.CurveError) as err:
        cbd.Listdir("/", user)  # "/" belongs to root
    assert err.value.code == AUTHFAIL


# -- ChangeOwner, cluster calls ------------------------------------------------------------


def test_change_owner(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create(name, user, 10 * GiB) == 0
    assert cbd.ChangeOwner(name, "alice", user) == AUTHFAIL  # root only
    assert cbd.ChangeOwner(name, "alice", make_user("root", "wrong")) == AUTHFAIL
    assert cbd.ChangeOwner(name, "alice", root) == 0
    assert stat(cbd, name, make_user("alice")).owner == "alice"
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == AUTHFAIL
    assert cbd.ChangeOwner(name + "-missing", "alice", root) == NOTEXIST


def test_change_owner_of_non_empty_dir(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, root: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Mkdir(f"{name}/x", user) == 0
    assert cbd.ChangeOwner(name, "alice", root) == NOT_EMPTY


def test_cluster_id_is_a_stable_uuid(cbd: curvefs.CBDClient, cluster: LocalCluster) -> None:
    first = cbd.GetClusterId()
    assert re.fullmatch(r"[0-9a-f-]{36}", first)
    other = curvefs.CBDClient()
    assert other.Init(cluster.conf_path) == 0
    assert other.GetClusterId() == first
    other.UnInit()


def test_list_poolset(cbd: curvefs.CBDClient) -> None:
    assert cbd.ListPoolset() == ["default"]
