"""Object format v3, pure: frozen vectors, part keys from per-part salts, the metadata MAC,
range plans over parts with headers, and what old readers make of v3 objects."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3.envelope import (
    FORMAT_VERSION,
    FORMAT_VERSION_3,
    PART_HEADER,
    Algorithm,
    ObjectCorrupt,
    ObjectMeta,
    PackageCipher,
    Sealer,
    decode_layout,
    encode_layout,
    part_key,
    sealed_size,
)
from gateway.s3.multipart import Layout, SegmentOpener, UploadToken, decode_token, plan

V3 = json.loads((Path(__file__).parents[2] / "vectors" / "object_v3.json").read_text())


def pattern(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


def seal(alg: Algorithm, key: bytes, nonce: bytes, part: int, data: bytes, version: str = FORMAT_VERSION_3) -> bytes:
    s = Sealer(PackageCipher(alg, key, nonce, part, version=version))
    return b"".join(s.feed(data) + s.finish())


def seal_part(alg: Algorithm, data_key: bytes, salt: bytes, part: int, data: bytes) -> bytes:
    key, nonce = part_key(data_key, salt, part, alg)
    return salt + seal(alg, key, nonce, part, data)


@pytest.mark.parametrize("v", V3["parts"], ids=[v["name"] for v in V3["parts"]])
def test_frozen_part_vectors(v: dict[str, Any]) -> None:
    alg = Algorithm(v["algorithm"])
    key, nonce = part_key(bytes.fromhex(v["data_key"]), bytes.fromhex(v["salt"]), v["part"], alg)
    assert (key.hex(), nonce.hex()) == (v["part_key"], v["part_nonce"])
    sealed = seal_part(alg, bytes.fromhex(v["data_key"]), bytes.fromhex(v["salt"]), v["part"], pattern(v["size"]))
    assert len(sealed) == v["sealed_len"] == PART_HEADER + sealed_size(v["size"])
    assert sealed[:48].hex() == v["sealed_head"]
    assert hashlib.sha256(sealed).hexdigest() == v["sha256_sealed"]


@pytest.mark.parametrize("v", V3["singles"], ids=[v["name"] for v in V3["singles"]])
def test_frozen_single_vectors(v: dict[str, Any]) -> None:
    alg = Algorithm(v["algorithm"])
    sealed = seal(alg, bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"]), 0, pattern(v["size"]))
    assert len(sealed) == v["sealed_len"] and hashlib.sha256(sealed).hexdigest() == v["sha256_sealed"]
    # A v3 stream does not open as v1 (relabelling it to drop the MAC fails).
    with pytest.raises(ObjectCorrupt):
        PackageCipher(alg, bytes.fromhex(v["key"]), bytes.fromhex(v["nonce"]), 0).open(
            0, sealed[:min(len(sealed), 65552)], len(sealed) <= 65552)


@pytest.mark.parametrize("v", V3["metadata"], ids=[v["key"] for v in V3["metadata"]])
def test_frozen_metadata_and_mac(v: dict[str, Any]) -> None:
    meta = ObjectMeta.decode(v["headers"])
    assert meta is not None and meta.version == FORMAT_VERSION_3 and meta.encode() == v["headers"]
    dk = bytes.fromhex(v["data_key"])
    meta.verify(dk, v["bucket"], v["key"])
    assert meta.signed(dk, v["bucket"], v["key"]).encode() == v["headers"]
    with pytest.raises(ObjectCorrupt):
        meta.verify(dk, v["bucket"], v["key"] + "x")  # another name
    with pytest.raises(ObjectCorrupt):
        meta.verify(os.urandom(len(dk)), v["bucket"], v["key"])
    for name, value in v["headers"].items():
        if name == "ssegw-mac":
            continue
        edited = dict(v["headers"])
        edited[name] = value[:-1] + ("A" if value[-1] != "A" else "B") if name != "ssegw" else "2"
        try:
            other = ObjectMeta.decode(edited)
        except ObjectCorrupt:
            continue  # not even well-formed
        assert other is not None
        with pytest.raises(ObjectCorrupt):
            other.verify(dk, v["bucket"], v["key"])


def test_a_part_sent_again_gets_another_key_and_nonce() -> None:
    dk = os.urandom(32)
    a, b = os.urandom(PART_HEADER), os.urandom(PART_HEADER)
    assert part_key(dk, a, 1, Algorithm.AES_256_GCM) != part_key(dk, b, 1, Algorithm.AES_256_GCM)
    ka, na = part_key(dk, a, 1, Algorithm.AES_256_GCM)
    kb, nb = part_key(dk, a, 2, Algorithm.AES_256_GCM)
    assert ka != kb and na != nb
    with pytest.raises(ValueError):
        part_key(dk, a[:-1], 1, Algorithm.AES_256_GCM)


def test_layout_run_length_coding() -> None:
    for sizes in [(5,), (7, 7, 7, 3), (1, 2, 2, 1), tuple(range(1, 50))]:
        assert decode_layout(encode_layout(sizes)) == sizes
    for bad in ["", "5", "5*0", "x*1", "5*10001", "5*5000,5*5001", "-1*2", "1*" + "9" * 30]:
        with pytest.raises(ValueError):
            decode_layout(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3 * 65536 + 5), max_size=3), st.integers(0, 65536 + 5), st.data())
def test_plans_over_parts_with_headers(middle: list[int], last: int, data: st.DataObject) -> None:
    sizes = [*middle, last]  # only the last part may be empty (the others are >= 5 MiB)
    dk = os.urandom(32)
    salts = [os.urandom(PART_HEADER) for _ in sizes]
    plains = [os.urandom(n) for n in sizes]
    sealed = [seal_part(Algorithm.AES_256_GCM, dk, s, i + 1, p)
              for i, (s, p) in enumerate(zip(salts, plains, strict=True))]
    layout = Layout(tuple(len(s) for s in sealed), header=PART_HEADER)
    whole, stream = b"".join(plains), b"".join(sealed)
    assert layout.size == len(whole)

    def cipher_for(part: int) -> PackageCipher:
        key, nonce = part_key(dk, salts[part - 1], part, Algorithm.AES_256_GCM)
        return PackageCipher(Algorithm.AES_256_GCM, key, nonce, part, version=FORMAT_VERSION_3)

    if not whole:
        start = end = 0
    else:
        start = data.draw(st.integers(0, len(whole) - 1))
        end = data.draw(st.integers(start + 1, len(whole)))
    s0, s1, segs = plan(layout, start, end)
    o = SegmentOpener(segs, cipher_for, lambda part: salts[part - 1])
    cut = data.draw(st.integers(1, 70000))
    piece = stream[s0:s1]
    out = b"".join(b"".join(o.feed(piece[i:i + cut])) for i in range(0, len(piece), cut))
    assert out + b"".join(o.finish()) == whole[start:end]
    # A part swapped for another upload of its number: its header no longer matches.
    if len(segs) > 1:
        o = SegmentOpener(segs, cipher_for, lambda part: os.urandom(PART_HEADER))
        with pytest.raises(ObjectCorrupt):
            for _ in o.feed(piece):
                pass


def test_v4_v3_and_v2_tokens() -> None:
    dk = os.urandom(32)
    t = UploadToken("id", "b", "k", Algorithm.AES_256_GCM, os.urandom(12), b"sealed", "kid", "AES256")
    text = t.encode(dk)
    assert decode_token(text).format == "4" and decode_token(text).verify(text, dk)
    v3 = dataclasses.replace(t, format=FORMAT_VERSION_3).encode(dk)  # uploads begun before v4 go on
    assert decode_token(v3).format == FORMAT_VERSION_3 and decode_token(v3).verify(v3, dk)
    old = dataclasses.replace(t, format="2")
    assert decode_token(old.encode(dk)).format == "2"


def test_v1_metadata_still_decodes_as_v1() -> None:
    meta = ObjectMeta(Algorithm.AES_256_GCM, b"k", bytes(12), 3, "kid", "AES256", format=FORMAT_VERSION)
    back = ObjectMeta.decode(meta.encode())
    assert back is not None and back.version == "1" and back.mac is None
    back.verify(os.urandom(32), "b", "k")  # v1 carries no MAC: nothing to check
    # ... but a v3 object without its MAC, or a multipart one whose layout was never sealed, is refused.
    v3 = ObjectMeta(Algorithm.AES_256_GCM, b"k", bytes(12), 3, "kid", "AES256")
    with pytest.raises(ObjectCorrupt):
        v3.verify(os.urandom(32), "b", "k")
    pending = ObjectMeta(Algorithm.AES_256_GCM, b"k", bytes(12), None, "kid", "AES256", multipart=True)
    dk = os.urandom(32)
    with pytest.raises(ObjectCorrupt):
        pending.signed(dk, "b", "k").verify(dk, "b", "k")
