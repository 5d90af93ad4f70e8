"""Asymmetric algorithms of the KMS: names, public-key operations and private-key interfaces.

Pure in the sense of the design notes (no I/O, no service, no key store): the service and the
key stores plug private-key operations in behind `PrivateKeyOps`, and every public-key
operation (verify, encrypt, PEM) runs here from the stored SubjectPublicKeyInfo, whatever the
protection level, because a public key needs no protection.

Algorithms (the names AWS KMS uses, so the AWS dialect maps one to one):

- RSA_2048 signing: RSASSA_PSS_SHA_256 (32-byte salt, MGF1-SHA-256), RSASSA_PKCS1_V1_5_SHA_256.
- RSA_2048 encryption: RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1 (MGF1 with the same hash, no label).
- SM2 signing: SM2DSA (SM3 with the Z value, ID 1234567812345678, DER signature).
- SM2 encryption: SM2PKE (GM/T 0009 DER ciphertext, C1C3C2, SM3).

Signing input is the message (RAW, up to 4096 bytes) or its digest (DIGEST): SHA-256(M) for
RSA, e = SM3(Z || M) for SM2 (the Z value is part of what SM2 signs, so a digest made without
it would not verify anywhere else). PSS signatures are made with a 32-byte salt, as AWS KMS
does; verification accepts any salt length (OpenSSL's default when signing is the maximum).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from kms_core import sm2
from kms_core.errors import InvalidCiphertext, InvalidKeyUsage, InvalidParameter
from kms_core.sm2_api import Sm2Engine, Sm2PrivateKey, Sm2PublicKey
from kms_core.sm2_engine import default_engine
from kms_core.specs import KeySpec, KeyUsage

RSA_BITS = 2048
RSA_BYTES = RSA_BITS // 8
PSS_SALT_LEN = 32
MAX_SIGN_MESSAGE = 4096
MAX_SM2_PLAINTEXT = 6144


class SigningAlgorithm(StrEnum):
    RSASSA_PSS_SHA_256 = "RSASSA_PSS_SHA_256"
    RSASSA_PKCS1_V1_5_SHA_256 = "RSASSA_PKCS1_V1_5_SHA_256"
    SM2DSA = "SM2DSA"


class EncryptionAlgorithm(StrEnum):
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    SM2PKE = "SM2PKE"


class MessageType(StrEnum):
    RAW = "RAW"
    DIGEST = "DIGEST"


SIGNING_ALGORITHMS: dict[KeySpec, tuple[SigningAlgorithm, ...]] = {
    KeySpec.RSA_2048: (
        SigningAlgorithm.RSASSA_PSS_SHA_256,
        SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_256,
    ),
    KeySpec.SM2: (SigningAlgorithm.SM2DSA,),
}
ENCRYPTION_ALGORITHMS: dict[KeySpec, tuple[EncryptionAlgorithm, ...]] = {
    KeySpec.RSA_2048: (
        EncryptionAlgorithm.RSAES_OAEP_SHA_256,
        EncryptionAlgorithm.RSAES_OAEP_SHA_1,
    ),
    KeySpec.SM2: (EncryptionAlgorithm.SM2PKE,),
}
# Accepted spellings besides the canonical names (the guide's console and other clouds').
_ALGORITHM_ALIASES = {
    "SM2_SM3": "SM2DSA",
    "SM3WITHSM2": "SM2DSA",
    "SM2_PKE": "SM2PKE",
    "SM2_ENCRYPT": "SM2PKE",
    "SM2PKE_SM3": "SM2PKE",
}

DIGEST_LEN = 32  # SHA-256 and SM3 alike


def _normalise(value: str) -> str:
    name = value.strip().upper().replace("-", "_")
    return _ALGORITHM_ALIASES.get(name, name)


def signing_algorithm(spec: KeySpec, value: str | None) -> SigningAlgorithm:
    """The named algorithm if `spec` can sign with it; None picks the first one listed."""
    allowed = SIGNING_ALGORITHMS[spec]
    if value is None or value == "":
        return allowed[0]
    try:
        alg = SigningAlgorithm(_normalise(value))
    except ValueError:
        alg = None
    if alg not in allowed:
        names = ", ".join(a.value for a in allowed)
        raise InvalidParameter(
            f"signing algorithm {value!r} is not valid for {spec.value}; use {names}"
        )
    return alg


def encryption_algorithm(spec: KeySpec, value: str | None) -> EncryptionAlgorithm:
    allowed = ENCRYPTION_ALGORITHMS[spec]
    if value is None or value == "":
        return allowed[0]
    try:
        alg = EncryptionAlgorithm(_normalise(value))
    except ValueError:
        alg = None
    if alg not in allowed:
        names = ", ".join(a.value for a in allowed)
        raise InvalidParameter(
            f"encryption algorithm {value!r} is not valid for {spec.value}; use {names}"
        )
    return alg


def parse_message_type(value: str | None) -> MessageType:
    try:
        return MessageType((value or "RAW").strip().upper())
    except ValueError:
        raise InvalidParameter(f"message type {value!r} must be RAW or DIGEST") from None


def check_usage(spec: KeySpec, usage: KeyUsage, wanted: KeyUsage) -> None:
    if spec.symmetric:
        raise InvalidKeyUsage(f"{spec.value} keys are symmetric; use encrypt/decrypt")
    if usage is not wanted:
        raise InvalidKeyUsage(f"the key's usage is {usage.value}, not {wanted.value}")


def _oaep(alg: EncryptionAlgorithm) -> padding.OAEP:
    h: hashes.HashAlgorithm = (
        hashes.SHA256() if alg is EncryptionAlgorithm.RSAES_OAEP_SHA_256 else hashes.SHA1()
    )
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


def oaep_hash(alg: EncryptionAlgorithm) -> hashes.HashAlgorithm:
    return hashes.SHA256() if alg is EncryptionAlgorithm.RSAES_OAEP_SHA_256 else hashes.SHA1()


def max_plaintext(spec: KeySpec, alg: EncryptionAlgorithm) -> int:
    if spec is KeySpec.SM2:
        return MAX_SM2_PLAINTEXT
    return RSA_BYTES - 2 * oaep_hash(alg).digest_size - 2  # 190 for SHA-256, 214 for SHA-1


def pss_sign_padding() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LEN)


def pkcs1_digest_info(digest: bytes) -> bytes:
    """DER DigestInfo for SHA-256 (RFC 8017 section 9.2 note 1), for raw PKCS#1 v1.5 signing."""
    return bytes.fromhex("3031300d060960864801650304020105000420") + digest


