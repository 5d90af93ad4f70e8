"""The REST dialect: `POST /v1/kms/<operation>` with the guide's operation and field names.

Replies are in the guide's envelope (`kms_core.envelope`): `{"statusCode": 800, "returnObj":
{"code": 200, "result": {...}, "statusCode": 200, "success": 1}}`, or statusCode 900 with the
error's code and message, sent with the error's HTTP status. Handlers only translate fields; the
service decides. Specs, usages and protection levels are written with the guide's names.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kms_core import billing, envelope, wire
from kms_core.embedded import Kms
from kms_core.errors import AccountFrozen, InvalidParameter, KmsError, UnknownOperation
from kms_core.http.params import Params
from kms_core.regions import POOLS
from kms_core.types import Caller

Handler = Callable[[Kms, Caller, Params], dict[str, Any]]

_DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}


def _data_key_length(p: Params) -> int:
    n = p.int("numberOfBytes", required=False)
    spec = p.str("keySpec", required=False)
    if n is not None and spec is not None:
        raise InvalidParameter("give numberOfBytes or keySpec, not both")
    if spec is not None:
        if spec not in _DATA_KEY_SPECS:
            raise InvalidParameter("keySpec must be AES_256 or AES_128")
        return _DATA_KEY_SPECS[spec]
    return 32 if n is None else int(n)


def _key_or_default(k: Kms, c: Caller, p: Params, field: str) -> str:
    """The named key, or with `product` instead (oss, ecs, sfs) that product's default key."""
    key = p.str(field, required=False)
    product = p.str("product", required=False)
    if key is not None and product is not None:
        raise InvalidParameter(f"give {field} or product, not both")
    if key is not None:
        return str(key)
    if product is None:
        raise InvalidParameter(f"{field} is required")
    return k.service.default_key(c, product).id


def _page(items: list[dict[str, Any]], next_marker: str | None, name: str) -> dict[str, Any]:
    return {name: items, "nextMarker": next_marker, "truncated": next_marker is not None}


