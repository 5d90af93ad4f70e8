"""The object envelope format, pure: frozen vectors, sizes, spans, tamper and truncation."""

from __future__ import annotations

import hashlib
import json
import os
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
    Opener,
    PackageCipher,
    Pieces,
    Sealer,
    package_count,
    plain_size,
    sealed_size,
    span,
)

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "object_v1.json").read_text())["vectors"]


def seal_all(cipher: PackageCipher, data: bytes, pieces: int = 1) -> bytes:
    s = Sealer(cipher)
    step = max(1, len(data) // pieces)
    out = b"".join(b"".join(s.feed(data[i:i + step])) for i in range(0, len(data), step))
    return out + b"".join(s.finish())


def open_all(cipher: PackageCipher, sealed: bytes, size: int, first: int = 0) -> bytes:
    o = Opener(cipher, first, package_count(size))
    out = b"".join(o.feed(sealed))
    return out + (o.finish(True) or b"")


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_frozen_vectors(v: dict[str, Any]) -> None:
    cipher = PackageCipher(Algorithm(v["algorithm"]), bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"]), v["part"])
    pt = bytes((i * 7 + 3) % 256 for i in range(v["size"]))
    sealed = seal_all(cipher, pt, pieces=3)
    assert len(sealed) == v["sealed_len"] == sealed_size(v["size"])
    assert sealed[:48].hex() == v["sealed_head"] and hashlib.sha256(sealed).hexdigest() == v["sha256_sealed"]
    assert open_all(cipher, sealed, v["size"]) == pt


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 4 * PACKAGE + 5), st.integers(1, 9), st.sampled_from(list(Algorithm)))
def test_round_trip_any_size_any_split(size: int, pieces: int, alg: Algorithm) -> None:
    cipher = PackageCipher(alg, os.urandom(alg.key_len), os.urandom(12))
    data = os.urandom(size)
    sealed = seal_all(cipher, data, pieces)
    assert len(sealed) == sealed_size(size) and plain_size(len(sealed)) == size
    assert open_all(cipher, sealed, size) == data


def _pieces(buf: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(c % (len(buf) + 1) for c in cuts), len(buf)]
    return [buf[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 5 * PACKAGE + 7), st.lists(st.integers(0, 1 << 20), max_size=10),
       st.lists(st.integers(0, 1 << 20), max_size=10))
def test_any_chunking_of_plaintext_and_of_ciphertext(size: int, plain_cuts: list[int], sealed_cuts: list[int]) -> None:
    # Streams arrive in whatever pieces the sockets deliver, packages straddling them.
    cipher = PackageCipher(Algorithm.AES_256_GCM, os.urandom(32), os.urandom(12))
    data = os.urandom(size)
    s = Sealer(cipher)
    sealed = b"".join(b"".join(s.feed(p)) for p in _pieces(data, plain_cuts)) + b"".join(s.finish())
    assert sealed == seal_all(cipher, data)
    o = Opener(cipher, 0, package_count(size))
    opened = b"".join(b"".join(o.feed(p)) for p in _pieces(sealed, sealed_cuts)) + (o.finish(True) or b"")
    assert opened == data


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_spans_cover_exactly_the_range(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 5 * PACKAGE))
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    cipher = PackageCipher(Algorithm.AES_256_GCM, bytes(32), bytes(12))
    body = bytes(i % 251 for i in range(size))
    sealed = seal_all(cipher, body)
    sp = span(start, end, size)
    o = Opener(cipher, sp.first, package_count(size))
    plain = b"".join(o.feed(sealed[sp.sealed_start:sp.sealed_end]))
    plain += o.finish(sp.last == package_count(size) - 1) or b""
    assert plain[sp.skip:sp.skip + sp.length] == body[start:end]


def test_sizes_that_cannot_be_objects() -> None:
    for bad in (0, 1, 15, SEALED_PACKAGE + 5, SEALED_PACKAGE + 16):
        with pytest.raises(ObjectCorrupt):
            plain_size(bad)
    assert plain_size(16) == 0 and plain_size(SEALED_PACKAGE) == PACKAGE


