"""S3's additional checksums (CRC32, CRC32C, CRC64NVME, SHA1, SHA256, and since 2025 SHA512, MD5,
XXHASH64, XXHASH3, XXHASH128) of an object's plaintext.

A client sends one with a PUT or a part (`x-amz-checksum-<algorithm>` header or trailer), the
proxy verifies it on the plaintext (bodies.py, aws_chunked.py) and keeps it, so HEAD and GET
with `x-amz-checksum-mode: ENABLED` and GetObjectAttributes give it back as S3 does, and a
client can check end to end that what it reads is what it wrote. A multipart upload declares
its algorithm and type at CreateMultipartUpload; the object's checksum is then either the
checksum of the parts' checksums (COMPOSITE, shown as `<value>-<parts>`) or the CRC of the
whole object, combined from the parts' CRCs and sizes (FULL_OBJECT).

The stored checksum is sealed (`seal`/`open`): AEAD under a key derived from the object's
data key, a fresh random nonce each time. In clear, a SHA-256 of the plaintext would let
anyone who reads the backend confirm a guess of the content (as SSE-C objects' missing ETag
MD5 avoids for the same reason), and a multipart SSE-KMS object shows no plaintext digest at
all otherwise. The sealed text then sits in the MAC'd metadata (single objects) or the
MAC'd manifest (v4 multipart), so it cannot be moved between objects either.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from awscrt import checksums as crt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.s3.digests import Digests
from gateway.s3.object_meta import ObjectMeta
from gateway.s3.package_cipher import NONCE, TAG, Algorithm, ObjectCorrupt, aead

try:
    # ISA-L's CRC32 (PCLMUL/AVX-512), ~5x awscrt's and ~14x Debian's zlib here; same polynomial.
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the portable fallback
    from zlib import crc32 as _crc32

FULL_OBJECT = "FULL_OBJECT"
COMPOSITE = "COMPOSITE"
# What S3 computes and keeps for an object PUT without a checksum of its own (since 2025).
DEFAULT = "CRC64NVME"
TYPES = (FULL_OBJECT, COMPOSITE)
# Index = the algorithm's byte in a sealed checksum: never reorder.
ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256", "SHA512", "MD5", "XXHASH64", "XXHASH3", "XXHASH128")
CRCS = ("CRC32", "CRC32C", "CRC64NVME")  # the ones a FULL_OBJECT checksum of parts can be combined for
_WIDTH = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32, "SHA512": 64, "MD5": 16,
          "XXHASH64": 8, "XXHASH3": 8, "XXHASH128": 16}
_HASHLIB = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512", "MD5": "md5"}
_XXHASH = {"XXHASH64": crt.XXHash.new_xxhash64, "XXHASH3": crt.XXHash.new_xxhash3_64,
           "XXHASH128": crt.XXHash.new_xxhash3_128}
_SEAL_INFO = b"ssegw/obj/v3/checksum"


def header(algorithm: str) -> str:
    """The header (and trailer) that carries a checksum: `x-amz-checksum-crc32`, ..."""
    return "x-amz-checksum-" + algorithm.lower()


def element(algorithm: str) -> str:
    """The XML element (and SDK field) of a checksum: `ChecksumCRC32`, ..."""
    return "Checksum" + algorithm


def algorithm_of(name: str) -> str | None:
    """The algorithm a name such as `crc32` or `CRC64NVME` names (None: not one S3 has)."""
    upper = name.strip().upper()
    return upper if upper in ALGORITHMS else None


class Running:
    """One checksum computed over a stream, piece by piece."""

    def __init__(self, algorithm: str) -> None:
        assert algorithm in ALGORITHMS
        self.algorithm = algorithm
        self._crc = 0
        self._hash: Any = None
        if algorithm in _HASHLIB:
            self._hash = hashlib.new(_HASHLIB[algorithm])
        elif algorithm in _XXHASH:
            self._hash = _XXHASH[algorithm]()
        self._digest: bytes | None = None

    def update(self, data: bytes | memoryview) -> None:
        assert self._digest is None, "updated after its digest was taken"
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm == "CRC32":
            self._crc = _crc32(data, self._crc)
        elif self.algorithm == "CRC32C":
            self._crc = crt.crc32c(data, self._crc)
        else:
            self._crc = crt.crc64nvme(data, self._crc)

    def digest(self) -> bytes:
        if self._digest is None:  # an xxHash can be finalized once
            if self._hash is None:
                self._digest = self._crc.to_bytes(_WIDTH[self.algorithm], "big")
            elif self.algorithm in _XXHASH:
                self._digest = self._hash.finalize()
            else:
                self._digest = self._hash.digest()
        return self._digest

    def value(self) -> str:
        return base64.b64encode(self.digest()).decode()


def decode_value(algorithm: str, text: str) -> bytes | None:
    """The raw digest a base64 checksum value carries (None: not a value of that algorithm)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == _WIDTH[algorithm] else None


