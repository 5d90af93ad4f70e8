"""Object envelope format (after MinIO's DARE), pure: package math, AEAD, metadata encoding.

An object's plaintext is cut into 64 KiB packages; package i is sealed with the per-object data
key (AES-256-GCM, or SM4-GCM when the master key is SM4) under

    nonce_i = base[0:4] || (base[4:12] XOR i)        (base: 12 random bytes per object)
    AAD_i   = "ssegw/obj/v1" || part (u32) || i (u64) || final (u8)

so packages cannot be reordered, moved between parts, or dropped from the end (the last package
carries final=1; an object of 0 bytes is one empty final package). Overhead is 16 bytes per
package, so sizes and the ciphertext range of any plaintext range are arithmetic.

The sealed data key and parameters travel as the backend object's user metadata
(`x-amz-meta-ssegw-*`); the data key is sealed by the KMS with the object's ARN as encryption
context, so a copy or re-keying re-seals ~100 bytes of metadata and never re-encrypts data.

Format version 2 (written only when one of its fields is used; version 1 objects stay readable
and are still written for plain single PUTs) adds:

- `ssegw-mp: 1`, a multipart object: each part p (numbered 1..N) is its own package stream with
  base nonce `part_nonce(base, p)` and p in the AAD. The plaintext size is not in the metadata
  (it is not known when the upload starts); it follows from the part sizes (`multipart.py`).
- `ssegw-bk: <salt>`, a bucket-key object: the sealed key is a bucket-level key sealed with the
  bucket's ARN as context, and the object's data key is HKDF(bucket key, salt) (`derive_key`).
- `ssegw-ssec: <record>`, an SSE-C object: the sealed key is the data key wrapped under the
  customer's key and the record proves which key that is (`sse_c.py`); no KMS key is involved,
  so `ssegw-kms-key` is absent.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = "1"
FORMAT_VERSION_2 = "2"
KNOWN_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_2)
SALT = 16
MAX_PART = 10_000  # part numbers 1..MAX_PART
MAX_PART_SIZE = 5 * 1024**3  # plaintext bytes in one part, as S3
_HKDF_INFO = b"ssegw/obj/bucket-key/v2"
PACKAGE = 64 * 1024
TAG = 16
SEALED_PACKAGE = PACKAGE + TAG
NONCE = 12
_AAD_PREFIX = b"ssegw/obj/v1"
META_PREFIX = "x-amz-meta-ssegw"


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


class PackageCipher:
    """Seals and opens the packages of one object part."""

    def __init__(self, algorithm: Algorithm, key: bytes, base_nonce: bytes, part: int = 0) -> None:
        if len(key) != algorithm.key_len or len(base_nonce) != NONCE:
            raise ValueError("wrong key or nonce length for the object format")
        self._aead: AESGCM | _Sm4Gcm = AESGCM(key) if algorithm is Algorithm.AES_256_GCM else _Sm4Gcm(key)
        self._prefix = base_nonce[:4]
        self._counter = int.from_bytes(base_nonce[4:], "big")
        self._part = part

    def _nonce(self, seq: int) -> bytes:
        return self._prefix + (self._counter ^ seq).to_bytes(8, "big")

    def _aad(self, seq: int, final: bool) -> bytes:
        return _AAD_PREFIX + struct.pack(">IQB", self._part, seq, final)

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
        self._rest = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        if self._rest:
            need = SEALED_PACKAGE - len(self._rest)
            if len(view) < need or self._seq >= self._total - 1:  # no whole package yet, or the final one
                self._rest += bytes(view)
                return
            full, self._rest = self._rest + bytes(view[:need]), b""
            yield self._cipher.open(self._seq, full, False)
            self._seq += 1
            view = view[need:]
        pos, n = 0, len(view)
        while n - pos >= SEALED_PACKAGE and self._seq < self._total - 1:
            yield self._cipher.open(self._seq, view[pos:pos + SEALED_PACKAGE], False)  # type: ignore[arg-type]
            self._seq += 1
            pos += SEALED_PACKAGE
        self._rest = bytes(view[pos:])

    def finish(self, expect_final: bool) -> bytes:
        """Open what is left: the final package, or (range reads) one last whole package."""
        rest, self._rest = self._rest, b""
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


@dataclass(frozen=True)
class ObjectMeta:
    """What the backend keeps about an encrypted object, in its user metadata."""

    algorithm: Algorithm
    sealed_key: bytes = field(repr=False)
    base_nonce: bytes
    size: int | None  # plaintext size; None for multipart objects (it follows from the parts)
    kms_key_id: str
    sse: str  # what the client asked for: "aws:kms" or "AES256"
    md5: str | None = None  # plaintext MD5 (objects buffered before upload)
    context: Mapping[str, str] | None = None  # the client's x-amz-server-side-encryption-context
    multipart: bool = False
    bucket_key_salt: bytes | None = None  # set: sealed_key is a bucket key, see derive_key
    customer: str | None = None  # SSE-C: the key record (sse_c.py); sealed_key is wrapped by the customer key

    @property
    def version(self) -> str:
        return FORMAT_VERSION_2 if self.multipart or self.bucket_key_salt or self.customer else FORMAT_VERSION

    def encode(self) -> dict[str, str]:
        out = {
            META_PREFIX: self.version,
            f"{META_PREFIX}-alg": self.algorithm.value,
            f"{META_PREFIX}-key": base64.b64encode(self.sealed_key).decode(),
            f"{META_PREFIX}-iv": base64.b64encode(self.base_nonce).decode(),
            f"{META_PREFIX}-sse": self.sse,
        }
        if self.customer is None:
            out[f"{META_PREFIX}-kms-key"] = self.kms_key_id
        else:
            out[f"{META_PREFIX}-ssec"] = self.customer
        if self.size is not None:
            out[f"{META_PREFIX}-size"] = str(self.size)
        if self.md5:
            out[f"{META_PREFIX}-md5"] = self.md5
        if self.context:
            out[f"{META_PREFIX}-ctx"] = base64.b64encode(
                json.dumps(dict(self.context), sort_keys=True).encode()).decode()
        if self.multipart:
            out[f"{META_PREFIX}-mp"] = "1"
        if self.bucket_key_salt:
            out[f"{META_PREFIX}-bk"] = base64.b64encode(self.bucket_key_salt).decode()
        return out

    @staticmethod
    def decode(headers: Mapping[str, str]) -> ObjectMeta | None:
        """The envelope of an object, None for a plaintext object; ObjectCorrupt if damaged."""
        version = headers.get(META_PREFIX)
        if version is None:
            return None
        if version not in KNOWN_VERSIONS:
            raise ObjectCorrupt(f"unknown object format version {version!r}")
        try:
            ctx = headers.get(f"{META_PREFIX}-ctx")
            multipart = version == FORMAT_VERSION_2 and headers.get(f"{META_PREFIX}-mp") == "1"
            salt = headers.get(f"{META_PREFIX}-bk") if version == FORMAT_VERSION_2 else None
            # Any version after 1 (a later one keeps the field as it is).
            customer = headers.get(f"{META_PREFIX}-ssec") if version != FORMAT_VERSION else None
            meta = ObjectMeta(
                algorithm=Algorithm(headers[f"{META_PREFIX}-alg"]),
                sealed_key=base64.b64decode(headers[f"{META_PREFIX}-key"], validate=True),
                base_nonce=base64.b64decode(headers[f"{META_PREFIX}-iv"], validate=True),
                size=None if multipart else int(headers[f"{META_PREFIX}-size"]),
                kms_key_id=headers[f"{META_PREFIX}-kms-key"] if customer is None else "",
                sse=headers[f"{META_PREFIX}-sse"],
                md5=headers.get(f"{META_PREFIX}-md5"),
                context=json.loads(base64.b64decode(ctx)) if ctx else None,
                multipart=multipart,
                bucket_key_salt=base64.b64decode(salt, validate=True) if salt else None,
                customer=customer,
            )
        except (KeyError, ValueError) as e:
            raise ObjectCorrupt(f"the object's envelope metadata is damaged ({e})") from None
        if meta.bucket_key_salt is not None and len(meta.bucket_key_salt) != SALT:
            raise ObjectCorrupt("the object's bucket-key salt has the wrong length")
        if len(meta.base_nonce) != NONCE:
            raise ObjectCorrupt("the object's nonce has the wrong length")
        if meta.customer is not None and (meta.bucket_key_salt is not None
                                          or meta.algorithm is not Algorithm.AES_256_GCM):
            raise ObjectCorrupt("an SSE-C object has bucket-key or SM4 fields")
        return meta


def part_nonce(base: bytes, part: int) -> bytes:
    """The base nonce of part `part` of a multipart object (part 0: a single PUT, `base` itself).

    The part number is XORed into the 4-byte prefix and the package number into the 8-byte
    counter (PackageCipher), so (part, package) pairs never share a nonce under one key.
    """
    if not 0 <= part <= MAX_PART or len(base) != NONCE:
        raise ValueError("part number or nonce out of range")
    return (int.from_bytes(base[:4], "big") ^ part).to_bytes(4, "big") + base[4:]


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


def object_context(bucket: str, key: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The data key's encryption context: the object's ARN (as AWS S3 uses), plus the client's."""
    ctx = dict(extra or {})
    ctx["aws:s3:arn"] = f"arn:aws:s3:::{bucket}/{key}"
    return ctx


def bucket_context(bucket: str) -> dict[str, str]:
    """A bucket key's encryption context: the bucket's ARN (as AWS S3 Bucket Keys use)."""
    return {"aws:s3:arn": f"arn:aws:s3:::{bucket}"}


def key_context(bucket: str, key: str, meta: ObjectMeta) -> dict[str, str]:
    """The context the object's sealed key was sealed with."""
    if meta.bucket_key_salt is not None:
        return bucket_context(bucket)
    return object_context(bucket, key, meta.context)
