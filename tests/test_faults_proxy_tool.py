"""The fault-injecting proxy of curvefs.testing on its own, between plain sockets: each
control does what it says to open connections and new ones, and a connection whose
client goes away never delivers what the proxy still held."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from curvefs.testing import FaultProxy

pytestmark = pytest.mark.timeout(60)


class Sink:
    """A server that accepts one connection at a time and records what it receives and
    how each connection ended ("eof" or "reset")."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.endings: list[str] = []
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                self.endings.append("reset")
                return
            except OSError:
                self.endings.append("closed")
                return
            if not data:
                self.endings.append("eof")
                return
            self.received += data
            if data.startswith(b"echo"):
                conn.sendall(data)

    def close(self) -> None:
        # shutdown wakes the accept() blocked in the other thread; close alone does not.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)
        for c in self.conns:
            c.close()


@contextmanager
def proxied() -> Iterator[tuple[FaultProxy, Sink]]:
    sink = Sink()
    with FaultProxy(("127.0.0.1", 0), ("127.0.0.1", sink.port)) as proxy:
        try:
            yield proxy, sink
        finally:
            sink.close()


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def connect(proxy: FaultProxy) -> socket.socket:
    host, port = proxy.address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    _opened.append(s)
    return s


def wait_until(
    cond: Callable[[], bool], timeout: float = 5.0, what: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met in time: {what()}"
        time.sleep(0.01)


def test_bytes_pass_both_ways_and_delays_hold_them() -> None:
    with proxied() as (proxy, _sink):
        s = connect(proxy)
        s.sendall(b"echo-1")
        assert s.recv(100) == b"echo-1"
        proxy.delay(upstream=0.4)
        t = time.monotonic()
        s.sendall(b"echo-2")  # an existing connection is delayed too
        assert s.recv(100) == b"echo-2"
        assert time.monotonic() - t >= 0.4
        proxy.delay(downstream=0.3)
        t = time.monotonic()
        s2 = connect(proxy)  # and a new one
        s2.sendall(b"echo-3")
        assert s2.recv(100) == b"echo-3"
        took = time.monotonic() - t
        assert took >= 0.3, f"a 0.3 s downstream delay, yet the echo came in {took:.3f} s"
        # pass_through lifts a delay: one of 10 s would still hold the echo.
        proxy.delay(upstream=10.0)
        proxy.pass_through()
        t = time.monotonic()
        s.sendall(b"echo-4")
        assert s.recv(100) == b"echo-4"
        took = time.monotonic() - t
        assert took < 5.0, f"the echo took {took:.1f} s after pass_through lifted a 10 s delay"
        assert proxy.accepted == 2


def test_blackhole_holds_until_pass_through_in_order() -> None:
    with proxied() as (proxy, sink):
        s = connect(proxy)
        proxy.blackhole()
        s.sendall(b"a" * 1000)
        s.sendall(b"b" * 1000)
        s2 = connect(proxy)  # accepted, never forwarded
        s2.sendall(b"c")
        # Every byte is in the proxy, and none went on.
        assert proxy.wait_received("upstream", 2001, timeout=10) == 2001
        assert proxy.forwarded("upstream") == 0 and bytes(sink.received) == b""
        with pytest.raises(TimeoutError, match="took in 2001 bytes upstream, not 2002"):
            proxy.wait_received("upstream", 2002, timeout=0.1)
        proxy.pass_through()
        wait_until(lambda: len(sink.received) == 2001)
        assert bytes(sink.received).index(b"b") > bytes(sink.received).rindex(b"a")


def test_drop_closes_and_reset_resets_both_sides() -> None:
    with proxied() as (proxy, sink):
        s = connect(proxy)
        s.sendall(b"echo")
        assert s.recv(10) == b"echo"
        assert proxy.drop() == 1
        assert s.recv(10) == b""
        wait_until(lambda: sink.endings == ["eof"])
        s = connect(proxy)
        s.sendall(b"echo")
        assert s.recv(10) == b"echo"
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            s.recv(10)
        wait_until(lambda: sink.endings == ["eof", "reset"])


def test_reset_mid_request_delivers_only_part_of_it() -> None:
    with proxied() as (proxy, sink):
        s = connect(proxy)
        s.sendall(b"x")
        wait_until(lambda: len(sink.received) == 1)
        assert proxy.reset(mid_request=True) == 1
        s.sendall(b"y" * 10000)
        wait_until(lambda: sink.endings == ["reset"])
        assert 1 < len(sink.received) < 10001
        with pytest.raises(ConnectionResetError):
            s.recv(10)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_client_gone_with_bytes_held_delivers_none_of_them(how: str) -> None:
    with proxied() as (proxy, sink):
        s = connect(proxy)
        wait_until(lambda: proxy.open_connections == 1)
        proxy.delay(upstream=0.5)
        s.sendall(b"z" * 5000)
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        wait_until(lambda: sink.endings == ["reset"], what=lambda: sink.endings)
        # The sink's side is reset: nothing held can reach it later on that connection.
        assert bytes(sink.received) == b""
        assert proxy.discarded_bytes == 5000
        assert proxy.open_connections == 0


def test_nothing_behind_the_proxy_resets_the_client() -> None:
    port = socket.create_server(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    with (
        FaultProxy(("127.0.0.1", 0), ("127.0.0.1", closed)) as proxy,
        pytest.raises((ConnectionResetError, BrokenPipeError)),
    ):
        s = connect(proxy)
        s.sendall(b"q")
        s.recv(1)
