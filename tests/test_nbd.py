"""The NBD server (crate curve-nbd) against tools nobody here wrote: qemu-img, nbdcopy,
nbdinfo and fio's nbd engine, over the real local cluster; and against a raw socket
speaking the protocol badly.

scripts/test installs the tools (qemu-utils, libnbd-bin, fio); a missing one fails the
test that needs it, naming the package.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import curvefs
from curvefs import nbd
from curvefs.testing import LocalCluster

MiB = 1 << 20
GiB = 1 << 30
SIZE = 10 * GiB

_PACKAGES = {
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "nbdcopy": "libnbd-bin",
    "nbdinfo": "libnbd-bin",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed (Debian package {_PACKAGES.get(name, name)}; "
            "scripts/test installs it)"
        )
    return path


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args[0]} failed ({done.returncode}): {done.stderr}"
    return done


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[curvefs.Client]:
    c = curvefs.Client(cluster.conf_path, user="curve")
    yield c
    c.close()


@pytest.fixture
def volume(client: curvefs.Client) -> str:
    path = f"/nbd-{uuid.uuid4().hex[:10]}"
    client.create(path, SIZE)
    return path


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="nbd-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def random_file(path: Path, size: int, *, hole_every: int = 0) -> bytes:
    data = bytearray(os.urandom(size))
    if hole_every:
        for at in range(0, size, hole_every):
            data[at : at + hole_every // 2] = bytes(hole_every // 2)
    path.write_bytes(data)
    return bytes(data)


# -- qemu-img ---------------------------------------------------------------------------


def raw_prefix(uri_sock: str, export: str, size: int) -> str:
    """qemu's --image-opts for the first `size` bytes of an export (the volume is 10 GiB)."""
    return (
        f"driver=raw,size={size},file.driver=nbd,file.server.type=unix,"
        f"file.server.path={uri_sock},file.export={export}"
    )


