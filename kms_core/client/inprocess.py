"""The KMS client that runs the service in this process (`ssegw serve` without --kms-url, the
adapters' CLIs with a local store). Same methods and errors as `kms_core.client.http`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kms_core.buckets import BucketClaims
from kms_core.client import DataKey, ResealedKey
from kms_core.errors import AccountFrozen, UnsupportedOperation
from kms_core.service import KmsService
from kms_core.types import Caller, KeyMetadata, default_key_product


class InProcessKmsClient:
    def __init__(self, service: KmsService, caller: Caller, buckets: BucketClaims | None = None,
                 frozen: Callable[[str], bool] | None = None) -> None:
        self._service = service
        self.caller = caller
        self._buckets = buckets
        self._frozen = frozen

    def _key_id(self, product: str, key: str | None) -> str:
        # A default key's name (alias_ecs, alias/ecs) works before the key exists: made on first use.
        named = default_key_product(key)
        if key and named is None:
            return key
        return self._service.default_key(self.caller, named or product).id

    def generate_data_key(
        self,
        product: str,
        key: str | None = None,
        context: Mapping[str, str] | None = None,
        length: int = 32,
    ) -> DataKey:
        r = self._service.generate_data_key(self.caller, self._key_id(product, key), length, context)
        return DataKey(r.plaintext, r.ciphertext_blob, r.key_id, r.version_id)

    def decrypt_data_key(self, sealed: bytes, context: Mapping[str, str] | None = None) -> DataKey:
        r = self._service.decrypt(self.caller, sealed, context)
        return DataKey(r.plaintext, sealed, r.key_id, r.version_id)

    def reseal_data_key(
        self,
        sealed: bytes,
        product: str,
        key: str | None = None,
        source_context: Mapping[str, str] | None = None,
        context: Mapping[str, str] | None = None,
    ) -> ResealedKey:
        r = self._service.re_encrypt(
            self.caller, sealed, self._key_id(product, key),
            source_context=source_context, destination_context=context,
        )
        return ResealedKey(r.ciphertext_blob, r.key_id, r.version_id, r.source_key_id, r.source_version_id)

    def describe_key(self, key: str) -> KeyMetadata:
        return self._service.describe_key(self.caller, key)

    def _claims(self) -> BucketClaims:
        if self._buckets is None:
            raise UnsupportedOperation("this KMS client was made without bucket claims")
        if self._frozen is not None and self._frozen(self.caller.account_id):
            raise AccountFrozen(f"account {self.caller.account_id} is frozen")
        return self._buckets

    def claim_bucket(self, bucket: str) -> str:
        return self._claims().claim(self.caller.account_id, bucket).value

    def bucket_access(self, bucket: str) -> str:
        return self._claims().access(self.caller.account_id, bucket).value

    def release_bucket(self, bucket: str, hold: bool = True) -> bool:
        return self._claims().release(self.caller.account_id, bucket, hold=hold)

    def owned_buckets(self) -> list[str]:
        return self._claims().owned(self.caller.account_id)
