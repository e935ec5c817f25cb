"""A fault-injecting TCP proxy on loopback, for tests: the network between clients and one
server, with faults a test turns on and off while connections are open.

``FaultProxy(listen, target)`` accepts on ``listen`` and forwards every connection to
``target``. Its controls apply to the connections already open and to new ones, and each
returns once it is in effect:

- ``delay(upstream=, downstream=)``: bytes are held that long (seconds) after the proxy
  received them before they go on, per direction (upstream: client to server), in order.
- ``blackhole()``: nothing goes on in either direction (new connections are still
  accepted); the bytes are held, as a stalled path holds them, until ``pass_through()``
  or a ``delay`` lets them go or the connection ends.
- ``pass_through()``: no delay, no blackhole; held bytes go on at once, in order.
- ``drop()``: closes every open connection on both sides (FIN), as a middlebox ending them.
- ``reset(mid_request=False)``: resets every open connection on both sides (RST, through
  SO_LINGER 0). With ``mid_request=True`` the next bytes a client sends on each connection
  are cut: part of them is forwarded, then both sides are reset, so the server sees the
  start of a request and never its end.

For a test to wait on instead of sleeping, ``received(direction)`` counts the bytes the
proxy has taken in (delivered or not) and ``wait_received(direction, at_least, timeout)``
returns once that many are in: with ``blackhole()`` on, a request the client sent is then
known to be held in the proxy. ``protocols()`` counts connections by the wire their client
spoke first (``baidu_std``: ``PRPC``; ``grpc``: the HTTP/2 preface; else ``other``), so a
test can prove which wire a client used.

What a real network does when one end of a connection goes away, the proxy does: the other
end is closed (FIN) if nothing was held for it, else reset (RST), and the bytes held in
the proxy are thrown away (``discarded_bytes``) — they were never delivered.

It must not be used for anything but tests: it trusts its peers and keeps every held byte
in memory. It runs an asyncio loop on a thread of its own, so the code under test sees a
real peer whatever it does with the interpreter's other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

__all__ = ["FaultProxy"]

_T = TypeVar("_T")

# How long a control waits for the proxy's thread to apply it.
_CONTROL_TIMEOUT = 10.0
_READ_SIZE = 256 * 1024

Direction = Literal["upstream", "downstream"]


def _hard_close(writer: asyncio.StreamWriter) -> None:
    """Closes with RST: SO_LINGER 0, then abort (no FIN, unsent bytes dropped)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Pipe:
    """One direction of one connection: bytes read from ``src``, held, written to ``dst``."""

    src: asyncio.StreamReader
    dst: asyncio.StreamWriter
    direction: Direction
    held: deque[tuple[float, bytes]] = field(default_factory=deque)
    eof: bool = False  # the source ended (FIN) with nothing held


