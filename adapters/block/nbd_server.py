"""An asyncio NBD server (fixed newstyle) for one export: an open encrypted `Volume`.

Semantics the server promises, and why they hold:

* A write is acknowledged only after its ciphertext is `pwrite`n into the image, so any read
  issued after that acknowledgement, on any connection, sees it (one page cache per image).
* FLUSH is `fdatasync` of the image: every write acknowledged before the flush was sent, on
  any connection, is durable when the flush is acknowledged. That is what CAN_MULTI_CONN
  promises, so it is advertised. FUA writes are durable on their own (RWF_DSYNC).
* A client that disconnects mid-request (or is killed) loses only what was never
  acknowledged; the server syncs the image when a connection that wrote ends abnormally.
* Malformed or out-of-range requests get an NBD error; a request header with a bad magic,
  after which nothing can be trusted to line up, ends that connection and nothing else.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from adapters.block import nbd_protocol as p
from adapters.block.sector_crypto import SECTOR_SIZE, Buffer
from adapters.block.volume import VolumeError

log = logging.getLogger("ssegw.nbd")

# Requests up to 32 MiB (what qemu and nbdkit use as their maximum block size).
MAX_REQUEST = 32 << 20
PREFERRED_BLOCK = 4096
# Requests and small payloads are read through a buffer this big; larger payloads bypass it.
RECV_BUFFER = 1 << 20
# Corked replies are sent once they add up to this much, even if more requests are waiting.
OUT_HIGH_WATER = 1 << 20
# ...and once this many replies are queued. Corking a whole burst of small requests keeps
# the client idle until the last reply, then leaves us idle while it refills: the two take
# turns instead of overlapping. Measured with qemu-img bench, 4 KiB, 32 in flight (median
# of 5, IOPS): no limit 50k read / 32k write, 16: 50k / 39k, 8: 57k / 43k, 4: 48k / 38k.
CORK_REPLIES = 8
# Queued replies smaller than this are copied together into one send.
COALESCE_BELOW = 64 << 10
# Write payloads at least this big are received straight into their own buffer: through
# the shared receive buffer they would be copied once more (and the buffer compacted).
DIRECT_PAYLOAD = 64 << 10
# SO_SNDBUF asked for on each connection (see _widen_send_buffer).
SEND_BUFFER = 4 << 20
# Option data beyond this is drained and refused with ERR_TOO_BIG rather than buffered.
MAX_OPTION = 64 << 10

# The per-request path uses plain ints: IntFlag arithmetic runs Python-level enum code
# (~0.7 us per `flags & FUA`), several times per request, which a 4 KiB request notices.
_READ, _WRITE, _DISC = int(p.Cmd.READ), int(p.Cmd.WRITE), int(p.Cmd.DISC)
_FLUSH, _TRIM, _WRITE_ZEROES = int(p.Cmd.FLUSH), int(p.Cmd.TRIM), int(p.Cmd.WRITE_ZEROES)
_FUA, _DF = int(p.CmdFlag.FUA), int(p.CmdFlag.DF)
_EINVAL, _EPERM, _ENOSPC = int(p.Err.EINVAL), int(p.Err.EPERM), int(p.Err.ENOSPC)
_REQUEST_SIZE, _decode_request_from = p.REQUEST_SIZE, p.decode_request_from
_unpack_request, _REQUEST_MAGIC = p.REQUEST_STRUCT.unpack_from, p.REQUEST_MAGIC
_read_header, _simple_reply = p.structured_read_header, p.simple_reply
# Per command we serve: the defined flags it must not carry (bits no flag defines are
# ignored). CACHE, BLOCK_STATUS and RESIZE are not advertised, so they are not here.
_REFUSED_FLAGS = {
    int(cmd): int(~allowed)
    for cmd, allowed in (
        (p.Cmd.READ, p.CmdFlag.DF),
        (p.Cmd.WRITE, p.CmdFlag.FUA),
        (p.Cmd.WRITE_ZEROES, p.CmdFlag.FUA | p.CmdFlag.NO_HOLE),
        (p.Cmd.TRIM, p.CmdFlag.FUA),
        (p.Cmd.FLUSH, p.CmdFlag(0)),
    )
}


class Export(Protocol):
    size: int
    read_only: bool

    def read(self, offset: int, length: int) -> bytes | bytearray: ...

    def write(self, offset: int, data: Buffer, fua: bool = False) -> None: ...

    def write_zeroes(self, offset: int, length: int, fua: bool = False) -> None: ...

    def trim(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...


@dataclass
class ServerStats:
    connections: int = 0
    active: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class _Closed(Exception):
    """The connection is over (abort, disconnect, or a fatal protocol error)."""


class ConnectionIO(asyncio.BufferedProtocol):
    """Buffered reads and writes for one connection, with as few copies as asyncio allows.

    asyncio streams copy every byte three times (into the stream buffer, out of it, and a
    memmove to drop what was read). Here the transport receives requests into one reusable
    buffer, and a large write payload straight into the bytearray that is then encrypted.
    """

    def __init__(self) -> None:
        self._buf = bytearray(RECV_BUFFER)
        self._mv = memoryview(self._buf)
        self._start = self._end = 0
        self._target: memoryview | None = None  # where a large payload is being received
        self._target_got = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._out: list[bytes | bytearray] = []
        self._out_bytes = 0
        self._corked = 0  # replies queued since the last send
        self.transport: asyncio.Transport | None = None
        # Serves buffered requests from inside buffer_updated while the connection's task is
        # parked between requests (see _Connection._serve_inline); None until transmission.
        self.inline: Callable[[], None] | None = None
        self._between_requests = False

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports implement asyncio.Transport without
        # subclassing it. (An assert here used to raise inside uvloop's connection_made call,
        # which then neither started reading nor failed the connection: replies were dropped
        # for want of a transport, and client and server waited on each other for ever.)
        self.transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:
            return self._target[self._target_got:]
        if self._end == len(self._buf):  # compact; the caller made sure something was consumed
            n = self._end - self._start
            self._buf[:n] = self._mv[self._start:self._end]
            self._start, self._end = 0, n
        return self._mv[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._target is not None:
            self._target_got += nbytes
            if self._target_got == len(self._target):
                self._target = None  # complete: later bytes go to the normal buffer
        else:
            self._end += nbytes
            if self._between_requests and self.inline is not None:
                self.inline()
                if self._end - self._start < _REQUEST_SIZE and not self._closed:
                    return  # all served: the task stays parked, no wake-up to pay for
            if self._start == 0 and self._end == len(self._buf):
                self._pause_reading()  # full of unread requests: let the socket back up
        self._wake()

    def eof_received(self) -> bool:
        self._closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    async def _more(self) -> None:
        """Wait until more bytes arrive; IncompleteReadError once the peer is gone."""
        self.send_out()  # about to wait for the client: it must have every reply first
        if self._closed:
            raise asyncio.IncompleteReadError(b"", None)
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- what the connection uses

    async def read_message(self, n: int) -> bytes:
        """A small message (a header, an option): at most half the receive buffer."""
        assert n <= RECV_BUFFER // 2
        while True:
            avail = self._end - self._start
            if avail >= n:
                out = bytes(self._mv[self._start:self._start + n])
                self._start += n
                return out
            if self._start + n > len(self._buf):  # make room for the whole message
                self._buf[:avail] = self._mv[self._start:self._end]
                self._start, self._end = 0, avail
            await self._more()

    async def read_request(self) -> p.Request:
        """The next request header, decoded where it lies in the receive buffer."""
        while self._end - self._start < _REQUEST_SIZE:
            if self._start + _REQUEST_SIZE > len(self._buf):  # make room for the whole header
                avail = self._end - self._start
                self._buf[:avail] = self._mv[self._start:self._end]
                self._start, self._end = 0, avail
            self._between_requests = True
            try:
                await self._more()
            finally:
                self._between_requests = False
        req = _decode_request_from(self._buf, self._start)
        self._start += _REQUEST_SIZE
        return req

    def next_simple(self) -> tuple[p.Request, bytes | None] | None:
        """The next request and its payload, taken from the buffer, if it is a READ, or a WRITE
        whose whole payload (under DIRECT_PAYLOAD) is buffered; None, taking nothing, for
        anything else (incomplete, another command, a bad magic: the task deals with those),
        and while replies cannot go out (the client is not reading them, or is gone)."""
        start = self._start
        if self._end - start < _REQUEST_SIZE or self._writing_paused or self._closed:
            return None
        magic, flags, typ, cookie, offset, length = _unpack_request(self._buf, start)
        if magic != _REQUEST_MAGIC:
            return None
        if typ == _READ:
            self._start = start + _REQUEST_SIZE
            return p.Request(flags, typ, cookie, offset, length), None
        if typ == _WRITE and length < DIRECT_PAYLOAD and self._end - start >= _REQUEST_SIZE + length:
            at = start + _REQUEST_SIZE
            self._start = at + length
            return p.Request(flags, typ, cookie, offset, length), bytes(self._mv[at:at + length])
        return None

    async def read_payload(self, n: int) -> bytes | bytearray:
        """A write payload; a large one is received straight into the buffer returned."""
        if n < DIRECT_PAYLOAD:
            return await self.read_message(n)
        avail = self._end - self._start
        if avail >= n:
            return self._take(n)
        payload = bytearray(n)
        pmv = memoryview(payload)
        pmv[:avail] = self._mv[self._start:self._end]
        self._start = self._end = 0
        self._target_got = avail
        self._target = pmv
        try:
            while self._target_got < n:
                await self._more()
        finally:
            self._target = None
        return payload

    def _take(self, n: int) -> bytes:
        out = bytes(self._mv[self._start:self._start + n])
        self._start += n
        return out

    async def discard(self, n: int) -> None:
        while n > 0:
            if self._start == self._end:
                self._start = self._end = 0
                await self._more()
            take = min(n, self._end - self._start)
            self._start += take
            n -= take

    def write(self, data: bytes | bytearray) -> None:
        """Queue a reply. Replies are corked while more requests are already buffered: every
        send wakes the client, and on a busy machine the woken client preempts us, which
        cost ~150 us per 16-byte reply (measured). One send per CORK_REPLIES replies
        instead, or sooner (see drain)."""
        self._out.append(data)
        self._out_bytes += len(data)

    def send_out(self) -> None:
        if not self._out or self.transport is None or self.transport.is_closing():
            self._out.clear()
            self._out_bytes = self._corked = 0
            return
        out, self._out, self._out_bytes, self._corked = self._out, [], 0, 0
        if len(out) == 1:
            self.transport.write(out[0])
            return
        # Every transport.write is a send(2) while the socket has room, and every send wakes
        # the client. Small pieces (headers, 4 KiB reads) are copied into one send; only
        # large payloads, where the copy would cost more than the call, go on their own.
        small: list[bytes | bytearray] = []
        for data in out:
            if len(data) < COALESCE_BELOW:
                small.append(data)
                continue
            if small:
                self.transport.write(b"".join(small))
                small = []
            self.transport.write(data)
        if small:
            self.transport.write(b"".join(small) if len(small) > 1 else small[0])

    async def drain(self) -> None:
        """Send what is queued unless another request is already waiting to be served."""
        if self.push():
            await self.wait_drained()

    def push(self) -> bool:
        """What drain decides, without a coroutine (the per-request path calls this): True
        when the caller must still `await wait_drained()` (connection lost, or paused)."""
        self._corked += 1
        if (self._out_bytes >= OUT_HIGH_WATER or self._corked >= CORK_REPLIES
                or self._end - self._start < _REQUEST_SIZE):
            self.send_out()
        return self._closed or self._writing_paused

    async def wait_drained(self) -> None:
        if self._closed:
            raise ConnectionResetError("connection lost")
        if self._writing_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    def close(self) -> None:
        if self.transport is not None:
            self.send_out()
            self.transport.close()  # sends what is buffered, then closes


class NbdServer:
    def __init__(self, export: Export, *, name: str = "", description: str = "") -> None:
        self.export = export
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

    def _known(self, name: str) -> bool:
        return name in ("", self.name)

    # ------------------------------------------------------------------ connection

    async def handle(self, sock: socket.socket) -> None:
        """Serve one accepted connection until it ends; never raises."""
        self.stats.connections += 1
        self.stats.active += 1
        conn: _Connection | None = None
        io: ConnectionIO | None = None
        try:
            _, io = await asyncio.get_running_loop().connect_accepted_socket(ConnectionIO, sock)
            conn = _Connection(self, io)
            await conn.run()
        except (_Closed, asyncio.IncompleteReadError, ConnectionError):
            pass
        except p.ProtocolError as e:
            log.info("closing a connection: %s", e)
        except Exception:  # one broken connection must never take the server down
            log.exception("connection failed")
        finally:
            self.stats.active -= 1
            if conn is not None and conn.dirty:
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


class _Connection:
    def __init__(self, server: NbdServer, io: ConnectionIO) -> None:
        self.server = server
        self.export = server.export
        self.reader = io
        self.writer = io
        self.structured = False
        self.dirty = False

    async def run(self) -> None:
        self.writer.write(p.server_greeting())
        await self.writer.drain()
        flags = p.decode_client_flags(await self.reader.read_message(p.CLIENT_FLAGS_SIZE))
        no_zeroes = bool(flags & p.FLAG_C_NO_ZEROES)
        while not await self._option(no_zeroes):
            pass
        await self._transmission()

    # ------------------------------------------------------------------ options

    async def _reply(self, option: int, reply: int, data: bytes = b"") -> None:
        self.writer.write(p.option_reply(option, reply, data))
        await self.writer.drain()

    async def _option(self, no_zeroes: bool) -> bool:
        """One option; True when the transmission phase begins."""
        header = await self.reader.read_message(p.OPTION_HEADER_SIZE)
        option, length = p.decode_option_header(header)
        if length > MAX_OPTION:
            await self.reader.discard(length)
            if option == p.Opt.EXPORT_NAME:
                raise _Closed()
            await self._reply(option, p.Rep.ERR_TOO_BIG)
            return False
        data = await self.reader.read_message(length)
        srv = self.server
        if option == p.Opt.EXPORT_NAME:
            # No error reply exists for this old option: an unknown name ends the connection.
            if not srv._known(data.decode("utf-8", "replace")):
                raise _Closed()
            self.writer.write(p.export_name_reply(self.export.size, srv.flags, no_zeroes))
            await self.writer.drain()
            return True
        if option == p.Opt.ABORT:
            await self._reply(option, p.Rep.ACK)
            raise _Closed()
        if option == p.Opt.LIST:
            if length:
                await self._reply(option, p.Rep.ERR_INVALID)
                return False
            self.writer.write(p.option_reply(option, p.Rep.SERVER,
                                             p.rep_server(srv.name, srv.description)))
            await self._reply(option, p.Rep.ACK)
            return False
        if option in (p.Opt.INFO, p.Opt.GO):
            return await self._go(option, data)
        if option == p.Opt.STRUCTURED_REPLY:
            if length or self.structured:
                await self._reply(option, p.Rep.ERR_INVALID)
                return False
            self.structured = True
            await self._reply(option, p.Rep.ACK)
            return False
        if option in (p.Opt.LIST_META_CONTEXT, p.Opt.SET_META_CONTEXT):
            try:
                name, _queries = p.decode_meta_context_query(data)
            except (ValueError, UnicodeDecodeError):
                await self._reply(option, p.Rep.ERR_INVALID)
                return False
            if not self.structured:
                await self._reply(option, p.Rep.ERR_INVALID)
            elif not srv._known(name):
                await self._reply(option, p.Rep.ERR_UNKNOWN)
            else:
                await self._reply(option, p.Rep.ACK)  # we offer no metadata contexts
            return False
        if option == p.Opt.STARTTLS:
            await self._reply(option, p.Rep.ERR_POLICY)
            return False
        await self._reply(option, p.Rep.ERR_UNSUP)
        return False

    async def _go(self, option: int, data: bytes) -> bool:
        srv = self.server
        try:
            go = p.decode_go(data)
        except (ValueError, UnicodeDecodeError):
            await self._reply(option, p.Rep.ERR_INVALID)
            return False
        if not srv._known(go.name):
            await self._reply(option, p.Rep.ERR_UNKNOWN)
            return False
        w = self.writer
        w.write(p.option_reply(option, p.Rep.INFO, p.info_export(self.export.size, srv.flags)))
        # Sent whether asked or not: the minimum tells clients to align to sectors. Clients
        # that ignore it are still served, by read-modify-write of the partial sectors.
        w.write(p.option_reply(option, p.Rep.INFO,
                               p.info_block_size(SECTOR_SIZE, PREFERRED_BLOCK, MAX_REQUEST)))
        if p.Info.NAME in go.info_requests:
            w.write(p.option_reply(option, p.Rep.INFO, p.info_name(srv.name)))
        if p.Info.DESCRIPTION in go.info_requests and srv.description:
            w.write(p.option_reply(option, p.Rep.INFO, p.info_description(srv.description)))
        await self._reply(option, p.Rep.ACK)
        return option == p.Opt.GO

    # ------------------------------------------------------------------ transmission

    async def _transmission(self) -> None:
        reader, writer, export = self.reader, self.writer, self.export
        loop = asyncio.get_running_loop()
        stats = self.server.stats
        reader.inline = self._serve_inline
        while True:
            req = await reader.read_request()
            stats.requests += 1
            payload: bytes | bytearray | None = None
            if req.type == _WRITE:
                if req.length > MAX_REQUEST:
                    await reader.discard(req.length)
                    self._error(req, _EINVAL, "write larger than the maximum")
                    await writer.drain()
                    continue
                payload = await reader.read_payload(req.length)
            if req.type == _DISC:
                self.writer.send_out()
                await loop.run_in_executor(None, export.flush)
                self.dirty = False
                raise _Closed()
            if (req.type == _FLUSH or (req.type == _TRIM and req.flags & _FUA)) and not self._validate(req):
                # The two that wait for a sync, which runs in a thread: earlier replies go
                # out first, so they do not wait for it.
                try:
                    if req.type == _TRIM:
                        self.dirty = True
                        export.trim(req.offset, req.length)
                    writer.send_out()
                    await loop.run_in_executor(None, export.flush)
                    if req.type == _FLUSH:
                        self.dirty = False
                    writer.write(_simple_reply(req.cookie))
                except Exception as e:
                    if not self._failed(req, e):
                        raise
            else:
                self._serve(req, payload)
            if writer.push():
                await writer.wait_drained()

    def _serve_inline(self) -> None:
        """Serves the READs and small WRITEs already buffered, from the protocol's
        buffer_updated, while the task is parked between requests.

        Waking the task for each burst (a future, a loop iteration, three coroutine frames
        resumed, a new future to park on) cost more than serving a 4 KiB request itself.
        Anything else (FLUSH, DISC, large writes, a bad header) stops the batch where it is
        and is left to the task, so the order of requests is kept."""
        io, stats = self.reader, self.server.stats
        while (taken := io.next_simple()) is not None:
            stats.requests += 1
            self._serve(*taken)
            io.push()

    def _serve(self, req: p.Request, payload: bytes | bytearray | None) -> None:
        """Serves a request that needs no waiting and queues its reply (or error)."""
        err = self._validate(req)
        if err:
            self._error(req, err, "invalid request")
            return
        export, writer = self.export, self.writer
        try:
            if req.type == _READ:
                data = export.read(req.offset, req.length)
                if self.structured:
                    writer.write(_read_header(req.cookie, req.offset, len(data)))
                else:
                    writer.write(_simple_reply(req.cookie))
                writer.write(data)
                return
            self.dirty = True
            if req.type == _WRITE:
                assert payload is not None
                export.write(req.offset, payload, bool(req.flags & _FUA))
            elif req.type == _WRITE_ZEROES:
                export.write_zeroes(req.offset, req.length, bool(req.flags & _FUA))
            else:
                assert req.type == _TRIM  # without FUA; _validate refused everything else
                export.trim(req.offset, req.length)
        except Exception as e:
            if not self._failed(req, e):
                raise
            return
        writer.write(_simple_reply(req.cookie))

    def _failed(self, req: p.Request, e: Exception) -> bool:
        """The NBD error reply for an export failure; False for anything that is not one."""
        if isinstance(e, PermissionError):
            self._error(req, p.Err.EPERM, "read-only export")
        elif isinstance(e, VolumeError):
            self._error(req, p.Err.EINVAL, e.message)
        elif isinstance(e, OSError):
            log.warning("I/O error on %s: %s", p.Cmd(req.type).name, e)
            self._error(req, p.Err.ENOSPC if e.errno == errno.ENOSPC else p.Err.EIO, "I/O error")
        else:
            return False
        return True

    def _validate(self, req: p.Request) -> int:
        """The NBD error for a request we must refuse, or 0."""
        cmd, flags = req.type, req.flags
        refused = _REFUSED_FLAGS.get(cmd)
        if refused is None:  # unknown, or not advertised
            return _EINVAL
        if flags & refused or (flags & _DF and not self.structured):
            return _EINVAL
        if cmd == _FLUSH:
            return 0
        export = self.export
        if cmd != _READ and export.read_only:
            return _EPERM
        if req.length == 0:
            return _EINVAL
        if cmd == _READ and req.length > MAX_REQUEST:
            return _EINVAL
        if req.offset + req.length > export.size:
            # The spec's choice: ENOSPC for writes past the end, EINVAL for the rest.
            return _ENOSPC if cmd == _WRITE or cmd == _WRITE_ZEROES else _EINVAL
        return 0

    def _error(self, req: p.Request, err: int, message: str) -> None:
        """Queues the error reply; the caller pushes it like any other."""
        name = p.Err(err).name
        self.server.stats.errors[name] = self.server.stats.errors.get(name, 0) + 1
        if self.structured and req.type == p.Cmd.READ:
            self.writer.write(p.structured_error(req.cookie, err, message))
        else:
            self.writer.write(p.simple_reply(req.cookie, err))


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



def listen(socket_path: Path | None, host: str, port: int | None) -> tuple[socket.socket, str]:
    """A listening socket and the NBD URI that reaches it."""
    if socket_path is not None:
        if socket_path.is_socket():
            socket_path.unlink()  # a stale socket from a killed server
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(socket_path))
        os.chmod(socket_path, 0o600)
        uri = f"nbd+unix:///?socket={socket_path}"
    else:
        s = socket.create_server((host, port or 0))
        uri = f"nbd://{host}:{s.getsockname()[1]}/"
    s.listen(128)
    s.setblocking(False)
    return s, uri


def _widen_send_buffer(sock: socket.socket) -> None:
    """Room for a few large read replies in the kernel. A reply that does not fit is copied
    by asyncio (3.11) into its own buffer, then memmoved as it drains: for 256 KiB reads
    against the usual 208 KiB default that was a third of the server's CPU time. The kernel
    caps the request at net.core.wmem_max, which is fine: this is a hint."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:
        pass


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
            _widen_send_buffer(sock)
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
