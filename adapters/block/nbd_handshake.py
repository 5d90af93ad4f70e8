"""The NBD handshake (fixed newstyle): greeting, client flags and option haggling.

`negotiate` runs on a connection's transport until the client picks the export (GO or the
old EXPORT_NAME), and says whether structured replies were agreed; the session takes over
from there. An unknown export, ABORT or an oversized EXPORT_NAME end the connection with
`Closed`; every other bad option gets its NBD error reply and the haggling goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.block import nbd_protocol as p
from adapters.block.nbd_transport import Closed, ConnectionIO
from adapters.block.sector_crypto import SECTOR_SIZE

# Requests up to 32 MiB (what qemu and nbdkit use as their maximum block size).
MAX_REQUEST = 32 << 20
PREFERRED_BLOCK = 4096
# Option data beyond this is drained and refused with ERR_TOO_BIG rather than buffered.
MAX_OPTION = 64 << 10


@dataclass(frozen=True)
class ExportOffer:
    """What the handshake tells a client about the one export."""

    name: str
    description: str
    size: int
    flags: int  # transmission flags (nbd_protocol.TxFlag)

    def known(self, name: str) -> bool:
        return name in ("", self.name)


async def negotiate(io: ConnectionIO, offer: ExportOffer) -> bool:
    """The whole handshake; True when the client asked for structured replies."""
    io.write(p.server_greeting())
    await io.drain()
    flags = p.decode_client_flags(await io.read_message(p.CLIENT_FLAGS_SIZE))
    haggle = _Haggle(io, offer, no_zeroes=bool(flags & p.FLAG_C_NO_ZEROES))
    while not await haggle.option():
        pass
    return haggle.structured


class _Haggle:
    """One connection's option phase. Each handler answers one option and returns True when
    the transmission phase begins."""

    def __init__(self, io: ConnectionIO, offer: ExportOffer, *, no_zeroes: bool) -> None:
        self.io = io
        self.offer = offer
        self.no_zeroes = no_zeroes
        self.structured = False
        self._handlers: dict[int, Callable[[int, bytes], Awaitable[bool]]] = {
            p.Opt.EXPORT_NAME: self._export_name,
            p.Opt.ABORT: self._abort,
            p.Opt.LIST: self._list,
            p.Opt.INFO: self._go,
            p.Opt.GO: self._go,
            p.Opt.STRUCTURED_REPLY: self._structured_reply,
            p.Opt.LIST_META_CONTEXT: self._meta_context,
            p.Opt.SET_META_CONTEXT: self._meta_context,
            p.Opt.STARTTLS: self._refuse_tls,
        }

    async def option(self) -> bool:
        """One option; True when the transmission phase begins."""
        option, length = p.decode_option_header(await self.io.read_message(p.OPTION_HEADER_SIZE))
        if length > MAX_OPTION:
            await self.io.discard(length)
            if option == p.Opt.EXPORT_NAME:
                raise Closed()
            await self._reply(option, p.Rep.ERR_TOO_BIG)
            return False
        data = await self.io.read_message(length)
        handler = self._handlers.get(option, self._unsupported)
        return await handler(option, data)

    async def _reply(self, option: int, reply: int, data: bytes = b"") -> bool:
        self.io.write(p.option_reply(option, reply, data))
        await self.io.drain()
        return False

    async def _export_name(self, option: int, data: bytes) -> bool:
        # No error reply exists for this old option: an unknown name ends the connection.
        if not self.offer.known(data.decode("utf-8", "replace")):
            raise Closed()
        self.io.write(p.export_name_reply(self.offer.size, self.offer.flags, self.no_zeroes))
        await self.io.drain()
        return True

    async def _abort(self, option: int, data: bytes) -> bool:
        await self._reply(option, p.Rep.ACK)
        raise Closed()

    async def _list(self, option: int, data: bytes) -> bool:
        if data:
            return await self._reply(option, p.Rep.ERR_INVALID)
        offer = self.offer
        self.io.write(p.option_reply(option, p.Rep.SERVER,
                                     p.rep_server(offer.name, offer.description)))
        return await self._reply(option, p.Rep.ACK)

    async def _structured_reply(self, option: int, data: bytes) -> bool:
        if data or self.structured:
            return await self._reply(option, p.Rep.ERR_INVALID)
        self.structured = True
        return await self._reply(option, p.Rep.ACK)

    async def _meta_context(self, option: int, data: bytes) -> bool:
        try:
            name, _queries = p.decode_meta_context_query(data)
        except (ValueError, UnicodeDecodeError):
            return await self._reply(option, p.Rep.ERR_INVALID)
        if not self.structured:
            return await self._reply(option, p.Rep.ERR_INVALID)
        if not self.offer.known(name):
            return await self._reply(option, p.Rep.ERR_UNKNOWN)
        return await self._reply(option, p.Rep.ACK)  # we offer no metadata contexts

    async def _refuse_tls(self, option: int, data: bytes) -> bool:
        return await self._reply(option, p.Rep.ERR_POLICY)

    async def _unsupported(self, option: int, data: bytes) -> bool:
        return await self._reply(option, p.Rep.ERR_UNSUP)

    async def _go(self, option: int, data: bytes) -> bool:
        offer = self.offer
        try:
            go = p.decode_go(data)
        except (ValueError, UnicodeDecodeError):
            return await self._reply(option, p.Rep.ERR_INVALID)
        if not offer.known(go.name):
            return await self._reply(option, p.Rep.ERR_UNKNOWN)
        w = self.io
        w.write(p.option_reply(option, p.Rep.INFO, p.info_export(offer.size, offer.flags)))
        # Sent whether asked or not: the minimum tells clients to align to sectors. Clients
        # that ignore it are still served, by read-modify-write of the partial sectors.
        w.write(p.option_reply(option, p.Rep.INFO,
                               p.info_block_size(SECTOR_SIZE, PREFERRED_BLOCK, MAX_REQUEST)))
        if p.Info.NAME in go.info_requests:
            w.write(p.option_reply(option, p.Rep.INFO, p.info_name(offer.name)))
        if p.Info.DESCRIPTION in go.info_requests and offer.description:
            w.write(p.option_reply(option, p.Rep.INFO, p.info_description(offer.description)))
        await self._reply(option, p.Rep.ACK)
        return option == p.Opt.GO
