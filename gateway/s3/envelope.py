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

Format version 3 (every object written since; v1 and v2 objects still read) closes what
storage access could do to v1/v2 objects:

- Packages carry `ssegw/obj/v3` in their AAD, so a v3 object relabelled v1/v2 fails.
- Each multipart part (UploadPart or UploadPartCopy) starts with a 16-byte random salt (its
  *header*); the part's key and base nonce are HKDF(data key, salt, part number) (`part_key`).
  v2 sealed a part number sent twice under the same key and nonces (giving away the XOR of the
  plaintexts and the GCM authentication key); now no (key, nonce) pair is ever used twice.
- `ssegw-mac`: an HMAC over every other `ssegw-*` field and the object's bucket and name,
  under a key derived from the data key (`ObjectMeta.signed`/`verify`). Readers open the data
  key, check the MAC, and only then trust a size, ETag MD5, algorithm, context or layout.
- A multipart object's metadata is fixed at CreateMultipartUpload, before its parts exist. At
  completion the proxy reads back each part's salt, adds `ssegw-size` (plaintext total),
  `ssegw-layout` (sealed part sizes, run-length coded) and `ssegw-parts` (SHA-256 of the salts
  in order) and the MAC, and has the backend copy the object onto itself with that metadata
  (uploads.py `_seal_layout`). Readers take the layout from there: dropping, duplicating,
  reordering, cutting or extending parts, or swapping in an older upload of a part number,
  fails before a byte is served. The manifest is kept in the object itself (not a hidden
  second object) so that the object stays one atomic thing for the backend and no proxy node
  keeps state; the price is one backend-side copy per completed upload.

