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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from adapters.block import nbd_protocol as p
from adapters.block.sector_crypto import SECTOR_SIZE, Buffer
from adapters.block.volume import VolumeError

log = logging.getLogger("ssegw.nbd")

# Requests up to 32 MiB (what qemu and nbdkit use as their maximum block size).
MAX_REQUEST = 32 << 20
PREFERRED_BLOCK = 4096
# asyncio stops reading a socket when its buffer holds twice this; the default (64 KiB)
# would stall every 256 KiB write, so let a few large requests queue up.
STREAM_LIMIT = 4 << 20
# Option data beyond this is drained and refused with ERR_TOO_BIG rather than buffered.
MAX_OPTION = 64 << 10


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

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.active += 1
        conn = _Connection(self, reader, writer)
        try:
            await conn.run()
        except (_Closed, asyncio.IncompleteReadError, ConnectionError):
            pass
        except p.ProtocolError as e:
            log.info("closing a connection: %s", e)
        except Exception:  # one broken connection must never take the server down
            log.exception("connection failed")
        finally:
            self.stats.active -= 1
            if conn.dirty:
                # The client vanished with writes it may not have flushed; make what it
                # was told is written as durable as we can, at no risk to anyone else.
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.export.flush)
                except OSError:
                    log.exception("flush after disconnect failed")
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


class _Connection:
    def __init__(self, server: NbdServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.export = server.export
        self.reader = reader
        self.writer = writer
        self.structured = False
        self.dirty = False

    async def run(self) -> None:
        self.writer.write(p.server_greeting())
        await self.writer.drain()
        flags = p.decode_client_flags(await self.reader.readexactly(p.CLIENT_FLAGS_SIZE))
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
        option, length = p.decode_option_header(await self.reader.readexactly(p.OPTION_HEADER_SIZE))
        if length > MAX_OPTION:
            await _discard(self.reader, length)
            if option == p.Opt.EXPORT_NAME:
                raise _Closed()
            await self._reply(option, p.Rep.ERR_TOO_BIG)
            return False
        data = await self.reader.readexactly(length)
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
        reader, export = self.reader, self.export
        loop = asyncio.get_running_loop()
        while True:
            req = p.decode_request(await reader.readexactly(p.REQUEST_SIZE))
            self.server.stats.requests += 1
            payload: bytes | None = None
            if req.type == p.Cmd.WRITE:
                if req.length > MAX_REQUEST:
                    await _discard(reader, req.length)
                    await self._error(req, p.Err.EINVAL, "write larger than the maximum")
                    continue
                payload = await reader.readexactly(req.length)
            if req.type == p.Cmd.DISC:
                await loop.run_in_executor(None, export.flush)
                self.dirty = False
                raise _Closed()
            err = self._validate(req)
            if err:
                await self._error(req, err, "invalid request")
                continue
            try:
                if req.type == p.Cmd.READ:
                    data = export.read(req.offset, req.length)
                    await self._read_reply(req, data)
                    continue
                if req.type == p.Cmd.WRITE:
                    assert payload is not None
                    self.dirty = True
                    export.write(req.offset, payload, bool(req.flags & p.CmdFlag.FUA))
                elif req.type == p.Cmd.WRITE_ZEROES:
                    self.dirty = True
                    export.write_zeroes(req.offset, req.length, bool(req.flags & p.CmdFlag.FUA))
                elif req.type == p.Cmd.TRIM:
                    self.dirty = True
                    export.trim(req.offset, req.length)
                    if req.flags & p.CmdFlag.FUA:
                        await loop.run_in_executor(None, export.flush)
                elif req.type == p.Cmd.FLUSH:
                    await loop.run_in_executor(None, export.flush)
                    self.dirty = False
            except PermissionError:
                await self._error(req, p.Err.EPERM, "read-only export")
                continue
            except VolumeError as e:
                await self._error(req, p.Err.EINVAL, e.message)
                continue
            except OSError as e:
                log.warning("I/O error on %s: %s", p.Cmd(req.type).name, e)
                await self._error(req, p.Err.ENOSPC if e.errno == errno.ENOSPC else p.Err.EIO,
                                  "I/O error")
                continue
            self.writer.write(p.simple_reply(req.cookie))
            await self.writer.drain()

    def _validate(self, req: p.Request) -> int:
        """The NBD error for a request we must refuse, or 0."""
        export = self.export
        try:
            cmd = p.Cmd(req.type)
        except ValueError:
            return p.Err.EINVAL
        allowed = {
            p.Cmd.READ: p.CmdFlag.DF,
            p.Cmd.WRITE: p.CmdFlag.FUA,
            p.Cmd.WRITE_ZEROES: p.CmdFlag.FUA | p.CmdFlag.NO_HOLE,
            p.Cmd.TRIM: p.CmdFlag.FUA,
            p.Cmd.FLUSH: p.CmdFlag(0),
        }.get(cmd)
        if allowed is None:  # CACHE, BLOCK_STATUS, RESIZE: not advertised
            return p.Err.EINVAL
        if req.flags & ~allowed or (req.flags & p.CmdFlag.DF and not self.structured):
            return p.Err.EINVAL
        if cmd == p.Cmd.FLUSH:
            return 0
        if cmd != p.Cmd.READ and export.read_only:
            return p.Err.EPERM
        if req.length == 0:
            return p.Err.EINVAL
        if cmd == p.Cmd.READ and req.length > MAX_REQUEST:
            return p.Err.EINVAL
        if req.offset + req.length > export.size:
            # The spec's choice: ENOSPC for writes past the end, EINVAL for the rest.
            return p.Err.ENOSPC if cmd in (p.Cmd.WRITE, p.Cmd.WRITE_ZEROES) else p.Err.EINVAL
        return 0

    async def _read_reply(self, req: p.Request, data: bytes | bytearray) -> None:
        if self.structured:
            self.writer.write(p.structured_read_header(req.cookie, req.offset, len(data)))
        else:
            self.writer.write(p.simple_reply(req.cookie))
        self.writer.write(data)
        await self.writer.drain()

    async def _error(self, req: p.Request, err: int, message: str) -> None:
        name = p.Err(err).name
        self.server.stats.errors[name] = self.server.stats.errors.get(name, 0) + 1
        if self.structured and req.type == p.Cmd.READ:
            self.writer.write(p.structured_error(req.cookie, err, message))
        else:
            self.writer.write(p.simple_reply(req.cookie, err))
        await self.writer.drain()


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length > 0:
        chunk = await reader.read(min(length, 1 << 20))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)


# ---------------------------------------------------------------------- running it


async def serve(
    server: NbdServer,
    *,
    socket_path: Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or forever); `ready` gets the URI once listening."""
    if socket_path is not None:
        if socket_path.is_socket():
            socket_path.unlink()  # a stale socket from a killed server
        srv = await asyncio.start_unix_server(server.handle, path=str(socket_path),
                                              limit=STREAM_LIMIT)
        os.chmod(socket_path, 0o600)
        uri = f"nbd+unix:///?socket={socket_path}"
    else:
        srv = await asyncio.start_server(server.handle, host, port or 0, limit=STREAM_LIMIT)
        bound = srv.sockets[0].getsockname()[1]
        uri = f"nbd://{host}:{bound}/"
    async with srv:
        if ready is not None:
            ready(uri)
        if stop is None:
            await srv.serve_forever()
        else:
            await stop.wait()
    if socket_path is not None:
        socket_path.unlink(missing_ok=True)
