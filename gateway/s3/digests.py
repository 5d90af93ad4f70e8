"""Digests of a request body (SHA-256, MD5, CRC32, ...) computed off the event loop.

Verifying a signed 64 MiB PUT costs a SHA-256 (~37 ms here), a CRC32 (~18 ms) and, for part
ETags and Content-MD5, an MD5 (~90 ms): several times the AES-GCM that seals it (~8 ms). hashlib
and zlib release the GIL on large buffers, so each digest runs in a worker thread of its own
lane while the event loop seals and forwards the same bytes; the caller awaits the results only
where it must decide (before sealing the final package).

Each digest is a lane: its batches run strictly in order, each waiting for the one before
(submitted earlier, so already taken by a worker: no deadlock however many lanes share the
pool). A stream may run at most `MAX_BEHIND` batches ahead of its slowest lane, which bounds
the memory held for hashing.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

BATCH = 1024 * 1024
MAX_BEHIND = 8

_pool: ThreadPoolExecutor | None = None


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="ssegw-digest")
    return _pool


def _run(previous: Future[None] | None, hasher: Hasher, chunks: list[bytes | memoryview]) -> None:
    if previous is not None:
        previous.result()
    for chunk in chunks:
        hasher.update(chunk)


class Digests:
    """Feeds every chunk of one stream to each hasher, in order, in worker threads."""

    def __init__(self, *hashers: Hasher | None) -> None:
        self._hashers = [h for h in hashers if h is not None]
        self._last: list[Future[None] | None] = [None] * len(self._hashers)
        self._pending: list[bytes | memoryview] = []
        self._size = 0
        self._inflight: list[list[Future[None]]] = []

    def __bool__(self) -> bool:
        return bool(self._hashers)

    async def feed(self, chunk: bytes | memoryview) -> None:
        if not self._hashers or not chunk:
            return
        self._pending.append(chunk)
        self._size += len(chunk)
        if self._size >= BATCH:
            await self._submit()

    async def _submit(self) -> None:
        chunks, self._pending, self._size = self._pending, [], 0
        pool = _executor()
        for i, hasher in enumerate(self._hashers):
            self._last[i] = pool.submit(_run, self._last[i], hasher, chunks)
        # Every lane's newest batch: waiting on them bounds how far the slowest lane lags.
        self._inflight.append([f for f in self._last if f is not None])
        if len(self._inflight) > MAX_BEHIND:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in self._inflight.pop(0)))

    async def finish(self) -> None:
        """Waits until every hasher has seen every chunk fed so far."""
        if not self._hashers:
            return
        if self._pending:
            await self._submit()
        for last in self._last:
            if last is not None:
                await asyncio.wrap_future(last)
        self._inflight.clear()