@dataclass(frozen=True)
class ObjectChecksum:
    """An object's checksum as S3 shows it."""

    algorithm: str
    digest: bytes
    type: str = FULL_OBJECT
    parts: int = 0  # COMPOSITE: the number of parts it was made of

    def value(self) -> str:
        """What HEAD and GET show: the base64 digest, `-<parts>` after a composite one."""
        text = base64.b64encode(self.digest).decode()
        return f"{text}-{self.parts}" if self.type == COMPOSITE else text

    def headers(self) -> dict[str, str]:
        return {header(self.algorithm): self.value(), "x-amz-checksum-type": self.type}

    def xml(self) -> str:
        """The elements CompleteMultipartUpload's and CopyObject's results carry."""
        tag = element(self.algorithm)
        return f"<{tag}>{self.value()}</{tag}><ChecksumType>{self.type}</ChecksumType>"


# ---------------------------------------------------------------------- multipart


def composite(algorithm: str, part_digests: list[bytes]) -> ObjectChecksum:
    """The checksum of the parts' checksums, in part order (S3's COMPOSITE type)."""
    running = Running(algorithm)
    running.update(b"".join(part_digests))
    return ObjectChecksum(algorithm, running.digest(), COMPOSITE, len(part_digests))


_COMBINE = {"CRC32": crt.combine_crc32, "CRC32C": crt.combine_crc32c, "CRC64NVME": crt.combine_crc64nvme}


def full_object(algorithm: str, parts: list[tuple[bytes, int]]) -> ObjectChecksum:
    """The CRC of the whole object from its parts' CRCs and plaintext sizes, in part order
    (S3's FULL_OBJECT type): what the CRC over all the bytes would be."""
    assert algorithm in CRCS
    combine = _COMBINE[algorithm]
    crc = 0
    for digest, size in parts:
        crc = combine(crc, int.from_bytes(digest, "big"), size)
    return ObjectChecksum(algorithm, crc.to_bytes(_WIDTH[algorithm], "big"), FULL_OBJECT)


def declared_upload(algorithm_text: str | None, type_text: str | None) -> tuple[str, str] | None:
    """(algorithm, type) a CreateMultipartUpload declares, checked as S3 checks them
    (None: no checksum); ValueError with S3's message otherwise."""
    if algorithm_text is None:
        if type_text is not None:
            raise ValueError("The x-amz-checksum-type header can only be used with the "
                             "x-amz-checksum-algorithm header.")
        return None
    algorithm = algorithm_of(algorithm_text)
    if algorithm is None:
        raise ValueError("Value for x-amz-checksum-algorithm header is invalid.")
    kind = (type_text or "").strip().upper() or (FULL_OBJECT if algorithm == "CRC64NVME" else COMPOSITE)
    if kind not in TYPES:
        raise ValueError("Value for x-amz-checksum-type header is invalid.")
    if kind == FULL_OBJECT and algorithm not in CRCS:
        raise ValueError(f"The FULL_OBJECT checksum type cannot be used with the {algorithm.lower()} "
                         "checksum algorithm.")
    if kind == COMPOSITE and algorithm == "CRC64NVME":
        raise ValueError("The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm.")
    return algorithm, kind


