"""Results of KMS calls, shared by the service, the product clients and the HTTP dialects.

Plaintext fields never appear in a repr, so a result logged by mistake leaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")

PRODUCTS = ("oss", "ecs", "sfs")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the account, the region (resource pool) and the principal (access key id)."""

    account_id: str
    region: str
    principal: str = ""


@dataclass(frozen=True)
class KeyMetadata:
    key_id: str
    account_id: str
    region: str
    spec: str
    usage: str
    protection: str
    origin: str
    state: str
    description: str
    enterprise_project: str
    creator: str
    created_at: datetime
    primary_version_id: str | None
    deletion_date: datetime | None
    default_product: str | None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class AliasInfo:
    name: str
    key_id: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_marker: str | None

    @property
    def truncated(self) -> bool:
        return self.next_marker is not None


@dataclass(frozen=True, slots=True)
class EncryptResult:
    ciphertext_blob: bytes
    key_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class DecryptResult:
    plaintext: bytes = field(repr=False)
    key_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class DataKeyResult:
    """A data key: `plaintext` is None for the WithoutPlaintext call."""

    plaintext: bytes | None = field(repr=False)
    ciphertext_blob: bytes
    key_id: str
    version_id: str


@dataclass(frozen=True, slots=True)
class ReEncryptResult:
    ciphertext_blob: bytes
    source_key_id: str
    source_version_id: str
    key_id: str
    version_id: str