def test_reordered_truncated_moved_or_flipped_packages_fail() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    cipher = PackageCipher(Algorithm.AES_256_GCM, key, nonce)
    data = os.urandom(3 * PACKAGE)
    sealed = seal_all(cipher, data)
    p = [sealed[i:i + SEALED_PACKAGE] for i in range(0, len(sealed), SEALED_PACKAGE)]
    for damaged in (p[1] + p[0] + p[2], p[0] + p[1], sealed[:-1], sealed[:5] + b"\0" + sealed[6:]):
        with pytest.raises(ObjectCorrupt):
            open_all(cipher, damaged, len(data))
    with pytest.raises(ObjectCorrupt):  # same key and nonce, but sealed as another part
        open_all(PackageCipher(Algorithm.AES_256_GCM, key, nonce, part=2), sealed, len(data))
    # A whole-package prefix whose last package is not final must not pass as the object.
    with pytest.raises(ObjectCorrupt):
        open_all(cipher, p[0] + p[1], 2 * PACKAGE)


def test_metadata_round_trip_and_damage() -> None:
    meta = ObjectMeta(Algorithm.SM4_GCM, b"sealed", b"n" * 12, 123, "key-id", "aws:kms", "md5", {"a": "b"})
    assert ObjectMeta.decode(meta.encode()) == meta
    assert ObjectMeta.decode({"content-type": "text/plain"}) is None
    broken = meta.encode()
    del broken["x-amz-meta-ssegw-iv"]
    with pytest.raises(ObjectCorrupt):
        ObjectMeta.decode(broken)
    with pytest.raises(ObjectCorrupt):
        ObjectMeta.decode({**meta.encode(), "x-amz-meta-ssegw": "9"})


# ---------------------------------------------------------------------- pieces


def test_pieces_fill_to_target_and_are_never_written_after_take() -> None:
    out = Pieces(100, expected=250)
    out.claim(60)[:] = b"a" * 60
    assert out.take() == []  # 60 < 100: not full yet
    out.claim(60)[:] = b"b" * 60  # does not fit: the first piece closes, a second starts
    (first,) = out.take()
    assert bytes(first) == b"a" * 60
    out.claim(30)[:] = b"c" * 30
    out.claim(10)[:] = b"d" * 10
    out.unclaim(5)  # trimmed off: never part of a piece
    (second,) = out.take(everything=True)
    assert bytes(second) == b"b" * 60 + b"c" * 30 + b"d" * 5
    out.claim(10)[:] = b"e" * 10  # a fresh buffer: what was taken keeps its bytes
    assert bytes(first) == b"a" * 60 and bytes(second).endswith(b"c" * 30 + b"d" * 5)
    assert [bytes(p) for p in out.take(everything=True)] == [b"e" * 10]


def test_pieces_of_a_small_stream_are_small() -> None:
    # A 4 KiB object's plaintext must not cost a 1 MiB buffer (zeroed) per GET.
    out = Pieces(1 << 20, expected=4096)
    out.claim(4096)
    (piece,) = out.take(everything=True)
    assert memoryview(piece.obj).nbytes == 4096  # the buffer allocated, not just what is shown
    with pytest.raises(ValueError):
        out.unclaim(1)


@pytest.mark.parametrize("alg", list(Algorithm))
def test_sealing_and_opening_into_pieces_match_the_one_shot_aead(alg: Algorithm) -> None:
    cipher = PackageCipher(alg, os.urandom(alg.key_len), os.urandom(12), 3, version="3")
    data = os.urandom(5000)
    out = Pieces(1 << 20)
    cipher.seal_into(7, data, True, out)
    (sealed,) = out.take(everything=True)
    assert bytes(sealed) == cipher.seal(7, data, True)
    region = cipher.open_into(7, sealed, True, out)
    assert bytes(region) == data == cipher.open(7, bytes(sealed), True)
    with pytest.raises(ObjectCorrupt):
        cipher.open_into(7, sealed, False, out)  # another AAD
    flipped = bytearray(sealed)
    flipped[10] ^= 1
    with pytest.raises(ObjectCorrupt):
        cipher.open_into(7, flipped, True, out)
    # What failed was given back: the pieces hold only the package that authenticated.
    assert [bytes(p) for p in out.take(everything=True)] == [data]


def test_a_package_that_fails_never_reaches_a_piece() -> None:
    cipher = PackageCipher(Algorithm.AES_256_GCM, os.urandom(32), os.urandom(12), version="3")
    sealed = bytearray(seal_all(cipher, os.urandom(3 * PACKAGE)))
    sealed[SEALED_PACKAGE + 5] ^= 1  # the second package
    out = Pieces(10 * PACKAGE)
    o = Opener(cipher, 0, 4, out)
    with pytest.raises(ObjectCorrupt):
        for _ in o.feed(sealed):
            pass
    assert b"".join(out.take(everything=True)) == cipher.open(0, bytes(sealed[:SEALED_PACKAGE]), False)
