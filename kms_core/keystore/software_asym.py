"""Asymmetric keys at the software protection level: RSA_2048 only (SM2 exists only in the HSM).

The private key is PKCS#8 DER sealed by the software root key, with the version, spec and the
public key's digest as associated data (`asymmetric_aad`); it is unsealed into memory only to
build the `cryptography` key object that signs and decrypts.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kms_core.asym_crypto import RSA_BITS, PrivateKeyOps, RsaSoftwarePrivate
from kms_core.errors import InvalidCiphertext, KmsError
from kms_core.keystore import Sealer, asymmetric_aad
from kms_core.specs import KeySpec, KeyUsage

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class SoftwareAsymmetric:
    """The asymmetric half of SoftwareKeyStore, which hands it the software root sealer."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    def generate_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str
    ) -> tuple[bytes, bytes]:
        if spec is not KeySpec.RSA_2048:
            raise ValueError(f"{spec.value} keys are not kept at the software level")
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        public_der = key.public_key().public_bytes(*_SPKI)
        pkcs8 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._sealer.seal(pkcs8, asymmetric_aad(version_id, spec, public_der)), public_der

    def open_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str, stored: bytes, public_key: bytes
    ) -> PrivateKeyOps:
        if spec is not KeySpec.RSA_2048:
            raise ValueError(f"{spec.value} keys are not kept at the software level")
        try:
            pkcs8 = self._sealer.unseal(stored, asymmetric_aad(version_id, spec, public_key))
        except InvalidCiphertext:
            # Not the caller's ciphertext at fault: the stored key or its public key is damaged.
            raise KmsError(
                f"the stored private key of version {version_id} does not open"
            ) from None
        key = serialization.load_der_private_key(pkcs8, password=None)
        if (
            not isinstance(key, rsa.RSAPrivateKey)
            or key.public_key().public_bytes(*_SPKI) != public_key
        ):
            raise KmsError(
                f"the stored private key of version {version_id} does not match its public key"
            )
        return RsaSoftwarePrivate(key)
