"""The ciphertext blob format: frozen vectors, round trips, tamper and cross-key cases."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_core.blob import (
    HEADER_LEN,
    Algorithm,
    BlobHeader,
    decode_blob,
    encode_context,
    open_blob,
    seal,
)
from kms_core.errors import InvalidCiphertext, InvalidParameter
from kms_core.keystore.aead import AesGcm, Sm4Gcm

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "blob_v1.json").read_text())["vectors"]


def _aead(alg: str, key: bytes) -> AesGcm | Sm4Gcm:
    return AesGcm(key) if alg == "AES_256_GCM" else Sm4Gcm(key)


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_known_answer_vectors(v: dict[str, Any]) -> None:
    aead = _aead(v["algorithm"], bytes.fromhex(v["key"]))
    header = BlobHeader(Algorithm[v["algorithm"]], v["keyId"], v["versionId"])
    made = seal(aead, header, bytes.fromhex(v["plaintext"]), v["context"],
                nonce=bytes.fromhex(v["nonce"]))
    assert made.hex() == v["blob"]
    parsed = decode_blob(bytes.fromhex(v["blob"]))
    assert parsed.header == header
    assert open_blob(aead, parsed, v["context"]) == bytes.fromhex(v["plaintext"])


def _header() -> BlobHeader:
    return BlobHeader(Algorithm.AES_256_GCM, str(uuid.uuid4()), str(uuid.uuid4()))


@settings(max_examples=50)
@given(st.binary(max_size=2048), st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=20), max_size=5))
def test_round_trip(plaintext: bytes, context: dict[str, str]) -> None:
    aead = AesGcm(os.urandom(32))
    header = _header()
    blob = seal(aead, header, plaintext, context)
    parsed = decode_blob(blob)
    assert parsed.header == header
    assert open_blob(aead, parsed, context) == plaintext


@settings(max_examples=100)
@given(st.data())
def test_any_changed_byte_fails(data: st.DataObject) -> None:
    aead = AesGcm(bytes(32))
    blob = bytearray(seal(aead, _header(), b"secret data key", {"k": "v"}))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(InvalidCiphertext):
        open_blob(aead, decode_blob(bytes(blob)), {"k": "v"})


def test_truncated_and_empty_blobs_fail() -> None:
    aead = AesGcm(bytes(32))
    blob = seal(aead, _header(), b"x")
    for cut in (0, 1, HEADER_LEN, len(blob) - 1):
        with pytest.raises(InvalidCiphertext):
            open_blob(aead, decode_blob(blob[:cut]))


def test_blob_of_one_key_never_opens_under_another_even_with_same_material() -> None:
    material = os.urandom(32)
    blob = seal(AesGcm(material), _header(), b"data")
    other = decode_blob(blob)
    # Same material, but the blob is presented as another key's: the key id is associated data.
    forged = other.header_bytes[:2] + uuid.uuid4().bytes + other.header_bytes[18:]
    with pytest.raises(InvalidCiphertext):
        open_blob(AesGcm(material), decode_blob(forged + blob[HEADER_LEN:]))
    with pytest.raises(InvalidCiphertext):
        open_blob(AesGcm(os.urandom(32)), other)


def test_context_must_match_exactly() -> None:
    aead = AesGcm(bytes(32))
    blob = decode_blob(seal(aead, _header(), b"x", {"a": "1"}))
    for wrong in (None, {}, {"a": "2"}, {"a": "1", "b": ""}):
        with pytest.raises(InvalidCiphertext):
            open_blob(aead, blob, wrong)


def test_context_encoding_is_injective_and_order_free() -> None:
    assert encode_context({"ab": "c"}) != encode_context({"a": "bc"})
    assert encode_context({"x": "1", "y": "2"}) == encode_context({"y": "2", "x": "1"})
    assert encode_context(None) == encode_context({}) == b""
    with pytest.raises(InvalidParameter):
        encode_context({"": "empty key"})


def test_unknown_version_or_algorithm_is_invalid() -> None:
    blob = bytearray(seal(AesGcm(bytes(32)), _header(), b"x"))
    blob[0] = 2
    with pytest.raises(InvalidCiphertext):
        decode_blob(bytes(blob))
    blob[0], blob[1] = 1, 99
    with pytest.raises(InvalidCiphertext):
        decode_blob(bytes(blob))


def test_sm4_round_trip_and_tamper() -> None:
    aead = Sm4Gcm(os.urandom(16))
    header = BlobHeader(Algorithm.SM4_GCM, str(uuid.uuid4()), str(uuid.uuid4()))
    blob = seal(aead, header, b"sm4 payload")
    assert open_blob(aead, decode_blob(blob)) == b"sm4 payload"
    with pytest.raises(InvalidCiphertext):
        open_blob(aead, decode_blob(blob[:-1] + bytes([blob[-1] ^ 1])))
