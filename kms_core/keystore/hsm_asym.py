"""Asymmetric keys at the HSM protection level.

RSA_2048: the key pair is generated inside the token (CKM_RSA_PKCS_KEY_PAIR_GEN) as token
objects labelled `ssegw-key-<version>`; the private key is CKA_SENSITIVE, not CKA_EXTRACTABLE
and may only sign (SIGN_VERIFY keys) or only decrypt (ENCRYPT_DECRYPT keys). Signing runs in the
HSM: PSS as CKM_RSA_PKCS_PSS over the SHA-256 digest (MGF1-SHA-256, 32-byte salt), PKCS#1 v1.5
as CKM_RSA_PKCS over the DER DigestInfo. Decryption runs in the HSM:

- RSAES_OAEP_SHA_1: CKM_RSA_PKCS_OAEP with SHA-1/MGF1-SHA-1, natively.
- RSAES_OAEP_SHA_256: SoftHSM2 2.6.1 rejects CKM_RSA_PKCS_OAEP with any hash but SHA-1
  (CKR_ARGUMENTS_BAD; measured), and the private key must not leave the token. So the token
  runs the raw RSA private operation, CKM_RSA_X_509 (m = c^d mod n, inside the token),
  and `kms_core.rsa_oaep.oaep_decode` removes the OAEP-SHA-256 encoding in Python: every check
  runs on every input with no early exit, the label hash is compared in constant time, and all
  failures (PKCS#11 errors on c >= n included) are one opaque InvalidCiphertext, so there is no
  Manger-style oracle. The raw result exists only in this process's memory for the unpadding,
  as it would inside the token. Only ENCRYPT_DECRYPT keys carry CKA_DECRYPT, so a signing key
  can never be driven through raw RSA. An HSM with OAEP-SHA-256 support would use
  CKM_RSA_PKCS_OAEP with SHA-256 instead; the ciphertexts are the same.

Public-key operations (verify, encrypt) use the public key stored in metadata, in software.

SM2: SoftHSM2 has no SM2 mechanisms, so, as the design says for algorithms the token cannot
run, the 32-byte private scalar is sealed by the HSM root key (AES-GCM inside the token) with
the version, spec and public key digest as associated data, and unsealed only in memory to run
OpenSSL's SM2 (`kms_core.sm2_engine`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

from kms_core import sm2
from kms_core.asym_crypto import (
    PSS_SALT_LEN,
    RSA_BITS,
    RSA_BYTES,
    EncryptionAlgorithm,
    PrivateKeyOps,
    SigningAlgorithm,
    Sm2Private,
    pkcs1_digest_info,
)
from kms_core.errors import InvalidCiphertext, InvalidKeyUsage, KmsError
from kms_core.keystore import Sealer, asymmetric_aad
from kms_core.keystore.hsm_token import OBJECT, WRAPPED, Hsm, key_label
from kms_core.rsa_oaep import OaepDecodeError, oaep_decode
from kms_core.sm2_engine import default_engine
from kms_core.specs import KeySpec, KeyUsage

_T = TypeVar("_T")


class HsmRsaPrivate:
    """An RSA private key object in the token, found by label on every use."""

    def __init__(self, hsm: Hsm, label: str, usage: KeyUsage) -> None:
        self._hsm = hsm
        self._label = label
        # The token enforces this too (CKA_SIGN / CKA_DECRYPT); python-pkcs11 then offers no
        # method at all, so say it clearly here.
        self._usage = usage

    def _use(self, op: Callable[[Any], _T], decrypting: bool = False) -> _T:
        # Through Hsm.with_key: a handle gone stale (the key destroyed or re-made by another
        # node) is found again once before the call fails.
        return self._hsm.run(
            lambda: self._hsm.with_key(ObjectClass.PRIVATE_KEY, self._label, op), decrypting)

    def modulus(self) -> int:
        return int.from_bytes(self._use(lambda key: key[Attribute.MODULUS]), "big")

    def sign(self, alg: SigningAlgorithm, digest: bytes) -> bytes:
        if self._usage is not KeyUsage.SIGN_VERIFY:
            raise InvalidKeyUsage("this HSM key may only decrypt")
        if alg is SigningAlgorithm.RSASSA_PSS_SHA_256:
            params = (Mechanism.SHA256, MGF.SHA256, PSS_SALT_LEN)
            out: bytes = self._use(
                lambda key: key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=params)
            )
        else:
            data = pkcs1_digest_info(digest)
            out = self._use(lambda key: key.sign(data, mechanism=Mechanism.RSA_PKCS))
        return out

    def decrypt(self, alg: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        if self._usage is not KeyUsage.ENCRYPT_DECRYPT:
            raise InvalidKeyUsage("this HSM key may only sign")
        if len(ciphertext) != RSA_BYTES:
            raise InvalidCiphertext()
        if alg is EncryptionAlgorithm.RSAES_OAEP_SHA_1:
            params = (Mechanism.SHA_1, MGF.SHA1, None)
            out: bytes = self._use(
                lambda key: key.decrypt(
                    ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params
                ),
                decrypting=True,
            )
            return out
        raw: bytes = self._use(
            lambda key: key.decrypt(ciphertext, mechanism=Mechanism.RSA_X_509), decrypting=True
        )
        try:
            return oaep_decode(raw.rjust(RSA_BYTES, b"\x00"), RSA_BYTES, hashes.SHA256())
        except OaepDecodeError:
            raise InvalidCiphertext() from None

    def __repr__(self) -> str:
        return f"HsmRsaPrivate({self._label!r})"


class HsmAsymmetric:
    """The asymmetric half of HsmKeyStore, which hands it the token and the HSM root sealer."""

    def __init__(self, hsm: Hsm, sealer: Sealer) -> None:
        self.hsm = hsm
        self.sealer = sealer

    def generate_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str
    ) -> tuple[bytes, bytes]:
        if spec is KeySpec.RSA_2048:
            return self._generate_rsa(usage, version_id)
        if spec is KeySpec.SM2:
            d, point = default_engine().generate()
            public_der = sm2.public_key_der(point)
            sealed = self.sealer.seal(
                d.to_bytes(sm2.COORD_LEN, "big"), asymmetric_aad(version_id, spec, public_der)
            )
            return WRAPPED + sealed, public_der
        raise ValueError(f"{spec.value} is not an asymmetric spec")

    def _generate_rsa(self, usage: KeyUsage, version_id: str) -> tuple[bytes, bytes]:
        label = key_label(version_id)
        signing = usage is KeyUsage.SIGN_VERIFY
        public_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.VERIFY: signing,
            Attribute.ENCRYPT: not signing,
            Attribute.WRAP: False,
            Attribute.VERIFY_RECOVER: False,
        }
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: signing,
            Attribute.DECRYPT: not signing,
            Attribute.UNWRAP: False,
            Attribute.SIGN_RECOVER: False,
            Attribute.DERIVE: False,
        }
        pub, _priv = self.hsm.run(
            lambda: self.hsm.session().generate_keypair(
                KeyType.RSA,
                RSA_BITS,
                store=True,
                label=label,
                public_template=public_template,
                private_template=private_template,
            )
        )
        n, e = self.hsm.run(lambda: (pub[Attribute.MODULUS], pub[Attribute.PUBLIC_EXPONENT]))
        public_key = rsa.RSAPublicNumbers(
            int.from_bytes(e, "big"), int.from_bytes(n, "big")
        ).public_key()
        public_der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return OBJECT + label.encode(), public_der

    def open_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str, stored: bytes, public_key: bytes
    ) -> PrivateKeyOps:
        kind, rest = stored[:1], stored[1:]
        if spec is KeySpec.RSA_2048 and kind == OBJECT:
            ops = HsmRsaPrivate(self.hsm, rest.decode(), usage)
            expected = serialization.load_der_public_key(public_key)
            if (
                not isinstance(expected, rsa.RSAPublicKey)
                or ops.modulus() != expected.public_numbers().n
            ):
                raise KmsError(f"the HSM key of version {version_id} does not match its public key")
            return ops
        if spec is KeySpec.SM2 and kind == WRAPPED:
            try:
                d = self.sealer.unseal(rest, asymmetric_aad(version_id, spec, public_key))
            except InvalidCiphertext:
                raise KmsError(
                    f"the wrapped private key of version {version_id} does not open"
                ) from None
            point = sm2.parse_public_key_der(public_key)
            return Sm2Private(default_engine().load_private(int.from_bytes(d, "big"), point))
        raise KmsError("unknown HSM asymmetric key reference")