Format version 4 (multipart uploads created since; v3 single objects are unchanged and every
earlier version still reads) drops that copy. Its parts are v3 parts (salt header, v3 AAD),
but the metadata written at CreateMultipartUpload is complete and MAC'd there (it holds no
size or layout), and the layout goes into the object's *manifest*: one object tag
`ssegw-manifest` = `<size> <layout> <parts digest> <manifest MAC>`, written with
PutObjectTagging after the backend completed the upload (a tag is the one thing S3 lets us
attach to an object afterwards without copying its bytes; it travels with the object through
backend copies, replication and versions). The manifest MAC is keyed from the data key and
binds the upload's base nonce (random per upload), so a manifest holds only for the upload
it was made for; it does not bind the name (the metadata MAC does), so a copy or rewrap that
keeps the data key keeps the manifest. The salts are recorded by UploadPart in the gateway's
state bucket (upload_state.py), so completion reads nothing back. Readers take the layout
from the manifest and check it exactly as they check a v3 layout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = "1"
FORMAT_VERSION_2 = "2"
FORMAT_VERSION_3 = "3"
FORMAT_VERSION_4 = "4"
KNOWN_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_2, FORMAT_VERSION_3, FORMAT_VERSION_4)
# Versions whose packages carry the v3 AAD, whose parts start with a salt and whose metadata
# carries a MAC.
SALTED_VERSIONS = (FORMAT_VERSION_3, FORMAT_VERSION_4)
MANIFEST_TAG = "ssegw-manifest"  # v4: the object tag holding a multipart object's manifest
MAX_TAG_VALUE = 256  # S3's limit on a tag value
MAX_USER_TAGS = 9  # S3 keeps 10 tags per object; a v4 multipart object's manifest takes one
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
_META_MAC_INFO = b"ssegw/obj/v3/meta"
_MANIFEST_INFO = b"ssegw/obj/v4/manifest"
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

    def __init__(self, algorithm: Algorithm, key: bytes, base_nonce: bytes, part: int = 0,
                 version: str = FORMAT_VERSION) -> None:
        if len(key) != algorithm.key_len or len(base_nonce) != NONCE:
            raise ValueError("wrong key or nonce length for the object format")
        self._aead: AESGCM | _Sm4Gcm = AESGCM(key) if algorithm is Algorithm.AES_256_GCM else _Sm4Gcm(key)
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
    size: int | None  # plaintext size; None for multipart objects before completion (v1/v2: always)
    kms_key_id: str
    sse: str  # what the client asked for: "aws:kms" or "AES256"
    md5: str | None = None  # plaintext MD5 (objects buffered before upload)
    context: Mapping[str, str] | None = None  # the client's x-amz-server-side-encryption-context
    multipart: bool = False
    bucket_key_salt: bytes | None = None  # set: sealed_key is a bucket key, see derive_key
    customer: str | None = None  # SSE-C: the key record (sse_c.py); sealed_key is wrapped by the customer key
    format: str = FORMAT_VERSION_3  # what new objects are written as; decode keeps the stored one
    layout: tuple[int, ...] | None = None  # v3 multipart, completed: each part's sealed size
    parts_digest: bytes | None = None  # v3 multipart, completed: SHA-256 of the parts' salts
    mac: bytes | None = field(default=None, repr=False)  # v3: see `signed`
    manifest_mac: bytes | None = field(default=None, repr=False)  # v4 multipart: see `manifest`

    @property
    def version(self) -> str:
        if self.format in SALTED_VERSIONS:
            return self.format
        return FORMAT_VERSION_2 if self.multipart or self.bucket_key_salt or self.customer else FORMAT_VERSION

    @property
    def salted(self) -> bool:
        """v3 or v4: v3 packages, salted parts, MAC'd metadata."""
        return self.version in SALTED_VERSIONS

    @property
    def manifest_in_tag(self) -> bool:
        """v4 multipart: size and layout live in the `ssegw-manifest` tag, not the metadata."""
        return self.version == FORMAT_VERSION_4 and self.multipart

    @property
    def complete(self) -> bool:
        """A v3/v4 multipart object whose layout was sealed at completion (or any other object)."""
        return not (self.salted and self.multipart and self.layout is None)

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
        # A v4 multipart object's size and layout are its manifest's (a tag), never metadata.
        if self.size is not None and not self.manifest_in_tag:
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
        if self.layout is not None and not self.manifest_in_tag:
            out[f"{META_PREFIX}-layout"] = encode_layout(self.layout)
        if self.parts_digest is not None and not self.manifest_in_tag:
            out[f"{META_PREFIX}-parts"] = base64.b64encode(self.parts_digest).decode()
        if self.mac is not None:
            out[f"{META_PREFIX}-mac"] = base64.b64encode(self.mac).decode()
        return out

    # -------------------------------------------------------------- v3 metadata MAC

    def _mac_input(self, bucket: str, key: str) -> bytes:
        """Every field but the MAC, and the object's name, unambiguously encoded.

        The name is bound so that an attacker with storage access cannot move an object
        (bytes and metadata) onto another name: per-object keys are bound to it by the KMS
        context already, bucket-key objects only by this MAC.
        """
        fields = sorted((k, v) for k, v in self.encode().items() if k != f"{META_PREFIX}-mac")
        items = [_META_MAC_INFO, bucket.encode(), key.encode()]
        items += [k.encode() + b"\0" + v.encode() for k, v in fields]
        return b"".join(struct.pack(">I", len(x)) + x for x in items)

    def _mac(self, data_key: bytes, bucket: str, key: str) -> bytes:
        digest = hashes.SM3() if self.algorithm is Algorithm.SM4_GCM else hashes.SHA256()
        mac_key = HKDF(digest, 32, None, _META_MAC_INFO).derive(data_key)
        h = HMAC(mac_key, digest)
        h.update(self._mac_input(bucket, key))
        return h.finalize()

    def signed(self, data_key: bytes, bucket: str, key: str) -> ObjectMeta:
        """This metadata with its MAC (v3): every field the proxy relies on, bound to the
        object's data key and name, so storage access cannot change sizes, ETag, layout,
        algorithm or context without the read failing."""
        if not self.salted:
            return self
        return replace(self, mac=self._mac(data_key, bucket, key))

    def verify(self, data_key: bytes, bucket: str, key: str) -> None:
        """ObjectCorrupt unless the metadata is as the proxy wrote it for this name (v3);
        v1/v2 objects carry no MAC and are taken as they are."""
        if not self.salted:
            return
        if self.mac is None or not self.complete:
            raise ObjectCorrupt("the object's metadata is not authenticated (or its upload was "
                                "never completed through the proxy)")
        if not hmac.compare_digest(self.mac, self._mac(data_key, bucket, key)):
            raise ObjectCorrupt("the object's metadata failed authentication")
        if self.manifest_in_tag and (self.manifest_mac is None or not hmac.compare_digest(
                self.manifest_mac, self._manifest_mac(data_key))):
            raise ObjectCorrupt("the object's manifest failed authentication")

    # -------------------------------------------------------------- v4 manifest (a tag)

    def _manifest_mac(self, data_key: bytes) -> bytes:
        assert self.size is not None and self.layout is not None and self.parts_digest is not None
        items = [_MANIFEST_INFO, self.base_nonce, str(self.size).encode(),
                 _tag_layout(self.layout).encode(), self.parts_digest]
        digest = hashes.SM3() if self.algorithm is Algorithm.SM4_GCM else hashes.SHA256()
        h = HMAC(HKDF(digest, 32, None, _MANIFEST_INFO).derive(data_key), digest)
        h.update(b"".join(struct.pack(">I", len(x)) + x for x in items))
        return h.finalize()

    def with_manifest(self, data_key: bytes, size: int, layout: tuple[int, ...], digest: bytes) -> ObjectMeta:
        """A v4 multipart upload's metadata with its completed layout and the manifest's MAC."""
        done = replace(self, size=size, layout=layout, parts_digest=digest)
        return replace(done, manifest_mac=done._manifest_mac(data_key))

    def manifest(self) -> str:
        """The `ssegw-manifest` tag's value (v4 multipart, completed)."""
        assert self.manifest_in_tag and self.manifest_mac is not None and self.parts_digest is not None
        return " ".join((str(self.size), _tag_layout(self.layout or ()),
                         base64.b64encode(self.parts_digest).decode(), base64.b64encode(self.manifest_mac).decode()))

    def read_manifest(self, text: str | None) -> ObjectMeta:
        """This v4 multipart object's metadata with the manifest tag's fields (unchecked until
        `verify`); ObjectCorrupt when the tag is missing or malformed."""
        if text is None:
            raise ObjectCorrupt("the object has no manifest (its upload was never completed through "
                                "the proxy, or the manifest was removed)")
        try:
            if len(text) > MAX_TAG_VALUE:
                raise ValueError("too long")
            size, layout, digest, mac = text.split(" ")
            out = replace(self, size=_size(size), layout=_read_tag_layout(layout),
                          parts_digest=base64.b64decode(digest, validate=True),
                          manifest_mac=base64.b64decode(mac, validate=True))
        except (ValueError, TypeError) as e:
            raise ObjectCorrupt(f"the object's manifest is damaged ({e})") from None
        if len(out.parts_digest or b"") != 32:
            raise ObjectCorrupt("the object's manifest is damaged (parts digest)")
        return out

    @staticmethod
    def decode(headers: Mapping[str, str]) -> ObjectMeta | None:
        """The envelope of an object, None for a plaintext object; ObjectCorrupt if damaged."""
        version = headers.get(META_PREFIX)
        if version is None:
            return None
        if version not in KNOWN_VERSIONS:
            raise ObjectCorrupt(f"unknown object format version {version!r}")
        v3 = version in SALTED_VERSIONS
        v4 = version == FORMAT_VERSION_4
        try:
            ctx = headers.get(f"{META_PREFIX}-ctx")
            multipart = version != FORMAT_VERSION and headers.get(f"{META_PREFIX}-mp") == "1"
            salt = headers.get(f"{META_PREFIX}-bk") if version != FORMAT_VERSION else None
            # Any version after 1 (a later one keeps the field as it is).
            customer = headers.get(f"{META_PREFIX}-ssec") if version != FORMAT_VERSION else None
            size = headers.get(f"{META_PREFIX}-size")
            if v4 and not multipart:
                raise ValueError("format 4 is for multipart objects")
            if v4 and any(f"{META_PREFIX}-{f}" in headers for f in ("size", "layout", "parts")):
                raise ValueError("a format 4 object keeps its size and layout in its manifest")
            layout = headers.get(f"{META_PREFIX}-layout") if v3 and multipart else None
            digest = headers.get(f"{META_PREFIX}-parts") if v3 and multipart else None
            mac = headers.get(f"{META_PREFIX}-mac") if v3 else None
            meta = ObjectMeta(
                algorithm=Algorithm(headers[f"{META_PREFIX}-alg"]),
                sealed_key=base64.b64decode(headers[f"{META_PREFIX}-key"], validate=True),
                base_nonce=base64.b64decode(headers[f"{META_PREFIX}-iv"], validate=True),
                size=(None if multipart and (not v3 or size is None)
                      else _size(headers[f"{META_PREFIX}-size"])),
                kms_key_id=headers[f"{META_PREFIX}-kms-key"] if customer is None else "",
                sse=headers[f"{META_PREFIX}-sse"],
                md5=headers.get(f"{META_PREFIX}-md5"),
                context=_context(ctx) if ctx else None,
                multipart=multipart,
                bucket_key_salt=base64.b64decode(salt, validate=True) if salt else None,
                customer=customer,
                format=version if v3 else FORMAT_VERSION,
                layout=decode_layout(layout) if layout is not None else None,
                parts_digest=base64.b64decode(digest, validate=True) if digest is not None else None,
                mac=base64.b64decode(mac, validate=True) if mac is not None else None,
            )
        except (KeyError, ValueError, TypeError, UnicodeError) as e:
            raise ObjectCorrupt(f"the object's envelope metadata is damaged ({e})") from None
        if meta.bucket_key_salt is not None and len(meta.bucket_key_salt) != SALT:
            raise ObjectCorrupt("the object's bucket-key salt has the wrong length")
        if len(meta.base_nonce) != NONCE:
            raise ObjectCorrupt("the object's nonce has the wrong length")
        if meta.customer is not None and (meta.bucket_key_salt is not None
                                          or meta.algorithm is not Algorithm.AES_256_GCM):
            raise ObjectCorrupt("an SSE-C object has bucket-key or SM4 fields")
        if (meta.layout is None) != (meta.parts_digest is None) or (meta.layout is not None and meta.size is None):
            raise ObjectCorrupt("the object's layout metadata is incomplete")
        return meta


