"""The NBD transport of one connection: buffered socket reads and corked replies.

`ConnectionIO` is the asyncio protocol under every connection (the handshake reads options
through it, the session requests and payloads); `listen` makes the listening socket. What the
bytes mean is `nbd_protocol`'s business, what is done with them the handshake's and the
session's.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import cast

from adapters.block import nbd_protocol as p
from adapters.block.nbd_fastpath import MAX_FAST_WRITE, FastPath

# Requests, and payloads the native loop serves (up to MAX_FAST_WRITE), are read through a
# buffer this big; larger payloads bypass it. Room for two of the largest, so one can arrive
# while the one before is served.
RECV_BUFFER = 2 * (MAX_FAST_WRITE + p.REQUEST_SIZE)
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
# SO_SNDBUF asked for on each connection (see widen_send_buffer).
SEND_BUFFER = 4 << 20

# Plain ints on the per-request path (see nbd_session for why).
_READ, _WRITE = int(p.Cmd.READ), int(p.Cmd.WRITE)
_REQUEST_SIZE, _decode_request_from = p.REQUEST_SIZE, p.decode_request_from
_unpack_request, _REQUEST_MAGIC = p.REQUEST_STRUCT.unpack_from, p.REQUEST_MAGIC


class Closed(Exception):
    """The connection is over (abort, disconnect, or an unknown export): control flow, never
    an error anyone is told about."""


class ConnectionIO(asyncio.BufferedProtocol):
    """Buffered reads and writes for one connection, with as few copies as asyncio allows.

    asyncio streams copy every byte three times (into the stream buffer, out of it, and a
    memmove to drop what was read). Here the transport receives requests into one reusable
    buffer, and a large write payload straight into the bytearray that is then encrypted.
    """

    def __init__(self) -> None:
        self._buf = bytearray(RECV_BUFFER)
        self._mv = memoryview(self._buf)  # also pins the buffer: it is never reallocated
        self._buf_at = 0  # its address, for the native loop (see serve_native)
        self._start = self._end = 0
        self._target: memoryview | None = None  # where a large payload is being received
        self._target_got = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._out: list[bytes | bytearray | memoryview] = []
        self._out_bytes = 0
        self._corked = 0  # replies queued since the last send
        self.transport: asyncio.Transport | None = None
        # Serves buffered requests from inside buffer_updated while the connection's task is
        # parked between requests (see Session.serve_inline); None until transmission.
        self.inline: Callable[[], None] | None = None
        self._between_requests = False
        self._fd = -1  # the socket's, for the native loop's early receive (serve_native)

    # -- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports implement asyncio.Transport without
        # subclassing it. (An assert here used to raise inside uvloop's connection_made call,
        # which then neither started reading nor failed the connection: replies were dropped
        # for want of a transport, and client and server waited on each other for ever.)
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:
            return self._target[self._target_got:]
        if self._end == len(self._buf):  # compact; the caller made sure something was consumed
            self._compact()
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

    def _compact(self) -> None:
        """Moves the unread bytes to the front of the receive buffer."""
        n = self._end - self._start
        self._buf[:n] = self._mv[self._start:self._end]
        self._start, self._end = 0, n

    async def _more_between_requests(self) -> None:
        """`_more`, letting buffer_updated serve what arrives meanwhile (see inline)."""
        self._between_requests = True
        try:
            await self._more()
        finally:
            self._between_requests = False

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
                self._compact()
            await self._more()

    def request_buffered(self) -> bool:
        return self._end - self._start >= _REQUEST_SIZE

    async def read_request(self) -> p.Request:
        """The next request header, decoded where it lies in the receive buffer."""
        await self.await_request()
        req = _decode_request_from(self._buf, self._start)
        self._start += _REQUEST_SIZE
        return req

    async def await_request(self) -> None:
        """Until a whole request header is buffered (IncompleteReadError once the peer is gone)."""
        while self._end - self._start < _REQUEST_SIZE:
            if self._start + _REQUEST_SIZE > len(self._buf):  # make room for the whole header
                self._compact()
            await self._more_between_requests()

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

    def serve_native(self, fast: FastPath, read_only: bool) -> tuple[int, bool]:
        """Lets the native loop serve what it can of the buffered requests, and queues its
        replies like any others: (requests served, whether any was a write). Corked and sent
        as `push` does for the same number of replies; nothing while replies cannot go out."""
        start = self._start
        if self._end - start < _REQUEST_SIZE or self._writing_paused or self._closed:
            return 0, False
        if not self._buf_at:
            self._buf_at = ctypes.addressof((ctypes.c_char * RECV_BUFFER).from_buffer(self._buf))
        if not self._out and self.transport is not None and not self.transport.get_write_buffer_size():
            fast.recycle()  # every reply it made has gone to the kernel: none is referenced
        got, consumed, replies, served, wrote = fast.serve(
            self._buf_at + start, self._end - start, len(self._buf) - start, self._fd,
            CORK_REPLIES - self._corked, read_only)
        self._end += got
        if self._start == 0 and self._end == len(self._buf):
            self._pause_reading()  # as buffer_updated does: get_buffer must never be empty
        if not served:
            return 0, False
        self._start = start + consumed
        self._out.append(replies)
        self._out_bytes += len(replies)
        self._corked += served
        if (self._out_bytes >= OUT_HIGH_WATER or self._corked >= CORK_REPLIES
                or self._end - self._start < _REQUEST_SIZE):
            self.send_out()
        return served, wrote

    async def await_native_write(self) -> bool:
        """If the next request is a WRITE the native loop may serve (up to MAX_FAST_WRITE)
        whose payload has not all arrived, waits for more of it and returns True (the caller
        offers the buffer to the loop again); else False. Without this the task would take
        the header and receive the payload into a buffer of its own, in Python."""
        start = self._start
        if self._end - start < _REQUEST_SIZE or self._writing_paused or self._closed:
            return False
        magic, _, typ, _, _, length = _unpack_request(self._buf, start)
        if magic != _REQUEST_MAGIC or typ != _WRITE or length > MAX_FAST_WRITE:
            return False
        if self._end - start >= _REQUEST_SIZE + length:
            return False  # whole, and the loop left it: Python serves it
        if start + _REQUEST_SIZE + length > len(self._buf):  # make room for all of it
            self._compact()
        await self._more_between_requests()  # bytes that complete it are served as they arrive
        return True

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

    def write(self, data: bytes | bytearray | memoryview) -> None:
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
        small: list[bytes | bytearray | memoryview] = []
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


def widen_send_buffer(sock: socket.socket) -> None:
    """Room for a few large read replies in the kernel. A reply that does not fit is copied
    by asyncio (3.11) into its own buffer, then memmoved as it drains: for 256 KiB reads
    against the usual 208 KiB default that was a third of the server's CPU time. The kernel
    caps the request at net.core.wmem_max, which is fine: this is a hint."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:
        pass

