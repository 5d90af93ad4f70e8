"""gateway/s3/reader.py's read-ahead: how far it reads a backend body ahead of a slow client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from gateway.s3.reader import READ_AHEAD, _read_ahead

CHUNK = 256_000  # what one socket read gives under uvloop


def test_a_slow_reader_holds_at_most_the_budget_in_bytes() -> None:
    chunks = [os.urandom(CHUNK) for _ in range(60)]  # 15 MiB: several budgets
    produced = consumed = 0
    most_ahead = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for c in chunks:
            produced += len(c)
            yield c

    async def run() -> bytes:
        nonlocal consumed, most_ahead
        out = []
        async for c in _read_ahead(body()):
            await asyncio.sleep(0.002)  # the client takes its time: the pump runs ahead
            most_ahead = max(most_ahead, produced - consumed)
            consumed += len(c)
            out.append(c)
        return b"".join(out)

    assert asyncio.run(run()) == b"".join(chunks)
    # The budget, overshot by at most its last chunk, plus the chunk in the consumer's hands and
    # the one the pump holds while it waits for room (64 chunks ahead, as before, were 16 MB).
    assert READ_AHEAD <= most_ahead <= READ_AHEAD + 3 * CHUNK


def test_a_body_that_fails_fails_the_reader_after_what_came_before() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 10
        raise ConnectionError("the backend broke off")

    async def run() -> list[bytes]:
        seen = []
        async for c in _read_ahead(body()):
            seen.append(c)
        return seen

    with pytest.raises(ConnectionError):
        asyncio.run(run())
