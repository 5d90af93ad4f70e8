"""The product-facing KMS client: what the S3 proxy and the adapters ask the KMS for.

This package holds the interface only (`KmsClient`, `DataKey`, `ResealedKey`, and the errors
every implementation raises, re-exported from `kms_core.errors`), and imports nothing of
kms_core but `types` and `errors`, so a gateway node that talks to a remote KMS never loads the
service or the database stack. The implementations, same methods and same errors, live in
submodules that only composition roots import:

- `kms_core.client.inprocess.InProcessKmsClient`: the service in this process;
- `kms_core.client.http.HttpKmsClient`: a remote KMS over its REST dialect (SigV4-signed).

`kms_core.client.metrics` holds the one counter the KMS and the products share (cache lookups).
`kms_core.client.products.ProductEncryption` is the other way round: what the KMS console asks
of a product (its buckets' default encryption), implemented by the product.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kms_core.errors import (
    AccessDenied,
    AccountFrozen,
    AlreadyExists,
    Disabled,
    ExpiredImportToken,
    IncompleteSignature,
    IncorrectKeyMaterial,
    InvalidAccessKeyId,
    InvalidCiphertext,
    InvalidImportToken,
    InvalidKeyUsage,
    InvalidMarker,
    InvalidParameter,
    InvalidRegion,
    InvalidState,
    KeyUnavailable,
    KmsError,
    LimitExceeded,
    MalformedRequest,
    MissingAuthentication,
    NotFound,
    RequestExpired,
    SignatureDoesNotMatch,
    SignatureInvalid,
    UnknownOperation,
    UnsupportedOperation,
)
from kms_core.types import Caller, KeyMetadata

__all__ = [
    "AccessDenied", "AccountFrozen", "AlreadyExists", "Caller", "DataKey", "Disabled",
    "ExpiredImportToken", "IncompleteSignature", "IncorrectKeyMaterial", "InvalidAccessKeyId",
    "InvalidCiphertext", "InvalidImportToken", "InvalidKeyUsage", "InvalidMarker",
    "InvalidParameter", "InvalidRegion", "InvalidState", "KeyMetadata", "KeyUnavailable",
    "KmsClient", "KmsError", "LimitExceeded", "MalformedRequest", "MissingAuthentication",
    "NotFound", "RequestExpired", "ResealedKey", "SignatureDoesNotMatch", "SignatureInvalid",
    "UnknownOperation", "UnsupportedOperation",
]


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key: `plaintext` for local encryption, `sealed` to store beside the data."""

    plaintext: bytes | None = field(repr=False)
    sealed: bytes
    key_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class ResealedKey:
    """A data key sealed anew (its plaintext never left the KMS): `sealed` under `key_id` at
    `version_id`, and the key and version that sealed it before, so a product can tell a re-seal
    that changed nothing without reading the KMS's blob format."""

    sealed: bytes
    key_id: str
    version_id: str
    source_key_id: str
    source_version_id: str


class KmsClient(Protocol):
    def generate_data_key(
        self,
        product: str,
        key: str | None = None,
        context: Mapping[str, str] | None = None,
        length: int = 32,
    ) -> DataKey:
        """A fresh data key under `key`, or under the product's default key when None."""
        ...

    def decrypt_data_key(self, sealed: bytes, context: Mapping[str, str] | None = None) -> DataKey:
        ...

    def reseal_data_key(
        self,
        sealed: bytes,
        product: str,
        key: str | None = None,
        source_context: Mapping[str, str] | None = None,
        context: Mapping[str, str] | None = None,
    ) -> ResealedKey:
        """Re-seal a data key under another key (or the new primary version); no plaintext."""
        ...

    def describe_key(self, key: str) -> KeyMetadata:
        ...

    # S3 bucket ownership (kms_core.buckets), claimed in the KMS database all gateway nodes share.
    def claim_bucket(self, bucket: str) -> str:
        """"created", "yours", "taken" or "busy" (see kms_core.buckets.Claim)."""
        ...

    def bucket_access(self, bucket: str) -> str:
        """"mine", "other" or "none"."""
        ...

    def release_bucket(self, bucket: str, hold: bool = True) -> bool:
        """Give the name up (`hold`: kept from other accounts a while; else the claim goes)."""
        ...

    def owned_buckets(self) -> list[str]:
        """The bucket names the caller owns."""
        ...