def test_qemu_img_converts_a_qcow2_into_a_volume_and_back_identical(
    client: curvefs.Client, volume: str, sock_dir: Path, tmp_path: Path
) -> None:
    qemu_img = tool("qemu-img")
    raw = tmp_path / "src.raw"
    random_file(raw, 48 * MiB, hole_every=4 * MiB)
    image = tmp_path / "src.qcow2"
    run(qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    sock = sock_dir / "s"
    with nbd.serve(client, volume, socket=sock) as served:
        info = json.loads(run(qemu_img, "info", "--output=json", served.uri).stdout)
        assert info["virtual-size"] == SIZE
        run(qemu_img, "convert", "-n", "-f", "qcow2", "-O", "raw", str(image), served.uri)
        export = volume.lstrip("/")
        back = tmp_path / "back.qcow2"
        run(
            qemu_img,
            "convert",
            "--image-opts",
            raw_prefix(str(sock), export, 48 * MiB),
            "-O",
            "qcow2",
            str(back),
        )
        run(qemu_img, "compare", "-f", "qcow2", "-F", "qcow2", str(image), str(back))
        # And straight against the export, without the copy.
        run(
            qemu_img,
            "compare",
            "--image-opts",
            f"driver=qcow2,file.filename={image}",
            raw_prefix(str(sock), export, 48 * MiB),
        )
    # Stopped: the volume was closed, so this client can open it exclusively.
    with client.open(volume) as vol:
        assert vol.pread(2 * MiB, 4 * MiB) == raw.read_bytes()[4 * MiB : 6 * MiB]


# -- nbdinfo and nbdcopy ----------------------------------------------------------------


def test_nbdinfo_lists_the_exports_and_their_flags(
    client: curvefs.Client, volume: str, sock_dir: Path
) -> None:
    nbdinfo = tool("nbdinfo")
    other = f"/nbd-{uuid.uuid4().hex[:10]}"
    client.create(other, SIZE)
    with nbd.serve(client, [volume, other], socket=sock_dir / "s") as served:
        listed = json.loads(run(nbdinfo, "--json", "--list", served.uri).stdout)
        names = sorted(e["export-name"] for e in listed["exports"])
        assert names == sorted([volume.lstrip("/"), other.lstrip("/")])
        info = json.loads(run(nbdinfo, "--json", served.uris[other]).stdout)
        (export,) = info["exports"]
        assert export["export-size"] == SIZE
        assert export["is_read_only"] is False
        for flag in ("can_flush", "can_trim", "can_zero", "can_multi_conn", "can_fua"):
            assert export[flag] is True, flag
        assert export["block_size_minimum"] == 1
        assert export["block_size_maximum"] == 32 * MiB
    with nbd.serve(client, volume, socket=sock_dir / "r", read_only=True) as served:
        info = json.loads(run(nbdinfo, "--json", served.uri).stdout)
        assert info["exports"][0]["is_read_only"] is True


def test_nbdcopy_copies_256_mib_in_and_out_identical(
    client: curvefs.Client, volume: str, sock_dir: Path, tmp_path: Path
) -> None:
    nbdcopy = tool("nbdcopy")
    src = tmp_path / "in.raw"
    data = random_file(src, 256 * MiB, hole_every=32 * MiB)
    with nbd.serve(client, volume, socket=sock_dir / "s") as served:
        # Four connections (nbdcopy's default with CAN_MULTI_CONN), many requests each.
        run(nbdcopy, str(src), served.uri, timeout=300)
        # The volume is 10 GiB: take the first 256 MiB of the copy out.
        out = subprocess.run(
            f"{nbdcopy} '{served.uri}' - | head -c {256 * MiB}",
            shell=True,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert len(out.stdout) == 256 * MiB, out.stderr
        assert out.stdout == data


# -- fio --------------------------------------------------------------------------------


def fio_job(
    uri: str, *, verify_only: bool, size: str = "64M", extra: tuple[str, ...] = ()
) -> list[str]:
    return [
        tool_fio(),
        "--name=verify",
        "--ioengine=nbd",
        f"--uri={uri}",
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=32",
        f"--size={size}",
        "--verify=crc32c",
        "--verify_fatal=1",
        # Else fio leaves a verify state file in the working directory (the checkout).
        "--verify_state_save=0",
        "--randrepeat=1",
        "--output-format=json",
        *(["--verify_only=1"] if verify_only else []),
        *extra,
    ]


def tool_fio() -> str:
    path = tool("fio")
    engines = subprocess.run([path, "--enghelp"], capture_output=True, text=True, check=False)
    if "nbd" not in engines.stdout.split():
        pytest.fail("this fio has no nbd ioengine (Debian's fio has it, through libnbd)")
    return path


def fio_errors(out: str) -> int:
    report = json.loads(out[out.index("{") :])
    return sum(int(j["error"]) for j in report["jobs"])


def test_fio_random_writes_verify_with_crc32c_at_iodepth_32(
    client: curvefs.Client, volume: str, sock_dir: Path
) -> None:
    with nbd.serve(client, volume, socket=sock_dir / "s") as served:
        wrote = run(*fio_job(served.uri, verify_only=False), timeout=300)
        assert fio_errors(wrote.stdout) == 0
    # A second server, a fresh connection: the data outlived the first one.
    with nbd.serve(client, volume, socket=sock_dir / "t") as served:
        read = run(*fio_job(served.uri, verify_only=True), timeout=300)
        assert fio_errors(read.stdout) == 0


def chunk_files(cluster: LocalCluster, cs: int) -> int:
    return sum(len(files) for _, _, files in os.walk(cluster.chunkserver_data_dir(cs)))


def test_fio_verify_holds_with_a_chunkserver_killed_mid_run(tmp_path: Path) -> None:
    tool_fio()  # before the cluster starts: a missing engine fails at once
    with LocalCluster(tmp_path / "c") as cluster:
        c = curvefs.Client(cluster.conf_path, user="curve")
        path = "/nbd-kill"
        c.create(path, SIZE)
        victim = cluster.chunkserver_ids[0]
        before = chunk_files(cluster, victim)
        sock = Path(tempfile.mkdtemp(prefix="nbd-")) / "s"
        with nbd.serve(c, path, socket=sock) as served:
            # Rate-limited so the run lasts a few seconds around the kill.
            args = fio_job(served.uri, verify_only=False, size="96M", extra=("--rate_iops=4000",))
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # Writes are landing once the victim has new chunk files: kill it then.
                deadline = time.monotonic() + 60
                while chunk_files(cluster, victim) == before and proc.poll() is None:
                    assert time.monotonic() < deadline, "no chunk was written in 60 s"
                    time.sleep(0.05)
                assert proc.poll() is None, "fio ended before any chunk was written"
                cluster.kill_chunkserver(victim)
                out, err = proc.communicate(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            assert proc.returncode == 0, f"fio failed with a chunkserver down: {err}"
            assert fio_errors(out) == 0
            verify = run(*fio_job(served.uri, verify_only=True, size="96M"), timeout=300)
            assert fio_errors(verify.stdout) == 0
        c.close()


# -- a filesystem -----------------------------------------------------------------------


def test_mkfs_ext4_through_nbdfuse_then_e2fsck_finds_it_clean(
    client: curvefs.Client, volume: str, sock_dir: Path
) -> None:
    """The kernel nbd module is not in every sandbox; FUSE (nbdfuse) often is."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse on this machine: nbdfuse cannot mount")
    nbdfuse = tool("nbdfuse")
    mnt = sock_dir / "mnt"
    mnt.mkdir()
    with nbd.serve(client, volume, socket=sock_dir / "f") as served:
        fuse = subprocess.Popen(
            [nbdfuse, str(mnt), "--uri", served.uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            device = mnt / "nbd"
            deadline = time.monotonic() + 30
            while not device.exists():
                assert fuse.poll() is None, f"nbdfuse ended: {fuse.communicate()}"
                assert time.monotonic() < deadline, "nbdfuse mounted nothing in 30 s"
                time.sleep(0.05)
            run("mkfs.ext4", "-F", "-q", str(device), timeout=300)
            checked = run("e2fsck", "-fn", str(device), timeout=300)
            # Exit 0 (run checks it) with -n: no error found; the summary names the device.
            assert f"{device}:" in checked.stdout, checked.stdout
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
            try:
                fuse.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                fuse.kill()
                fuse.communicate()


# -- the command ------------------------------------------------------------------------


def test_curvefs_nbd_serve_stops_cleanly_on_sigterm(
    cluster: LocalCluster, client: curvefs.Client, volume: str, sock_dir: Path
) -> None:
    qemu_img = tool("qemu-img")
    sock = sock_dir / "cli"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "curvefs"),
            "--conf",
            cluster.conf_path,
            "--user",
            "curve",
            "nbd",
            "serve",
            volume,
            "--socket",
            str(sock),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        assert uri == f"nbd+unix:///{volume.lstrip('/')}?socket={sock}", proc.stderr
        run(qemu_img, "info", uri)
        run(tool("qemu-io"), "-f", "raw", "-c", "write -P 0x5a 0 64k", uri)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None
        assert "Ctrl-C stops it" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not sock.exists()
    with client.open(volume) as vol:
        assert vol.pread(64 * 1024, 0) == b"\x5a" * 64 * 1024


def test_curvefs_nbd_serve_refuses_a_missing_volume_and_a_taken_socket(
    cluster: LocalCluster, volume: str, sock_dir: Path
) -> None:
    cmd = [
        str(Path(sys.executable).parent / "curvefs"),
        *("--conf", cluster.conf_path, "--user", "curve", "nbd", "serve"),
    ]
    missing = subprocess.run(
        [*cmd, "/no-such-volume", "--socket", str(sock_dir / "m")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 3, missing.stderr
    assert "curvefs nbd serve:" in missing.stderr and "Traceback" not in missing.stderr
    taken = sock_dir / "taken"
    taken.write_text("")
    busy = subprocess.run(
        [*cmd, volume, "--socket", str(taken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert busy.returncode == 7, busy.stderr
    assert "cannot listen" in busy.stderr and "Traceback" not in busy.stderr


def test_serve_async_serves_and_stops(client: curvefs.Client, volume: str, sock_dir: Path) -> None:
    nbdinfo = tool("nbdinfo")

    async def main() -> int:
        async with nbd.serve_async(client, volume, socket=sock_dir / "a") as served:
            proc = await asyncio.create_subprocess_exec(
                nbdinfo, "--size", served.uri, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
            return int(out)

    assert asyncio.run(main()) == SIZE
    with client.open(volume):
        pass


# -- bad clients ------------------------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


_OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_raw_sockets() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


class Raw:
    """A hand-driven NBD client: says exactly what a test makes it say."""

    def __init__(self, path: Path) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        _OPEN.append(self.s)
        self.s.settimeout(30)
        self.s.connect(str(path))
        magic, opt, flags = struct.unpack(">QQH", self.recv(18))
        assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
        assert flags & 1

    def recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            got = self.s.recv(n - len(buf))
            if not got:
                raise EOFError(f"closed after {len(buf)} of {n} bytes")
            buf += got
        return buf

    def closed(self) -> bool:
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def option(self, opt: int, data: bytes) -> tuple[int, bytes]:
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
        return self.reply(opt)

    def reply(self, opt: int) -> tuple[int, bytes]:
        _magic, o, kind, n = struct.unpack(">QIII", self.recv(20))
        assert o == opt
        return kind, self.recv(n)

    def go(self, name: bytes) -> int:
        """Sends GO for `name`; the export's size."""
        self.s.sendall(
            struct.pack(">QII", IHAVEOPT, 7, 4 + len(name) + 2)
            + struct.pack(">I", len(name))
            + name
            + b"\0\0"
        )
        size = 0
        while True:
            kind, data = self.reply(7)
            if kind == 3:
                if data[:2] == b"\0\0":  # NBD_INFO_EXPORT; others (block size) pass
                    size = struct.unpack(">Q", data[2:10])[0]
            elif kind == 1:
                return size
            else:
                raise AssertionError(f"GO answered {kind:#x} {data!r}")

    def request(
        self,
        kind: int,
        offset: int,
        length: int,
        payload: bytes = b"",
        flags: int = 0,
        cookie: int = 7,
    ) -> None:
        self.s.sendall(struct.pack(">IHHQQI", REQ, flags, kind, cookie, offset, length) + payload)

    def answer(self, length: int = 0) -> tuple[int, int, bytes]:
        magic, error, cookie = struct.unpack(">IIQ", self.recv(16))
        assert magic == 0x67446698
        return error, cookie, (self.recv(length) if error == 0 else b"")


@pytest.fixture
def raw_server(client: curvefs.Client, volume: str, sock_dir: Path) -> Iterator[Path]:
    with nbd.serve(client, volume, socket=sock_dir / "b"):
        yield sock_dir / "b"


def raw_go(path: Path, name: bytes) -> Raw:
    r = Raw(path)
    r.s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    return r


def test_bad_negotiation_gets_errors_or_a_closed_connection(raw_server: Path, volume: str) -> None:
    r = raw_go(raw_server, b"")
    kind, msg = r.option(7, struct.pack(">I", 5) + b"nope!" + b"\0\0")
    assert kind == 0x80000006 and b"nope" in msg  # ERR_UNKNOWN
    kind, _ = r.option(7, struct.pack(">I", 1000) + b"x")  # name longer than the data
    assert kind == 0x80000003  # ERR_INVALID
    kind, _ = r.option(8, b"")  # STRUCTURED_REPLY: not offered
    assert kind == 0x80000001
    kind, names = r.option(3, b"")
    assert kind == 2 and names[4:] == volume.lstrip("/").encode()
    assert r.reply(3)[0] == 1
    # An option of 1 GiB: closed rather than read.
    r.s.sendall(struct.pack(">QII", IHAVEOPT, 7, 1 << 30))
    assert r.closed()
    # Not fixed newstyle; then a bad option magic.
    r = Raw(raw_server)
    r.s.sendall(struct.pack(">I", 0))
    assert r.closed()
    r = raw_go(raw_server, b"")
    r.s.sendall(struct.pack(">QII", 0x1234, 7, 0))
    assert r.closed()


def test_bad_requests_get_nbd_errors_never_a_write_past_the_end(
    raw_server: Path, volume: str, client: curvefs.Client
) -> None:
    r = raw_go(raw_server, b"")
    size = r.go(volume.lstrip("/").encode())
    assert size == SIZE
    r.request(1, 4096, 5, b"hello", cookie=1)
    assert r.answer() == (0, 1, b"")
    r.request(0, 4096, 5, cookie=2)
    assert r.answer(5) == (0, 2, b"hello")
    r.request(0, SIZE - 2, 4, cookie=3)  # a read past the end
    assert r.answer()[:2] == (22, 3)
    r.request(1, SIZE - 2, 4, b"abcd", cookie=4)  # a write past the end
    assert r.answer()[:2] == (28, 4)
    r.request(6, 2**64 - 4096, 8192, cookie=5)  # zeroes wrapping around
    assert r.answer()[:2] == (28, 5)
    r.request(0, 0, 64 * MiB, cookie=6)  # a read over the payload limit
    assert r.answer()[:2] == (22, 6)
    r.request(9, 0, 0, cookie=8)  # an unknown command
    assert r.answer()[:2] == (22, 8)
    r.request(1, 0, 4, b"zzzz", flags=1 << 4, cookie=9)  # FAST_ZERO on a write
    assert r.answer()[:2] == (22, 9)
    r.request(3, 0, 0, cookie=10)  # FLUSH
    assert r.answer()[:2] == (0, 10)
    # Many requests in flight, answered in any order, each once.
    for i in range(100):
        r.request(0, i * 4096, 4096, cookie=1000 + i)
    got = {r.answer(4096)[1] for _ in range(100)}
    assert got == set(range(1000, 1100))
    # A write bigger than the limit: EINVAL, then the connection is closed.
    r.request(1, 0, 64 * MiB, cookie=11)
    assert r.answer()[:2] == (22, 11)
    assert r.closed()
    # Gone mid-payload: the partial write never lands; the server serves on.
    r = raw_go(raw_server, b"")
    r.go(b"")
    r.request(1, 8192, 4096, b"x" * 100, cookie=12)
    r.s.close()
    r = raw_go(raw_server, b"")
    r.go(b"")
    r.request(0, 8192, 4096, cookie=13)
    assert r.answer(4096) == (0, 13, bytes(4096))
    r.request(2, 0, 0)  # DISC
    assert r.closed()


def test_a_read_only_export_refuses_writes_with_eperm(
    client: curvefs.Client, volume: str, sock_dir: Path
) -> None:
    with nbd.serve(client, volume, socket=sock_dir / "ro", read_only=True):
        r = raw_go(sock_dir / "ro", b"")
        r.go(b"")
        for kind in (1, 4, 6):
            r.request(kind, 0, 4, b"abcd" if kind == 1 else b"", cookie=kind)
            assert r.answer()[:2] == (1, kind)
        r.request(0, 0, 4, cookie=20)
        assert r.answer(4) == (0, 20, bytes(4))


def test_an_extended_volume_is_seen_whole_by_new_connections(
    client: curvefs.Client, volume: str, sock_dir: Path
) -> None:
    with nbd.serve(client, volume, socket=sock_dir / "x") as served:
        r = raw_go(sock_dir / "x", b"")
        assert r.go(b"") == SIZE
        client.extend(volume, 2 * SIZE)
        r2 = raw_go(sock_dir / "x", b"")
        assert r2.go(b"") == 2 * SIZE
        # The first connection keeps the size it was told.
        r.request(0, SIZE, 4096, cookie=1)
        assert r.answer()[:2] == (22, 1)
        r2.request(1, SIZE, 4096, b"y" * 4096, cookie=2)
        assert r2.answer() == (0, 2, b"")
        assert served.uri
