"""boto3 for the asymmetric, rotation and import operations of the AWS dialect."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.kms_server import KmsServer


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_sign_verify_and_public_key(kms_server: KmsServer) -> None:
    kms: Any = kms_server.boto(kms_server.tenant("signer"))
    for spec, alg, origin in (("RSA_2048", "RSASSA_PSS_SHA_256", "AWS_KMS"),
                              ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256", "AWS_CLOUDHSM"),
                              ("SM2", "SM2DSA", "AWS_CLOUDHSM")):
        meta = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY", Origin=origin)["KeyMetadata"]
        assert alg in meta["SigningAlgorithms"]
        key = meta["KeyId"]
        sig = kms.sign(KeyId=key, Message=b"contract", SigningAlgorithm=alg)["Signature"]
        assert kms.verify(KeyId=key, Message=b"contract", Signature=sig, SigningAlgorithm=alg)["SignatureValid"]
        with pytest.raises(ClientError) as e:
            kms.verify(KeyId=key, Message=b"contract!", Signature=sig, SigningAlgorithm=alg)
        assert code(e) == "KMSInvalidSignatureException"
        pub = kms.get_public_key(KeyId=key)
        assert pub["KeyUsage"] == "SIGN_VERIFY" and alg in pub["SigningAlgorithms"]
        if spec == "RSA_2048":  # (cryptography cannot load SM2 keys; openssl checks those elsewhere)
            public = serialization.load_der_public_key(pub["PublicKey"])
            assert isinstance(public, rsa.RSAPublicKey)
            pad = (padding.PSS(padding.MGF1(hashes.SHA256()), 32) if "PSS" in alg else padding.PKCS1v15())
            public.verify(sig, b"contract", pad, hashes.SHA256())  # raises if invalid
    rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    digest = hashlib.sha256(b"precomputed").digest()
    sig = kms.sign(KeyId=rsa_key, Message=digest, MessageType="DIGEST",
                   SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["Signature"]
    assert kms.verify(KeyId=rsa_key, Message=b"precomputed", Signature=sig,
                      SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["SignatureValid"]
    with pytest.raises(ClientError) as e:
        kms.sign(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], Message=b"x",
                 SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert code(e) in ("InvalidKeyUsageException", "KMSInvalidStateException", "ValidationException")


def test_public_key_encryption(kms_server: KmsServer) -> None:
    kms: Any = kms_server.boto(kms_server.tenant("encryptor"))
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    assert isinstance(public, rsa.RSAPublicKey)
    ct = public.encrypt(b"for the kms", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    out = kms.decrypt(KeyId=key, CiphertextBlob=ct, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert out["Plaintext"] == b"for the kms"
    ct2 = kms.encrypt(KeyId=key, Plaintext=b"round", EncryptionAlgorithm="RSAES_OAEP_SHA_1")["CiphertextBlob"]
    assert kms.decrypt(KeyId=key, CiphertextBlob=ct2, EncryptionAlgorithm="RSAES_OAEP_SHA_1")["Plaintext"] == b"round"
    with pytest.raises(ClientError) as e:
        kms.decrypt(KeyId=key, CiphertextBlob=ct[:-1] + bytes([ct[-1] ^ 1]), EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert code(e) == "InvalidCiphertextException"


def test_rotation_operations(kms_server: KmsServer) -> None:
    kms: Any = kms_server.boto(kms_server.tenant("rotator"))
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 90 and status["NextRotationDate"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"before rotation")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key)
    rotations = kms.list_key_rotations(KeyId=key)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before rotation"
    kms.disable_key_rotation(KeyId=key)
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    with pytest.raises(ClientError) as e:
        kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=800)  # the guide allows 7-730
    assert code(e) == "ValidationException"


def test_import_key_material(kms_server: KmsServer) -> None:
    kms: Any = kms_server.boto(kms_server.tenant("byok"))
    meta = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    key = meta["KeyId"]
    assert meta["KeyState"] == "PendingImport" and meta["Origin"] == "EXTERNAL"
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    wrapping = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(wrapping, rsa.RSAPublicKey)
    material = bytes(range(32))
    encrypted = wrapping.encrypt(material, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
    with pytest.raises(ClientError) as e:
        kms.import_key_material(KeyId=key, ImportToken=b"wrong" * 10, EncryptedKeyMaterial=encrypted,
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"], EncryptedKeyMaterial=encrypted,
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    blob = kms.encrypt(KeyId=key, Plaintext=b"mine")["CiphertextBlob"]
    kms.delete_imported_key_material(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=blob)
    assert code(e) == "KMSInvalidStateException"
