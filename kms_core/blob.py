"""Ciphertext blob format of the KMS: encode/decode, and sealing with any AEAD. Pure, no I/O.

Version 1 layout (all fields fixed-size, so the header is 34 bytes)::

    0      1 byte   format version (0x01)
    1      1 byte   algorithm (1 = AES-256-GCM, 2 = SM4-GCM)
    2     16 bytes  key id (UUID bytes)
    18    16 bytes  key version id (UUID bytes)
    34    12 bytes  nonce
    46     n bytes  ciphertext followed by the 16-byte GCM tag

The associated data is the 34-byte header followed by the canonical encoding of the encryption
context, so a blob names its key and version, any changed byte fails authentication, and a blob
made by one key never opens under another key even if both hold the same material.

The encryption context is encoded the way the AWS Encryption SDK serialises it: entries sorted by
their UTF-8 key bytes, a 2-byte count, then each key and value as a 2-byte length and its bytes.
Length prefixes make the encoding injective (plain concatenation lets {"ab": "c"} collide with
{"a": "bc"}).
"""

from __future__ import annotations

import functools
import os
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from kms_core.errors import InvalidCiphertext, InvalidParameter

FORMAT_VERSION = 1
HEADER_LEN = 34
NONCE_LEN = 12
TAG_LEN = 16
MIN_BLOB_LEN = HEADER_LEN + NONCE_LEN + TAG_LEN
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_FIELD = 2048


class Algorithm(IntEnum):
    AES_256_GCM = 1
    SM4_GCM = 2


class Aead(Protocol):
    """An AEAD cipher under one key; `decrypt` raises InvalidCiphertext on any failure."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class BlobHeader:
    algorithm: Algorithm
    key_id: str
    version_id: str

    def encode(self) -> bytes:
        return _header_bytes(self.algorithm, self.key_id, self.version_id)


@functools.lru_cache(maxsize=4096)
def _header_bytes(algorithm: Algorithm, key_id: str, version_id: str) -> bytes:
    # Cached: parsing two UUIDs per call is a measurable share of a data-key request.
    return bytes((FORMAT_VERSION, algorithm)) + uuid.UUID(key_id).bytes + uuid.UUID(version_id).bytes


@dataclass(frozen=True, slots=True)
class Blob:
    header: BlobHeader
    header_bytes: bytes
    nonce: bytes
    sealed: bytes


def encode_context(context: Mapping[str, str] | None) -> bytes:
    """Canonical, injective encoding of an encryption context (empty for None or {})."""
    if not context:
        return b""
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise InvalidParameter(f"encryption context has more than {MAX_CONTEXT_ENTRIES} entries")
    items: list[tuple[bytes, bytes]] = []
    for k, v in context.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidParameter("encryption context keys and values must be strings")
        kb, vb = k.encode(), v.encode()
        if not kb or len(kb) > MAX_CONTEXT_FIELD or len(vb) > MAX_CONTEXT_FIELD:
            raise InvalidParameter(
                f"encryption context keys must be 1-{MAX_CONTEXT_FIELD} bytes, "
                f"values at most {MAX_CONTEXT_FIELD}"
            )
        items.append((kb, vb))
    items.sort()
    out = [struct.pack(">H", len(items))]
    for kb, vb in items:
        out.append(struct.pack(">H", len(kb)) + kb + struct.pack(">H", len(vb)) + vb)
    return b"".join(out)


def decode_blob(data: bytes) -> Blob:
    """Parse a blob's framing; authenticity is checked only by `open_blob`."""
    if len(data) < MIN_BLOB_LEN or data[0] != FORMAT_VERSION:
        raise InvalidCiphertext()
    header_bytes = data[:HEADER_LEN]
    return Blob(_parse_header(header_bytes), header_bytes,
                data[HEADER_LEN : HEADER_LEN + NONCE_LEN], data[HEADER_LEN + NONCE_LEN :])


@functools.lru_cache(maxsize=4096)
def _parse_header(header_bytes: bytes) -> BlobHeader:
    try:
        algorithm = Algorithm(header_bytes[1])
    except ValueError:
        raise InvalidCiphertext() from None
    return BlobHeader(
        algorithm=algorithm,
        key_id=str(uuid.UUID(bytes=header_bytes[2:18])),
        version_id=str(uuid.UUID(bytes=header_bytes[18:34])),
    )


def seal(
    aead: Aead,
    header: BlobHeader,
    plaintext: bytes,
    context: Mapping[str, str] | None = None,
    *,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt `plaintext` into a blob. `nonce` is a seam for known-answer vectors only."""
    header_bytes = header.encode()
    n = os.urandom(NONCE_LEN) if nonce is None else nonce
    return header_bytes + n + aead.encrypt(n, plaintext, header_bytes + encode_context(context))


def open_blob(aead: Aead, blob: Blob, context: Mapping[str, str] | None = None) -> bytes:
    """Decrypt a parsed blob; any mismatch of key, version, context or bytes is InvalidCiphertext."""
    return aead.decrypt(blob.nonce, blob.sealed, blob.header_bytes + encode_context(context))
