"""An asyncio NBD server (fixed newstyle) for one export: an open encrypted `Volume`.

The layers, each in its own module over the pure `nbd_protocol`:

* `nbd_transport`: the buffered socket reads and corked replies of a connection, and the
  listening socket;
* `nbd_handshake`: greeting and option haggling, up to the client's choice of export;
* `nbd_session`: the transmission phase, each request served against the export;
* here: `NbdServer`, which runs the three for every accepted connection, and the loop.

A client that disconnects mid-request (or is killed) loses only what was never
acknowledged: the server syncs the image when a connection that wrote ends abnormally.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from adapters.block import nbd_protocol as p
from adapters.block.errors import ProtocolError
from adapters.block.nbd_handshake import ExportOffer, negotiate
from adapters.block.nbd_session import Export, ServerStats, Session
from adapters.block.nbd_transport import Closed, ConnectionIO, listen, widen_send_buffer

__all__ = ["Export", "NbdServer", "ServerStats", "listen", "new_event_loop", "run",
           "run_connections", "serve"]

log = logging.getLogger("ssegw.nbd")


class NbdServer:
    """`native`: serve small aligned READs and WRITEs with the native loop where the export
    and the build allow it (nbd_fastpath); False serves every request in Python."""

    def __init__(self, export: Export, *, name: str = "", description: str = "",
                 native: bool = True) -> None:
        self.export = export
        self.native = native
        self.name = name
        self.description = description
        self.stats = ServerStats()

    @property
    def flags(self) -> int:
        f = (p.TxFlag.HAS_FLAGS | p.TxFlag.SEND_FLUSH | p.TxFlag.SEND_FUA | p.TxFlag.SEND_TRIM
             | p.TxFlag.SEND_WRITE_ZEROES | p.TxFlag.SEND_DF | p.TxFlag.CAN_MULTI_CONN)
        if self.export.read_only:
            f |= p.TxFlag.READ_ONLY
        return int(f)

    def offer(self) -> ExportOffer:
        return ExportOffer(self.name, self.description, self.export.size, self.flags)

    async def handle(self, sock: socket.socket) -> None:
        """Serve one accepted connection until it ends; never raises."""
        self.stats.connections += 1
        self.stats.active += 1
        session: Session | None = None
        io: ConnectionIO | None = None
        try:
            _, io = await asyncio.get_running_loop().connect_accepted_socket(ConnectionIO, sock)
            structured = await negotiate(io, self.offer())
            session = Session(self.export, io, self.stats, structured=structured,
                              native=self.native)
            await session.run()
        except (Closed, asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as e:
            log.info("closing a connection: %s", e)
        except Exception:  # one broken connection must never take the server down
            log.exception("connection failed")
        finally:
            self.stats.active -= 1
            if session is not None:
                session.close()
            if session is not None and session.dirty:
                # The client vanished with writes it may not have flushed; make what it was
                # told is written as durable as we can. Synchronous on purpose: this also runs
                # while the loop shuts down, when nothing can be awaited any more.
                try:
                    self.export.flush()
                except OSError:
                    log.exception("flush after disconnect failed")
            if io is not None:
                io.close()
            else:
                sock.close()


# ---------------------------------------------------------------------- running it

_T = TypeVar("_T")

# SSEGW_NBD_LOOP=asyncio serves on the stdlib loop instead (a fallback, and for comparison).
LOOP_ENV = "SSEGW_NBD_LOOP"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop the server runs on: uvloop (much cheaper per small read and write, which a
    4 KiB request notices) unless it is missing or SSEGW_NBD_LOOP=asyncio."""
    if os.environ.get(LOOP_ENV, "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run on the server's loop (new_event_loop)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def run_connections(
    server: NbdServer,
    incoming: Callable[[], Awaitable[socket.socket | None]],
    stop: asyncio.Event,
) -> None:
    """Serve each socket `incoming` yields until it yields None or `stop` is set; then end
    the open connections (each flushes what it wrote)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    stopper = loop.create_task(stop.wait())
    try:
        while True:
            getter: asyncio.Future[socket.socket | None] = asyncio.ensure_future(incoming())
            waits: set[asyncio.Future[Any]] = {getter, stopper}
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            sock = getter.result()
            if sock is None:
                break
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            widen_send_buffer(sock)
            task = loop.create_task(server.handle(sock))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        stopper.cancel()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(
    server: NbdServer,
    *,
    socket_path: Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve from this process until `stop` is set (or forever); `ready` gets the URI."""
    listener, uri = listen(socket_path, host, port)
    loop = asyncio.get_running_loop()

    async def accept() -> socket.socket:
        conn, _ = await loop.sock_accept(listener)
        return conn

    try:
        if ready is not None:
            ready(uri)
        await run_connections(server, accept, stop or asyncio.Event())
    finally:
        listener.close()
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
