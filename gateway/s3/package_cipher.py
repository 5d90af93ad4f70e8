"""The package stream of the object format (envelope.py has the whole format), pure: package
math, the per-package AEAD, streaming sealing and opening, and the keys and nonces of parts.

Package i of a part is sealed under the part's key with nonce base[0:4] || (base[4:12] XOR i)
and AAD prefix || part (u32) || i (u64) || final (u8); `ssegw/obj/v3` for salted versions.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = "1"
FORMAT_VERSION_2 = "2"
FORMAT_VERSION_3 = "3"
FORMAT_VERSION_4 = "4"
KNOWN_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_2, FORMAT_VERSION_3, FORMAT_VERSION_4)
# Versions whose packages carry the v3 AAD, whose parts start with a salt and whose metadata
# carries a MAC.
SALTED_VERSIONS = (FORMAT_VERSION_3, FORMAT_VERSION_4)
SALT = 16
PART_HEADER = 16  # v3: the random salt a part's sealed stream starts with
MAX_PART = 10_000  # part numbers 1..MAX_PART
MAX_PART_SIZE = 5 * 1024**3  # plaintext bytes in one part, as S3
_HKDF_INFO = b"ssegw/obj/bucket-key/v2"
PACKAGE = 64 * 1024
TAG = 16
SEALED_PACKAGE = PACKAGE + TAG
NONCE = 12
_AAD_PREFIX = b"ssegw/obj/v1"
_AAD_PREFIX_V3 = b"ssegw/obj/v3"
_PART_KEY_INFO = b"ssegw/obj/v3/part/"


class ObjectCorrupt(Exception):
    """A package failed authentication, or the object's size does not fit the format."""


class Algorithm(str, Enum):
    AES_256_GCM = "AES256GCM"
    SM4_GCM = "SM4GCM"

    @property
    def key_len(self) -> int:
        return 32 if self is Algorithm.AES_256_GCM else 16


def package_count(plain_size: int) -> int:
    return max(1, -(-plain_size // PACKAGE))


def sealed_size(plain_size: int) -> int:
    return plain_size + package_count(plain_size) * TAG


def plain_size(sealed: int) -> int:
    """The plaintext size of a sealed stream of `sealed` bytes (ObjectCorrupt if impossible)."""
    full, rest = divmod(sealed, SEALED_PACKAGE)
    if rest == 0 and full == 0 or 0 < rest < TAG or (rest == TAG and full > 0):
        raise ObjectCorrupt(f"{sealed} bytes cannot be a sealed object")
    return full * PACKAGE + (rest - TAG if rest else 0)


@dataclass(frozen=True)
class PackageSpan:
    """Which packages hold a plaintext range, and where they lie in the sealed stream."""

    first: int
    last: int
    sealed_start: int
    sealed_end: int  # exclusive
    skip: int  # plaintext bytes to drop from the first package
    length: int  # plaintext bytes wanted


def span(start: int, end: int, size: int) -> PackageSpan:
    """Packages covering plaintext bytes [start, end) of an object of `size` bytes."""
    if not 0 <= start < end <= size:
        raise ValueError("range outside the object")
    first, last = start // PACKAGE, (end - 1) // PACKAGE
    sealed_end = min((last + 1) * SEALED_PACKAGE, sealed_size(size))
    return PackageSpan(first, last, first * SEALED_PACKAGE, sealed_end, start - first * PACKAGE,
                       end - start)


class _Sm4Gcm:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        return enc.update(data) + enc.finalize() + enc.tag

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, bytes(data[-TAG:]))).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(data[:-TAG]) + dec.finalize()


def aead(algorithm: Algorithm, key: bytes) -> AESGCM | _Sm4Gcm:
    """The object's AEAD (AES-256-GCM, or SM4-GCM for SM4 objects) under `key`."""
    return AESGCM(key) if algorithm is Algorithm.AES_256_GCM else _Sm4Gcm(key)


class PackageCipher:
    """Seals and opens the packages of one object part."""

    def __init__(self, algorithm: Algorithm, key: bytes, base_nonce: bytes, part: int = 0,
                 version: str = FORMAT_VERSION) -> None:
        if len(key) != algorithm.key_len or len(base_nonce) != NONCE:
            raise ValueError("wrong key or nonce length for the object format")
        self._aead = aead(algorithm, key)
        self._prefix = base_nonce[:4]
        self._counter = int.from_bytes(base_nonce[4:], "big")
        self._part = part
        # v3 packages carry another AAD prefix, so a v3 object relabelled as v1/v2 (to drop
        # its metadata MAC) fails authentication instead of reading with forged metadata.
        self._aad_prefix = _AAD_PREFIX_V3 if version in SALTED_VERSIONS else _AAD_PREFIX

    def _nonce(self, seq: int) -> bytes:
        return self._prefix + (self._counter ^ seq).to_bytes(8, "big")

    def _aad(self, seq: int, final: bool) -> bytes:
        return self._aad_prefix + struct.pack(">IQB", self._part, seq, final)

    def seal(self, seq: int, data: bytes, final: bool) -> bytes:
        return self._aead.encrypt(self._nonce(seq), data, self._aad(seq, final))

    def open(self, seq: int, sealed: bytes, final: bool) -> bytes:
        if len(sealed) < TAG:
            raise ObjectCorrupt(f"package {seq} is truncated")
        try:
            return self._aead.decrypt(self._nonce(seq), sealed, self._aad(seq, final))
        except (InvalidTag, ValueError):
            raise ObjectCorrupt(f"package {seq} failed authentication") from None