# ----------------------------------------------------------------- public keys


@dataclass(frozen=True)
class PublicKey:
    """A parsed RSA-2048 or SM2 public key, with what it can do without the private key."""

    spec: KeySpec
    der: bytes
    _rsa: rsa.RSAPublicKey | None = field(default=None, repr=False)
    _point: bytes | None = field(default=None, repr=False)
    _z: bytes | None = field(default=None, repr=False)
    _engine: Callable[[], Sm2Engine] = field(default=default_engine, repr=False)
    _sm2: list[Sm2PublicKey] = field(default_factory=list, repr=False, compare=False)

    @property
    def pem(self) -> str:
        if self._rsa is not None:
            return self._rsa.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
        return sm2.pem(self.der)

    @property
    def sm2_point(self) -> bytes:
        assert self._point is not None, "not an SM2 key"
        return self._point

    @property
    def rsa_key(self) -> rsa.RSAPublicKey:
        assert self._rsa is not None, "not an RSA key"
        return self._rsa

    def _sm2_key(self) -> Sm2PublicKey:
        # Loaded once per PublicKey (they are cached per key version by the service).
        if not self._sm2:
            self._sm2.append(self._engine().load_public(self.sm2_point))
        return self._sm2[0]

    def digest(self, alg: SigningAlgorithm, message: bytes, kind: MessageType) -> bytes:
        """What gets signed: the digest of a RAW message, or a DIGEST checked for length."""
        if kind is MessageType.DIGEST:
            if not isinstance(message, bytes) or len(message) != DIGEST_LEN:
                raise InvalidParameter(f"a {alg.value} digest is {DIGEST_LEN} bytes")
            return message
        if not isinstance(message, bytes) or not 1 <= len(message) <= MAX_SIGN_MESSAGE:
            raise InvalidParameter(f"a message to sign is 1-{MAX_SIGN_MESSAGE} bytes")
        if alg is SigningAlgorithm.SM2DSA:
            assert self._z is not None
            return sm2.message_digest(self._z, message)
        h = hashes.Hash(hashes.SHA256())
        h.update(message)
        return h.finalize()

    def verify(self, alg: SigningAlgorithm, digest: bytes, signature: bytes) -> bool:
        """True only for a valid signature; any malformed input is simply False."""
        if not isinstance(signature, bytes):
            return False
        if alg is SigningAlgorithm.SM2DSA:
            return self._sm2_key().verify_digest(digest, signature)
        pad: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            if alg is SigningAlgorithm.RSASSA_PSS_SHA_256
            else padding.PKCS1v15()
        )
        try:
            self.rsa_key.verify(signature, digest, pad, Prehashed(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def encrypt(self, alg: EncryptionAlgorithm, plaintext: bytes) -> bytes:
        limit = max_plaintext(self.spec, alg)
        if not isinstance(plaintext, bytes) or not 1 <= len(plaintext) <= limit:
            raise InvalidParameter(f"{alg.value} encrypts 1-{limit} bytes")
        if alg is EncryptionAlgorithm.SM2PKE:
            return self._sm2_key().encrypt(plaintext)
        return self.rsa_key.encrypt(plaintext, _oaep(alg))


def load_public_key(
    data: bytes | str, engine: Callable[[], Sm2Engine] = default_engine
) -> PublicKey:
    """An RSA-2048 or SM2 public key (SubjectPublicKeyInfo, PEM or DER), or InvalidParameter."""
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, bytes) or not data:
        raise InvalidParameter("a public key (PEM or DER SubjectPublicKeyInfo) is required")
    der_bytes = data
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
            der_bytes = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except (ValueError, UnsupportedAlgorithm):
            der_bytes = _pem_body(data)
    if sm2.is_sm2_public_key_der(der_bytes):
        try:
            point = sm2.parse_public_key_der(der_bytes)
        except sm2.Sm2FormatError as e:
            raise InvalidParameter(str(e)) from None
        return PublicKey(
            KeySpec.SM2, der_bytes, _point=point, _z=sm2.z_value(point), _engine=engine
        )
    try:
        key = serialization.load_der_public_key(der_bytes)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidParameter("not an RSA-2048 or SM2 public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RSA_BITS:
        raise InvalidParameter("only RSA-2048 and SM2 public keys are accepted")
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(KeySpec.RSA_2048, canonical, _rsa=key)


def _pem_body(data: bytes) -> bytes:
    """DER inside a PUBLIC KEY PEM that `cryptography` cannot load (an SM2 key)."""
    lines = data.decode("ascii", "replace").strip().splitlines()
    if (
        len(lines) < 3
        or lines[0].strip() != "-----BEGIN PUBLIC KEY-----"
        or lines[-1].strip() != "-----END PUBLIC KEY-----"
    ):
        raise InvalidParameter("not a PUBLIC KEY PEM")
    try:
        return base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter("the PEM body is not valid base64") from None


# -------------------------------------------------------- private-key operations


class PrivateKeyOps(Protocol):
    """A version's private key, usable but never readable. Key stores implement this."""

    def sign(self, alg: SigningAlgorithm, digest: bytes) -> bytes: ...

    def decrypt(self, alg: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        """The plaintext, or InvalidCiphertext for anything that does not decrypt."""
        ...


class RsaSoftwarePrivate:
    """RSA with the private key in memory (`cryptography`), for the software protection level."""

    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def sign(self, alg: SigningAlgorithm, digest: bytes) -> bytes:
        pad = (
            pss_sign_padding() if alg is SigningAlgorithm.RSASSA_PSS_SHA_256 else padding.PKCS1v15()
        )
        return self._key.sign(digest, pad, Prehashed(hashes.SHA256()))

    def decrypt(self, alg: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        if len(ciphertext) != RSA_BYTES:
            raise InvalidCiphertext()
        try:
            return self._key.decrypt(ciphertext, _oaep(alg))
        except ValueError:
            raise InvalidCiphertext() from None

    def __repr__(self) -> str:
        return "RsaSoftwarePrivate(<key hidden>)"


class Sm2Private:
    """SM2 through an engine, with the private key unwrapped in memory for the operation."""

    __slots__ = ("_key",)

    def __init__(self, key: Sm2PrivateKey) -> None:
        self._key = key

    def sign(self, alg: SigningAlgorithm, digest: bytes) -> bytes:
        return self._key.sign_digest(digest)

    def decrypt(self, alg: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        return self._key.decrypt(ciphertext)

    def __repr__(self) -> str:
        return "Sm2Private(<key hidden>)"
