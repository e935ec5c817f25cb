"""The ``curvefs`` command: each command's success, failure (with its exit status) and
``--json``, run as a subprocess of the installed console script against real local clusters;
``put``/``get`` of a sparse image; the progress bar on a pseudo-terminal and not elsewhere."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import curvefs
from curvefs import cli
from curvefs import exceptions as ex
from curvefs.cli import Exit
from curvefs.testing import LocalCluster
from tests.helpers import GiB, MiB, child, interruptible, readline

CURVEFS = str(Path(sys.executable).parent / "curvefs")
NAMES = ["cluster", "create", "stat", "ls", "rm", "recover", "mv", "mkdir", "rmdir", "extend",
         "chown", "put", "get", "bench"]  # fmt: skip
COMMANDS = [
    ["cluster"],
    ["cluster", "start"],
    *([c] for c in NAMES[1:]),
]


def env_of(conf: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVEFS_")}
    if "CURVEFS_TRANSPORT" in os.environ:  # keep the wire the suite runs over
        env["CURVEFS_TRANSPORT"] = os.environ["CURVEFS_TRANSPORT"]
    if conf is not None:
        env["CURVEFS_CONF"] = conf
    env.update(extra)
    return env


def run(
    *args: str,
    conf: str | None = None,
    user: str | None = "curve",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [CURVEFS, *args]
    if user is not None:
        argv += ["--user", user]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        env=env or env_of(conf),
        stdin=subprocess.DEVNULL,
    )


class Cli:
    """``curvefs`` against one cluster, as ``curve`` by default."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.conf = cluster.conf_path

    def __call__(self, *args: str, user: str | None = "curve") -> subprocess.CompletedProcess[str]:
        return run(*args, conf=self.conf, user=user)

    def root(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self(*args, "--password", self.cluster.root_password, user="root")

    def ok(self, *args: str, user: str | None = "curve") -> str:
        p = self(*args, user=user)
        assert (p.returncode, p.stderr) == (0, ""), p
        return p.stdout

    def fails(self, *args: str, status: Exit, match: str, user: str | None = "curve") -> None:
        p = self(*args, user=user)
        assert p.returncode == status, p
        assert p.stdout == "", p
        line = p.stderr.strip().splitlines()[-1]
        assert line.startswith("curvefs "), p
        assert match in line, p


@pytest.fixture
def sh(cluster: LocalCluster) -> Cli:
    return Cli(cluster)


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[curvefs.Client]:
    with curvefs.Client(cluster.conf_path, user="curve") as c:
        yield c


@pytest.fixture
def root_client(cluster: LocalCluster) -> Iterator[curvefs.Client]:
    with curvefs.Client(cluster.conf_path, user="root", password=cluster.root_password) as c:
        yield c


# -- the parser, sizes and exit statuses (in process) -------------------------------------


def test_console_script_is_installed() -> None:
    assert os.access(CURVEFS, os.X_OK)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_on_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: curvefs {' '.join(command)}")


def test_top_level_help_lists_commands_and_exit_statuses() -> None:
    p = run("--help", user=None)
    assert p.returncode == 0, p
    for command in NAMES:
        assert f"    {command} " in p.stdout
    assert "exit status: 0 ok, 1 error, 2 usage, 3 not found, 4 auth" in " ".join(p.stdout.split())


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("10G", 10 * GiB),
        ("10g", 10 * GiB),
        ("10GiB", 10 * GiB),
        ("10GB", 10 * GiB),
        ("512M", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("64k", 64 << 10),
        ("1.5G", 3 * GiB // 2),
        ("2T", 2 << 40),
        ("7B", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert cli.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "10Q", "-1G", "1.5", "10 GiBs", "0x10"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        cli.parse_size(text)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ex.CurveNotExistError(-6), Exit.NOT_FOUND),
        (ex.CurveAuthError(-4), Exit.AUTH),
        (ex.CurveExistsError(-1), Exit.EXISTS),
        (ex.CurveNotEmptyError(-12), Exit.BUSY),
        (ex.CurveFileOccupiedError(-15), Exit.BUSY),
        (ex.CurveParamError(-16), Exit.USAGE),
        (ex.CurveLengthNotSupportError(-24), Exit.USAGE),
        (ex.CurveNoShrinkError(-13), Exit.USAGE),
        (ex.CurveFailedError(-2), Exit.ERROR),
        (ex.CurveDisableIoError(-3), Exit.ERROR),
        (ex.from_code(-100), Exit.ERROR),
        (KeyboardInterrupt(), Exit.INTERRUPTED),
        (cli.Failure(Exit.LOCAL, "x"), Exit.LOCAL),
    ],
)
def test_exit_status_of_each_failure(exc: BaseException, status: Exit) -> None:
    assert cli.exit_code(exc) is status


def test_exit_statuses_are_distinct() -> None:
    values = [int(e) for e in Exit]
    assert len(set(values)) == len(values)


# -- global options: flags, environment, conf, user --------------------------------------


def test_options_from_environment(cluster: LocalCluster, name: str) -> None:
    env = env_of(cluster.conf_path, CURVEFS_USER="root", CURVEFS_PASSWORD=cluster.root_password)
    p = run("mkdir", name, user=None, env=env)
    assert (p.returncode, p.stderr) == (0, ""), p
    p = run("stat", name, "--json", user=None, env=env)
    assert p.returncode == 0, p
    assert json.loads(p.stdout)["owner"] == "root"
    # A flag wins over the environment, before or after the command.
    p = run("--password", "wrong", "stat", name, user=None, env=env)
    assert p.returncode == Exit.AUTH, p
    p = run("stat", name, "--password", "wrong", user=None, env=env)
    assert p.returncode == Exit.AUTH, p
    p = run("--conf", "/nonexistent.conf", "stat", name, user=None, env=env)
    assert p.returncode == Exit.USAGE, p


def test_no_user(sh: Cli, name: str) -> None:
    sh.fails(
        "stat",
        name,
        status=Exit.USAGE,
        match="no user: pass --user or set $CURVEFS_USER",
        user=None,
    )


def test_unreadable_or_unusable_conf(tmp_path: Path, name: str) -> None:
    p = run("--conf", str(tmp_path / "missing.conf"), "stat", name)
    assert p.returncode == Exit.USAGE, p
    missing = f"{tmp_path}/missing.conf: No such file or directory"
    assert p.stderr == f"curvefs stat: cannot read the client.conf {missing}\n"
    (tmp_path / "empty.conf").write_text("global.logLevel=0\n")
    p = run("--conf", str(tmp_path / "empty.conf"), "stat", name)
    assert p.returncode == Exit.USAGE, p
    assert "is not usable" in p.stderr and "mds.listen.addr" in p.stderr


def test_unreachable_mds_is_a_curve_error(tmp_path: Path, name: str) -> None:
    conf = tmp_path / "down.conf"
    conf.write_text("mds.listen.addr=127.0.0.1:1\nmds.maxRetryMS=300\nmds.rpcTimeoutMS=100\n")
    p = run("--conf", str(conf), "stat", name)
    assert p.returncode == Exit.ERROR, p
    assert p.stderr.count("\n") == 1 and "(FAILED, -2)" in p.stderr, p


def test_bad_argument(sh: Cli, name: str) -> None:
    for args in (["create", name, "ten"], ["create"], ["extend", name], ["nope"], [],
                 ["get", name, "x", "--jobs", "0"]):  # fmt: skip
        p = sh(*args)
        assert p.returncode == Exit.USAGE, p
        assert p.stderr.startswith("usage: curvefs"), p


# -- namespace commands ------------------------------------------------------------------


def test_create(sh: Cli, client: curvefs.Client, name: str) -> None:
    assert sh.ok("create", name, "10G") == ""
    assert client.stat(name).length == 10 * GiB
    sh.fails("create", name, "10G", status=Exit.EXISTS, match="already exists (EXISTS, -1)")
    sh.fails("create", name + "x", "5G", status=Exit.USAGE, match="(LENGTH_NOT_SUPPORT, -24)")
    sh.fails("create", "relative", "10G", status=Exit.USAGE, match="(PARAM_ERROR, -16)")
    sh.fails("create", f"{name}-no/a", "10G", status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")
    sh.fails("create", f"{name}/a", "10G", status=Exit.ERROR, match="kNotDirectory (UNKNOWN, -100)")


def test_create_json_striped(sh: Cli, client: curvefs.Client, name: str) -> None:
    out = json.loads(
        sh.ok("create", name, "10GiB", "--stripe-unit", "64K", "--stripe-count", "4", "--json")
    )
    info = client.stat(name)
    assert out == cli.info_dict(info)
    assert (out["name"], out["owner"], out["length"]) == (name[1:], "curve", 10 * GiB)
    assert (out["file_type"], out["status"], out["stripe_unit"], out["stripe_count"]) == (
        "PAGEFILE", "CREATED", 64 << 10, 4)  # fmt: skip


def test_stat(sh: Cli, client: curvefs.Client, name: str) -> None:
    client.create(name, 10 * GiB)
    out = sh.ok("stat", name)
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["path"] == name and lines["type"] == "PAGEFILE" and lines["owner"] == "curve"
    assert lines["length"] == "10 GiB (10737418240 bytes)"
    js = json.loads(sh.ok("stat", name, "--json"))
    info = client.stat(name)
    assert js["id"] == info.id and js["ctime"] == info.ctime.isoformat()
    sh.fails(
        "stat",
        name + "x",
        status=Exit.NOT_FOUND,
        match="no such volume or directory (NOTEXIST, -6)",
    )
    sh.fails("stat", name + "x", "--json", status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")


def test_ls(sh: Cli, client: curvefs.Client, name: str) -> None:
    client.mkdir(name)
    client.create(f"{name}/b", 10 * GiB)
    client.mkdir(f"{name}/a")
    assert sh.ok("ls", name) == "a\nb\n"
    long = sh.ok("ls", "-l", name).splitlines()
    assert (long[0].split()[0], long[0].split()[-1]) == ("dir", "a")
    assert long[1].split()[:3] == ["file", "curve", str(10 * GiB)] and long[1].endswith(" b")
    js = json.loads(sh.ok("ls", name, "--json"))
    assert [e["name"] for e in js] == ["a", "b"]
    assert [e["file_type"] for e in js] == ["DIRECTORY", "PAGEFILE"]
    assert js[1] == cli.info_dict(client.stat(f"{name}/b"))
    assert json.loads(sh.ok("ls", f"{name}/a", "--json")) == []
    sh.fails("ls", name + "x", status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")
    sh.fails("ls", "/", status=Exit.AUTH, match="(AUTHFAIL, -4)")  # / is root's
    assert "RecycleBin" in sh.root("ls", "/").stdout.split()


def test_ls_lists_entries_it_cannot_stat(sh: Cli, root_client: curvefs.Client, name: str) -> None:
    # A directory of curve's holding a file of bob's: curve lists it but may not stat it.
    root_client.mkdir(name)
    root_client.change_owner(name, "curve")
    root_client.create(f"{name}/bobs", 10 * GiB)
    root_client.change_owner(f"{name}/bobs", "bob")
    assert sh.ok("ls", name) == "bobs\n"
    js = json.loads(sh.ok("ls", name, "--json"))
    assert js in ([{"name": "bobs"}], [cli.info_dict(root_client.stat(f"{name}/bobs"))])


def test_rm_and_recover(sh: Cli, client: curvefs.Client, name: str) -> None:
    client.create(name, 10 * GiB)
    assert sh.ok("rm", name) == ""
    with pytest.raises(FileNotFoundError):
        client.stat(name)
    sh.fails("rm", name, status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")
    assert sh.ok("recover", name) == ""
    assert client.stat(name).length == 10 * GiB
    sh.fails("recover", name + "x", status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")
    sh.fails("rm", name, status=Exit.AUTH, match="(AUTHFAIL, -4)", user="bob")


def test_mv(sh: Cli, client: curvefs.Client, name: str) -> None:
    client.create(name, 10 * GiB)
    client.create(name + "-other", 10 * GiB)
    assert sh.ok("mv", name, name + "-new") == ""
    assert client.stat(name + "-new").length == 10 * GiB
    sh.fails("mv", name, name + "-2", status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")


def test_mkdir_and_rmdir(sh: Cli, client: curvefs.Client, name: str) -> None:
    assert sh.ok("mkdir", name) == ""
    assert client.stat(name).file_type is curvefs.FileType.DIRECTORY
    sh.fails("mkdir", name, status=Exit.EXISTS, match="(EXISTS, -1)")
    client.create(f"{name}/v", 10 * GiB)
    sh.fails("rmdir", name, status=Exit.BUSY, match="the directory is not empty (NOT_EMPTY, -12)")
    sh.fails(
        "rmdir", f"{name}/v", status=Exit.USAGE, match="is not a directory (use rm for volumes)"
    )
    client.remove(f"{name}/v")
    assert sh.ok("rmdir", name) == ""
    sh.fails("rmdir", name, status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")


def test_extend(sh: Cli, client: curvefs.Client, name: str) -> None:
    client.create(name, 10 * GiB)
    assert sh.ok("extend", name, "20G") == ""
    assert client.stat(name).length == 20 * GiB
    js = json.loads(sh.ok("extend", name, "21GiB", "--json"))
    assert js["length"] == 21 * GiB
    sh.fails("extend", name, "10G", status=Exit.USAGE, match="volumes cannot shrink")
    sh.fails("extend", name + "x", "30G", status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")


def test_chown(sh: Cli, cluster: LocalCluster, client: curvefs.Client, name: str) -> None:
    client.create(name, 10 * GiB)
    sh.fails("chown", name, "bob", status=Exit.AUTH, match="(AUTHFAIL, -4)")
    p = run("chown", name, "bob", "--password", "wrong", conf=sh.conf, user="root")
    assert p.returncode == Exit.AUTH, p
    assert "refused (wrong user or password, or not allowed)" in p.stderr
    p = sh.root("chown", name, "bob")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), p
    with curvefs.Client(cluster.conf_path, user="bob") as bob:
        assert bob.stat(name).owner == "bob"
    p = sh.root("chown", name + "x", "bob")
    assert p.returncode == Exit.NOT_FOUND, p


# -- put and get -------------------------------------------------------------------------


IMAGE = 64 * MiB


CHUNK = 16 * MiB  # the local cluster's chunk size


def sparse_image(path: Path, seed: int = 0) -> list[tuple[int, int]]:
    """A 64 MiB image: a few MiB of random data at scattered (unaligned) offsets in its first
    and third 16 MiB chunks, the rest (the second and fourth chunks whole) holes; returns the
    (offset, length) of each piece."""
    rng = random.Random(seed)
    pieces = []
    with open(path, "wb") as f:
        f.truncate(IMAGE)
        for i in range(10):
            base = (i % 2) * 2 * CHUNK + (i // 2) * CHUNK // 5
            offset = rng.randrange(base, base + CHUNK // 5 - 600_000)
            length = rng.randrange(1000, 600_000)
            f.seek(offset)
            f.write(rng.randbytes(length))
            pieces.append((offset, length))
    assert os.stat(path).st_blocks * 512 < 8 * MiB
    return pieces


def chunks_on_disk(cluster: LocalCluster) -> dict[str, int]:
    """The chunks the chunkservers hold (sparse files), each with the fewest bytes any of
    its replicas has allocated (a replica that caught up may hold a dense copy)."""
    chunks: dict[str, int] = {}
    for p in Path(cluster.data_dir).glob("chunkserver-*/copysets/*/chunk_*"):
        if p.suffix:  # chunk_N.sn: the chunk's sequence number
            continue
        used = p.stat().st_blocks * 512
        chunks[p.name] = min(used, chunks.get(p.name, used))
    return chunks


def test_put_then_get_sparse_image(tmp_path: Path) -> None:
    # A cluster of its own, so that its chunks on disk are this image's only.
    with LocalCluster(copysets=8) as cluster:
        sh = Cli(cluster)
        image = tmp_path / "image.raw"
        pieces = sparse_image(image)
        data = sum(n for _, n in pieces)
        put = json.loads(sh.ok("put", str(image), "/img", "--json"))
        assert put["command"] == "put" and put["bytes"] == IMAGE
        assert data <= put["bytes_written"] < data + 2 * len(pieces) * cli.ZERO_GRAIN
        assert put["bytes_skipped"] == IMAGE - put["bytes_written"]
        # The zero blocks were not written: the chunks of holes do not exist, and the
        # others hold the data, not 16 MiB each.
        on_disk = chunks_on_disk(cluster)
        assert len(on_disk) == 2, on_disk
        assert data <= sum(on_disk.values()) <= put["bytes_written"] + 64 * 4096, on_disk
        with curvefs.Client(cluster.conf_path, user="curve") as client:
            assert client.stat("/img").length == 10 * GiB  # rounded up to the minimum
            with client.open("/img") as vol:
                expected = image.read_bytes()
                assert vol.pread(IMAGE, 0) == expected
                assert vol.pread(MiB, IMAGE) == bytes(MiB)

        out = tmp_path / "out.raw"
        get = json.loads(sh.ok("get", "/img", str(out), "--length", "64M", "--json"))
        assert get["bytes"] == IMAGE and get["bytes_written"] < 8 * MiB
        assert out.read_bytes() == expected
        st = os.stat(out)
        assert st.st_size == IMAGE
        assert st.st_blocks * 512 < 8 * MiB  # the holes are kept
        # The human summary, and the whole volume by default (its tail is all holes).
        summary = sh.ok("get", "/img", str(out))
        assert summary.startswith(f"get /img -> {out}: 10 GiB in ")
        assert os.stat(out).st_size == 10 * GiB and os.stat(out).st_blocks * 512 < 8 * MiB
        with open(out, "rb") as f:
            assert f.read(IMAGE) == expected


def test_put_and_get_stats(sh: Cli, tmp_path: Path, name: str) -> None:
    image = tmp_path / "dense.raw"
    image.write_bytes(os.urandom(8 * MiB))
    put = json.loads(
        sh.ok("put", str(image), name, "--stats", "--block-size", "1M", "--json", "--jobs", "2")
    )
    st = put["stats"]
    # 8 writes of 1 MiB, each split into chunk requests of at most 64 KiB
    # (global.fileIOSplitMaxSizeKB).
    assert st["ops"] == 8 and st["rpcs"] == 8 * 16 and st["errors"] == 0
    assert st["iops"] > 0 and st["mib_per_s"] > 0
    lat = st["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    text = sh.ok("get", name, str(tmp_path / "back.raw"), "--length", "8M", "--stats")
    line = text.splitlines()[-1]
    assert line.startswith("stats: 2 reads, ") and "p99" in line and "chunk RPCs" in line
    assert (tmp_path / "back.raw").read_bytes() == image.read_bytes()


def test_put_fails(sh: Cli, client: curvefs.Client, tmp_path: Path, name: str) -> None:
    image = tmp_path / "small.raw"
    image.write_bytes(b"x" * 5000)
    sh.fails("put", str(tmp_path / "missing.raw"), name, status=Exit.LOCAL,
             match=f"cannot read {tmp_path}/missing.raw: No such file or directory")  # fmt: skip
    sh.fails("put", str(image), name, "--size", "5G", status=Exit.USAGE, match="LENGTH_NOT_SUPPORT")
    sh.fails("put", str(image), f"{name}/in/missing/dir", status=Exit.NOT_FOUND, match="NOTEXIST")
    assert sh.ok("put", str(image), name).startswith(f"put {image} -> {name}: 4.9 KiB in ")
    sh.fails(
        "put", str(image), name, status=Exit.EXISTS, match="exists (--overwrite writes into it)"
    )
    # --overwrite writes every block, zeros too: the old data does not show through.
    zeros = tmp_path / "zeros.raw"
    zeros.write_bytes(bytes(8192))
    js = json.loads(sh.ok("put", str(zeros), name, "--overwrite", "--json"))
    assert (js["bytes"], js["bytes_written"], js["bytes_skipped"]) == (8192, 8192, 0)
    with client.open(name) as vol:
        assert vol.pread(8192, 0) == bytes(8192)
    sh.fails("put", str(image), name, "--overwrite", status=Exit.AUTH, match="AUTHFAIL", user="bob")


def test_get_fails(sh: Cli, client: curvefs.Client, tmp_path: Path, name: str) -> None:
    sh.fails("get", name, str(tmp_path / "out"), status=Exit.NOT_FOUND, match="(NOTEXIST, -6)")
    assert not (tmp_path / "out").exists()
    client.create(name, 10 * GiB)
    sh.fails("get", name, str(tmp_path / "no" / "out"), status=Exit.LOCAL,
             match=f"cannot write {tmp_path}/no/out: No such file or directory")  # fmt: skip
    sh.fails("get", name, str(tmp_path / "out"), "--length", "11G", status=Exit.USAGE,
             match="past the end")  # fmt: skip


def with_pty(argv: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """Runs argv with stdin, stdout and stderr on a pseudo-terminal; its exit status and
    everything it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    out = b""
    with child(list(argv), stdin=slave, stdout=slave, stderr=slave, env=env) as proc:
        os.close(slave)
        try:
            while True:
                ready, _, _ = select.select([master], [], [], 60)
                if not ready:
                    raise AssertionError(f"{argv}: silent on its terminal for 60 s after {out!r}")
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(master)
        return proc.wait(timeout=60), out.decode()


def test_progress_bar_on_a_terminal_only(sh: Cli, tmp_path: Path, name: str) -> None:
    image = tmp_path / "image.raw"
    sparse_image(image, seed=1)
    argv = [CURVEFS, "--user", "curve"]
    env = env_of(sh.conf)
    status, out = with_pty([*argv, "put", str(image), name], env)
    assert status == 0, out
    # tqdm's line: the description, a bar, bytes done of total, elapsed<left, rate.
    final = out.replace("\r\n", "\n").split("\r")[-1].splitlines()[0]
    assert final.startswith(f"put {name}: 100%|"), out
    assert "64.0MiB/64.0MiB [" in final and "<00:00" in final and "iB/s]" in final, out
    assert f"put {image} -> {name}: 64 MiB in " in out
    status, out = with_pty([*argv, "get", name, str(tmp_path / "o"), "--length", "64M"], env)
    assert status == 0 and f"get {name}: 100%|" in out, out
    # Not on pipes, unless asked; never when told never.
    p = sh("get", name, str(tmp_path / "o"), "--length", "64M")
    assert (p.returncode, p.stderr) == (0, ""), p
    p = sh("get", name, str(tmp_path / "o"), "--length", "64M", "--progress", "always")
    assert p.returncode == 0 and f"get {name}: 100%|" in p.stderr, p
    status, out = with_pty([*argv, "get", name, str(tmp_path / "o"), "--length", "64M",
                            "--progress", "never"], env)  # fmt: skip
    assert status == 0 and "%|" not in out and out.startswith(f"get {name} -> "), out


def test_interrupted(sh: Cli, client: curvefs.Client, tmp_path: Path, name: str) -> None:
    client.create(name, 10 * GiB)
    argv = [CURVEFS, "--user", "curve", "get", name, str(tmp_path / "out"), "--jobs", "1",
            "--block-size", "64K", "--progress", "always"]  # fmt: skip
    with child(
        interruptible(argv),
        env=env_of(sh.conf),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        # The copy (10 GiB, 64 KiB at a time: seconds) is under way once the bar has shown
        # bytes copied: a redraw that is not "  0%". Read straight from the pipe, so that
        # communicate() below still gets everything after.
        seen = b""
        deadline = time.monotonic() + 60
        while not re.search(rb"\r[^\r]*: +[1-9]\d*%", seen):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stderr], [], [], max(left, 0))
            assert ready and left > 0, f"`curvefs get` showed no progress in 60 s: {seen!r}"
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"`curvefs get` closed stderr: {seen!r}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == Exit.INTERRUPTED, (out, err)
    assert err.rstrip().endswith("curvefs get: interrupted"), err
    assert out == ""


# -- bench and cluster start -------------------------------------------------------------


def test_bench_against_a_cluster(sh: Cli, client: curvefs.Client) -> None:
    t0 = time.monotonic()
    js = json.loads(sh.ok("bench", "--seconds", "0.2", "--jobs", "2", "--json"))
    took = time.monotonic() - t0
    assert took < 30, f"four 0.2 s bench runs took {took:.0f} s"
    assert js["cluster"] == sh.conf
    assert [r["test"] for r in js["results"]] == [
        "seq write",
        "seq read",
        "rand write",
        "rand read",
    ]
    for r in js["results"]:
        assert r["ops"] > 0 and r["iops"] > 0 and r["mib_per_s"] > 0 and r["jobs"] == 2
        assert r["mean_latency_ms"] > 0
        assert 0 < r["p50_latency_ms"] <= r["p99_latency_ms"]
    assert [r["block_size"] for r in js["results"]] == [MiB, MiB, 4096, 4096]
    # Its scratch volume went to the recycle bin.
    with pytest.raises(FileNotFoundError):
        client.stat(js["volume"])
    table = sh.ok("bench", "--seconds", "0.1").splitlines()
    assert table[1].split() == ["test", "block", "IOPS", "MiB/s", "mean", "lat", "p50", "p99"]
    assert [" ".join(line.split()[:2]) for line in table[2:]] == [
        "seq write", "seq read", "rand write", "rand read"]  # fmt: skip
    sh.fails(
        "bench", "--seconds", "0.1", "--size", "5G", status=Exit.USAGE, match="LENGTH_NOT_SUPPORT"
    )


def test_bench_on_a_fresh_local_cluster() -> None:
    p = run("bench", "--local", "--seconds", "0.1", "--json", user=None, env=env_of())
    assert p.returncode == 0, p
    js = json.loads(p.stdout)
    assert js["cluster"] == "a fresh local cluster" and len(js["results"]) == 4
    p = run("bench", "--local", "--conf", "/x.conf", user=None, env=env_of())
    assert p.returncode == Exit.USAGE, p


def test_cluster_start(tmp_path: Path) -> None:
    data = tmp_path / "c"
    with child(
        interruptible([CURVEFS, "cluster", "start", "--dir", str(data), "--copysets", "8"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_of(),
    ) as proc:
        try:
            conf = readline(proc.stdout, 60, "the conf path `cluster start` prints").strip()
            assert conf == str(data / "client.conf")
            assert "RecycleBin" in run("ls", "/", "--password", "root_password", conf=conf,
                                       user="root").stdout  # fmt: skip
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Ctrl-C stops it" in err
    assert (data / "cluster.json").is_file()
