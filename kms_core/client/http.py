"""The KMS client over HTTP: a drop-in for `kms_core.client.inprocess.InProcessKmsClient`.

Same methods, same errors: a reply's errorCode becomes the same `KmsError` subclass the service
raised; an unreachable KMS is `KeyUnavailable`. Requests use the REST dialect, are signed with
SigV4 by botocore's signer, and reuse connections from a urllib3 pool with bounded timeouts.
Loads neither the service nor the database stack.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms_core import envelope
from kms_core.client import DataKey, ResealedKey
from kms_core.errors import KeyUnavailable
from kms_core.specs import KeyUsage, Protection, parse_enum, parse_spec
from kms_core.types import KeyMetadata, default_key_product


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def parse_key_metadata(d: Mapping[str, Any]) -> KeyMetadata:
    created = _ts(d["creationDate"])
    assert created is not None
    return KeyMetadata(
        # The wire carries the guide's names (Ctyun_SM4, Encrypt/Decrypt, Hsm); products compare
        # the enum values (SM4, ENCRYPT_DECRYPT, HSM), as the in-process client returns them.
        key_id=d["cmkUuid"], account_id=d["accountId"], region=d["region"],
        spec=parse_spec(d["keySpec"]).value,
        usage=parse_enum(KeyUsage, d["keyUsage"], "key usage").value,
        protection=parse_enum(Protection, d["protectionLevel"], "protection level").value,
        origin=d["origin"],
        state=d["keyState"], description=d["description"], enterprise_project=d["enterpriseProject"],
        creator=d["creator"], created_at=created, primary_version_id=d.get("primaryKeyVersionId"),
        deletion_date=_ts(d.get("deletionDate")), default_product=d.get("defaultProduct"),
        aliases=tuple(d.get("aliases", ())),
        rotation_period_days=d.get("rotationPeriodInDays"),
        next_rotation_at=_ts(d.get("nextRotationDate")),
        material_expires_at=_ts(d.get("keyMaterialValidTo")),
    )


class HttpKmsClient:
    def __init__(
        self,
        url: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        *,
        timeout: float = 10.0,
        pool_size: int = 8,
        ca_certs: str | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._region = region
        self._credentials = Credentials(access_key_id, secret_access_key)
        self._pool = urllib3.PoolManager(
            maxsize=pool_size, timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False, ca_certs=ca_certs,
            cert_reqs="CERT_REQUIRED" if url.startswith("https") else None,
        )

    def call(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One REST call; returns `returnObj.result` or raises the KMS error the reply names."""
        url = f"{self._url}/v1/kms/{operation}"
        data = json.dumps(body).encode()
        request = AWSRequest(method="POST", url=url, data=data,
                             headers={"Content-Type": "application/json"})
        SigV4Auth(self._credentials, "kms", self._region).add_auth(request)
        try:
            resp = self._pool.request("POST", url, body=data, headers=dict(request.headers.items()))
        except urllib3.exceptions.HTTPError as e:
            raise KeyUnavailable(f"the KMS at {self._url} is unreachable: {type(e).__name__}") from None
        try:
            reply = json.loads(resp.data)
        except ValueError:
            raise KeyUnavailable(f"the KMS answered HTTP {resp.status} without a KMS reply") from None
        if not isinstance(reply, dict):
            raise KeyUnavailable(f"the KMS answered HTTP {resp.status} without a KMS reply")
        return envelope.unwrap(reply)

    @staticmethod
    def _ctx(context: Mapping[str, str] | None) -> dict[str, Any]:
        return {"encryptionContext": dict(context)} if context else {}

    def generate_data_key(
        self,
        product: str,
        key: str | None = None,
        context: Mapping[str, str] | None = None,
        length: int = 32,
    ) -> DataKey:
        named = default_key_product(key)
        target = {"cmkUuid": key} if key and named is None else {"product": named or product}
        r = self.call("generateDataKey", {**target, "numberOfBytes": length, **self._ctx(context)})
        return DataKey(base64.b64decode(r["plaintext"]), base64.b64decode(r["ciphertextBlob"]),
                       r["cmkUuid"], r["keyVersionId"])

    def decrypt_data_key(self, sealed: bytes, context: Mapping[str, str] | None = None) -> DataKey:
        r = self.call("decrypt", {"ciphertextBlob": base64.b64encode(sealed).decode(),
                                  **self._ctx(context)})
        return DataKey(base64.b64decode(r["plaintext"]), sealed, r["cmkUuid"], r["keyVersionId"])

    def reseal_data_key(
        self,
        sealed: bytes,
        product: str,
        key: str | None = None,
        source_context: Mapping[str, str] | None = None,
        context: Mapping[str, str] | None = None,
    ) -> ResealedKey:
        body: dict[str, Any] = {"ciphertextBlob": base64.b64encode(sealed).decode()}
        named = default_key_product(key)
        body.update({"destinationCmkUuid": key} if key and named is None else {"product": named or product})
        if source_context:
            body["sourceEncryptionContext"] = dict(source_context)
        if context:
            body["destinationEncryptionContext"] = dict(context)
        r = self.call("reEncrypt", body)
        return ResealedKey(base64.b64decode(r["ciphertextBlob"]), r["cmkUuid"], r["keyVersionId"],
                           r["sourceCmkUuid"], r["sourceKeyVersionId"])

    def describe_key(self, key: str) -> KeyMetadata:
        return parse_key_metadata(self.call("describeKey", {"cmkUuid": key}))

    def claim_bucket(self, bucket: str) -> str:
        return str(self.call("claimBucket", {"bucket": bucket})["claim"])

    def bucket_access(self, bucket: str) -> str:
        return str(self.call("bucketAccess", {"bucket": bucket})["access"])

    def release_bucket(self, bucket: str, hold: bool = True) -> bool:
        return bool(self.call("releaseBucket", {"bucket": bucket, "hold": hold})["released"])

    def owned_buckets(self) -> list[str]:
        return [str(b) for b in self.call("listBucketClaims", {})["buckets"]]

    def close(self) -> None:
        self._pool.clear()
