"""camelCase JSON shapes of KMS results, shared by the REST dialect and the CLI.

Field names follow the guide (`cmkUuid`, `keyVersionId`, `ciphertextBlob`, base64 bytes), and so
do the names of specs, usages and protection levels (`Ctyun_SM4`, `Encrypt/Decrypt`, `Hsm`):
the service keeps its enum values, and this module writes the guide's spelling.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from kms_core.audit import AuditRecord
from kms_core.errors import InvalidParameter
from kms_core.specs import KeySpec, KeyUsage, Protection
from kms_core.types import (
    AliasInfo,
    AsymmetricDecryptResult,
    AsymmetricEncryptResult,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    ExportDataKeyResult,
    ImportParameters,
    KeyMetadata,
    KeyVersionInfo,
    PublicKeyResult,
    ReEncryptResult,
    RotationInfo,
    RotationStatus,
    SignResult,
    VerifyResult,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidParameter(f"{field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise InvalidParameter(f"{field} is not valid base64") from None


def iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts else None


def spec_name(value: str) -> str:
    """The guide's name of a key spec (`SM4` -> `Ctyun_SM4`); unknown values pass through."""
    try:
        return KeySpec(value).guide_name
    except ValueError:
        return value


def usage_name(value: str) -> str:
    try:
        return KeyUsage(value).guide_name
    except ValueError:
        return value


def protection_name(value: str) -> str:
    try:
        return Protection(value).guide_name
    except ValueError:
        return value


def key_metadata(m: KeyMetadata) -> dict[str, Any]:
    return {
        "cmkUuid": m.key_id,
        "accountId": m.account_id,
        "region": m.region,
        "keySpec": spec_name(m.spec),
        "keyUsage": usage_name(m.usage),
        "protectionLevel": protection_name(m.protection),
        "origin": m.origin,
        "keyState": m.state,
        "description": m.description,
        "enterpriseProject": m.enterprise_project,
        "creator": m.creator,
        "creationDate": iso(m.created_at),
        "primaryKeyVersionId": m.primary_version_id,
        "deletionDate": iso(m.deletion_date),
        "defaultKey": m.default_product is not None,
        "defaultProduct": m.default_product,
        "aliases": list(m.aliases),
        "rotationPeriodInDays": m.rotation_period_days,
        "nextRotationDate": iso(m.next_rotation_at),
        "keyMaterialValidTo": iso(m.material_expires_at),
    }


def alias_info(a: AliasInfo) -> dict[str, Any]:
    return {
        "alias": a.name,
        "cmkUuid": a.key_id,
        "creationDate": iso(a.created_at),
        "updateDate": iso(a.updated_at),
    }


def encrypt_result(r: EncryptResult) -> dict[str, Any]:
    return {"ciphertextBlob": b64(r.ciphertext_blob), "cmkUuid": r.key_id, "keyVersionId": r.version_id}


def decrypt_result(r: DecryptResult) -> dict[str, Any]:
    return {"plaintext": b64(r.plaintext), "cmkUuid": r.key_id, "keyVersionId": r.version_id}


def data_key_result(r: DataKeyResult) -> dict[str, Any]:
    out = {"ciphertextBlob": b64(r.ciphertext_blob), "cmkUuid": r.key_id, "keyVersionId": r.version_id}
    if r.plaintext is not None:
        out["plaintext"] = b64(r.plaintext)
    return out


def re_encrypt_result(r: ReEncryptResult) -> dict[str, Any]:
    return {
        "ciphertextBlob": b64(r.ciphertext_blob),
        "sourceCmkUuid": r.source_key_id,
        "sourceKeyVersionId": r.source_version_id,
        "cmkUuid": r.key_id,
        "keyVersionId": r.version_id,
    }


def rotation_status(r: RotationStatus) -> dict[str, Any]:
    return {
        "cmkUuid": r.key_id,
        "keyRotationEnabled": r.enabled,
        "rotationPeriodInDays": r.period_days,
        "nextRotationDate": iso(r.next_rotation_at),
    }


def rotation_info(r: RotationInfo) -> dict[str, Any]:
    return {
        "cmkUuid": r.key_id,
        "keyVersionId": r.version_id,
        "rotationDate": iso(r.rotated_at),
        "rotationType": r.rotation_type,
    }


def import_parameters(p: ImportParameters) -> dict[str, Any]:
    # publicKey is base64 of the DER SubjectPublicKeyInfo: the guide's PublicKey_base64.txt.
    return {
        "cmkUuid": p.key_id,
        "publicKey": b64(p.public_key),
        "importToken": b64(p.import_token),
        "parametersValidTo": iso(p.valid_to),
        "wrappingAlgorithm": p.wrapping_algorithm,
        "wrappingKeySpec": p.wrapping_key_spec,
    }


def audit_event(e: AuditRecord) -> dict[str, Any]:
    return {
        "eventId": str(e.id),
        "time": iso(e.at),
        "requestId": e.request_id,
        "accountId": e.account_id,
        "region": e.region,
        "principal": e.principal,
        "operation": e.operation,
        "cmkUuid": e.key_id,
        "keyVersionId": e.version_id,
        "result": e.result,
    }


# ------------------------------------------------------------- asymmetric keys


def key_version_info(v: KeyVersionInfo) -> dict[str, Any]:
    return {
        "cmkUuid": v.key_id,
        "keyVersionId": v.version_id,
        "creationDate": iso(v.created_at),
        "primary": v.primary,
        "keySpec": spec_name(v.spec),
        "keyUsage": usage_name(v.usage),
    }


def public_key_result(r: PublicKeyResult) -> dict[str, Any]:
    return {
        "cmkUuid": r.key_id,
        "keyVersionId": r.version_id,
        "keySpec": spec_name(r.spec),
        "keyUsage": usage_name(r.usage),
        "publicKey": r.public_key_pem,
        "signingAlgorithms": list(r.signing_algorithms),
        "encryptionAlgorithms": list(r.encryption_algorithms),
    }


def sign_result(r: SignResult) -> dict[str, Any]:
    return {"cmkUuid": r.key_id, "keyVersionId": r.version_id, "signature": b64(r.signature),
            "algorithm": r.algorithm}


def verify_result(r: VerifyResult) -> dict[str, Any]:
    return {"cmkUuid": r.key_id, "keyVersionId": r.version_id, "signatureValid": r.valid,
            "algorithm": r.algorithm}


def asymmetric_encrypt_result(r: AsymmetricEncryptResult) -> dict[str, Any]:
    return {"ciphertextBlob": b64(r.ciphertext), "cmkUuid": r.key_id, "keyVersionId": r.version_id,
            "algorithm": r.algorithm}


def asymmetric_decrypt_result(r: AsymmetricDecryptResult) -> dict[str, Any]:
    return {"plaintext": b64(r.plaintext), "cmkUuid": r.key_id, "keyVersionId": r.version_id,
            "algorithm": r.algorithm}


def export_data_key_result(r: ExportDataKeyResult) -> dict[str, Any]:
    out = {"exportedDataKey": b64(r.exported_data_key), "cmkUuid": r.key_id,
           "keyVersionId": r.version_id, "algorithm": r.algorithm}
    if r.ciphertext_blob is not None:
        out["ciphertextBlob"] = b64(r.ciphertext_blob)
    return out
