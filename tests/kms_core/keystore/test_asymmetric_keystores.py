"""Asymmetric key material in the key stores: RSA in a real SoftHSM2 token, SM2 wrapped by the
HSM root key, RSA sealed by the software root key. Private keys never come out."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from kms_core import sm2
from kms_core.asym_crypto import EncryptionAlgorithm, SigningAlgorithm, load_public_key
from kms_core.errors import InvalidCiphertext, InvalidKeyUsage, KmsError
from kms_core.keystore import asymmetric_aad
from kms_core.keystore.hsm import HsmConfig, HsmKeyStore
from kms_core.keystore.software import RootSealer, SoftwareKeyStore
from kms_core.specs import KeySpec, KeyUsage

SHA256 = bytes(32)


def _token_objects(cfg: HsmConfig, label: str) -> list[Any]:
    token = pkcs11.lib(cfg.module).get_token(token_label=cfg.token_label)
    with token.open(rw=False) as s:  # the process is already logged in through the key store
        return list(s.get_objects({Attribute.LABEL: label}))


def test_hsm_rsa_key_pair_is_generated_in_the_token_and_never_leaves(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    vid = str(uuid.uuid4())
    stored, public_der = store.generate_asymmetric(KeySpec.RSA_2048, KeyUsage.SIGN_VERIFY, vid)
    label = f"ssegw-key-{vid}"
    assert stored == b"\x01" + label.encode()  # a reference to token objects, not material
    objects = _token_objects(hsm_config, label)
    assert sorted(o.object_class.name for o in objects) == ["PRIVATE_KEY", "PUBLIC_KEY"]
    priv = store.hsm.session().get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    assert priv[Attribute.SENSITIVE] is True and priv[Attribute.EXTRACTABLE] is False
    assert priv[Attribute.ALWAYS_SENSITIVE] is True and priv[Attribute.NEVER_EXTRACTABLE] is True
    assert priv[Attribute.SIGN] is True and priv[Attribute.DECRYPT] is False
    for secret in (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1, Attribute.VALUE):
        with pytest.raises((p11e.AttributeSensitive, p11e.AttributeTypeInvalid)):
            priv[secret]
    ops = store.open_asymmetric(KeySpec.RSA_2048, KeyUsage.SIGN_VERIFY, vid, stored, public_der)
    pub = load_public_key(public_der)
    for alg in (SigningAlgorithm.RSASSA_PSS_SHA_256, SigningAlgorithm.RSASSA_PKCS1_V1_5_SHA_256):
        assert pub.verify(alg, SHA256, ops.sign(alg, SHA256))
    # A signing key cannot decrypt, not even through raw RSA (its CKA_DECRYPT is false).
    with pytest.raises(InvalidKeyUsage):
        ops.decrypt(EncryptionAlgorithm.RSAES_OAEP_SHA_256, bytes(255) + b"\x02")
    store.destroy(KeySpec.RSA_2048, vid, stored)
    assert _token_objects(hsm_config, label) == []


def test_hsm_rsa_decryption_key_decrypts_oaep_sha256_and_sha1(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    vid = str(uuid.uuid4())
    stored, public_der = store.generate_asymmetric(KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, vid)
    priv = store.hsm.session().get_key(
        object_class=ObjectClass.PRIVATE_KEY, label=f"ssegw-key-{vid}"
    )
    assert priv[Attribute.DECRYPT] is True and priv[Attribute.SIGN] is False
    ops = store.open_asymmetric(KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, vid, stored, public_der)
    pub = serialization.load_der_public_key(public_der)
    for alg, h in (
        (EncryptionAlgorithm.RSAES_OAEP_SHA_256, hashes.SHA256()),
        (EncryptionAlgorithm.RSAES_OAEP_SHA_1, hashes.SHA1()),
    ):
        for msg in (b"", b"x", os.urandom(256 - 2 * h.digest_size - 2)):
            ct = pub.encrypt(msg, padding.OAEP(padding.MGF1(h), h, None))  # type: ignore[union-attr]
            assert ops.decrypt(alg, ct) == msg
            for bad in (ct[:-1] + bytes([ct[-1] ^ 1]), b"\xff" * 256, ct[:-1], b""):
                with pytest.raises(InvalidCiphertext):
                    ops.decrypt(alg, bad)
        # SHA-1 ciphertexts do not open as SHA-256 and the reverse.
        other = (
            EncryptionAlgorithm.RSAES_OAEP_SHA_1
            if alg is EncryptionAlgorithm.RSAES_OAEP_SHA_256
            else EncryptionAlgorithm.RSAES_OAEP_SHA_256
        )
        with pytest.raises(InvalidCiphertext):
            ops.decrypt(other, pub.encrypt(b"m", padding.OAEP(padding.MGF1(h), h, None)))  # type: ignore[union-attr]
    store.destroy(KeySpec.RSA_2048, vid, stored)


def test_hsm_key_must_match_the_stored_public_key(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    v1, v2 = str(uuid.uuid4()), str(uuid.uuid4())
    s1, p1 = store.generate_asymmetric(KeySpec.RSA_2048, KeyUsage.SIGN_VERIFY, v1)
    _s2, p2 = store.generate_asymmetric(KeySpec.RSA_2048, KeyUsage.SIGN_VERIFY, v2)
    with pytest.raises(KmsError):
        store.open_asymmetric(KeySpec.RSA_2048, KeyUsage.SIGN_VERIFY, v1, s1, p2)


def test_hsm_sm2_private_key_is_wrapped_by_the_hsm_root_key(hsm_config: HsmConfig) -> None:
    store = HsmKeyStore(hsm_config)
    vid = str(uuid.uuid4())
    stored, public_der = store.generate_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, vid)
    assert stored[:1] == b"\x02"
    # Only the HSM root key opens it, with its version, spec and public key bound in.
    d = store.sealer.unseal(stored[1:], asymmetric_aad(vid, KeySpec.SM2, public_der))
    assert len(d) == 32 and d not in stored
    with pytest.raises(InvalidCiphertext):
        store.sealer.unseal(stored[1:], asymmetric_aad(str(uuid.uuid4()), KeySpec.SM2, public_der))
    point = sm2.parse_public_key_der(public_der)
    ops = store.open_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, vid, stored, public_der)
    e = sm2.message_digest(sm2.z_value(point), b"m")
    assert load_public_key(public_der).verify(
        SigningAlgorithm.SM2DSA, e, ops.sign(SigningAlgorithm.SM2DSA, e)
    )
    # Another public key in the metadata row: the wrapped key refuses to open.
    _, other = store.generate_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, str(uuid.uuid4()))
    with pytest.raises(KmsError):
        store.open_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, vid, stored, other)
    # A root key of another HSM configuration cannot open it either.
    elsewhere = HsmKeyStore(
        HsmConfig(
            hsm_config.module,
            hsm_config.token_label,
            hsm_config.pin,
            root_label=f"ssegw-root-{uuid.uuid4()}",
        )
    )
    with pytest.raises(KmsError):
        elsewhere.open_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, vid, stored, public_der)


def test_software_rsa_is_sealed_by_the_root_key() -> None:
    store = SoftwareKeyStore(RootSealer(os.urandom(32)))
    vid = str(uuid.uuid4())
    stored, public_der = store.generate_asymmetric(KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, vid)
    ops = store.open_asymmetric(KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, vid, stored, public_der)
    pub = load_public_key(public_der)
    ct = pub.encrypt(EncryptionAlgorithm.RSAES_OAEP_SHA_256, b"software")
    assert ops.decrypt(EncryptionAlgorithm.RSAES_OAEP_SHA_256, ct) == b"software"
    _, other = store.generate_asymmetric(
        KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, str(uuid.uuid4())
    )
    for args in ((str(uuid.uuid4()), stored, public_der), (vid, stored, other)):
        with pytest.raises(KmsError):
            store.open_asymmetric(KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, *args)
    with pytest.raises(KmsError):
        SoftwareKeyStore(RootSealer(os.urandom(32))).open_asymmetric(
            KeySpec.RSA_2048, KeyUsage.ENCRYPT_DECRYPT, vid, stored, public_der
        )
    with pytest.raises(ValueError):
        store.generate_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, vid)


def test_hsm_calls_from_many_threads(hsm_config: HsmConfig) -> None:
    """SoftHSM2 runs without locks under python-pkcs11 (C_Initialize(NULL)); the key store
    serialises its calls. Without that, this crashed the process (heap corruption)."""
    store = HsmKeyStore(hsm_config)
    aes_v, rsa_v, sm2_v = (str(uuid.uuid4()) for _ in range(3))
    aes = store.open_symmetric(
        KeySpec.AES_256, aes_v, store.generate_symmetric(KeySpec.AES_256, aes_v)
    )
    rsa_stored, rsa_pub = store.generate_asymmetric(KeySpec.RSA_2048, KeyUsage.SIGN_VERIFY, rsa_v)
    sm2_stored, sm2_pub = store.generate_asymmetric(KeySpec.SM2, KeyUsage.SIGN_VERIFY, sm2_v)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(30):
                nonce = n.to_bytes(6, "big") + i.to_bytes(6, "big")
                assert aes.decrypt(nonce, aes.encrypt(nonce, b"x", b""), b"") == b"x"
                if i % 10 == 0:  # opening unwraps (SM2) or looks the key up (RSA) per thread
                    for spec, vid, stored, pub in (
                        (KeySpec.RSA_2048, rsa_v, rsa_stored, rsa_pub),
                        (KeySpec.SM2, sm2_v, sm2_stored, sm2_pub),
                    ):
                        alg = (
                            SigningAlgorithm.SM2DSA
                            if spec is KeySpec.SM2
                            else SigningAlgorithm.RSASSA_PSS_SHA_256
                        )
                        ops = store.open_asymmetric(spec, KeyUsage.SIGN_VERIFY, vid, stored, pub)
                        assert load_public_key(pub).verify(alg, SHA256, ops.sign(alg, SHA256))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store.destroy(KeySpec.RSA_2048, rsa_v, rsa_stored)
