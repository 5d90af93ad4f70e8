"""The NBD transmission phase of one connection: requests served against the export.

Semantics the session promises, and why they hold:

* A write is acknowledged only after its ciphertext is `pwrite`n into the image, so any read
  issued after that acknowledgement, on any connection, sees it (one page cache per image).
* FLUSH is `fdatasync` of the image: every write acknowledged before the flush was sent, on
  any connection, is durable when the flush is acknowledged. That is what CAN_MULTI_CONN
  promises, so it is advertised. FUA writes are durable on their own (RWF_DSYNC).
* Malformed or out-of-range requests get an NBD error; a request header with a bad magic,
  after which nothing can be trusted to line up, ends that connection and nothing else.
* A failed request is answered with the errno its error carries (`BlockError.nbd_errno`);
  an `OSError` of the image with EIO, or ENOSPC when the disk is full.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field
from typing import Protocol

from adapters.block import nbd_protocol as p
from adapters.block.errors import BlockError
from adapters.block.nbd_fastpath import fast_path_for
from adapters.block.nbd_handshake import MAX_REQUEST
from adapters.block.nbd_transport import CORK_REPLIES, Closed, ConnectionIO
from adapters.block.sector_crypto import Buffer

log = logging.getLogger("ssegw.nbd")

# The per-request path uses plain ints: IntFlag arithmetic runs Python-level enum code
# (~0.7 us per `flags & FUA`), several times per request, which a 4 KiB request notices.
_READ, _WRITE, _DISC = int(p.Cmd.READ), int(p.Cmd.WRITE), int(p.Cmd.DISC)
_FLUSH, _TRIM, _WRITE_ZEROES = int(p.Cmd.FLUSH), int(p.Cmd.TRIM), int(p.Cmd.WRITE_ZEROES)
_FUA, _DF = int(p.CmdFlag.FUA), int(p.CmdFlag.DF)
_EINVAL, _EPERM, _ENOSPC = int(p.Err.EINVAL), int(p.Err.EPERM), int(p.Err.ENOSPC)
_read_header, _simple_reply = p.structured_read_header, p.simple_reply
# An OSError of the image, by its errno: what NBD is told (EIO for anything not listed).
_OS_ERRNO = {errno.ENOSPC: _ENOSPC, errno.EPERM: _EPERM, errno.EACCES: _EPERM}
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
    native: int = 0  # of those, served by the native loop (nbd_fastpath)
    errors: dict[str, int] = field(default_factory=dict)


class Session:
    """Serves one connection's requests, in order, until it disconnects."""

    def __init__(self, export: Export, io: ConnectionIO, stats: ServerStats, *,
                 structured: bool, native: bool = True) -> None:
        self.export = export
        self.io = io
        self.stats = stats
        self.structured = structured
        # Something was written since the last flush: a connection that ends abnormally
        # with this set gets the image synced for it (see NbdServer.handle).
        self.dirty = False
        # Small aligned READs and WRITEs in C, where the export allows (nbd_fastpath).
        self._fast = fast_path_for(export, structured, CORK_REPLIES) if native else None

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
            self._fast = None

    async def run(self) -> None:
        """Until DISC (raises Closed) or the connection is lost."""
        io, stats = self.io, self.stats
        io.inline = self.serve_inline
        while True:
            if self._fast is not None:
                # What is buffered goes to the loop first; the task takes a request only once
                # the loop has left it (so a large WRITE is waited for whole, then served in C).
                self.serve_inline()
                if await io.await_native_write():
                    continue
                if not io.request_buffered():
                    await io.await_request()
                    continue
            req = await io.read_request()
            stats.requests += 1
            payload: bytes | bytearray | None = None
            if req.type == _WRITE:
                if req.length > MAX_REQUEST:
                    await io.discard(req.length)
                    self._error(req, _EINVAL, "write larger than the maximum")
                    await io.drain()
                    continue
                payload = await io.read_payload(req.length)
            if req.type == _DISC:
                io.send_out()
                await asyncio.get_running_loop().run_in_executor(None, self.export.flush)
                self.dirty = False
                raise Closed()
            if (req.type == _FLUSH or (req.type == _TRIM and req.flags & _FUA)) and not self._validate(req):
                await self._synced(req)
            else:
                self._serve(req, payload)
            if io.push():
                await io.wait_drained()

    async def _synced(self, req: p.Request) -> None:
        """FLUSH, or TRIM with FUA: the two that wait for a sync, which runs in a thread.
        Earlier replies go out first, so they do not wait for it."""
        try:
            if req.type == _TRIM:
                self.dirty = True
                self.export.trim(req.offset, req.length)
            self.io.send_out()
            await asyncio.get_running_loop().run_in_executor(None, self.export.flush)
            if req.type == _FLUSH:
                self.dirty = False
            self.io.write(_simple_reply(req.cookie))
        except Exception as e:
            if not self._failed(req, e):
                raise

    def serve_inline(self) -> None:
        """Serves the READs and small WRITEs already buffered, from the protocol's
        buffer_updated, while the task is parked between requests.

        Waking the task for each burst (a future, a loop iteration, three coroutine frames
        resumed, a new future to park on) cost more than serving a 4 KiB request itself.
        Anything else (FLUSH, DISC, large writes, a bad header) stops the batch where it is
        and is left to the task, so the order of requests is kept."""
        io, stats, fast = self.io, self.stats, self._fast
        while True:
            if fast is not None:
                served, wrote = io.serve_native(fast, self.export.read_only)
                if served:
                    stats.requests += served
                    stats.native += served
                    self.dirty = self.dirty or wrote
                    continue
            taken = io.next_simple()
            if taken is None:
                return
            stats.requests += 1
            self._serve(*taken)
            io.push()

    def _serve(self, req: p.Request, payload: bytes | bytearray | None) -> None:
        """Serves a request that needs no waiting and queues its reply (or error)."""
        err = self._validate(req)
        if err:
            self._error(req, err, "invalid request")
            return
        export, writer = self.export, self.io
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
        if isinstance(e, BlockError):
            self._error(req, e.nbd_errno, e.message)
        elif isinstance(e, OSError):
            log.warning("I/O error on %s: %s", p.Cmd(req.type).name, e)
            self._error(req, _OS_ERRNO.get(e.errno or 0, int(p.Err.EIO)), "I/O error")
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
        errors = self.stats.errors
        errors[name] = errors.get(name, 0) + 1
        if self.structured and req.type == p.Cmd.READ:
            self.io.write(p.structured_error(req.cookie, err, message))
        else:
            self.io.write(p.simple_reply(req.cookie, err))

