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
PIECE = 16 * PACKAGE  # plaintext leaves the proxy in pieces of about this size (Pieces)
SEALED_PIECE = 16 * SEALED_PACKAGE  # and sealed packages go to the backend in these
NONCE = 12
_AAD_PREFIX = b"ssegw/obj/v1"
_AAD_PREFIX_V3 = b"ssegw/obj/v3"
_PART_KEY_INFO = b"ssegw/obj/v3/part/"


Buffer = bytes | bytearray | memoryview


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

    def encrypt_into(self, nonce: bytes, data: Buffer, aad: bytes, buf: memoryview) -> int:
        """As AESGCM.encrypt_into: `buf` is exactly len(data) + TAG bytes."""
        if len(buf) != len(data) + TAG:
            raise ValueError(f"buffer must be {len(data) + TAG} bytes")
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        n = enc.update_into(data, buf[:-TAG])
        enc.finalize()
        buf[n:] = enc.tag
        return len(buf)

    def decrypt_into(self, nonce: bytes, data: Buffer, aad: bytes, buf: memoryview) -> int:
        """As AESGCM.decrypt_into: `buf` is exactly len(data) - TAG bytes, and holds
        unauthenticated bytes when this raises (the caller must drop it then)."""
        view = memoryview(data)
        if len(buf) != len(view) - TAG:
            raise ValueError(f"buffer must be {len(view) - TAG} bytes")
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, bytes(view[-TAG:]))).decryptor()
        dec.authenticate_additional_data(aad)
        n = dec.update_into(view[:-TAG], buf)
        dec.finalize()
        return n


def aead(algorithm: Algorithm, key: bytes) -> AESGCM | _Sm4Gcm:
    """The object's AEAD (AES-256-GCM, or SM4-GCM for SM4 objects) under `key`."""
    return AESGCM(key) if algorithm is Algorithm.AES_256_GCM else _Sm4Gcm(key)


class Pieces:
    """A stream's packages, sealed or opened straight into buffers of about `target` bytes.

    The stream leaves in those buffers ("pieces": one trip each through the HTTP layers) without
    a join, which copied every byte once more (perf of a 64 MiB PUT: 7% of the event loop's
    thread). A piece is a fresh bytearray, handed on as a memoryview and never written again
    once taken: a transport may still hold it queued. `expected`, when known, is how many bytes
    will be claimed in all, so a small object gets a small buffer, not `target` bytes.
    """

    def __init__(self, target: int, expected: int | None = None) -> None:
        self._target = target
        self._left = expected  # bytes still to be claimed, when known
        self._buf = bytearray()
        self._pos = 0
        self._done: list[memoryview] = []

    def claim(self, n: int) -> memoryview:
        """The next `n` bytes of the current piece, to be written by the caller."""
        if self._pos + n > len(self._buf):
            self._close()
            size = self._target if self._left is None else min(self._target, self._left)
            self._buf = bytearray(max(size, n))
        start = self._pos
        self._pos += n
        if self._left is not None:
            self._left = max(0, self._left - n)
        return memoryview(self._buf)[start:self._pos]

    def unclaim(self, n: int) -> None:
        """Gives back the last `n` bytes claimed (trimmed off, or never written)."""
        if not 0 <= n <= self._pos:
            raise ValueError("unclaiming more than the current piece holds")
        self._pos -= n

    def _close(self) -> None:
        if self._pos:
            self._done.append(memoryview(self._buf)[:self._pos])
        self._buf, self._pos = bytearray(), 0

    def take(self, everything: bool = False) -> list[memoryview]:
        """The pieces that are full, or with `everything` all there is."""
        if everything or self._pos >= self._target:
            self._close()
        done, self._done = self._done, []
        return done


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

    def seal_into(self, seq: int, data: Buffer, final: bool, out: Pieces) -> None:
        """Seals package `seq` into the next len(data) + TAG bytes of `out`."""
        self._aead.encrypt_into(self._nonce(seq), data, self._aad(seq, final), out.claim(len(data) + TAG))

    def open_into(self, seq: int, sealed: Buffer, final: bool, out: Pieces) -> memoryview:
        """Opens package `seq` into the next len(sealed) - TAG bytes of `out` (those bytes)."""
        if len(sealed) < TAG:
            raise ObjectCorrupt(f"package {seq} is truncated")
        region = out.claim(len(sealed) - TAG)
        try:
            self._aead.decrypt_into(self._nonce(seq), sealed, self._aad(seq, final), region)
        except (InvalidTag, ValueError):
            out.unclaim(len(region))  # what failed is never part of a piece
            raise ObjectCorrupt(f"package {seq} failed authentication") from None
        return region