def _size(text: str) -> int:
    if not text.isdigit() or len(text) > 20:
        raise ValueError("size is not a number")
    return int(text)


def _context(b64: str) -> dict[str, str]:
    ctx = json.loads(base64.b64decode(b64, validate=True))
    if not isinstance(ctx, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ctx.items()):
        raise ValueError("context is not a JSON object of strings")
    return ctx


MAX_LAYOUT_TEXT = 1024  # S3 keeps 2 KB of user metadata; the layout may take half


def encode_layout(sealed: tuple[int, ...]) -> str:
    """Sealed part sizes, run-length encoded: `size*count,size*count` (one run per distinct
    stretch; clients use one part size, so this is one or two runs)."""
    runs: list[list[int]] = []
    for s in sealed:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return ",".join(f"{s}*{n}" for s, n in runs)


def decode_layout(text: str) -> tuple[int, ...]:
    if len(text) > MAX_LAYOUT_TEXT:
        raise ValueError("layout too long")
    out: list[int] = []
    for run in text.split(","):
        size, star, count = run.partition("*")
        if not star:
            raise ValueError("layout run without a count")
        n = _size(count)
        if not 1 <= n <= MAX_PART - len(out):
            raise ValueError("layout has too many parts")
        out.extend([_size(size)] * n)
    return tuple(out)


def _tag_layout(sealed: tuple[int, ...]) -> str:
    """The layout in a tag value: `size:count/size:count` (S3 allows neither * nor , in tags)."""
    return encode_layout(sealed).replace("*", ":").replace(",", "/")


def _read_tag_layout(text: str) -> tuple[int, ...]:
    if "*" in text or "," in text:
        raise ValueError("not a tag layout")
    return decode_layout(text.replace(":", "*").replace("/", ","))


def manifest_fits(sealed: tuple[int, ...]) -> bool:
    """Whether a layout's manifest fits one tag value (parts of one size, give or take a few)."""
    fixed = 20 + 44 + 44 + 3  # size, digest, MAC, separators
    return len(_tag_layout(sealed)) + fixed <= MAX_TAG_VALUE


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


def parts_digest(salts: list[bytes]) -> bytes:
    """What a completed v3 multipart object's metadata binds of its parts' salts (in order)."""
    return hashlib.sha256(b"ssegw/obj/v3/parts" + b"".join(salts)).digest()


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
