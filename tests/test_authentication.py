"""Upstream's authentication through the Python APIs and the commands, against a real local
cluster: every call that reaches the MDS (the ``Client`` calls with their asyncio twins),
made by each caller the MDS must refuse (a wrong root password, root without one, another
owner, an owner differing only in case), gives AUTHFAIL (-4) or ``CurveAuthError`` and
leaves the namespace as it was; the same calls by the owner and by root with its password
succeed. The core stamps the date and computes the signature itself, so stale and future
dates and forged signatures cannot be sent from Python: ``rust/curve-mds/tests/
authentication.rs`` sends those as raw requests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, make_user

AUTHFAIL = -4
OWNER = "alice"


@dataclass
class Tree:
    """One owner's files: a directory with a volume, an empty subdirectory and a volume
    deleted into the recycle bin."""

    top: str

    @property
    def vol(self) -> str:
        return f"{self.top}/vol"

    @property
    def sub(self) -> str:
        return f"{self.top}/sub"

    @property
    def gone(self) -> str:
        return f"{self.top}/gone"


def _build(cbd: curvefs.CBDClient, top: str) -> Tree:
    t = Tree(top)
    u = make_user(OWNER)
    assert cbd.Mkdir(t.top, u) == 0
    assert cbd.Create(t.vol, u, 10 * GiB) == 0
    assert cbd.Mkdir(t.sub, u) == 0
    assert cbd.Create(t.gone, u, 10 * GiB) == 0
    assert cbd.Unlink(t.gone, u) == 0
    return t


def _listdir(cbd: curvefs.CBDClient, path: str, u: curvefs.UserInfo_t) -> int:
    try:
        cbd.Listdir(path, u)
    except curvefs.CurveError as e:
        return e.code
    return 0


def _open(cbd: curvefs.CBDClient, path: str, u: curvefs.UserInfo_t) -> int:
    fd = cbd.Open(path, u)
    if fd < 0:
        return fd
    assert cbd.Close(fd) == 0
    return 0


CbdCall = Callable[[curvefs.CBDClient, Tree, curvefs.UserInfo_t], int]

# Every CBDClient call that reaches the MDS, in an order the owner can run them all in.
CBD_CALLS: list[tuple[str, CbdCall]] = [
    ("Create", lambda c, t, u: c.Create(f"{t.top}/new", u, 10 * GiB)),
    ("Mkdir", lambda c, t, u: c.Mkdir(f"{t.top}/newdir", u)),
    ("StatFile", lambda c, t, u: c.StatFile(t.vol, u, curvefs.FileInfo_t())),
    ("Extend", lambda c, t, u: c.Extend(t.vol, u, 20 * GiB)),
    ("Listdir", lambda c, t, u: _listdir(c, t.top, u)),
    ("Open", lambda c, t, u: _open(c, t.vol, u)),
    ("Rename", lambda c, t, u: c.Rename(u, t.vol, f"{t.top}/vol2")),
    ("Unlink", lambda c, t, u: c.Unlink(f"{t.top}/new", u)),
    ("Rmdir", lambda c, t, u: c.Rmdir(t.sub, u)),
    ("Recover", lambda c, t, u: c.Recover(t.gone, u)),
]
# Root's only, with the path it acts on.
ROOT_CALLS: list[tuple[str, CbdCall]] = [
    ("ChangeOwner", lambda c, t, u: c.ChangeOwner(f"{t.top}/vol2", "carol", u)),
]

REFUSED: list[tuple[str, curvefs.UserInfo_t]] = [
    ("wrong root password", make_user("root", "not-the-password")),
    ("root without a password", make_user("root")),
    ("another owner", make_user("bob")),
    ("an owner differing in case", make_user("Alice")),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as c:
        yield c


@pytest.fixture(scope="module")
def cbd(cluster: LocalCluster) -> Iterator[curvefs.CBDClient]:
    c = curvefs.CBDClient()
    assert c.Init(cluster.conf_path) == 0
    yield c
    c.UnInit()


def _root(cluster: LocalCluster) -> curvefs.UserInfo_t:
    return make_user("root", cluster.root_password)


def _namespace(cbd: curvefs.CBDClient, cluster: LocalCluster) -> list[tuple[str, str, int]]:
    """Every entry under "/" as root sees it: (path, owner, length)."""
    root = _root(cluster)
    out = []
    todo = ["/"]
    while todo:
        d = todo.pop()
        for name in cbd.Listdir(d, root):
            p = f"{d.rstrip('/')}/{name}"
            info = curvefs.FileInfo_t()
            assert cbd.StatFile(p, root, info) == 0, p
            out.append((p, info.owner, info.length))
            if info.filetype == 0:  # a directory
                todo.append(p)
    return sorted(out)


@pytest.mark.parametrize(("who", "user"), REFUSED, ids=[w for w, _ in REFUSED])
def test_cbdclient_refuses_every_call(
    cbd: curvefs.CBDClient, cluster: LocalCluster, who: str, user: curvefs.UserInfo_t
) -> None:
    tree = _build(cbd, f"/refused-{who.replace(' ', '-')}")
    before = _namespace(cbd, cluster)
    answers = {name: call(cbd, tree, user) for name, call in CBD_CALLS + ROOT_CALLS}
    # Renaming and changing the owner of the volume under its first name too.
    answers["ChangeOwner vol"] = cbd.ChangeOwner(tree.vol, "carol", user)
    assert answers == dict.fromkeys(answers, AUTHFAIL)
    assert _namespace(cbd, cluster) == before


def test_owner_and_root_may(cbd: curvefs.CBDClient, cluster: LocalCluster) -> None:
    owner = _build(cbd, "/as-owner")
    assert [(n, call(cbd, owner, make_user(OWNER))) for n, call in CBD_CALLS] == [
        (n, 0) for n, _ in CBD_CALLS
    ]
    # The owner may not give a file away; root may, anyone's.
    assert cbd.ChangeOwner(f"{owner.top}/vol2", "carol", make_user(OWNER)) == AUTHFAIL
    root_tree = _build(cbd, "/as-root")
    calls = CBD_CALLS + ROOT_CALLS
    root = _root(cluster)
    assert [(n, call(cbd, root_tree, root)) for n, call in calls] == [(n, 0) for n, _ in calls]
    info = curvefs.FileInfo_t()
    assert cbd.StatFile(f"{root_tree.top}/vol2", root, info) == 0
    assert info.owner == "carol"


def test_topology_calls_take_no_credentials(cbd: curvefs.CBDClient) -> None:
    # Upstream's TopologyService is not authenticated; neither call takes a user.
    assert len(cbd.GetClusterId()) == 36
    assert cbd.ListPoolset() == ["default"]


ClientCall = Callable[[curvefs.Client, Tree], object]

CLIENT_CALLS: list[tuple[str, ClientCall]] = [
    ("create", lambda c, t: c.create(f"{t.top}/new", 10 * GiB)),
    ("mkdir", lambda c, t: c.mkdir(f"{t.top}/newdir")),
    ("stat", lambda c, t: c.stat(t.vol)),
    ("extend", lambda c, t: c.extend(t.vol, 20 * GiB)),
    ("listdir", lambda c, t: c.listdir(t.top)),
    ("open", lambda c, t: c.open(t.vol).close()),
    ("rename", lambda c, t: c.rename(t.vol, f"{t.top}/vol2")),
    ("change_owner", lambda c, t: c.change_owner(t.vol, "carol")),
    ("remove", lambda c, t: c.remove(t.vol)),
    ("rmdir", lambda c, t: c.rmdir(t.sub)),
    ("recover", lambda c, t: c.recover(t.gone)),
]


async def _open_async(c: curvefs.Client, path: str) -> None:
    (await c.open_async(path)).close()


AsyncClientCall = Callable[[curvefs.Client, Tree], Awaitable[object]]

# The asyncio twins of the same calls.
ASYNC_CALLS: list[tuple[str, AsyncClientCall]] = [
    ("create_async", lambda c, t: c.create_async(f"{t.top}/new", 10 * GiB)),
    ("mkdir_async", lambda c, t: c.mkdir_async(f"{t.top}/newdir")),
    ("stat_async", lambda c, t: c.stat_async(t.vol)),
    ("extend_async", lambda c, t: c.extend_async(t.vol, 20 * GiB)),
    ("listdir_async", lambda c, t: c.listdir_async(t.top)),
    ("open_async", lambda c, t: _open_async(c, t.vol)),
    ("rename_async", lambda c, t: c.rename_async(t.vol, f"{t.top}/vol2")),
    ("change_owner_async", lambda c, t: c.change_owner_async(t.vol, "carol")),
    ("remove_async", lambda c, t: c.remove_async(t.vol)),
    ("rmdir_async", lambda c, t: c.rmdir_async(t.sub)),
    ("recover_async", lambda c, t: c.recover_async(t.gone)),
]


async def _raised_async(
    client: curvefs.Client, tree: Tree
) -> dict[str, type[BaseException] | None]:
    out: dict[str, type[BaseException] | None] = {}
    for name, call in ASYNC_CALLS:
        try:
            await call(client, tree)
            out[name] = None
        except curvefs.CurveError as e:
            out[name] = type(e)
    return out


def _raised(call: ClientCall, client: curvefs.Client, tree: Tree) -> type[BaseException] | None:
    try:
        call(client, tree)
    except curvefs.CurveError as e:
        return type(e)
    return None


@pytest.mark.parametrize(("who", "user"), REFUSED, ids=[w for w, _ in REFUSED])
def test_client_raises_permission_error(
    cbd: curvefs.CBDClient, cluster: LocalCluster, who: str, user: curvefs.UserInfo_t
) -> None:
    tree = _build(cbd, f"/py-{who.replace(' ', '-')}")
    before = _namespace(cbd, cluster)
    with curvefs.Client(cluster.conf_path, user=user.owner, password=user.password) as client:
        raised = {name: _raised(call, client, tree) for name, call in CLIENT_CALLS}
        raised |= asyncio.run(_raised_async(client, tree))
    assert len(raised) == len(CLIENT_CALLS) + len(ASYNC_CALLS)
    assert raised == dict.fromkeys(raised, curvefs.CurveAuthError)
    assert issubclass(curvefs.CurveAuthError, PermissionError)
    assert _namespace(cbd, cluster) == before


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("curvefs", ["--password", "not-the-password", "stat", "/"]),
        ("curve", ["stat", "--password", "not-the-password", "--filename", "/"]),
    ],
)
def test_commands_report_a_wrong_root_password(
    cluster: LocalCluster, tool: str, args: list[str]
) -> None:
    if tool == "curvefs":
        argv = ["-m", "curvefs", "--conf", cluster.conf_path, "--user", "root", *args]
    else:
        argv = ["-m", "curvefs.curve_tool", "--confpath", cluster.conf_path, *args]
        argv += ["--user", "root"]
    p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in p.stderr, p.stderr
    # curvefs: exit status 4 (AUTH); curve: upstream's "fail, ret = -4" line and status 1.
    if tool == "curvefs":
        assert p.returncode == 4, p.stderr
    else:
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert "-4" in p.stdout + p.stderr