class _Connection:
    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client_writer = client[1]
        self.server_writer = server[1]
        self.up = _Pipe(client[0], server[1], "upstream")
        self.down = _Pipe(server[0], client[1], "downstream")
        self.cut_next_request = False
        self.spoke = False  # the client's first bytes were classified
        self.closed = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for pipe in (self.up, self.down):
            self.tasks.append(asyncio.ensure_future(self._read(pipe)))
            self.tasks.append(asyncio.ensure_future(self._write(pipe)))

    async def _read(self, pipe: _Pipe) -> None:
        try:
            while True:
                data = await pipe.src.read(_READ_SIZE)
                if not data:
                    if pipe.held:
                        # The sender went away with bytes still on the way: they are
                        # lost with it, and the receiver learns by a reset.
                        self.close(reset=True)
                        return
                    pipe.eof = True
                    break
                if pipe is self.up and not self.spoke:
                    self.spoke = True
                    self.proxy._spoke(data)
                if pipe is self.up and self.cut_next_request:
                    # Half of what the client sent reaches the server, then both ends
                    # are reset: a request the server sees begin and never end.
                    self.cut_next_request = False
                    pipe.held.append((time.monotonic(), data[: max(1, len(data) // 2)]))
                    self.proxy._took_in(pipe.direction, len(data))
                    self.proxy._wake()
                    await self._drain_now(pipe)
                    self.close(reset=True)
                    return
                pipe.held.append((time.monotonic(), data))
                self.proxy._took_in(pipe.direction, len(data))
                self.proxy._wake()
        except (ConnectionError, OSError):
            # The source end died (RST): the other end learns as a network tells it.
            self.close(reset=True)
            return
        self.proxy._wake()

    async def _drain_now(self, pipe: _Pipe) -> None:
        while pipe.held:
            _, data = pipe.held.popleft()
            pipe.dst.write(data)
        with contextlib.suppress(ConnectionError, OSError):
            await pipe.dst.drain()

    async def _write(self, pipe: _Pipe) -> None:
        try:
            while not self.closed:
                if pipe.held:
                    received, data = pipe.held[0]
                    due = received + self.proxy._delay_of(pipe.direction)
                    wait = due - time.monotonic()
                    if wait <= 0:
                        pipe.held.popleft()
                        pipe.dst.write(data)
                        await pipe.dst.drain()
                        self.proxy._count(pipe.direction, len(data))
                        continue
                    await self.proxy._changed(None if math.isinf(wait) else wait)
                    continue
                if pipe.eof:
                    # Everything before the FIN went on: pass the FIN on.
                    if pipe.dst.can_write_eof():
                        pipe.dst.write_eof()
                    if self.up.eof and self.down.eof:
                        self.close(reset=False)
                    return
                await self.proxy._changed(None)
        except (ConnectionError, OSError):
            self.close(reset=True)

    def close(self, *, reset: bool) -> None:
        """Ends both sides: FIN if asked and nothing is held, else RST; held bytes go."""
        if self.closed:
            return
        self.closed = True
        held = sum(len(d) for p in (self.up, self.down) for _, d in p.held)
        self.proxy._discarded(held)
        for pipe in (self.up, self.down):
            pipe.held.clear()
        for writer in (self.client_writer, self.server_writer):
            if reset or held:
                _hard_close(writer)
            else:
                writer.close()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.proxy._forget(self)


class FaultProxy:
    """A TCP proxy from ``listen`` (host, port; port 0 picks one) to ``target``."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self._listen = listen
        self._target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._delay: dict[Direction, float] = {"upstream": 0.0, "downstream": 0.0}
        self._change: asyncio.Event | None = None
        self._stats_lock = threading.Lock()
        self._stats_changed = threading.Condition(self._stats_lock)
        self._received: dict[Direction, int] = {"upstream": 0, "downstream": 0}
        self._protocols: dict[str, int] = {}
        self._accepted = 0
        self._forwarded: dict[Direction, int] = {"upstream": 0, "downstream": 0}
        self._discarded_bytes = 0
        self._address: tuple[str, int] | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Binds ``listen`` (``OSError`` if it cannot) and starts forwarding."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready: list[BaseException | None] = []
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
                ready.append(None)
            except BaseException as e:  # reported to start()'s caller
                ready.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self._listen}", daemon=True)
        self._thread.start()
        started.wait(_CONTROL_TIMEOUT)
        if not ready or ready[0] is not None:
            self._thread.join(_CONTROL_TIMEOUT)
            self._thread = None
            self._loop = None
            raise ready[0] if ready and ready[0] is not None else TimeoutError("proxy start")
        return self

    def close(self) -> None:
        """Stops listening and resets every connection. The proxy cannot start again."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT)
            self._loop = None
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it is -------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` where clients connect."""
        if self._address is None:
            raise RuntimeError("the proxy has not been started")
        return f"{self._address[0]}:{self._address[1]}"

    @property
    def target(self) -> str:
        return f"{self._target[0]}:{self._target[1]}"

    @property
    def accepted(self) -> int:
        """Connections accepted since the start."""
        with self._stats_lock:
            return self._accepted

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def forwarded(self, direction: Direction = "upstream") -> int:
        """Bytes delivered in ``direction`` since the start."""
        with self._stats_lock:
            return self._forwarded[direction]

    def received(self, direction: Direction = "upstream") -> int:
        """Bytes the proxy took in from ``direction``'s sender since the start, whether it
        delivered them yet or not."""
        with self._stats_lock:
            return self._received[direction]

    def protocols(self) -> dict[str, int]:
        """Connections so far by the wire their client spoke first: ``baidu_std``,
        ``grpc`` or ``other`` (a connection that sent nothing is not counted)."""
        with self._stats_lock:
            return dict(self._protocols)

    def wait_received(self, direction: Direction, at_least: int, timeout: float) -> int:
        """Waits until ``received(direction) >= at_least`` and returns it; ``TimeoutError``
        saying how many came if that takes longer than ``timeout`` seconds."""
        with self._stats_changed:
            if not self._stats_changed.wait_for(
                lambda: self._received[direction] >= at_least, timeout
            ):
                raise TimeoutError(
                    f"the proxy to {self.target} took in {self._received[direction]} bytes "
                    f"{direction}, not {at_least}, within {timeout} s"
                )
            return self._received[direction]

    @property
    def discarded_bytes(self) -> int:
        """Bytes that were held when their connection ended, so never delivered."""
        with self._stats_lock:
            return self._discarded_bytes

    # -- controls ---------------------------------------------------------------------

    def delay(self, upstream: float = 0.0, downstream: float = 0.0) -> None:
        """Holds every byte ``upstream``/``downstream`` seconds after it was received."""
        if not (upstream >= 0 and downstream >= 0):
            raise ValueError("delays must be >= 0")
        self._run(self._set_delay(upstream, downstream))

    def blackhole(self) -> None:
        """Forwards nothing either way; bytes are held until the path is restored."""
        self._run(self._set_delay(math.inf, math.inf))

    def pass_through(self) -> None:
        """Forwards everything at once again, held bytes first."""
        self._run(self._set_delay(0.0, 0.0))

    def drop(self) -> int:
        """Closes every open connection on both sides; returns how many."""
        return self._run(self._end_all(reset=False))

    def reset(self, *, mid_request: bool = False) -> int:
        """Resets every open connection on both sides (RST), now or, with
        ``mid_request``, part way through the next bytes each client sends; returns how
        many connections it applies to."""
        if mid_request:
            return self._run(self._arm_cut())
        return self._run(self._end_all(reset=True))

    # -- the loop's side ------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_CONTROL_TIMEOUT)

    async def _open(self) -> None:
        self._change = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self._listen[0], self._listen[1])
        sock = self._server.sockets[0]
        host, port = sock.getsockname()[:2]
        self._address = (str(host), int(port))

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._end_all(reset=True)
        # Let the aborted transports finish closing and the tasks end before the loop
        # stops, so nothing is left for the garbage collector to complain about.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._stats_lock:
            self._accepted += 1
        try:
            server = await asyncio.wait_for(
                asyncio.open_connection(self._target[0], self._target[1]), _CONTROL_TIMEOUT
            )
        except (OSError, TimeoutError):
            # Nothing serves behind us: the client sees its connection reset.
            _hard_close(writer)
            return
        for w in (writer, server[1]):
            sock = w.get_extra_info("socket")
            # A socket already gone (the client left at once) fails here; its reader
            # then ends the connection as any other departure.
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(self, (reader, writer), server)
        self._connections.add(conn)
        conn.start()

    async def _set_delay(self, upstream: float, downstream: float) -> None:
        self._delay = {"upstream": upstream, "downstream": downstream}
        self._wake()

    async def _end_all(self, *, reset: bool) -> int:
        conns = list(self._connections)
        for conn in conns:
            conn.close(reset=reset)
        return len(conns)

    async def _arm_cut(self) -> int:
        for conn in self._connections:
            conn.cut_next_request = True
        return len(self._connections)

    def _delay_of(self, direction: Direction) -> float:
        return self._delay[direction]

    def _wake(self) -> None:
        # Writers wait on one event; every change (new bytes, new delays) wakes them all
        # and each re-checks its own pipe. A fresh event per round keeps it edge-free.
        if self._change is not None:
            self._change.set()
            self._change = asyncio.Event()

    async def _changed(self, timeout: float | None) -> None:
        event = self._change
        if event is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _count(self, direction: Direction, n: int) -> None:
        with self._stats_lock:
            self._forwarded[direction] += n

    def _spoke(self, first: bytes) -> None:
        # baidu_std frames start with its magic; an HTTP/2 client (gRPC) with the
        # connection preface "PRI * HTTP/2.0"; a first read may be shorter than either.
        if first.startswith(b"PRPC"[: len(first)]):
            wire = "baidu_std"
        elif first.startswith(b"PRI * HTTP/2.0"[: len(first)]):
            wire = "grpc"
        else:
            wire = "other"
        with self._stats_lock:
            self._protocols[wire] = self._protocols.get(wire, 0) + 1

    def _took_in(self, direction: Direction, n: int) -> None:
        with self._stats_changed:
            self._received[direction] += n
            self._stats_changed.notify_all()

    def _discarded(self, n: int) -> None:
        with self._stats_lock:
            self._discarded_bytes += n

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
