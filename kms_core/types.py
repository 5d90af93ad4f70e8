"""Results of KMS calls, shared by the service, the product clients and the HTTP dialects.

Plaintext fields never appear in a repr, so a result logged by mistake leaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")

PRODUCTS = ("oss", "ecs", "sfs")


def default_key_product(ref: str | None) -> str | None:
    """The product whose default key `ref` names (`alias_ecs`, the guide's `alias/ecs`, or
    `alias/alias_ecs`), else None. Products create their default key on first use, so such a
    name must go through the default-key path rather than an alias lookup."""
    if not ref:
        return None
    bare = ref[len("alias/"):] if ref.startswith("alias/") else ref
    if bare.startswith("alias_") and bare[len("alias_"):] in PRODUCTS:
        return bare[len("alias_"):]
    if bare != ref and bare in PRODUCTS:
        return bare
    return None


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
    # Symmetric KMS-origin keys with a rotation policy; None when rotation is off.
    rotation_period_days: int | None = None
    next_rotation_at: datetime | None = None
    # Imported (EXTERNAL) material with an expiry; None when it never expires or is absent.
    material_expires_at: datetime | None = None


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


@dataclass(frozen=True, slots=True)
class RotationStatus:
    """A key's automatic rotation policy: off (`enabled` False) or every `period_days` days."""

    key_id: str
    enabled: bool
    period_days: int | None
    next_rotation_at: datetime | None


@dataclass(frozen=True, slots=True)
class RotationInfo:
    """One rotation: the version it made primary, when, and AUTOMATIC or ON_DEMAND."""

    key_id: str
    version_id: str
    rotated_at: datetime
    rotation_type: str


@dataclass(frozen=True, slots=True)
class ImportParameters:
    """BYOK: the RSA_2048 wrapping public key (DER) and the token to import with."""

    key_id: str
    public_key: bytes
    import_token: bytes = field(repr=False)
    valid_to: datetime
    wrapping_algorithm: str
    wrapping_key_spec: str


# ------------------------------------------------------------- asymmetric keys


@dataclass(frozen=True, slots=True)
class KeyVersionInfo:
    """One version of a key. Asymmetric versions are never primary."""

    key_id: str
    version_id: str
    created_at: datetime
    primary: bool
    spec: str
    usage: str


@dataclass(frozen=True, slots=True)
class PublicKeyResult:
    """getPublicKey: PEM SubjectPublicKeyInfo and what the key can do. Never a private key."""

    key_id: str
    version_id: str
    spec: str
    usage: str
    public_key_pem: str
    signing_algorithms: tuple[str, ...]
    encryption_algorithms: tuple[str, ...]
    # The same key as DER SubjectPublicKeyInfo (what AWS's GetPublicKey returns, base64).
    public_key_der: bytes = b""


@dataclass(frozen=True, slots=True)
class SignResult:
    key_id: str
    version_id: str
    signature: bytes
    algorithm: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    key_id: str
    version_id: str
    valid: bool
    algorithm: str


@dataclass(frozen=True, slots=True)
class AsymmetricEncryptResult:
    """A public-key ciphertext in the algorithm's standard form (no KMS blob around it)."""

    ciphertext: bytes
    key_id: str
    version_id: str
    algorithm: str


@dataclass(frozen=True, slots=True)
class AsymmetricDecryptResult:
    plaintext: bytes = field(repr=False)
    key_id: str
    version_id: str
    algorithm: str


@dataclass(frozen=True, slots=True)
class ExportDataKeyResult:
    """A data key encrypted under a caller's public key; `ciphertext_blob` (sealed under the CMK)
    only from generateAndExportDataKey."""

    exported_data_key: bytes
    key_id: str
    version_id: str
    algorithm: str
    ciphertext_blob: bytes | None = None
