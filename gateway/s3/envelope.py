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
  (complete.py `_seal_layout`). Readers take the layout from there: dropping, duplicating,
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

Checksums (v3 and v4, optional; readers without them simply show none): the client's S3
checksum of the plaintext (checksums.py) is kept sealed, `nonce || AEAD(algorithm, type,
parts, digest)` under HKDF(data key, "ssegw/obj/v3/checksum/<alg>"), a fresh random nonce per
seal, so the backend learns no digest of the plaintext. A single object keeps it as
`ssegw-cks` (covered by the metadata MAC); a v4 multipart object as an optional fourth
manifest field, `<size> <layout> <parts digest> <checksum> <manifest MAC>` (covered by the
manifest MAC; a manifest without it verifies as before). A gateway older than this reads
single objects with `ssegw-cks` as failing their MAC: upgrade every node before clients send
checksums.

A single object whose checksum is known only once its body has streamed out (a body over
BUFFER_LIMIT with its checksum in an `aws-chunked` trailer or none, so that S3's default is
computed, or one a copy computes) has
`ssegw-cks: tag` (CHECKSUM_IN_TAG, MAC'd like any field): after the backend stored it, the
sealed checksum goes into its `ssegw-manifest` tag, as a v4 manifest does. The seal's key is
the object's own data key, so a tag that does not open is not this object's (another PUT of
the same name raced it): it reads as no checksum, as does a missing tag. The gateway before
this reads such an object's checksum as damaged: while it still serves (SSEGW_UPGRADING), the
tag is not used and such a checksum is not kept, as before.
"""

# The format lives in two modules along its seam: the package stream and the keys and nonces
# of parts (package_cipher.py), and an object's metadata with its MAC, manifest and layout
# (object_meta.py). This module keeps the format's description and the names its users import.
from __future__ import annotations

from gateway.s3.object_meta import (
    CHECKSUM_IN_TAG,
    MANIFEST_TAG,
    MAX_LAYOUT_TEXT,
    MAX_TAG_VALUE,
    MAX_USER_TAGS,
    META_PREFIX,
    ObjectMeta,
    bucket_context,
    decode_layout,
    encode_layout,
    key_context,
    manifest_fits,
    object_context,
    parts_digest,
)
from gateway.s3.package_cipher import (
    FORMAT_VERSION,
    FORMAT_VERSION_2,
    FORMAT_VERSION_3,
    FORMAT_VERSION_4,
    KNOWN_VERSIONS,
    MAX_PART,
    MAX_PART_SIZE,
    NONCE,
    PACKAGE,
    PART_HEADER,
    PIECE,
    SALT,
    SALTED_VERSIONS,
    SEALED_PACKAGE,
    SEALED_PIECE,
    TAG,
    Algorithm,
    Buffer,
    ObjectCorrupt,
    Opener,
    PackageCipher,
    PackageSpan,
    Pieces,
    Sealer,
    derive_key,
    new_base_nonce,
    new_part_salt,
    new_salt,
    package_count,
    part_key,
    part_nonce,
    plain_size,
    sealed_size,
    span,
)

__all__ = [
    "Algorithm",
    "Buffer",
    "FORMAT_VERSION",
    "FORMAT_VERSION_2",
    "FORMAT_VERSION_3",
    "FORMAT_VERSION_4",
    "KNOWN_VERSIONS",
    "CHECKSUM_IN_TAG",
    "MANIFEST_TAG",
    "MAX_LAYOUT_TEXT",
    "MAX_PART",
    "MAX_PART_SIZE",
    "MAX_TAG_VALUE",
    "MAX_USER_TAGS",
    "META_PREFIX",
    "NONCE",
    "ObjectCorrupt",
    "ObjectMeta",
    "Opener",
    "PACKAGE",
    "PART_HEADER",
    "PIECE",
    "PackageCipher",
    "PackageSpan",
    "Pieces",
    "SALT",
    "SALTED_VERSIONS",
    "SEALED_PACKAGE",
    "SEALED_PIECE",
    "Sealer",
    "TAG",
    "bucket_context",
    "decode_layout",
    "derive_key",
    "encode_layout",
    "key_context",
    "manifest_fits",
    "new_base_nonce",
    "new_part_salt",
    "new_salt",
    "object_context",
    "package_count",
    "part_key",
    "part_nonce",
    "parts_digest",
    "plain_size",
    "sealed_size",
    "span",
]