def create_key(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    return wire.key_metadata(k.service.create_key(
        c,
        spec=p.str("keySpec", False, "AES_256"),
        usage=p.str("keyUsage", False, "ENCRYPT_DECRYPT"),
        protection=p.str("protectionLevel", False),
        origin=p.str("origin", False, "KMS"),
        description=p.str("description", False, ""),
        alias=p.str("alias", False),
        enterprise_project=p.str("enterpriseProject", False, "default"),
        rotation_period_days=p.int("rotationPeriodInDays", False),
    ))


def list_keys(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    page = k.service.list_keys(c, limit=p.int("limit", False, 100), marker=p.str("marker", False))
    return _page([wire.key_metadata(m) for m in page.items], page.next_marker, "keys")


def list_alias(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    page = k.service.list_aliases(c, limit=p.int("limit", False, 100), marker=p.str("marker", False))
    return _page([wire.alias_info(a) for a in page.items], page.next_marker, "aliases")


def delete_alias(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    alias = p.str("alias")
    k.service.delete_alias(c, alias)
    return {"alias": alias}


def decrypt(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    return wire.decrypt_result(k.service.decrypt(
        c, p.blob("ciphertextBlob"), p.context("encryptionContext"), key=p.str("cmkUuid", False)))


def re_encrypt(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    # With sourceKeyVersionId the source is a public-key ciphertext of that asymmetric version.
    return wire.re_encrypt_result(k.service.re_encrypt(
        c, p.blob("ciphertextBlob"), _key_or_default(k, c, p, "destinationCmkUuid"),
        source_context=p.context("sourceEncryptionContext"),
        destination_context=p.context("destinationEncryptionContext"),
        source_key=p.str("sourceCmkUuid", False),
        source_key_version=p.str("sourceKeyVersionId", False),
        source_algorithm=p.str("sourceEncryptionAlgorithm", False),
    ))


def list_key_versions(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    page = k.service.list_key_versions(c, p.str("cmkUuid"), limit=p.int("limit", False, 100),
                                       marker=p.str("marker", False))
    return _page([wire.key_version_info(v) for v in page.items], page.next_marker, "keyVersions")


def list_key_rotations(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    page = k.service.list_key_rotations(c, p.str("cmkUuid"), limit=p.int("limit", False, 100),
                                        marker=p.str("marker", False))
    return _page([wire.rotation_info(r) for r in page.items], page.next_marker, "rotations")


def _time(p: Params, name: str) -> datetime | None:
    value = p.str(name, False)
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"{name} must be an ISO 8601 time") from None
    if ts.tzinfo is None:
        raise InvalidParameter(f"{name} must carry a time zone (e.g. 2027-01-01T00:00:00Z)")
    return ts


def import_key_material(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    return wire.key_metadata(k.service.import_key_material(
        c, p.str("cmkUuid"), p.blob("encryptedKeyMaterial"), p.blob("importToken"),
        expires_at=_time(p, "keyMaterialValidTo")))


ASYMMETRIC_OPERATIONS: dict[str, Handler] = {
    "createKeyVersion": lambda k, c, p: wire.key_version_info(k.service.create_key_version(c, p.str("cmkUuid"))),
    "listKeyVersions": list_key_versions,
    "describeKeyVersion": lambda k, c, p: wire.key_version_info(
        k.service.describe_key_version(c, p.str("cmkUuid"), p.str("keyVersionId"))),
    "getPublicKey": lambda k, c, p: wire.public_key_result(
        k.service.get_public_key(c, p.str("cmkUuid"), p.str("keyVersionId"))),
    "asymmetricSign": lambda k, c, p: wire.sign_result(k.service.asymmetric_sign(
        c, p.str("cmkUuid"), p.str("keyVersionId"), p.blob("message"),
        algorithm=p.str("algorithm", False), message_type=p.str("messageType", False, "RAW"))),
    "asymmetricVerify": lambda k, c, p: wire.verify_result(k.service.asymmetric_verify(
        c, p.str("cmkUuid"), p.str("keyVersionId"), p.blob("message"), p.blob("signature"),
        algorithm=p.str("algorithm", False), message_type=p.str("messageType", False, "RAW"))),
    "asymmetricEncrypt": lambda k, c, p: wire.asymmetric_encrypt_result(k.service.asymmetric_encrypt(
        c, p.str("cmkUuid"), p.str("keyVersionId"), p.blob("plaintext"),
        algorithm=p.str("algorithm", False))),
    "asymmetricDecrypt": lambda k, c, p: wire.asymmetric_decrypt_result(k.service.asymmetric_decrypt(
        c, p.str("cmkUuid"), p.str("keyVersionId"), p.blob("ciphertextBlob"),
        algorithm=p.str("algorithm", False))),
    "exportDataKey": lambda k, c, p: wire.export_data_key_result(k.service.export_data_key(
        c, p.blob("ciphertextBlob"), p.str("publicKey"), algorithm=p.str("algorithm", False),
        context=p.context("encryptionContext"))),
    "generateAndExportDataKey": lambda k, c, p: wire.export_data_key_result(
        k.service.generate_and_export_data_key(
            c, p.str("cmkUuid"), p.str("publicKey"), algorithm=p.str("algorithm", False),
            length=_data_key_length(p), context=p.context("encryptionContext"))),
}

LIFECYCLE_OPERATIONS: dict[str, Handler] = {
    "enableKeyRotation": lambda k, c, p: wire.rotation_status(k.service.enable_key_rotation(
        c, p.str("cmkUuid"), p.int("rotationPeriodInDays", False, 365))),
    "disableKeyRotation": lambda k, c, p: wire.rotation_status(
        k.service.disable_key_rotation(c, p.str("cmkUuid"))),
    "getKeyRotationStatus": lambda k, c, p: wire.rotation_status(
        k.service.get_key_rotation_status(c, p.str("cmkUuid"))),
    "rotateKeyOnDemand": lambda k, c, p: wire.rotation_info(
        k.service.rotate_key_on_demand(c, p.str("cmkUuid"))),
    "listKeyRotations": list_key_rotations,
    "getParametersForImport": lambda k, c, p: wire.import_parameters(k.service.get_parameters_for_import(
        c, p.str("cmkUuid"), p.str("wrappingAlgorithm", False, "RSAES_OAEP_SHA_256"),
        p.str("wrappingKeySpec", False, "RSA_2048"))),
    "importKeyMaterial": import_key_material,
    "deleteImportedKeyMaterial": lambda k, c, p: wire.key_metadata(
        k.service.delete_key_material(c, p.str("cmkUuid"))),
}


def _unfrozen(k: Kms, c: Caller) -> Caller:
    if k.accounts.is_frozen(c.account_id):
        raise AccountFrozen(f"account {c.account_id} is frozen")
    return c


def _bucket(k: Kms, c: Caller, p: Params) -> str:
    _unfrozen(k, c)
    return str(p.str("bucket"))


# S3 bucket ownership (kms_core.buckets), for gateway nodes; a tenant learns only mine/other/none.
BUCKET_OPERATIONS: dict[str, Handler] = {
    "claimBucket": lambda k, c, p: {"claim": k.buckets.claim(c.account_id, _bucket(k, c, p)).value},
    "bucketAccess": lambda k, c, p: {"access": k.buckets.access(c.account_id, _bucket(k, c, p)).value},
    "releaseBucket": lambda k, c, p: {"released": k.buckets.release(
        c.account_id, _bucket(k, c, p), hold=p.bool("hold", True))},
    "listBucketClaims": lambda k, c, p: {"buckets": k.buckets.owned(_unfrozen(k, c).account_id)},
}


def get_usage(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    """The caller's month: cryptographic calls, key-days per pool, and the bill (FAQ 5.1)."""
    return billing.usage_report(k, c.account_id, p.str("month", False))


def list_audit_events(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    key = p.str("cmkUuid", False)
    key_id = k.service.resolve_key_id(c, key) if key else None
    limit = p.int("limit", False, 100)
    if not 1 <= limit <= 1000:
        raise InvalidParameter("limit must be 1-1000")
    marker = p.str("marker", False)
    try:
        after = int(marker) if marker else 0
    except ValueError:
        raise InvalidParameter("marker is not one this API returned") from None
    events = k.audit.query(c.account_id, key_id=key_id, after_id=after, limit=limit)
    return {
        "events": [wire.audit_event(e) for e in events],
        "nextMarker": str(events[-1].id) if len(events) == limit else None,
    }


def list_regions(k: Kms, c: Caller, p: Params) -> dict[str, Any]:
    """The guide's resource pools (section 1.9), for the console's drop-down: every pool of the
    catalog with whether this deployment serves it; requests signed for others are refused."""
    served = k.config.served_regions
    return {
        "regions": [{"regionId": pool.id, "name": pool.name_zh, "nameEn": pool.name_en,
                     "served": pool.id in served} for pool in POOLS],
        "servedRegions": list(served),
        "defaultRegion": served[0],
        "currentRegion": c.region,
    }


OPERATIONS: dict[str, Handler] = {
    "createKey": create_key,
    "describeKey": lambda k, c, p: wire.key_metadata(k.service.describe_key(c, p.str("cmkUuid"))),
    "listKeys": list_keys,
    "updateKeyDescription": lambda k, c, p: wire.key_metadata(
        k.service.update_key_description(c, p.str("cmkUuid"), p.str("description"))),
    "enableKey": lambda k, c, p: wire.key_metadata(k.service.enable_key(c, p.str("cmkUuid"))),
    "disableKey": lambda k, c, p: wire.key_metadata(k.service.disable_key(c, p.str("cmkUuid"))),
    "scheduleKeyDeletion": lambda k, c, p: wire.key_metadata(k.service.schedule_key_deletion(
        c, p.str("cmkUuid"), p.int("pendingWindowInDays", False, 30))),
    "cancelKeyDeletion": lambda k, c, p: wire.key_metadata(
        k.service.cancel_key_deletion(c, p.str("cmkUuid"))),
    "createAlias": lambda k, c, p: wire.alias_info(
        k.service.create_alias(c, p.str("alias"), p.str("cmkUuid"))),
    "updateAlias": lambda k, c, p: wire.alias_info(
        k.service.update_alias(c, p.str("alias"), p.str("cmkUuid"))),
    "deleteAlias": delete_alias,
    "listAlias": list_alias,
    "listAliasByUuid": lambda k, c, p: {"aliases": [
        wire.alias_info(a) for a in k.service.list_aliases_by_key(c, p.str("cmkUuid"))]},
    "encrypt": lambda k, c, p: wire.encrypt_result(k.service.encrypt(
        c, p.str("cmkUuid"), p.blob("plaintext"), p.context("encryptionContext"))),
    "decrypt": decrypt,
    "generateDataKey": lambda k, c, p: wire.data_key_result(k.service.generate_data_key(
        c, _key_or_default(k, c, p, "cmkUuid"), _data_key_length(p), p.context("encryptionContext"))),
    "generateDataKeyWithoutPlaintext": lambda k, c, p: wire.data_key_result(
        k.service.generate_data_key_without_plaintext(
            c, _key_or_default(k, c, p, "cmkUuid"), _data_key_length(p),
            p.context("encryptionContext"))),
    "reEncrypt": re_encrypt,
    "generateRandom": lambda k, c, p: {"plaintext": wire.b64(
        k.service.generate_random(p.int("numberOfBytes", False, 32)))},
    "getUsage": get_usage,
    "listRegions": list_regions,
    "listAuditEvents": list_audit_events,
    **ASYMMETRIC_OPERATIONS,
    **LIFECYCLE_OPERATIONS,
    **BUCKET_OPERATIONS,
}


def invoke(kms: Kms, caller: Caller, op: str, params: Params) -> tuple[int, dict[str, Any]]:
    """One REST operation for an authenticated caller: (HTTP status, the guide's envelope).

    The frozen-account gate runs first, so a frozen account is refused every operation, those
    that touch no key (generateRandom, getUsage, listAuditEvents) included."""
    try:
        handler = OPERATIONS.get(op)
        if handler is None:
            raise UnknownOperation(f"unknown operation {op!r}")
        kms.observer.admit(caller)
        return 200, envelope.success(handler(kms, caller, params))
    except KmsError as e:
        return e.http_status, envelope.failure(e)
