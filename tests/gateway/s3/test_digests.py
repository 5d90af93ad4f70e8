"""Digests computed in worker threads equal the same digests computed inline, in any chunking."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import digests as digests_mod
from gateway.s3.checksums import Running
from gateway.s3.digests import Digests


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3 * digests_mod.BATCH), min_size=0, max_size=12))
def test_same_digests_as_inline_in_any_chunking(sizes: list[int]) -> None:
    chunks = [os.urandom(n) for n in sizes]
    sha, md5, crc = hashlib.sha256(), hashlib.md5(), Running("CRC32")

    async def run() -> None:
        d = Digests(sha, None, md5, crc)
        for c in chunks:
            await d.feed(c)
        await d.finish()

    asyncio.run(run())
    whole = b"".join(chunks)
    assert sha.digest() == hashlib.sha256(whole).digest()
    assert md5.digest() == hashlib.md5(whole).digest()
    assert base64.b64decode(crc.value()) == zlib.crc32(whole).to_bytes(4, "big")


def test_a_stream_never_runs_far_ahead_of_its_hashing() -> None:
    # A hasher slower than the stream: feed must wait once MAX_BEHIND batches are queued.
    seen: list[int] = []

    class Slow:
        def update(self, data: bytes | memoryview) -> None:
            time.sleep(0.01)
            seen.append(len(data))

    async def run() -> int:
        d = Digests(Slow())
        most_ahead = 0
        for i in range(40):
            await d.feed(bytes(digests_mod.BATCH))
            most_ahead = max(most_ahead, i + 1 - len(seen))
        await d.finish()
        return most_ahead

    ahead = asyncio.run(run())
    assert len(seen) == 40
    assert ahead <= digests_mod.MAX_BEHIND + 2


def test_no_hashers_is_free_and_falsy() -> None:
    d = Digests(None)
    assert not d

    async def run() -> None:
        await d.feed(b"x" * 10)
        await d.finish()

    asyncio.run(run())
