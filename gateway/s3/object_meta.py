"""An encrypted object's metadata (envelope.py has the whole format), pure: ObjectMeta with its
`x-amz-meta-ssegw-*` encoding, the v3 metadata MAC, the v4 manifest tag, the run-length part
layout, and the KMS encryption contexts of data and bucket keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.s3.package_cipher import (
    FORMAT_VERSION,
    FORMAT_VERSION_2,
    FORMAT_VERSION_3,
    FORMAT_VERSION_4,
    KNOWN_VERSIONS,
    MAX_PART,
    NONCE,
    SALT,
    SALTED_VERSIONS,
    Algorithm,
    ObjectCorrupt,
)

MANIFEST_TAG = "ssegw-manifest"  # v4: the object tag holding a multipart object's manifest
# ObjectMeta.checksum of a v3 object whose checksum came after its metadata went out (a streamed
# body's trailer, or computed as it streamed): the sealed checksum is then the MANIFEST_TAG's value
# (envelope.py).
CHECKSUM_IN_TAG = "tag"
MAX_TAG_VALUE = 256  # S3's limit on a tag value
MAX_USER_TAGS = 9  # S3 keeps 10 tags per object; a v4 multipart object's manifest takes one
_META_MAC_INFO = b"ssegw/obj/v3/meta"
_MANIFEST_INFO = b"ssegw/obj/v4/manifest"
META_PREFIX = "x-amz-meta-ssegw"


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
    # v3/v4: the client's checksum of the plaintext, sealed (checksums.seal); in the metadata,
    # or a v4 multipart object's manifest
    checksum: str | None = None

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
    def tagged(self) -> bool:
        """The object holds a MANIFEST_TAG of the gateway's: a v4 multipart manifest, or the
        checksum of a v3 object (CHECKSUM_IN_TAG)."""
        return self.manifest_in_tag or self.checksum == CHECKSUM_IN_TAG

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
        if self.checksum is not None and not self.manifest_in_tag:
            out[f"{META_PREFIX}-cks"] = self.checksum
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
        if self.checksum is not None:  # an item only where used: earlier manifests stay valid
            items.append(self.checksum.encode())
        digest = hashes.SM3() if self.algorithm is Algorithm.SM4_GCM else hashes.SHA256()
        h = HMAC(HKDF(digest, 32, None, _MANIFEST_INFO).derive(data_key), digest)
        h.update(b"".join(struct.pack(">I", len(x)) + x for x in items))
        return h.finalize()

    def with_manifest(self, data_key: bytes, size: int, layout: tuple[int, ...], digest: bytes,
                      checksum: str | None = None) -> ObjectMeta:
        """A v4 multipart upload's metadata with its completed layout (and sealed checksum) and
        the manifest's MAC."""
        done = replace(self, size=size, layout=layout, parts_digest=digest, checksum=checksum)
        return replace(done, manifest_mac=done._manifest_mac(data_key))

    def manifest(self) -> str:
        """The `ssegw-manifest` tag's value (v4 multipart, completed)."""
        assert self.manifest_in_tag and self.manifest_mac is not None and self.parts_digest is not None
        fields = [str(self.size), _tag_layout(self.layout or ()), base64.b64encode(self.parts_digest).decode()]
        if self.checksum is not None:
            fields.append(self.checksum)
        return " ".join([*fields, base64.b64encode(self.manifest_mac).decode()])

    def read_manifest(self, text: str | None) -> ObjectMeta:
        """This v4 multipart object's metadata with the manifest tag's fields (unchecked until
        `verify`); ObjectCorrupt when the tag is missing or malformed."""
        if text is None:
            raise ObjectCorrupt("the object has no manifest (its upload was never completed through "
                                "the proxy, or the manifest was removed)")
        try:
            if len(text) > MAX_TAG_VALUE:
                raise ValueError("too long")
            fields = text.split(" ")
            checksum = fields.pop(3) if len(fields) == 5 else None  # `size layout digest [checksum] mac`
            size, layout, digest, mac = fields
            out = replace(self, size=_size(size), layout=_read_tag_layout(layout),
                          parts_digest=base64.b64decode(digest, validate=True),
                          manifest_mac=base64.b64decode(mac, validate=True), checksum=checksum)
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
            checksum = headers.get(f"{META_PREFIX}-cks") if v3 else None
            if v4 and checksum is not None:
                raise ValueError("a format 4 object keeps its checksum in its manifest")
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
                checksum=checksum,
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


def manifest_fits(sealed: tuple[int, ...], checksum: str | None = None) -> bool:
    """Whether a layout's manifest (with a sealed checksum) fits one tag value (parts of one
    size, give or take a few)."""
    fixed = 20 + 44 + 44 + 3  # size, digest, MAC, separators
    extra = len(checksum) + 1 if checksum is not None else 0
    return len(_tag_layout(sealed)) + fixed + extra <= MAX_TAG_VALUE


def parts_digest(salts: list[bytes]) -> bytes:
    """What a completed v3 multipart object's metadata binds of its parts' salts (in order)."""
    return hashlib.sha256(b"ssegw/obj/v3/parts" + b"".join(salts)).digest()


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