# ---------------------------------------------------------------------- stored, sealed


def _key(data_key: bytes, algorithm: Algorithm) -> bytes:
    digest = hashes.SM3() if algorithm is Algorithm.SM4_GCM else hashes.SHA256()
    return HKDF(digest, algorithm.key_len, None, _SEAL_INFO + b"/" + algorithm.value.encode()).derive(data_key)


def seal(checksum: ObjectChecksum, data_key: bytes, algorithm: Algorithm) -> str:
    """The checksum sealed for storage (base64): nonce || AEAD(algorithm, type, parts, digest)."""
    plain = struct.pack(">BBH", ALGORITHMS.index(checksum.algorithm), TYPES.index(checksum.type),
                        checksum.parts) + checksum.digest
    nonce = os.urandom(NONCE)
    return base64.b64encode(nonce + aead(algorithm, _key(data_key, algorithm)).encrypt(nonce, plain, _SEAL_INFO)
                            ).decode()


def open_sealed(text: str, data_key: bytes, algorithm: Algorithm) -> ObjectChecksum:
    """The checksum `seal` stored; ObjectCorrupt unless it opens under this object's key."""
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) < NONCE + TAG + 4:
            raise ValueError("too short")
        plain = aead(algorithm, _key(data_key, algorithm)).decrypt(raw[:NONCE], raw[NONCE:], _SEAL_INFO)
        alg, kind, parts = struct.unpack_from(">BBH", plain)
        out = ObjectChecksum(ALGORITHMS[alg], plain[4:], TYPES[kind], parts)
    except (ValueError, binascii.Error, InvalidTag, IndexError, struct.error):
        raise ObjectCorrupt("the object's stored checksum is damaged") from None
    if len(out.digest) != _WIDTH[out.algorithm]:
        raise ObjectCorrupt("the object's stored checksum is damaged")
    return out


def stored(meta: ObjectMeta | None, data_key: bytes) -> ObjectChecksum | None:
    """The checksum kept with an object (None: it was stored without one); ObjectCorrupt when
    what is kept does not open under the object's data key."""
    if meta is None or meta.checksum is None:
        return None
    return open_sealed(meta.checksum, data_key, meta.algorithm)


SEALED_MAX = len(base64.b64encode(bytes(NONCE + 4 + max(_WIDTH.values()) + TAG)))  # 128 (SHA512)


@dataclass
class BodyChecksum:
    """The checksum of a request body: the algorithm is known when the body starts, the value
    (`digest`) only once the whole body was read and verified against what the client sent
    (`sent`: a header's value, known up front; a trailer's comes at the end)."""

    algorithm: str | None = None
    sent: bytes | None = None
    digest: bytes | None = None

    def running(self) -> Running | None:
        return Running(self.algorithm) if self.algorithm is not None else None

    def result(self) -> ObjectChecksum | None:
        """The verified whole-body checksum (None: none declared, or the body not read yet)."""
        if self.algorithm is None or self.digest is None:
            return None
        return ObjectChecksum(self.algorithm, self.digest)

    def known(self) -> ObjectChecksum | None:
        """The checksum as far as it is known before the body is read: the header's value,
        which the body is verified against as it streams (None: none, or in a trailer)."""
        if self.algorithm is None or self.sent is None:
            return None
        return ObjectChecksum(self.algorithm, self.sent)


async def checksummed(plain: AsyncIterator[bytes | memoryview],
                      checksum: BodyChecksum) -> AsyncIterator[bytes | memoryview]:
    """`plain`, with `checksum`'s digest set once it has all been read (computed in a digest
    thread, as a request body's is: a SHA-256 of a 5 GiB part copy stays off the event loop)."""
    running = checksum.running()
    assert running is not None
    digests = Digests(running)
    async for chunk in plain:
        await digests.feed(chunk)
        yield chunk
    await digests.finish()
    checksum.digest = running.digest()
