"""Pure parts of multipart objects and bucket keys: frozen v2 vectors, layouts, range plans,
upload tokens and the bounded key cache."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3.envelope import (
    PACKAGE,
    SEALED_PACKAGE,
    Algorithm,
    ObjectCorrupt,
    ObjectMeta,
    PackageCipher,
    Sealer,
    derive_key,
    part_nonce,
)
from gateway.s3.keycache import KeyCache
from gateway.s3.multipart import (
    BACKEND_CHECKSUM,
    TOKEN_PREFIX,
    Layout,
    SegmentOpener,
    UploadToken,
    ambiguous,
    backend_upload_id,
    decode_token,
    plan,
)
from gateway.s3.multipart import _raw as _raw

V2 = json.loads((Path(__file__).parents[2] / "vectors" / "object_v2.json").read_text())


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


def seal(alg: Algorithm, key: bytes, nonce: bytes, part: int, data: bytes) -> bytes:
    s = Sealer(PackageCipher(alg, key, part_nonce(nonce, part), part))
    return b"".join(s.feed(data) + s.finish())


@pytest.mark.parametrize("v", V2["parts"], ids=[v["name"] for v in V2["parts"]])
def test_frozen_part_vectors(v: dict[str, Any]) -> None:
    nonce = bytes.fromhex(v["upload_nonce"])
    assert part_nonce(nonce, v["part"]).hex() == v["part_nonce"]
    sealed = seal(Algorithm(v["algorithm"]), bytes.fromhex(v["key"]), nonce, v["part"], pattern(v["size"]))
    assert len(sealed) == v["sealed_len"] and sealed[:48].hex() == v["sealed_head"]
    assert hashlib.sha256(sealed).hexdigest() == v["sha256_sealed"]


def test_frozen_bucket_key_derivation_and_metadata() -> None:
    for v in V2["bucket_key_derivation"]:
        got = derive_key(bytes.fromhex(v["bucket_key"]), bytes.fromhex(v["salt"]), Algorithm(v["algorithm"]))
        assert got.hex() == v["object_key"]
    meta = ObjectMeta.decode(V2["metadata"])
    assert meta is not None and meta.multipart and meta.size is None and meta.bucket_key_salt == bytes(range(16))
    assert meta.encode() == V2["metadata"]


def test_part_nonces_never_collide() -> None:
    base = os.urandom(12)
    prefixes = {part_nonce(base, p)[:4] for p in range(0, 10_001)}
    assert len(prefixes) == 10_001  # the package counter lives in the other 8 bytes
    with pytest.raises(ValueError):
        part_nonce(base, 10_001)


def test_layout_guess_and_ambiguity() -> None:
    s = 65552 * 80
    assert Layout.guess(3 * s + 100, 4, s, 100) == Layout((s, s, s, 100))
    assert Layout.guess(2 * s + 100, 3, s, s) is None  # does not add up: ask every part
    assert Layout.guess(s + 17, 2, s, None) == Layout((s, 17))
    assert ambiguous((s, s + 65552, s - 65552, 100)) and not ambiguous((s, s, s, 100))
    assert not ambiguous((s, 2 * s, 100))  # the guess fails on it, so readers ask every part
    with pytest.raises(ObjectCorrupt):
        Layout((15,))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3 * PACKAGE + 7), min_size=1, max_size=4), st.data())
def test_plans_decrypt_exactly_the_range(sizes: list[int], data: st.DataObject) -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    plain = [os.urandom(n) for n in sizes]
    stream = b"".join(seal(Algorithm.AES_256_GCM, key, nonce, i + 1, p) for i, p in enumerate(plain))
    layout = Layout(tuple(len(seal(Algorithm.AES_256_GCM, key, nonce, i + 1, p)) for i, p in enumerate(plain)))
    body = b"".join(plain)
    assert layout.size == len(body)
    start = data.draw(st.integers(0, len(body) - 1))
    end = data.draw(st.integers(start + 1, len(body)))
    lo, hi, segments = plan(layout, start, end)
    # Pieces of any size, smaller than a package too: the opener writes and trims in place.
    opener = SegmentOpener(segments, lambda p: PackageCipher(Algorithm.AES_256_GCM, key, part_nonce(nonce, p), p),
                           piece=data.draw(st.integers(1, 300_000)))
    piece = data.draw(st.integers(1, 100_000))
    sealed = stream[lo:hi]
    out = b"".join(b"".join(opener.feed(sealed[i:i + piece])) for i in range(0, len(sealed), piece))
    assert out + b"".join(opener.finish()) == body[start:end]


def test_parts_cannot_be_swapped_or_cut() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    p1 = seal(Algorithm.AES_256_GCM, key, nonce, 1, b"a" * 70000)
    p2 = seal(Algorithm.AES_256_GCM, key, nonce, 2, b"b" * 70000)
    layout = Layout((len(p1), len(p2)))

    def read(stream: bytes) -> bytes:
        _, _, segs = plan(layout, 0, layout.size)
        o = SegmentOpener(segs, lambda p: PackageCipher(Algorithm.AES_256_GCM, key, part_nonce(nonce, p), p))
        return b"".join(o.feed(stream) + o.finish())

    assert read(p1 + p2) == b"a" * 70000 + b"b" * 70000
    for bad in (p2 + p1, p1 + p2[:-1]):
        with pytest.raises(ObjectCorrupt):
            read(bad)


def test_upload_tokens() -> None:
    key = os.urandom(32)
    t = UploadToken("backend-id.with/odd=chars", "bucket", "dir/key", Algorithm.SM4_GCM, os.urandom(12),
                    b"sealed" * 20, "kid", "aws:kms", {"a": "b"}, os.urandom(16))
    token = t.encode(key)
    assert decode_token(token) == t and t.verify(token, key) and not t.verify(token, os.urandom(32))
    assert backend_upload_id(token) == t.backend_id and backend_upload_id("plain-id") == "plain-id"
    forged = UploadToken(t.backend_id, t.bucket, t.key, t.algorithm, bytes(12), t.sealed_key, t.kms_key_id, t.sse,
                         t.context, t.bucket_key_salt).encode(os.urandom(32))
    assert not t.verify(forged, key)  # a client cannot pick the nonce
    for bad in ("ssegw1_", "ssegw1_!!!", "ssegw1_AAAA"):
        with pytest.raises(ValueError):
            decode_token(bad)


@pytest.mark.parametrize("customer", [None, "rec"])
@pytest.mark.parametrize("checksum", [None, ("CRC32C", "COMPOSITE")])
@pytest.mark.parametrize("backend_checksum", [None, BACKEND_CHECKSUM])
def test_upload_tokens_carry_optional_fields_and_older_tokens_stay_valid(
        customer: str | None, checksum: tuple[str, str] | None, backend_checksum: str | None) -> None:
    key = os.urandom(32)
    t = UploadToken("id", "bucket", "key", Algorithm.AES_256_GCM, os.urandom(12), b"sealed", "kid", "AES256",
                    customer=customer, checksum=checksum, backend_checksum=backend_checksum)
    token = t.encode(key)
    assert decode_token(token) == t and t.verify(token, key)
    # A token made before a field existed has fewer fields (10 to 12); one with a field this
    # version does not know, or an unknown backend algorithm, is refused.
    fields = len(_fields(token))
    assert fields == (13 if backend_checksum else 12 if checksum else 11 if customer else 10)
    raw = _raw(token)
    if backend_checksum:
        with pytest.raises(ValueError):  # a 14th field: one this version does not know
            decode_token(_token(raw[:-16] + b"\x00\x01x" + raw[-16:]))
        with pytest.raises(ValueError):  # an algorithm the backend upload cannot have been created with
            decode_token(_token(raw.replace(b"\x00\x05CRC32", b"\x00\x05CRC64")))


def _token(raw: bytes) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode()


def _fields(token: str) -> list[bytes]:
    """An UploadId's fields (multipart.decode_token's framing)."""
    body, pos, out = _raw(token)[:-16], 1, []
    while pos < len(body):
        (n,) = struct.unpack_from(">H", body, pos)
        out.append(body[pos + 2:pos + 2 + n])
        pos += 2 + n
    return out


def test_key_cache_lifetime_and_single_flight() -> None:
    now = [0.0]
    cache: KeyCache[int] = KeyCache(10, clock=lambda: now[0])
    calls = []

    async def load() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        return len(calls)

    async def main() -> None:
        assert await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(5))) == [1] * 5
        now[0] = 9.9
        assert await cache.get_or_load("k", load) == 1
        now[0] = 10.0
        assert await cache.get_or_load("k", load) == 2

    asyncio.run(main())
    assert len(calls) == 2


@pytest.mark.parametrize(("size", "start", "end"), [(4096, 0, 4096), (200_000, 70_000, 70_100), (3 << 20, 0, 3 << 20)])
def test_a_read_gets_buffers_no_bigger_than_it_needs(size: int, start: int, end: int) -> None:
    # Every GET allocates (and zeroes) its pieces: a 4 KiB object must not cost a 1 MiB buffer.
    key, nonce = os.urandom(32), os.urandom(12)
    body = os.urandom(size)
    stream = seal(Algorithm.AES_256_GCM, key, nonce, 1, body)
    lo, hi, segments = plan(Layout((len(stream),)), start, end)
    opener = SegmentOpener(segments, lambda p: PackageCipher(Algorithm.AES_256_GCM, key, part_nonce(nonce, p), p))
    pieces = opener.feed(stream[lo:hi]) + opener.finish()
    assert b"".join(pieces) == body[start:end]
    packages_read = -(-(hi - lo) // SEALED_PACKAGE) * PACKAGE
    buffers = [memoryview(p.obj).nbytes for p in pieces]  # what was allocated, not what is shown
    assert sum(buffers) <= max(packages_read, 1) and max(buffers) <= 1 << 20
