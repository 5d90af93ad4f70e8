"""uvicorn's httptools protocol, with request bodies handed to the application as they arrived.

Stock uvicorn (0.30-0.55) appends every piece of a request body the parser delivers onto a
bytearray (`cycle.body += body`) and gives the application `bytes(cycle.body)`: two copies of
every uploaded byte on the event loop, on top of the socket read and the parser's own. Under a
64 MiB PUT they were 11% of the proxy's event-loop thread (perf, `-t` on that thread), as much
as the AES-GCM that seals the object. Here the pieces are kept as the parser made them and a
receive() that finds one piece (the usual case: the loop reads up to 256,000 bytes a time and
the protocol stops reading past 64 KiB until the application takes them) passes it on as is;
several are joined once.

Flow control, pipelining, 100-continue and disconnects stay uvicorn's: only the body buffer's
type changes (`_Pieces` keeps the `+=` and `len()` uvicorn's code uses) and receive() builds its
message from it. The lines this relies on are checked in uvicorn's source at startup; a uvicorn
whose lines differ gets its own protocol from `protocol_class()`, which is only slower.
"""

from __future__ import annotations

import inspect
from typing import Any

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _Pieces:
    """A request body's pieces, in order, with their total length."""

    __slots__ = ("pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def __iadd__(self, piece: bytes) -> _Pieces:
        if piece:
            self.pieces.append(piece)
            self.size += len(piece)
        return self

    def __len__(self) -> int:
        return self.size

    def take(self) -> bytes:
        pieces = self.pieces
        self.pieces, self.size = [], 0
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)


class _Cycle(RequestResponseCycle):
    body: Any

    async def receive(self) -> Any:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False

        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()

        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": self.body.take(), "more_body": self.more_body}


class PiecesProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request cycles keep the body's pieces (module docstring)."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        # uvicorn made a stock cycle (its module-level name); nothing has read its body yet:
        # the ASGI task it started runs on a later turn of the loop.
        if type(cycle) is RequestResponseCycle and isinstance(cycle.body, bytearray) and not cycle.body:
            cycle.__class__ = _Cycle
            cycle.body = _Pieces()  # type: ignore[assignment]


def _fits() -> bool:
    """Whether uvicorn's protocol and cycle do what PiecesProtocol relies on: the body grows by
    `+=` and is measured with len() in on_body, and receive() is the one replaced here. Any
    other uvicorn gets its own protocol."""
    try:
        on_body = inspect.getsource(HttpToolsProtocol.on_body)
        receive = inspect.getsource(RequestResponseCycle.receive)
        init = inspect.getsource(RequestResponseCycle.__init__)
    except (OSError, TypeError):  # no source to check against
        return False
    return (getattr(httptools_impl, "RequestResponseCycle", None) is RequestResponseCycle
            and "self.cycle.body += body" in on_body and "len(self.cycle.body)" in on_body
            and "bytes(self.body)" in receive and "self.waiting_for_100_continue" in receive
            and "self.body = bytearray()" in init)


def protocol_class() -> type[HttpToolsProtocol] | str:
    """What uvicorn.Config(http=...) should get: PiecesProtocol, or uvicorn's own httptools."""
    return PiecesProtocol if _fits() else "httptools"
