"""The AWS-compatible dialect: `X-Amz-Target: TrentService.<Operation>`, AWS JSON shapes.

So `boto3.client("kms", endpoint_url=...)`, the aws CLI and the AWS Encryption SDK work against
our KMS. Key ids come back as ARNs where AWS returns ARNs; aliases carry the `alias/` prefix.
Errors are `{"__type": "<AWS exception>", "message": ...}`.

Where AWS has no field for one of ours: the protection level is chosen with `Origin:
AWS_CLOUDHSM` (a key whose material lives in an HSM, as in AWS) or, outside boto3's model, a
`ProtectionLevel` field; the key spec `SM4` is accepted beside AWS's `SYMMETRIC_DEFAULT`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kms_core.asym_crypto import ENCRYPTION_ALGORITHMS, SIGNING_ALGORITHMS
from kms_core.embedded import Kms
from kms_core.errors import InvalidParameter, KmsError, SignatureInvalid, UnsupportedOperation
from kms_core.http.params import Params
from kms_core.specs import KeySpec
from kms_core.types import AliasInfo, Caller, KeyMetadata

Handler = Callable[[Kms, Caller, Params], dict[str, Any]]

_SPEC_IN = {"SYMMETRIC_DEFAULT": "AES_256", "AES_256": "AES_256", "SM4": "SM4",
            "RSA_2048": "RSA_2048", "SM2": "SM2"}
_SPEC_OUT = {"AES_256": "SYMMETRIC_DEFAULT", "SM4": "SM4", "RSA_2048": "RSA_2048", "SM2": "SM2"}
_DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}


def arn(region: str, account_id: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account_id}:key/{key_id}"


def _ts(ts: datetime | None) -> float | None:
    return ts.timestamp() if ts else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_metadata(m: KeyMetadata) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AWSAccountId": m.account_id,
        "KeyId": m.key_id,
        "Arn": arn(m.region, m.account_id, m.key_id),
        "CreationDate": _ts(m.created_at),
        "Enabled": m.state == "Enabled",
        "Description": m.description,
        "KeyUsage": m.usage,
        "KeyState": m.state,
        "Origin": {"KMS": "AWS_KMS", "EXTERNAL": "EXTERNAL"}.get(m.origin, m.origin),
        "KeyManager": "AWS" if m.default_product else "CUSTOMER",
        "CustomerMasterKeySpec": _SPEC_OUT.get(m.spec, m.spec),
        "KeySpec": _SPEC_OUT.get(m.spec, m.spec),
        "MultiRegion": False,
        "ProtectionLevel": m.protection,
    }
    if m.spec in ("AES_256", "SM4"):
        out["EncryptionAlgorithms"] = ["SYMMETRIC_DEFAULT"]
    else:
        spec = KeySpec(m.spec)
        if m.usage == "SIGN_VERIFY":
            out["SigningAlgorithms"] = [a.value for a in SIGNING_ALGORITHMS[spec]]
        else:
            out["EncryptionAlgorithms"] = [a.value for a in ENCRYPTION_ALGORITHMS[spec]]
    if m.deletion_date:
        out["DeletionDate"] = _ts(m.deletion_date)
    return out


def _alias(a: AliasInfo, c: Caller) -> dict[str, Any]:
    return {
        "AliasName": f"alias/{a.name}",
        "AliasArn": f"arn:aws:kms:{c.region}:{c.account_id}:alias/{a.name}",
        "TargetKeyId": a.key_id,
        "CreationDate": _ts(a.created_at),
        "LastUpdatedDate": _ts(a.updated_at),
    }


def _data_key_length(p: Params) -> int:
    n = p.int("NumberOfBytes", required=False)
    spec = p.str("KeySpec", required=False)
    if n is not None and spec is not None:
        raise InvalidParameter("specify either KeySpec or NumberOfBytes, not both")
    if spec is not None:
        if spec not in _DATA_KEY_SPECS:
            raise InvalidParameter("KeySpec must be AES_256 or AES_128")
        return _DATA_KEY_SPECS[spec]
    if n is None:
        raise InvalidParameter("specify either KeySpec or NumberOfBytes")
    return int(n)


def _check_algorithm(p: Params, name: str) -> None:
    alg = p.str(name, required=False)
    if alg not in (None, "SYMMETRIC_DEFAULT"):
        raise InvalidParameter(f"{name} {alg!r} is not supported for symmetric keys")


def _asymmetric_algorithm(p: Params, name: str) -> str | None:
    """The named public-key algorithm, or None for the symmetric default."""
    alg = p.str(name, required=False)
    return None if alg in (None, "SYMMETRIC_DEFAULT") else str(alg)


def _version(k: Kms, c: Caller, p: Params) -> str:
    # AWS calls name no key version; ours may (KeyVersionId), else the newest version is used.
    return str(p.str("KeyVersionId", False) or k.service.latest_version_id(c, p.str("KeyId")))


def create_key(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    spec_name = p.str("KeySpec", False) or p.str("CustomerMasterKeySpec", False) or "SYMMETRIC_DEFAULT"
    spec = _SPEC_IN.get(spec_name)
    if spec is None:
        raise UnsupportedOperation(f"KeySpec {spec_name} is not supported here")
    origin = p.str("Origin", False, "AWS_KMS")
    protection = p.str("ProtectionLevel", False)
    if origin == "AWS_CLOUDHSM":
        origin, protection = "KMS", "HSM"
    elif origin == "AWS_KMS":
        origin = "KMS"
    elif origin != "EXTERNAL":
        raise UnsupportedOperation(f"Origin {origin} is not supported here")
    if p.bool("MultiRegion"):
        raise UnsupportedOperation("multi-Region keys are not supported")
    if p.str("Policy", False) is not None or p.str("CustomKeyStoreId", False) is not None:
        raise UnsupportedOperation("key policies and custom key stores are not supported")
    meta = k.service.create_key(
        c, spec=spec, usage=p.str("KeyUsage", False, "ENCRYPT_DECRYPT"), protection=protection,
        origin=origin, description=p.str("Description", False, ""),
    )
    return {"KeyMetadata": key_metadata(meta)}


def list_keys(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    page = k.service.list_keys(c, limit=p.int("Limit", False, 100), marker=p.str("Marker", False))
    out: dict[str, Any] = {
        "Keys": [{"KeyId": m.key_id, "KeyArn": arn(m.region, m.account_id, m.key_id)} for m in page.items],
        "Truncated": page.truncated,
    }
    if page.next_marker:
        out["NextMarker"] = page.next_marker
    return out


def list_aliases(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    key = p.str("KeyId", False)
    if key:
        items, marker = k.service.list_aliases_by_key(c, key), None
    else:
        page = k.service.list_aliases(c, limit=p.int("Limit", False, 100), marker=p.str("Marker", False))
        items, marker = page.items, page.next_marker
    out: dict[str, Any] = {"Aliases": [_alias(a, c) for a in items], "Truncated": marker is not None}
    if marker:
        out["NextMarker"] = marker
    return out


def schedule_deletion(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    days = p.int("PendingWindowInDays", False, 30)
    m = k.service.schedule_key_deletion(c, p.str("KeyId"), days)
    return {"KeyId": arn(m.region, m.account_id, m.key_id), "DeletionDate": _ts(m.deletion_date),
            "KeyState": m.state, "PendingWindowInDays": days}


def _key_arn(c: Caller, key_id: str) -> str:
    return arn(c.region, c.account_id, key_id)


def encrypt(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    alg = _asymmetric_algorithm(p, "EncryptionAlgorithm")
    if alg is not None:
        a = k.service.asymmetric_encrypt(c, p.str("KeyId"), _version(k, c, p), p.blob("Plaintext"),
                                         algorithm=alg)
        return {"CiphertextBlob": _b64(a.ciphertext), "KeyId": _key_arn(c, a.key_id),
                "EncryptionAlgorithm": a.algorithm}
    r = k.service.encrypt(c, p.str("KeyId"), p.blob("Plaintext"), p.context("EncryptionContext"))
    return {"CiphertextBlob": _b64(r.ciphertext_blob), "KeyId": _key_arn(c, r.key_id),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def decrypt(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    alg = _asymmetric_algorithm(p, "EncryptionAlgorithm")
    if alg is not None:
        a = k.service.asymmetric_decrypt(c, p.str("KeyId"), _version(k, c, p),
                                         p.blob("CiphertextBlob"), algorithm=alg)
        return {"Plaintext": _b64(a.plaintext), "KeyId": _key_arn(c, a.key_id),
                "EncryptionAlgorithm": a.algorithm}
    r = k.service.decrypt(c, p.blob("CiphertextBlob"), p.context("EncryptionContext"),
                          key=p.str("KeyId", False))
    return {"Plaintext": _b64(r.plaintext), "KeyId": _key_arn(c, r.key_id),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def sign(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.asymmetric_sign(c, p.str("KeyId"), _version(k, c, p), p.blob("Message"),
                                  algorithm=p.str("SigningAlgorithm"),
                                  message_type=p.str("MessageType", False, "RAW"))
    return {"KeyId": _key_arn(c, r.key_id), "Signature": _b64(r.signature),
            "SigningAlgorithm": r.algorithm}


def verify(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.asymmetric_verify(c, p.str("KeyId"), _version(k, c, p), p.blob("Message"),
                                    p.blob("Signature"), algorithm=p.str("SigningAlgorithm"),
                                    message_type=p.str("MessageType", False, "RAW"))
    if not r.valid:
        raise SignatureInvalid("the signature is not valid for this message and key")
    return {"KeyId": _key_arn(c, r.key_id), "SignatureValid": True, "SigningAlgorithm": r.algorithm}


def get_public_key(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.get_public_key(c, p.str("KeyId"), _version(k, c, p))
    out: dict[str, Any] = {
        "KeyId": _key_arn(c, r.key_id), "PublicKey": _b64(r.public_key_der),
        "CustomerMasterKeySpec": r.spec, "KeySpec": r.spec, "KeyUsage": r.usage,
    }
    if r.signing_algorithms:
        out["SigningAlgorithms"] = list(r.signing_algorithms)
    if r.encryption_algorithms:
        out["EncryptionAlgorithms"] = list(r.encryption_algorithms)
    return out


def get_parameters_for_import(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.get_parameters_for_import(c, p.str("KeyId"), p.str("WrappingAlgorithm"),
                                            p.str("WrappingKeySpec"))
    return {"KeyId": _key_arn(c, r.key_id), "ImportToken": _b64(r.import_token),
            "PublicKey": _b64(r.public_key), "ParametersValidTo": _ts(r.valid_to)}


def import_key_material(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    model = p.str("ExpirationModel", False, "KEY_MATERIAL_EXPIRES")
    valid_to = p.raw("ValidTo")  # AWS sends epoch seconds
    if model not in ("KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"):
        raise InvalidParameter("ExpirationModel must be KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE")
    expires = None
    if model == "KEY_MATERIAL_EXPIRES":
        if not isinstance(valid_to, int | float) or isinstance(valid_to, bool):
            raise InvalidParameter("ValidTo (epoch seconds) is required when the key material expires")
        expires = datetime.fromtimestamp(valid_to, UTC)
    elif valid_to is not None:
        raise InvalidParameter("ValidTo is not allowed with KEY_MATERIAL_DOES_NOT_EXPIRE")
    k.service.import_key_material(c, p.str("KeyId"), p.blob("EncryptedKeyMaterial"),
                                  p.blob("ImportToken"), expires_at=expires)
    return {}


def rotation_status(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.get_key_rotation_status(c, p.str("KeyId"))
    out: dict[str, Any] = {"KeyId": _key_arn(c, r.key_id), "KeyRotationEnabled": r.enabled}
    if r.period_days:
        out["RotationPeriodInDays"] = r.period_days
    if r.next_rotation_at:
        out["NextRotationDate"] = _ts(r.next_rotation_at)
    return out


def list_key_rotations(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    page = k.service.list_key_rotations(c, p.str("KeyId"), limit=p.int("Limit", False, 100),
                                        marker=p.str("Marker", False))
    out: dict[str, Any] = {
        "Rotations": [{"KeyId": r.key_id, "RotationDate": _ts(r.rotated_at),
                       "RotationType": r.rotation_type} for r in page.items],
        "Truncated": page.truncated,
    }
    if page.next_marker:
        out["NextMarker"] = page.next_marker
    return out


def generate_data_key(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.generate_data_key(c, p.str("KeyId"), _data_key_length(p), p.context("EncryptionContext"))
    assert r.plaintext is not None
    return {"CiphertextBlob": _b64(r.ciphertext_blob), "Plaintext": _b64(r.plaintext),
            "KeyId": _key_arn(c, r.key_id)}


def generate_data_key_without_plaintext(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    r = k.service.generate_data_key_without_plaintext(
        c, p.str("KeyId"), _data_key_length(p), p.context("EncryptionContext"))
    return {"CiphertextBlob": _b64(r.ciphertext_blob), "KeyId": _key_arn(c, r.key_id)}


def re_encrypt(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    _check_algorithm(p, "SourceEncryptionAlgorithm")
    _check_algorithm(p, "DestinationEncryptionAlgorithm")
    r = k.service.re_encrypt(
        c, p.blob("CiphertextBlob"), p.str("DestinationKeyId"),
        source_context=p.context("SourceEncryptionContext"),
        destination_context=p.context("DestinationEncryptionContext"),
        source_key=p.str("SourceKeyId", False),
    )
    return {"CiphertextBlob": _b64(r.ciphertext_blob), "SourceKeyId": _key_arn(c, r.source_key_id),
            "KeyId": _key_arn(c, r.key_id), "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def _empty(fn: Callable[[Kms, Caller, Params], object]) -> Handler:
    def run(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
        fn(k, c, p)
        return {}

    return run


OPERATIONS: dict[str, Handler] = {
    "CreateKey": create_key,
    "DescribeKey": lambda k, c, p: {"KeyMetadata": key_metadata(k.service.describe_key(c, p.str("KeyId")))},
    "ListKeys": list_keys,
    "UpdateKeyDescription": _empty(lambda k, c, p: k.service.update_key_description(
        c, p.str("KeyId"), p.str("Description"))),
    "EnableKey": _empty(lambda k, c, p: k.service.enable_key(c, p.str("KeyId"))),
    "DisableKey": _empty(lambda k, c, p: k.service.disable_key(c, p.str("KeyId"))),
    "ScheduleKeyDeletion": schedule_deletion,
    "CancelKeyDeletion": lambda k, c, p: {"KeyId": _key_arn(
        c, k.service.cancel_key_deletion(c, p.str("KeyId")).key_id)},
    "CreateAlias": _empty(lambda k, c, p: k.service.create_alias(
        c, p.str("AliasName"), p.str("TargetKeyId"))),
    "UpdateAlias": _empty(lambda k, c, p: k.service.update_alias(
        c, p.str("AliasName"), p.str("TargetKeyId"))),
    "DeleteAlias": _empty(lambda k, c, p: k.service.delete_alias(c, p.str("AliasName"))),
    "ListAliases": list_aliases,
    "Encrypt": encrypt,
    "Decrypt": decrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "ReEncrypt": re_encrypt,
    "GenerateRandom": lambda k, c, p: {"Plaintext": _b64(
        k.service.generate_random(p.int("NumberOfBytes", False, 32)))},
    "Sign": sign,
    "Verify": verify,
    "GetPublicKey": get_public_key,
    "GetParametersForImport": get_parameters_for_import,
    "ImportKeyMaterial": import_key_material,
    "DeleteImportedKeyMaterial": _empty(lambda k, c, p: k.service.delete_key_material(c, p.str("KeyId"))),
    "EnableKeyRotation": _empty(lambda k, c, p: k.service.enable_key_rotation(
        c, p.str("KeyId"), p.int("RotationPeriodInDays", False, 365))),
    "DisableKeyRotation": _empty(lambda k, c, p: k.service.disable_key_rotation(c, p.str("KeyId"))),
    "GetKeyRotationStatus": rotation_status,
    "RotateKeyOnDemand": lambda k, c, p: {"KeyId": _key_arn(
        c, k.service.rotate_key_on_demand(c, p.str("KeyId")).key_id)},
    "ListKeyRotations": list_key_rotations,
}


def error_body(error: KmsError) -> dict[str, Any]:
    return {"__type": error.aws_code, "message": error.message}


def error_status(error: KmsError) -> int:
    # AWS KMS answers client errors with 400 (auth failures here with 403), its own with 500.
    if error.http_status >= 500:
        return error.http_status
    return 403 if error.http_status == 403 else 400
