"""The console's "encryption of products" page, served by the S3 proxy's own code.

kms_core.client.products names the ProductEncryption protocol the KMS console calls; this is
its implementation over the proxy: listing is the proxy's ListBuckets filter and a change goes
through the same checks and write as PutBucketEncryption / DeleteBucketEncryption
(BucketOps.set_bucket_encryption).
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.s3 import xml_bodies
from gateway.s3.auth import Authenticated
from gateway.s3.bucket_ops import BucketOps
from gateway.s3.errors import S3Error
from kms_core.client import Caller, KmsError
from kms_core.client.products import NONE, BucketSetting, ProductSettingError


class ProxyProductEncryption:
    def __init__(self, buckets: BucketOps, secret_for: Callable[[str], str]) -> None:
        self._buckets = buckets
        # The proxy's KMS calls may go to a remote KMS signed with the caller's own secret.
        self._secret_for = secret_for

    def _auth(self, caller: Caller) -> Authenticated:
        return Authenticated(caller, self._secret_for(caller.principal), "UNSIGNED-PAYLOAD", None)

    async def list_buckets(self, caller: Caller) -> list[BucketSetting]:
        try:
            owned = await self._buckets.owned_buckets(self._auth(caller))
        except S3Error as e:
            raise ProductSettingError(f"{e.code}: {e.message}") from None
        out = []
        for name, _, info in sorted(owned):
            enc = info.encryption
            if enc is None:
                out.append(BucketSetting(name, NONE))
            else:
                out.append(BucketSetting(name, enc.sse, enc.kms_key, enc.bucket_key))
        return out

    async def set_default_encryption(self, caller: Caller, setting: BucketSetting) -> None:
        auth = self._auth(caller)
        try:
            if setting.sse == NONE:
                await self._buckets.remove_bucket_encryption(auth, setting.bucket)
            else:
                rule = xml_bodies.encryption_rule(setting.sse, setting.kms_key, setting.bucket_key)
                await self._buckets.set_bucket_encryption(auth, setting.bucket, rule)
        except S3Error as e:
            raise ProductSettingError(f"{e.code}: {e.message}") from None
        except KmsError as e:
            raise ProductSettingError(e.message) from None
