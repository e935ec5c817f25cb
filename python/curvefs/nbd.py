"""Volumes over NBD: ``qemu-img``, ``nbdcopy``, fio and ``nbd-client`` reach them here.

``serve`` runs the Rust core's NBD server (crate curve-nbd) in the background for the
duration of a ``with`` block::

    with curvefs.nbd.serve(client, "/vol") as served:
        subprocess.run(["qemu-img", "info", served.uri], check=True)

Each volume is one export, named by its path without the leading ``/``. The server listens
on a Unix socket (a fresh one in a private temporary folder unless ``socket`` is given) or,
with ``bind="HOST:PORT"``, on TCP. Leaving the block stops it: requests in flight finish,
connections close, and every volume is closed (its session released).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from curvefs import _core
from curvefs.client import Client

__all__ = ["Served", "serve", "serve_async"]


@dataclass(frozen=True)
class Served:
    """A running server: where it listens and the URI of each export."""

    address: str
    """``unix:PATH`` or ``HOST:PORT``."""
    uris: dict[str, str]
    """The NBD URI (``nbd+unix:///NAME?socket=PATH`` or ``nbd://HOST:PORT/NAME``) of each
    volume path served, in the order given."""
    socket: str | None
    """The Unix socket's path, if the server listens on one."""

    @property
    def uri(self) -> str:
        """The URI of the first volume served (the only one, usually)."""
        return next(iter(self.uris.values()))


def _volumes(volumes: str | Sequence[str]) -> list[str]:
    vols = [volumes] if isinstance(volumes, str) else list(volumes)
    if not vols:
        raise ValueError("no volume to serve")
    return vols


def _start(
    client: Client,
    volumes: list[str],
    socket: str | os.PathLike[str] | None,
    bind: str | None,
    read_only: bool,
) -> tuple[_core.NbdServer, Served, str | None]:
    private: str | None = None
    if socket is None and bind is None:
        private = tempfile.mkdtemp(prefix="curvefs-nbd-")
        socket = os.path.join(private, "nbd.sock")
    try:
        server = _core.NbdServer(client._h, volumes, socket=socket, bind=bind, read_only=read_only)
    except BaseException:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
        raise
    served = Served(
        address=server.address,
        uris=dict(server.uris),
        socket=None if socket is None else str(Path(socket)),
    )
    return server, served, private


def _finish(server: _core.NbdServer, private: str | None) -> None:
    try:
        server.stop()
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


@contextmanager
def serve(
    client: Client,
    volumes: str | Sequence[str],
    *,
    socket: str | os.PathLike[str] | None = None,
    bind: str | None = None,
    read_only: bool = False,
) -> Iterator[Served]:
    """Serves ``volumes`` (one path or several) over NBD until the block ends.

    The volumes are opened by ``client``'s user, exclusively, as :meth:`Client.open` does.
    ``read_only`` announces a read-only export and refuses writes with ``EPERM``.
    """
    server, served, private = _start(client, _volumes(volumes), socket, bind, read_only)
    try:
        yield served
    finally:
        _finish(server, private)


@asynccontextmanager
async def serve_async(
    client: Client,
    volumes: str | Sequence[str],
    *,
    socket: str | os.PathLike[str] | None = None,
    bind: str | None = None,
    read_only: bool = False,
) -> AsyncIterator[Served]:
    """:func:`serve` for asyncio: opening and stopping run off the event loop."""
    vols = _volumes(volumes)
    server, served, private = await asyncio.to_thread(_start, client, vols, socket, bind, read_only)
    try:
        yield served
    finally:
        await asyncio.to_thread(_finish, server, private)