class Sealer:
    """Streaming encryption: feed plaintext in any pieces, take sealed pieces (Pieces) as they fill.

    A full package is held back until more data arrives, because only then is it known not to
    be the final one. Packages are sealed straight from the caller's buffer (memoryview) into
    the pieces; only the remainder under one package is copied.
    """

    def __init__(self, cipher: PackageCipher, out: Pieces | None = None) -> None:
        self._cipher = cipher
        self._out = out if out is not None else Pieces(SEALED_PIECE)
        self._rest = b""
        self._seq = 0

    def _seal(self, data: Buffer, final: bool) -> None:
        self._cipher.seal_into(self._seq, data, final, self._out)
        self._seq += 1

    def feed(self, data: Buffer) -> list[memoryview]:
        """Seals what `data` completes; the pieces that are full."""
        view = memoryview(data)
        if self._rest:
            # Complete the held package from the front of `data`; copying all of `data` onto
            # the remainder would copy every byte of the body once more.
            need = PACKAGE - len(self._rest)
            if len(view) <= need:  # still possibly the final package: hold it
                self._rest += bytes(view)
                return []
            self._seal(self._rest + bytes(view[:need]), False)
            self._rest = b""
            view = view[need:]
        pos, n = 0, len(view)
        while n - pos > PACKAGE:
            self._seal(view[pos:pos + PACKAGE], False)
            pos += PACKAGE
        self._rest = bytes(view[pos:])
        return self._out.take()

    def finish(self) -> list[memoryview]:
        """Seals the final package; every piece not yet taken."""
        self._seal(self._rest, True)
        self._rest = b""
        return self._out.take(everything=True)


class Opener:
    """Streaming decryption of packages first..last of an object with `total` packages, each
    opened into the next bytes of `out`."""

    def __init__(self, cipher: PackageCipher, first: int, total: int, out: Pieces | None = None) -> None:
        self._cipher = cipher
        self._seq = first
        self._total = total
        self._out = out if out is not None else Pieces(PIECE)
        # A package the socket delivered in pieces (reads end anywhere, and a package is 65,552
        # bytes: about one per read straddles two), gathered with one copy of each byte.
        self._rest = bytearray()

    def _open(self, sealed: Buffer, final: bool) -> memoryview:
        region = self._cipher.open_into(self._seq, sealed, final, self._out)
        self._seq += 1
        return region

    def feed(self, data: Buffer) -> Iterator[memoryview]:
        """The plaintext of each package `data` completes (where it lies in `out`)."""
        view = memoryview(data)
        if self._rest:
            need = SEALED_PACKAGE - len(self._rest)
            if len(view) < need or self._seq >= self._total - 1:  # no whole package yet, or the final one
                self._rest += view
                return
            self._rest += view[:need]
            full, self._rest = self._rest, bytearray()
            yield self._open(full, False)
            view = view[need:]
        pos, n = 0, len(view)
        while n - pos >= SEALED_PACKAGE and self._seq < self._total - 1:
            yield self._open(view[pos:pos + SEALED_PACKAGE], False)
            pos += SEALED_PACKAGE
        self._rest = bytearray(view[pos:])

    def finish(self, expect_final: bool) -> memoryview | None:
        """Open what is left: the final package, or (range reads) one last whole package."""
        rest, self._rest = self._rest, bytearray()
        if not rest:
            if expect_final:
                raise ObjectCorrupt("the object ends before its final package")
            return None
        final = self._seq == self._total - 1
        if len(rest) > SEALED_PACKAGE or (not final and len(rest) != SEALED_PACKAGE):
            raise ObjectCorrupt("the object's packages do not fit its size")
        return self._open(rest, final)


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
