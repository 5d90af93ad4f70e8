"""Streams between the client and the backend: sealing a body on its way in, and holding back
a read's answer until its first piece has authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import weakref
from collections.abc import AsyncIterator

from gateway.s3 import envelope
from gateway.s3.bodies import check_md5
from gateway.s3.digests import Digests
from gateway.s3.envelope import ObjectCorrupt
from gateway.s3.errors import S3Error
from gateway.s3.reader import damaged

BUFFER_LIMIT = 16 * 1024 * 1024  # objects up to this size get the plaintext MD5 as ETag
# Bytes of buffered bodies one event loop holds at once (BodyBudget), and how long a body may
# wait for room before the client is told to slow down.
BUFFER_BUDGET = 512 * 1024 * 1024
BUFFER_WAIT = 20.0


class BodyBudget:
    """Room for bodies read whole before they are stored (objects up to BUFFER_LIMIT).

    Each such PUT holds its object's sealed bytes (and the transport a copy while it sends), so
    without a bound, concurrent 16 MiB PUTs grew the proxy by ~35 MiB each (32 at once: 1.2
    GB) until the kernel killed it, and everything in flight with it; with it, 64 at once
    peaked at 623 MiB and took as long in all. A body waits for room
    before any of it is read (its client's upload stalls, as TCP does when a server reads
    slowly) and after BUFFER_WAIT seconds is refused with S3's SlowDown (503), which SDKs retry
    with backoff. One budget per event loop (the proxy runs one; tests run several).
    """

    _budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BodyBudget] = weakref.WeakKeyDictionary()

    def __init__(self, capacity: int, wait: float) -> None:
        self.capacity = capacity
        self.free = capacity
        self._wait = wait
        self._room = asyncio.Condition()

    @classmethod
    def of_loop(cls) -> BodyBudget:
        loop = asyncio.get_running_loop()
        budget = cls._budgets.get(loop)
        if budget is None:
            budget = cls._budgets[loop] = cls(BUFFER_BUDGET, BUFFER_WAIT)
        return budget

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        need = min(size, self.capacity)  # a body bigger than the whole budget waits for all of it
        async with self._room:
            try:
                await asyncio.wait_for(self._room.wait_for(lambda: self.free >= need), self._wait)
            except TimeoutError:
                raise S3Error("SlowDown", "Please reduce your request rate.", 503) from None
            self.free -= need
        try:
            yield
        finally:
            async with self._room:
                self.free += need
                self._room.notify_all()


async def first_checked(stream: AsyncIterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """`stream` with its first piece opened now: a damaged object gets an S3 error rather than a
    200 that breaks off; later damage breaks the connection and never sends bad bytes."""
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = b""
    except ObjectCorrupt as e:
        raise damaged(str(e)) from None

    async def body() -> AsyncIterator[bytes | memoryview]:
        if first:
            yield first
        try:
            async for piece in stream:
                yield piece
        except ObjectCorrupt as e:
            raise damaged(str(e)) from None

    return body()


async def sealed_stream(stream: AsyncIterator[bytes | memoryview], sealer: envelope.Sealer,
                        expected_md5: bytes | None = None,
                        md5: hashlib._Hash | None = None) -> AsyncIterator[memoryview]:
    """Sealed packages of `stream` as they fill. The final package is sealed only after the
    whole body verified (the decoders raise at the end otherwise, as does a wrong Content-MD5),
    so a bad body aborts the backend upload before it can complete."""
    if expected_md5 is not None and md5 is None:
        md5 = hashlib.md5()
    digests = Digests(md5)
    # The sealer writes its packages into pieces of about 1 MiB: each piece is one trip through
    # aiohttp's writer and the event loop, which cost more than sealing when done per 64 KiB package.
    async for chunk in stream:
        await digests.feed(chunk)
        for piece in sealer.feed(chunk):
            yield piece
    await digests.finish()
    check_md5(expected_md5, md5)
    for piece in sealer.finish():
        yield piece


async def sealed_whole(stream: AsyncIterator[bytes | memoryview], sealer: envelope.Sealer,
                       expected_md5: bytes | None = None) -> tuple[bytes | memoryview, str]:
    """(every sealed package, the plaintext's MD5 in hex) of a body small enough to hold
    (BUFFER_LIMIT): read and verified whole before any of it reaches the backend. Give the
    sealer Pieces expecting the whole sealed size, and the packages are in one buffer."""
    md5 = hashlib.md5()
    digests = Digests(md5)
    sealed: list[memoryview] = []
    async for chunk in stream:
        await digests.feed(chunk)
        sealed.extend(sealer.feed(chunk))
    await digests.finish()
    check_md5(expected_md5, md5)
    sealed.extend(sealer.finish())
    return sealed[0] if len(sealed) == 1 else b"".join(sealed), md5.hexdigest()


async def prefixed(head: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in body:
        yield chunk
