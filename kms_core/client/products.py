"""What the console needs from the cloud products: their default encryption settings.

kms_core never imports the gateway (DESIGN.md), so the console names only this protocol; the
composition root (`ssegw serve`) hands it an implementation built on the S3 proxy's own code,
the same that answers PutBucketEncryption. It is part of the product-facing seam (like
KmsClient, an interface between the KMS and the products, light to import): products
implement it, the console (kms_core.console) calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kms_core.types import Caller

NONE, SSE_S3, SSE_KMS = "none", "AES256", "aws:kms"


@dataclass(frozen=True)
class BucketSetting:
    bucket: str
    sse: str  # NONE, SSE_S3 or SSE_KMS
    kms_key: str | None = None  # SSE_KMS only; None: the product's default key
    bucket_key: bool = False


class ProductSettingError(Exception):
    """A refused change, with a message fit to show the user (the product's own words)."""


class ProductEncryption(Protocol):
    async def list_buckets(self, caller: Caller) -> list[BucketSetting]:
        """The caller's buckets with their default encryption, by name."""
        ...

    async def set_default_encryption(self, caller: Caller, setting: BucketSetting) -> None:
        """Set (or with NONE remove) a bucket's default encryption; ProductSettingError if refused."""
        ...
