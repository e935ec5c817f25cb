"""The catalogue of bad input: one table of calls across both APIs, the module-level API,
the CLI and client.conf, each with the error it must give. Each runs against the real
cluster within a bound on its time; none may change the namespace; the ones that could
take the interpreter down run in a subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import curvefs
from curvefs.testing import LocalCluster
from tests.helpers import GiB, make_user

EXISTS, FAILED, AUTHFAIL, NOTEXIST, NOT_SUPPORT, PARAM_ERROR = -1, -2, -4, -6, -11, -16
NOT_ALIGNED, BAD_FD, LENGTH_NOT_SUPPORT, NO_SHRINK = -22, -23, -24, -13


@dataclass
class Env:
    cluster: LocalCluster
    cbd: curvefs.CBDClient
    client: curvefs.Client
    vol: curvefs.Volume
    fd: int
    path: str
    tmp: Path


@dataclass(frozen=True)
class Case:
    what: str
    call: Callable[[Env], Any]
    # An SDK code the call returns, or the exception class it raises.
    expect: int | type[BaseException]


U = make_user("curve")
ROOT_WRONG = make_user("root", "not-the-password")


def _cli(env: Env, *args: str) -> int:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "curvefs",
            "--conf",
            env.cluster.conf_path,
            "--user",
            "curve",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # One line on stderr, no traceback.
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode


def _open_before_init(env: Env) -> int:
    curvefs.UnInit()
    return curvefs.Open(env.path, U)


def _init(env: Env, text: str) -> int:
    conf = env.tmp / f"bad-{abs(hash(text))}.conf"
    conf.write_text(text)
    return curvefs.CBDClient().Init(str(conf))


# The wrong types below are the point of those cases: mypy is told so on each line.
CATALOGUE: list[Case] = [
    # CBDClient: codes, never exceptions, for bad values; TypeError for bad types.
    Case("Create of a relative path", lambda e: e.cbd.Create("rel", U, 10 * GiB), PARAM_ERROR),
    Case("Create with a negative size", lambda e: e.cbd.Create("/neg", U, -1), PARAM_ERROR),
    Case("Create with 2**70 bytes", lambda e: e.cbd.Create("/big", U, 1 << 70), PARAM_ERROR),
    Case(
        "Create of an unaligned size",
        lambda e: e.cbd.Create("/odd", U, 10 * GiB + 1),
        LENGTH_NOT_SUPPORT,
    ),
    Case("Create of an existing file", lambda e: e.cbd.Create(e.path, U, 10 * GiB), EXISTS),
    Case(
        "Create with an empty owner",
        lambda e: e.cbd.Create("/x", make_user(""), 10 * GiB),
        AUTHFAIL,
    ),
    Case(
        "Create with a str size",
        lambda e: e.cbd.Create("/x", U, "10"),  # type: ignore[arg-type]
        TypeError,
    ),
    Case(
        "Create with a None user",
        lambda e: e.cbd.Create("/x", None, 10 * GiB),  # type: ignore[arg-type]
        TypeError,
    ),
    Case("Mkdir of a path with '..'", lambda e: e.cbd.Mkdir("/a/../b", U), PARAM_ERROR),
    Case("Mkdir with a 256-byte name", lambda e: e.cbd.Mkdir("/" + "n" * 256, U), PARAM_ERROR),
    Case(
        "StatFile of a NUL path",
        lambda e: e.cbd.StatFile("/a\x00b", U, curvefs.FileInfo_t()),
        PARAM_ERROR,
    ),
    Case(
        "StatFile of a missing file",
        lambda e: e.cbd.StatFile("/nope-x", U, curvefs.FileInfo_t()),
        NOTEXIST,
    ),
    Case(
        "StatFile as another owner",
        lambda e: e.cbd.StatFile(e.path, make_user("eve"), curvefs.FileInfo_t()),
        AUTHFAIL,
    ),
    Case("Extend to a smaller size", lambda e: e.cbd.Extend(e.path, U, GiB), NO_SHRINK),
    Case(
        "Open of a directory",
        lambda e: e.cbd.Open("/", make_user("root", "root_password")),
        NOT_SUPPORT,
    ),
    Case("Read on an unknown fd", lambda e: e.cbd.Read(987654, "", 0, 4096), BAD_FD),
    Case("Read with a negative fd", lambda e: e.cbd.Read(-1, "", 0, 4096), PARAM_ERROR),
    Case("Read unaligned", lambda e: e.cbd.Read(e.fd, "", 1, 4096), NOT_ALIGNED),
    Case("Read past the end", lambda e: e.cbd.Read(e.fd, "", 10 * GiB, 4096), FAILED),
    Case("Read of 2**62 bytes", lambda e: e.cbd.Read(e.fd, "", 0, 1 << 62), FAILED),
    Case("Write longer than buf", lambda e: e.cbd.Write(e.fd, b"x" * 4096, 0, 8192), PARAM_ERROR),
    Case("Write unaligned", lambda e: e.cbd.Write(e.fd, b"x" * 4096, 512, 4096), NOT_ALIGNED),
    Case(
        "Write of a non-buffer",
        lambda e: e.cbd.Write(e.fd, 42, 0, 4096),  # type: ignore[arg-type]
        TypeError,
    ),
    Case(
        "Write of invalid UTF-8", lambda e: e.cbd.Write(e.fd, "\udcff" * 4096, 0, 4096), PARAM_ERROR
    ),
    Case("Close of an unknown fd", lambda e: e.cbd.Close(987654), BAD_FD),
    Case("Rename onto itself's parent", lambda e: e.cbd.Rename(U, e.path, "/"), PARAM_ERROR),
    Case("ChangeOwner as a non-root", lambda e: e.cbd.ChangeOwner(e.path, "eve", U), AUTHFAIL),
    Case(
        "ChangeOwner with a wrong root password",
        lambda e: e.cbd.ChangeOwner(e.path, "eve", ROOT_WRONG),
        AUTHFAIL,
    ),
    # Authentication (the MDS's refusals; dates and signatures: rust/curve-mds/tests).
    Case(
        "Create with a wrong root password",
        lambda e: e.cbd.Create("/root-made", ROOT_WRONG, 10 * GiB),
        AUTHFAIL,
    ),
    Case("Open as another owner", lambda e: e.cbd.Open(e.path, make_user("eve")), AUTHFAIL),
    Case(
        "Unlink as root without a password",
        lambda e: e.cbd.Unlink(e.path, make_user("root")),
        AUTHFAIL,
    ),
    Case(
        "Rename as another owner",
        lambda e: e.cbd.Rename(make_user("eve"), e.path, "/eve-took-it"),
        AUTHFAIL,
    ),
    Case(
        "Client.listdir with a wrong root password",
        lambda e: curvefs.Client(e.cluster.conf_path, user="root", password="x").listdir("/"),
        PermissionError,
    ),
    # Paths that could point elsewhere: refused before any RPC.
    Case(
        "Open through '/RecycleBin/..'",
        lambda e: e.cbd.Open("/RecycleBin/../catalogue-vol", U),
        PARAM_ERROR,
    ),
    Case("Rename to a path with '//'", lambda e: e.cbd.Rename(U, e.path, "/a//b"), PARAM_ERROR),
    Case("Unlink of '/.'", lambda e: e.cbd.Unlink("/.", U), PARAM_ERROR),
    Case(
        "Extend of a path with a trailing '/'",
        lambda e: e.cbd.Extend(e.path + "/", U, 20 * GiB),
        PARAM_ERROR,
    ),
    Case("Recover of a NUL path", lambda e: e.cbd.Recover("/x\x00y", U), PARAM_ERROR),
    Case(
        "Create of a path over 4096 bytes",
        lambda e: e.cbd.Create("/" + "/".join(["d" * 200] * 21), U, 10 * GiB),
        PARAM_ERROR,
    ),
    Case("Listdir of '//' raises", lambda e: e.cbd.Listdir("//", U), curvefs.CurveParamError),
    Case(
        "Client.open of a '..' path",
        lambda e: e.client.open("/x/../catalogue-vol"),
        ValueError,
    ),
    Case(
        "DeleteForce outside /RecycleBin",
        lambda e: e.cbd.DeleteForce(e.path, make_user("root", "root_password")),
        NOT_SUPPORT,
    ),
    Case("Listdir of a file raises", lambda e: e.cbd.Listdir(e.path, U), curvefs.CurveError),
    Case(
        "AioRead without a buffer",
        lambda e: e.cbd.AioRead(e.fd, curvefs.AioContext_t(length=4096)),
        PARAM_ERROR,
    ),
    Case(
        "AioRead into a read-only buffer",
        lambda e: e.cbd.AioRead(e.fd, curvefs.AioContext_t(length=4096, buf=b"r" * 4096)),
        PARAM_ERROR,
    ),
    Case(
        "AioWrite of a short buffer",
        lambda e: e.cbd.AioWrite(e.fd, curvefs.AioContext_t(length=8192, buf=b"w" * 10)),
        PARAM_ERROR,
    ),
    # The module-level API before Init.
    Case("module Open before Init", _open_before_init, FAILED),
    Case("module Open4Qemu without an owner", lambda e: curvefs.Open4Qemu("/no-owner"), FAILED),
    # The Pythonic API: typed exceptions.
    Case("Client.stat of a missing file", lambda e: e.client.stat("/nope-y"), FileNotFoundError),
    Case(
        "Client.create of an existing file",
        lambda e: e.client.create(e.path, 10 * GiB),
        FileExistsError,
    ),
    Case(
        "Client.stat as another owner",
        lambda e: curvefs.Client(e.cluster.conf_path, user="eve").stat(e.path),
        PermissionError,
    ),
    Case(
        "Client.create of a relative path", lambda e: e.client.create("rel", 10 * GiB), ValueError
    ),
    Case("Client.rmdir of a non-empty directory", lambda e: e.client.rmdir("/"), OSError),
    Case(
        "Client with an unknown option",
        lambda e: curvefs.Client(e.cluster.conf_path, user="c", bogus=1),  # type: ignore[call-arg]
        TypeError,
    ),
    Case(
        "Client with a newline in an option",
        lambda e: curvefs.Client(
            e.cluster.conf_path,
            user="c",
            global_log_path="a\nb",  # type: ignore[call-arg]
        ),
        TypeError,
    ),
    Case("Client without conf or addresses", lambda e: curvefs.Client(user="c"), TypeError),
    Case("Volume.pread at a negative offset", lambda e: e.vol.pread(10, -1), ValueError),
    Case(
        "Volume.pwrite past the end",
        lambda e: e.vol.pwrite(b"x", 10 * GiB),
        curvefs.CurveFailedError,
    ),
    Case(
        "Volume.pwrite of a str",
        lambda e: e.vol.pwrite("text", 0),  # type: ignore[arg-type]
        TypeError,
    ),
    Case("Volume.truncate", lambda e: e.vol.truncate(0), io.UnsupportedOperation),
    Case("Volume.seek before the start", lambda e: e.vol.seek(-1), ValueError),
    Case("Volume.seek with a bad whence", lambda e: e.vol.seek(0, 7), ValueError),
    Case(
        "Volume.preadinto a non-contiguous view",
        lambda e: e.vol.preadinto(memoryview(bytearray(8))[::2], 0),
        TypeError,
    ),
    Case("Volume.discard with a negative length", lambda e: e.vol.discard(0, -1), ValueError),
    # client.conf.
    Case("conf without mds.listen.addr", lambda e: _init(e, "mds.rpcTimeoutMS=500\n"), -1),
    Case("conf with a bad address", lambda e: _init(e, "mds.listen.addr=localhost\n"), -1),
    Case(
        "conf with a non-number",
        lambda e: _init(e, "mds.listen.addr=127.0.0.1:1\nmds.rpcTimeoutMS=soon\n"),
        -1,
    ),
    Case(
        "conf with a zero timeout",
        lambda e: _init(e, "mds.listen.addr=127.0.0.1:1\nmds.rpcTimeoutMS=0\n"),
        -1,
    ),
    Case(
        "conf with an unknown transport",
        lambda e: _init(e, "mds.listen.addr=127.0.0.1:1\nmds.transport=tcp\n"),
        -1,
    ),
    Case(
        "conf that does not exist",
        lambda e: curvefs.CBDClient().Init(str(e.tmp / "missing.conf")),
        -1,
    ),
    # The command line: distinct exit codes, no traceback.
    Case("curvefs stat of a missing volume", lambda e: _cli(e, "stat", "/nope-z"), 3),
    Case("curvefs create with a bad size", lambda e: _cli(e, "create", "/bad-size", "ten"), 2),
    Case("curvefs create of an existing volume", lambda e: _cli(e, "create", e.path, "10G"), 5),
    Case("curvefs with an unknown command", lambda e: _cli(e, "frobnicate"), 2),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with LocalCluster() as cluster:
        cbd = curvefs.CBDClient()
        assert cbd.Init(cluster.conf_path) == 0
        path = "/catalogue-vol"
        assert cbd.Create(path, U, 10 * GiB) == 0
        fd = cbd.Open(path, U)
        client = curvefs.Client(cluster.conf_path, user="curve")
        vol = client.open(path)
        yield Env(cluster, cbd, client, vol, fd, path, tmp_path_factory.mktemp("catalogue"))
        vol.close()
        client.close()
        cbd.Close(fd)
        cbd.UnInit()


def _namespace(cluster: LocalCluster) -> list[tuple[str, int]]:
    root = curvefs.Client(cluster.conf_path, user="root", password=cluster.root_password)
    names = sorted(root.listdir("/"))
    return [(n, root.stat(f"/{n}").length) for n in names]


def test_the_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 40
    assert len({c.what for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.what for c in CATALOGUE])
def test_bad_input(env: Env, case: Case) -> None:
    before = _namespace(env.cluster)
    started = time.monotonic()
    if isinstance(case.expect, int):
        assert case.call(env) == case.expect
    else:
        with pytest.raises(case.expect):
            case.call(env)
    assert time.monotonic() - started < 30, "answered promptly"
    assert _namespace(env.cluster) == before, "the namespace is unchanged"


_CRASHY = """
import curvefs, gc
from curvefs.testing import LocalCluster
with LocalCluster() as cluster:
    c = curvefs.Client(cluster.conf_path, user="curve")
    c.create("/v", 10 * 2**30)
    v = c.open("/v")
    # A buffer released while referenced, an exporter resized after a read, a volume used
    # after its client is gone, and a handle closed twice: errors, never a crash.
    m = memoryview(bytearray(4096)); m.release()
    for call in (lambda: v.preadinto(m, 0), lambda: v.pwrite(m, 0)):
        try:
            call()
        except ValueError:
            pass
    b = bytearray(4096); v.preadinto(b, 0); b.extend(b"more")
    c.close(); del c; gc.collect()
    try:
        v.pread(1, 0)
    except ValueError:
        pass
    v.close(); v.close()
    cbd = curvefs.CBDClient(); cbd.UnInit(); cbd.UnInit()
    print("survived")
"""


def test_inputs_that_could_crash_run_in_a_subprocess() -> None:
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CRASHY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and p.stdout.strip() == "survived", p.stderr