class Sealer:
    """Streaming encryption: feed plaintext in any pieces, take sealed packages as they fill.

    A full package is held back until more data arrives, because only then is it known not to
    be the final one. Packages are sealed straight from the caller's buffer (memoryview); only
    the remainder under one package is copied.
    """

    def __init__(self, cipher: PackageCipher) -> None:
        self._cipher = cipher
        self._rest = b""
        self._seq = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        if self._rest:
            # Complete the held package from the front of `data`; copying all of `data` onto
            # the remainder would copy every byte of the body once more.
            need = PACKAGE - len(self._rest)
            if len(view) <= need:  # still possibly the final package: hold it
                self._rest += bytes(view)
                return
            full, self._rest = self._rest + bytes(view[:need]), b""
            yield self._cipher.seal(self._seq, full, False)
            self._seq += 1
            view = view[need:]
        pos, n = 0, len(view)
        while n - pos > PACKAGE:
            yield self._cipher.seal(self._seq, view[pos:pos + PACKAGE], False)  # type: ignore[arg-type]
            self._seq += 1
            pos += PACKAGE
        self._rest = bytes(view[pos:])

    def finish(self) -> bytes:
        sealed = self._cipher.seal(self._seq, self._rest, True)
        self._rest = b""
        self._seq += 1
        return sealed


class Opener:
    """Streaming decryption of packages first..last of an object with `total` packages."""

    def __init__(self, cipher: PackageCipher, first: int, total: int) -> None:
        self._cipher = cipher
        self._seq = first
        self._total = total
        # A package the socket delivered in pieces (each is at most 64 KiB, a package 65,552
        # bytes: nearly every one straddles two), gathered with one copy of each byte.
        self._rest = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        if self._rest:
            need = SEALED_PACKAGE - len(self._rest)
            if len(view) < need or self._seq >= self._total - 1:  # no whole package yet, or the final one
                self._rest += view
                return
            self._rest += view[:need]
            full, self._rest = self._rest, bytearray()
            yield self._cipher.open(self._seq, full, False)  # type: ignore[arg-type]
            self._seq += 1
            view = view[need:]
        pos, n = 0, len(view)
        while n - pos >= SEALED_PACKAGE and self._seq < self._total - 1:
            yield self._cipher.open(self._seq, view[pos:pos + SEALED_PACKAGE], False)  # type: ignore[arg-type]
            self._seq += 1
            pos += SEALED_PACKAGE
        self._rest = bytearray(view[pos:])

    def finish(self, expect_final: bool) -> bytes:
        """Open what is left: the final package, or (range reads) one last whole package."""
        rest, self._rest = bytes(self._rest), bytearray()
        if not rest:
            if expect_final:
                raise ObjectCorrupt("the object ends before its final package")
            return b""
        final = self._seq == self._total - 1
        if len(rest) > SEALED_PACKAGE or (not final and len(rest) != SEALED_PACKAGE):
            raise ObjectCorrupt("the object's packages do not fit its size")
        out = self._cipher.open(self._seq, rest, final)
        self._seq += 1
        return out


def part_nonce(base: bytes, part: int) -> bytes:
    """The base nonce of part `part` of a multipart object (part 0: a single PUT, `base` itself).

    The part number is XORed into the 4-byte prefix and the package number into the 8-byte
    counter (PackageCipher), so (part, package) pairs never share a nonce under one key.
    """
    if not 0 <= part <= MAX_PART or len(base) != NONCE:
        raise ValueError("part number or nonce out of range")
    return (int.from_bytes(base[:4], "big") ^ part).to_bytes(4, "big") + base[4:]


def part_key(data_key: bytes, salt: bytes, part: int, algorithm: Algorithm) -> tuple[bytes, bytes]:
    """v3: (key, base nonce) of one uploaded part, from the upload's data key and the part's salt.

    Every UploadPart (and UploadPartCopy) draws a fresh random salt and writes it as the
    first PART_HEADER bytes of the sealed part, so a part number sent twice is sealed under
    two unrelated keys and nonces: (key, nonce) pairs never repeat, whatever the client
    re-sends (v2 sealed a re-sent part under the same key and nonces, which gives away the XOR
    of the plaintexts and the GCM authentication key). Part and package numbers stay in the
    AAD, so packages still cannot move between parts or places.
    """
    if len(salt) != PART_HEADER or not 1 <= part <= MAX_PART:
        raise ValueError("part salt or number out of range")
    digest = hashes.SM3() if algorithm is Algorithm.SM4_GCM else hashes.SHA256()
    info = _PART_KEY_INFO + algorithm.value.encode() + struct.pack(">I", part)
    out = HKDF(digest, algorithm.key_len + NONCE, salt, info).derive(data_key)
    return out[:algorithm.key_len], out[algorithm.key_len:]


def new_part_salt() -> bytes:
    return os.urandom(PART_HEADER)


def derive_key(bucket_key: bytes, salt: bytes, algorithm: Algorithm) -> bytes:
    """An object's data key from its bucket key and per-object salt (bucket-key objects).

    HKDF with SM3 for SM4 objects (keeps SM objects on SM algorithms), SHA-256 otherwise; the
    algorithm is in `info`, so one bucket key never yields the same key for both.
    """
    if len(salt) != SALT or len(bucket_key) < 16:
        raise ValueError("bucket key or salt too short")
    digest = hashes.SM3() if algorithm is Algorithm.SM4_GCM else hashes.SHA256()
    return HKDF(digest, algorithm.key_len, salt, _HKDF_INFO + b"/" + algorithm.value.encode()).derive(bucket_key)


def new_salt() -> bytes:
    return os.urandom(SALT)


def new_base_nonce() -> bytes:
    return os.urandom(NONCE)
