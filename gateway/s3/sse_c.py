"""SSE-C (customer-provided keys): the request headers, the key check record, the key binding.

With SSE-C the client sends its own 256-bit key on every request that writes or reads an
object; the proxy must never keep it. An SSE-C object is sealed like any other (a random
per-object data key, the chunked AEAD of `envelope.py`); what differs is who holds the key to
that data key. Instead of the KMS, the customer key does, through a *binding* kept in the
backend object's metadata:

    salt       16 random bytes, fresh every time a data key is bound (PUT, upload, copy)
    check      HMAC-SHA256(customer key, "ssegw/sse-c/v1/check" || salt)
    KEK        HKDF-SHA256(customer key, salt, info "ssegw/sse-c/v1/kek"), 32 bytes
    wrapped    nonce || AES-256-GCM(KEK, nonce, data key, AAD "ssegw/sse-c/v1" || object ARN)

The record `version || salt || check` goes into `x-amz-meta-ssegw-ssec` and `wrapped` into the
envelope's sealed-key field. The check is S3's own answer to "is this the same key?" (a salted
HMAC, useless without the key and different for every object); it lets a wrong key be told
apart from damage: a wrong key fails the check (403), while a key that passes the check but
does not open `wrapped` means the metadata was altered (500, never bytes). The wrap binds the
data key to the customer key and to the object's name, so metadata moved onto another object
does not open, and a copy, a rename or a change of customer key re-wraps 32 bytes and never
re-encrypts data (as `copy.py` does for KMS-sealed keys).

Neither the key, nor its MD5, nor anything from which either could be recomputed without the
key is stored; `CustomerKey` keeps the key out of reprs, so it cannot reach a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.s3.errors import S3Error

ALGORITHM = "AES256"
SSE = "SSE-C"  # the envelope's `sse` field for SSE-C objects
HEADER = "x-amz-server-side-encryption-customer-"
COPY_HEADER = "x-amz-copy-source-server-side-encryption-customer-"
RECORD_VERSION = 1
SALT = 16
CHECK = 32
NONCE = 12
KEY = 32
WRAPPED = NONCE + KEY + 16
_CHECK_LABEL = b"ssegw/sse-c/v1/check"
_KEK_INFO = b"ssegw/sse-c/v1/kek"
_AAD = b"ssegw/sse-c/v1"


@dataclass(frozen=True)
class CustomerKey:
    """A customer key from a request, its algorithm and MD5 checked."""

    key: bytes = field(repr=False)
    key_md5: str  # base64, as the client sent it (S3 echoes it)

    def echo(self) -> dict[str, str]:
        """The headers S3 answers an SSE-C request with."""
        return {HEADER + "algorithm": ALGORITHM, HEADER + "key-md5": self.key_md5}


@dataclass(frozen=True)
class KeyRecord:
    """What an SSE-C object keeps about its customer key: the salt and the salted HMAC."""

    salt: bytes
    check: bytes

    def encode(self) -> str:
        return base64.b64encode(bytes([RECORD_VERSION]) + self.salt + self.check).decode()

    @staticmethod
    def decode(text: str) -> KeyRecord:
        """ValueError when `text` is not a record this version reads."""
        try:
            raw = base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("the SSE-C key record is not base64") from None
        if len(raw) != 1 + SALT + CHECK or raw[0] != RECORD_VERSION:
            raise ValueError("unknown SSE-C key record version or length")
        return KeyRecord(raw[1:1 + SALT], raw[1 + SALT:])


# ---------------------------------------------------------------------- errors (S3's own)


def _invalid_argument(message: str) -> S3Error:
    return S3Error("InvalidArgument", message, 400)


def insecure() -> S3Error:
    return S3Error("InvalidRequest", "Requests specifying Server Side Encryption with Customer provided "
                   "keys must be made over a secure connection.", 400)


def key_required() -> S3Error:
    return S3Error("InvalidRequest", "The object was stored using a form of Server Side Encryption. The "
                   "correct parameters must be provided to retrieve the object.", 400)


def part_key_required() -> S3Error:
    return S3Error("InvalidRequest", "The multipart upload initiate requested encryption. Subsequent part "
                   "requests must include the appropriate encryption parameters.", 400)


def part_key_mismatch() -> S3Error:
    # A part (or Complete) under another key than the upload's reads nothing: S3 answers 400.
    return S3Error("InvalidRequest", "The provided encryption parameters did not match the ones used "
                   "originally.", 400)


def not_applicable() -> S3Error:
    return S3Error("InvalidRequest", "The encryption parameters are not applicable to this object.", 400)


def incompatible() -> S3Error:
    return _invalid_argument("Server Side Encryption with Customer provided key is incompatible with the "
                             "encryption method specified")


def wrong_key() -> S3Error:
    return S3Error("AccessDenied", "Access Denied: the customer-provided key is not the key this object "
                   "was stored with", 403)


def damaged() -> S3Error:
    return S3Error("InternalError", "The object's SSE-C key binding failed authentication; the object was "
                   "not served", 500)


# ---------------------------------------------------------------------- headers


def present(headers: Mapping[str, str], *, copy_source: bool = False) -> bool:
    prefix = COPY_HEADER if copy_source else HEADER
    return any(name.startswith(prefix) for name in headers)


def parse(headers: Mapping[str, str], *, copy_source: bool = False, secure: bool,
          allow_http: bool) -> CustomerKey | None:
    """The customer key a request names (as destination, or with `copy_source` as copy source);
    None when it names none. Errors as S3 gives them."""
    prefix = COPY_HEADER if copy_source else HEADER
    algorithm = headers.get(prefix + "algorithm")
    key_b64 = headers.get(prefix + "key")
    md5_b64 = headers.get(prefix + "key-md5")
    if algorithm is None and key_b64 is None and md5_b64 is None:
        if present(headers, copy_source=copy_source):
            raise _invalid_argument(f"Unknown {prefix[:-1]} header")
        return None
    if not secure and not allow_http:
        raise insecure()
    if algorithm is None:
        raise _invalid_argument("Requests specifying Server Side Encryption with Customer provided keys "
                                "must provide a valid encryption algorithm.")
    if algorithm != ALGORITHM:
        raise S3Error("InvalidEncryptionAlgorithmError", "The Encryption request you specified is not "
                      "valid. Supported value: AES256.", 400)
    if key_b64 is None:
        raise _invalid_argument("Requests specifying Server Side Encryption with Customer provided keys "
                                "must provide an appropriate secret key.")
    if md5_b64 is None:
        raise _invalid_argument("Requests specifying Server Side Encryption with Customer provided keys "
                                "must provide the client calculated MD5 of the secret key.")
    try:
        key = base64.b64decode(key_b64.strip(), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != KEY:
        raise _invalid_argument("The secret key was invalid for the specified algorithm.")
    md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    if not hmac.compare_digest(md5.encode(), md5_b64.strip().encode()):
        raise _invalid_argument("The calculated MD5 hash of the key did not match the hash that was provided.")
    return CustomerKey(key, md5)


# ---------------------------------------------------------------------- the binding


def _check(customer: bytes, salt: bytes) -> bytes:
    return hmac.new(customer, _CHECK_LABEL + salt, hashlib.sha256).digest()


def _kek(customer: bytes, salt: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), 32, salt, _KEK_INFO).derive(customer))


def _aad(bucket: str, key: str) -> bytes:
    # Bucket names hold no "/", so the ARN names one object unambiguously.
    return _AAD + f"arn:aws:s3:::{bucket}/{key}".encode()


def bind(customer: CustomerKey, data_key: bytes, bucket: str, key: str, *,
         salt: bytes | None = None, nonce: bytes | None = None) -> tuple[bytes, KeyRecord]:
    """(wrapped data key, record) binding `data_key` to the customer key and to bucket/key.

    `salt` and `nonce` are for frozen vectors only; every real binding draws fresh ones."""
    salt = os.urandom(SALT) if salt is None else salt
    nonce = os.urandom(NONCE) if nonce is None else nonce
    if len(salt) != SALT or len(nonce) != NONCE or len(data_key) != KEY:
        raise ValueError("wrong salt, nonce or data key length")
    wrapped = nonce + _kek(customer.key, salt).encrypt(nonce, data_key, _aad(bucket, key))
    return wrapped, KeyRecord(salt, _check(customer.key, salt))


def matches(customer: CustomerKey, record: KeyRecord) -> bool:
    return hmac.compare_digest(_check(customer.key, record.salt), record.check)


def verify(customer: CustomerKey | None, record_text: str | None, *, mismatch: S3Error | None = None) -> None:
    """That a request's customer key (or its absence) fits an object's record (None: not SSE-C);
    another key is 403 (`mismatch`, where S3 answers otherwise)."""
    if record_text is None:
        if customer is not None:
            raise not_applicable()
        return
    if customer is None:
        raise key_required()
    if not matches(customer, _record(record_text)):
        raise mismatch or wrong_key()


def unbind(customer: CustomerKey | None, wrapped: bytes, record_text: str, bucket: str, key: str, *,
           missing: S3Error | None = None, mismatch: S3Error | None = None) -> bytes:
    """The data key of an SSE-C object (or upload): 400 without a key (`missing`, else S3's
    answer for reads), 403 for another key (`mismatch`, else S3's answer for reads), 500 when
    the binding was tampered with."""
    if customer is None:
        raise missing or key_required()
    record = _record(record_text)
    if not matches(customer, record):
        raise mismatch or wrong_key()
    if len(wrapped) != WRAPPED:
        raise damaged()
    try:
        return _kek(customer.key, record.salt).decrypt(wrapped[:NONCE], wrapped[NONCE:], _aad(bucket, key))
    except InvalidTag:
        raise damaged() from None


def _record(text: str) -> KeyRecord:
    try:
        return KeyRecord.decode(text)
    except ValueError:
        raise damaged() from None


def new_data_key() -> bytes:
    return os.urandom(KEY)
