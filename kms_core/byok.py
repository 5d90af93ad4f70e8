"""BYOK wrapping, pure: wrapping key pairs, import tokens and unwrapping imported material.

The guide (3.2.2) has the user encrypt 256 bits of key material with openssl under an RSA_2048
public key we hand out as base64 DER (SubjectPublicKeyInfo, what `openssl ... -keyform DER
-pubin` reads), with one of three paddings:

| algorithm            | openssl                                                   |
|----------------------|-----------------------------------------------------------|
| RSAES_PKCS1_V1_5     | `rsautl -encrypt -pkcs`                                   |
| RSAES_OAEP_SHA_1     | `rsautl -encrypt -oaep` (OAEP with SHA-1 and MGF1-SHA-1)  |
| RSAES_OAEP_SHA_256   | `pkeyutl -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256` |

openssl uses the OAEP digest for MGF1 too unless told otherwise, so SHA-256 OAEP here is
OAEP(SHA-256, MGF1-SHA-256), as AWS KMS defines RSAES_OAEP_SHA_256.

An import token is 32 random bytes behind a version byte; the database keeps only its SHA-256,
so a copy of the metadata never holds a usable token. No I/O here.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kms_core.errors import InvalidCiphertext, InvalidImportToken, InvalidParameter

IMPORT_TOKEN_TTL = timedelta(hours=24)
WRAPPING_KEY_BITS = 2048
_TOKEN_VERSION = b"\x01"
_TOKEN_RANDOM_LEN = 32
TOKEN_LEN = len(_TOKEN_VERSION) + _TOKEN_RANDOM_LEN


class WrappingAlgorithm(StrEnum):
    RSAES_PKCS1_V1_5 = "RSAES_PKCS1_V1_5"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"


class WrappingKeySpec(StrEnum):
    RSA_2048 = "RSA_2048"


def parse_wrapping_algorithm(value: str) -> WrappingAlgorithm:
    if isinstance(value, str):
        try:
            return WrappingAlgorithm(value.strip().upper())
        except ValueError:
            pass
    allowed = ", ".join(a.value for a in WrappingAlgorithm)
    raise InvalidParameter(f"unknown wrapping algorithm {value!r}; expected one of {allowed}")


def parse_wrapping_key_spec(value: str) -> WrappingKeySpec:
    if isinstance(value, str):
        try:
            return WrappingKeySpec(value.strip().upper())
        except ValueError:
            pass
    raise InvalidParameter(f"unknown wrapping key spec {value!r}; expected RSA_2048")


@dataclass(frozen=True)
class WrappingKeyPair:
    """`private_der` is PKCS#8 DER, only ever stored sealed; `public_der` is SPKI DER."""

    private_der: bytes = field(repr=False)
    public_der: bytes


def new_wrapping_key_pair() -> WrappingKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=WRAPPING_KEY_BITS)
    return WrappingKeyPair(
        private_der=key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        public_der=key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def new_import_token() -> bytes:
    return _TOKEN_VERSION + os.urandom(_TOKEN_RANDOM_LEN)


def token_id(token: bytes) -> str:
    """The database key of a token: its SHA-256. Malformed tokens are refused up front."""
    if not isinstance(token, bytes) or len(token) != TOKEN_LEN or token[:1] != _TOKEN_VERSION:
        raise InvalidImportToken("the import token is malformed; get a new one with "
                                 "getParametersForImport")
    return hashlib.sha256(token).hexdigest()


def _padding(algorithm: WrappingAlgorithm) -> padding.AsymmetricPadding:
    if algorithm is WrappingAlgorithm.RSAES_PKCS1_V1_5:
        return padding.PKCS1v15()
    digest: hashes.HashAlgorithm = (
        hashes.SHA1() if algorithm is WrappingAlgorithm.RSAES_OAEP_SHA_1 else hashes.SHA256()
    )
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def unwrap_material(private_der: bytes, algorithm: WrappingAlgorithm, encrypted: bytes,
                    expected_len: int | None = None) -> bytes:
    """Decrypt wrapped key material; every failure is one opaque InvalidCiphertext.

    OAEP: OpenSSL's decoding, which is constant-time and either yields the message or fails.

    PKCS#1 v1.5: OpenSSL's implicit rejection answers bad padding with pseudo-random bytes
    instead of an error (so that no caller can tell good padding from bad: the Bleichenbacher
    padding oracle), which means wrong material of the right length (about 1 in 400 bad
    blobs) is taken silently. So this does the RSA operation raw (blinded) and checks the
    padding itself, for a message of exactly `expected_len` bytes, with no data-dependent
    branch until one final verdict: malformed padding, a wrong length and a wrong separator
    are one and the same error. Callers also keep the number of tries per wrapping key low
    (kms_core.ops.imports: a failed PKCS#1 v1.5 unwrap burns its import token).
    """
    key = serialization.load_der_private_key(private_der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidCiphertext("the import token's wrapping key is damaged")
    if not isinstance(encrypted, bytes) or len(encrypted) != key.key_size // 8:
        raise InvalidCiphertext(
            f"encrypted key material must be {key.key_size // 8} bytes (one RSA_2048 block)"
        )
    if algorithm is WrappingAlgorithm.RSAES_PKCS1_V1_5 and expected_len is not None:
        material = _pkcs1_v15_fixed(key, encrypted, expected_len)
        if material is None:
            raise InvalidCiphertext(_UNWRAP_FAILED)
        return material
    try:
        return key.decrypt(encrypted, _padding(algorithm))
    except ValueError:
        raise InvalidCiphertext(_UNWRAP_FAILED) from None


_UNWRAP_FAILED = ("the encrypted key material could not be decrypted with the import token's "
                  "wrapping key and algorithm")


def _pkcs1_v15_fixed(key: rsa.RSAPrivateKey, encrypted: bytes, mlen: int) -> bytes | None:
    """EME-PKCS1-v1_5 decoding of a message of exactly `mlen` bytes, or None.

    EM = 00 || 02 || PS (k - 3 - mlen nonzero bytes, at least 8) || 00 || M. With the length
    fixed, every position's expected value is known, so the check is one pass of bitwise
    accumulation over all bytes (no early exit, no search for the separator).
    """
    numbers = key.private_numbers()
    n, e, d = numbers.public_numbers.n, numbers.public_numbers.e, numbers.d
    k = (n.bit_length() + 7) // 8
    c = int.from_bytes(encrypted, "big")
    if not 3 + 8 + mlen <= k:
        return None
    bad = int(c >= n)
    c %= n
    # Blinding: the exponentiation works on c * r^e, unrelated to what the caller sent.
    while True:
        r = int.from_bytes(os.urandom(k), "big") % n
        if r > 1 and math.gcd(r, n) == 1:
            break
    m = (pow(c * pow(r, e, n) % n, d, n) * pow(r, -1, n)) % n
    em = m.to_bytes(k, "big")
    sep = k - mlen - 1
    bad |= em[0] | (em[1] ^ 2) | em[sep]
    zero_in_ps = 0
    for b in em[2:sep]:
        zero_in_ps |= ((b - 1) >> 8) & 1  # 1 when b == 0, without a branch
    bad |= zero_in_ps
    material = em[sep + 1:]
    return None if bad else material
