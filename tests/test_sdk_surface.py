"""curvefs.CBDClient beyond the native calls: both forms of Create2, OpenDir / Listdir(dirinfo)
/ CloseDir, and that the Python class passes every native call through unchanged."""

from __future__ import annotations

import inspect

import pytest

import curvefs
from curvefs import _core
from tests.helpers import GiB, make_user

EXISTS, FAILED, AUTHFAIL, NOTEXIST, PARAM_ERROR = -1, -2, -4, -6, -16
MiB = 1 << 20


def stat(cbd: curvefs.CBDClient, path: str, user: curvefs.UserInfo_t) -> curvefs.FileInfo_t:
    info = curvefs.FileInfo_t()
    assert cbd.StatFile(path, user, info) == 0
    return info


# -- The class itself -------------------------------------------------------------------


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_every_native_call_is_reachable() -> None:
    # A call added to the native class must be passed through here too, or it stays hidden.
    assert _public(_core.CBDClient) <= _public(curvefs.CBDClient)
    assert _public(curvefs.CBDClient) - _public(_core.CBDClient) == {"OpenDir", "CloseDir"}


@pytest.mark.parametrize("method", sorted(_public(_core.CBDClient) - {"Create2"}))
def test_same_parameters_as_native(method: str) -> None:
    native = inspect.signature(getattr(_core.CBDClient, method))
    ours = inspect.signature(getattr(curvefs.CBDClient, method))
    if method == "Listdir":  # overloaded: (dirpath, user) or (dirinfo)
        assert [*native.parameters] == ["self", "dirpath", "user"]
        return
    assert [*ours.parameters] == [*native.parameters]
    defaults = {n: p.default for n, p in ours.parameters.items()}
    assert {n: p.default for n, p in native.parameters.items()} == defaults


def test_class_identity_and_repr(cbd: curvefs.CBDClient) -> None:
    assert isinstance(cbd, curvefs.CBDClient)
    assert curvefs.CBDClient.__module__ == "curvefs"
    assert repr(cbd) == "<curvefs.CBDClient (initialized)>"
    fresh = curvefs.CBDClient()
    assert repr(fresh) == "<curvefs.CBDClient (not initialized)>"
    with pytest.raises(AttributeError):
        fresh.extra = 1  # type: ignore[attr-defined]


def test_wrong_types_still_raise(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t) -> None:
    with pytest.raises(TypeError):
        cbd.Create(b"/x", user, GiB)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cbd.Open("/x", "user")  # type: ignore[arg-type]


# -- Create2 ----------------------------------------------------------------------------


def test_create2_with_a_context(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    ctx = curvefs.CreateContext(name, 10 * GiB, user, "", MiB, 4)
    assert cbd.Create2(ctx) == 0
    info = stat(cbd, name, user)
    assert (info.length, info.stripeUnit, info.stripeCount) == (10 * GiB, MiB, 4)
    assert cbd.Create2(context=ctx) == EXISTS


def test_create2_positional(cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str) -> None:
    assert cbd.Create2(name, user, 10 * GiB, 64 * 1024, 8) == 0
    info = stat(cbd, name, user)
    assert (info.length, info.owner) == (10 * GiB, "curve")
    assert (info.stripeUnit, info.stripeCount) == (64 * 1024, 8)
    assert info.filetype == curvefs.CURVE_INODE_PAGEFILE
    assert cbd.Create2(name, user, 10 * GiB, 64 * 1024, 8) == EXISTS
    # Keywords bind to upstream's parameter names.
    other = f"{name}-kw"
    assert cbd.Create2(filename=other, user=user, size=10 * GiB, stripeUnit=MiB, stripeCount=2) == 0
    assert stat(cbd, other, user).stripeCount == 2


def test_create2_positional_without_striping(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create2(name, user, 10 * GiB, 0, 0) == 0
    assert (stat(cbd, name, user).stripeUnit, stat(cbd, name, user).stripeCount) == (0, 0)


def test_create2_positional_failures(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Create2(name, user, 10 * GiB, MiB, 0) == PARAM_ERROR  # a unit without a count
    assert cbd.Create2(f"{name}/under-missing", user, 10 * GiB, MiB, 4) == NOTEXIST
    assert cbd.StatFile(name, user, curvefs.FileInfo_t()) == NOTEXIST
    with pytest.raises(TypeError):
        cbd.Create2(name, user, 10 * GiB)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        cbd.Create2()  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        cbd.Create2(name)  # type: ignore[call-overload]


def test_create2_before_init(user: curvefs.UserInfo_t) -> None:
    cbd = curvefs.CBDClient()
    assert cbd.Create2("/x", user, 10 * GiB, MiB, 4) == FAILED
    assert cbd.Create2(curvefs.CreateContext("/x", 10 * GiB, user)) == FAILED


# -- OpenDir / Listdir(dirinfo) / CloseDir ----------------------------------------------


def test_opendir_listdir_closedir(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Create2(f"{name}/striped", user, 10 * GiB, MiB, 4) == 0
    assert cbd.Create(f"{name}/plain", user, 20 * GiB) == 0
    d = cbd.OpenDir(name, user)
    assert isinstance(d, curvefs.DirInfos_t)
    assert cbd.Listdir(d) == 0
    assert d.dirsize == 2
    got = {f.filename: (f.length, f.stripeUnit, f.stripeCount, f.owner) for f in d.fileinfo}
    assert got == {"striped": (10 * GiB, MiB, 4, "curve"), "plain": (20 * GiB, 0, 0, "curve")}
    assert [f.filename for f in d.fileinfo] == cbd.Listdir(name, user)  # the MDS's order
    # A second Listdir sees what changed since.
    assert cbd.Unlink(f"{name}/plain", user) == 0
    assert cbd.Listdir(d) == 0
    assert d.dirsize == 1 and d.fileinfo[0].filename == "striped"
    cbd.CloseDir(d)
    assert (d.dirsize, d.fileinfo) == (0, [])
    assert cbd.Listdir(d) == FAILED
    cbd.CloseDir(d)  # closing twice is harmless
    cbd.CloseDir(None)


def test_listdir_dirinfo_failures(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    d = cbd.OpenDir(f"{name}-missing", user)
    assert cbd.Listdir(d) == NOTEXIST
    assert (d.dirsize, d.fileinfo) == (0, [])
    assert cbd.Listdir(cbd.OpenDir("/", user)) == AUTHFAIL
    assert cbd.Listdir(None) == FAILED
    assert cbd.Mkdir(name, user) == 0
    assert cbd.Listdir(cbd.OpenDir(name, make_user("someone-else"))) == AUTHFAIL
    assert curvefs.CBDClient().Listdir(cbd.OpenDir(name, user)) == FAILED  # not initialised


def test_listdir_of_an_empty_directory(
    cbd: curvefs.CBDClient, user: curvefs.UserInfo_t, name: str
) -> None:
    assert cbd.Mkdir(name, user) == 0
    d = cbd.OpenDir(name, user)
    d.dirsize = 7  # whatever was there is replaced
    assert cbd.Listdir(d) == 0
    assert (d.dirsize, d.fileinfo) == (0, [])


def test_dirinfo_shares_the_user(cbd: curvefs.CBDClient, root: curvefs.UserInfo_t) -> None:
    user = make_user("root")
    d = cbd.OpenDir("/", user)
    assert d.userinfo is user
    assert cbd.Listdir(d) == AUTHFAIL  # root without its password
    user.password = root.password
    assert cbd.Listdir(d) == 0
    assert "RecycleBin" in {f.filename for f in d.fileinfo}
