"""camelCase JSON shapes of KMS results, shared by the REST dialect and the CLI.

Field names follow the guide (`cmkUuid`, `keyVersionId`, `ciphertextBlob`, base64 bytes).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from kms_core.errors import InvalidParameter
from kms_core.types import (
    AliasInfo,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    KeyMetadata,
    ReEncryptResult,
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


def key_metadata(m: KeyMetadata) -> dict[str, Any]:
    return {
        "cmkUuid": m.key_id,
        "accountId": m.account_id,
        "region": m.region,
        "keySpec": m.spec,
        "keyUsage": m.usage,
        "protectionLevel": m.protection,
        "origin": m.origin,
        "keyState": m.state,
        "description": m.description,
        "enterpriseProject": m.enterprise_project,
        "creator": m.creator,
        "creationDate": iso(m.created_at),
        "primaryKeyVersionId": m.primary_version_id,
        "deletionDate": iso(m.deletion_date),
        "defaultKey": m.default_product is not None,
        "aliases": list(m.aliases),
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
