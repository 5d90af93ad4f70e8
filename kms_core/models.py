"""Metadata tables (sqlmodel). Portable SQL only: SQLite embedded, PostgreSQL to scale out.

Key material never appears here in the clear: a version's `stored` column is the key store's
opaque reference (material wrapped by a root key, or the label of an HSM object).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import LargeBinary, UniqueConstraint
from sqlmodel import Column, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Account(SQLModel, table=True):
    __tablename__ = "account"
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(index=True, unique=True, max_length=128)
    frozen: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class AccessKey(SQLModel, table=True):
    __tablename__ = "access_key"
    access_key_id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=32)
    # The secret sealed under the software root key, with the access key id as associated data.
    sealed_secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow)


class Key(SQLModel, table=True):
    __tablename__ = "kms_key"
    id: str = Field(primary_key=True, max_length=36)
    account_id: str = Field(index=True, max_length=32)
    region: str = Field(index=True, max_length=64)
    enterprise_project: str = Field(default="default", max_length=64)
    description: str = Field(default="", max_length=8192)
    spec: str = Field(max_length=16)
    usage: str = Field(max_length=32)
    protection: str = Field(max_length=16)
    origin: str = Field(default="KMS", max_length=16)
    state: str = Field(max_length=32)
    creator: str = Field(default="", max_length=128)
    default_product: str | None = Field(default=None, max_length=16)
    primary_version_id: str | None = Field(default=None, max_length=36)
    deletion_date: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Lifecycle over time (kms_core.ops.rotation, kms_core.ops.due, kms_core.scheduler); all nullable.
    rotation_period_days: int | None = None
    next_rotation_at: datetime | None = Field(default=None, index=True)
    material_expires_at: datetime | None = Field(default=None, index=True)
    # HMAC of the first imported material under a root-derived key: re-imports must match it.
    material_digest: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True)
    )
    # Set once, when the deletion window ended and the material was destroyed: from then on
    # the key does not exist for any call (NotFound), but its row stays as a tombstone.
    destroyed_at: datetime | None = None
    # A scheduler's claim on this key while it works outside the database (HSM calls).
    lease_owner: str | None = Field(default=None, max_length=96)
    lease_until: datetime | None = None


class KeyVersion(SQLModel, table=True):
    __tablename__ = "kms_key_version"
    id: str = Field(primary_key=True, max_length=36)
    key_id: str = Field(foreign_key="kms_key.id", index=True, max_length=36)
    stored: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    # Asymmetric versions only: the public key, DER SubjectPublicKeyInfo (never the private key).
    public_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class Alias(SQLModel, table=True):
    __tablename__ = "kms_alias"
    __table_args__ = (UniqueConstraint("account_id", "region", "name", name="uq_alias_name"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(max_length=32)
    region: str = Field(max_length=64)
    name: str = Field(max_length=256)
    key_id: str = Field(foreign_key="kms_key.id", index=True, max_length=36)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class DefaultKey(SQLModel, table=True):
    """The registry of product default keys: its primary key makes "exactly one" a constraint."""

    __tablename__ = "kms_default_key"
    account_id: str = Field(primary_key=True, max_length=32)
    region: str = Field(primary_key=True, max_length=64)
    product: str = Field(primary_key=True, max_length=16)
    key_id: str = Field(foreign_key="kms_key.id", max_length=36)


class ImportToken(SQLModel, table=True):
    """BYOK: an import token (stored as its SHA-256) and the wrapping private key it unlocks.

    The RSA_2048 private key is sealed under the software root key with the key id and token id
    as associated data, so a row cannot be moved to another key.
    """

    __tablename__ = "kms_import_token"
    id: str = Field(primary_key=True, max_length=64)
    key_id: str = Field(foreign_key="kms_key.id", index=True, max_length=36)
    wrapping_algorithm: str = Field(max_length=32)
    wrapping_key_spec: str = Field(default="RSA_2048", max_length=16)
    sealed_private_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class KeyRotation(SQLModel, table=True):
    """Rotation history of symmetric keys (the first version is not a rotation)."""

    __tablename__ = "kms_key_rotation"
    seq: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(foreign_key="kms_key.id", index=True, max_length=36)
    version_id: str = Field(unique=True, max_length=36)
    rotation_type: str = Field(max_length=16)
    rotated_at: datetime = Field(default_factory=utcnow)


class MaterialTrash(SQLModel, table=True):
    """Key store references whose material must be destroyed (HSM objects above all).

    A row is written in the same transaction that unlinks the material from its version, so
    the database never forgets material that still exists; whoever holds the lease destroys
    it (idempotently) and deletes the row. A crash leaves the row for the scheduler's sweep.
    """

    __tablename__ = "kms_material_trash"
    id: str = Field(primary_key=True, max_length=36)
    key_id: str = Field(index=True, max_length=36)
    version_id: str = Field(max_length=36)
    spec: str = Field(max_length=16)
    protection: str = Field(max_length=16)
    stored: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=96)
    lease_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class RootKeyRecord(SQLModel, table=True):
    """The cluster's software root key: a check value always, the key itself only HSM-sealed.

    `check` (an HMAC under the root key) lets a node tell at start-up whether the root key it
    holds is the one the database was set up with. With `--root-key hsm`, `sealed` is the root
    key sealed by the HSM key `hsm_label` (AES-GCM inside the HSM), so a new node needs only
    the database and the HSM; otherwise the key lives in each node's `root.key` file.
    """

    __tablename__ = "kms_root_key"
    name: str = Field(primary_key=True, max_length=32)
    check_value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    hsm_label: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


class BucketClaim(SQLModel, table=True):
    """Which account owns an S3 bucket name, for every gateway node at once.

    The bucket name is the primary key, so of two nodes inserting one name at the same moment
    exactly one insert commits. A deleted bucket keeps its row (`released_at`) for a while, so a
    node still holding the old owner in its cache cannot write into the name's next owner.
    """

    __tablename__ = "bucket_claim"
    bucket: str = Field(primary_key=True, max_length=63)
    account_id: str = Field(index=True, max_length=32)
    claimed_at: datetime = Field(default_factory=utcnow)
    released_at: datetime | None = None


class KeyHostingPeriod(SQLModel, table=True):
    """Key hosting billing (FAQ 5.1): a span in which a user master key is billed per day.

    Opened when a user key is created (default keys are free and never get one) or its
    deletion is cancelled; closed when its deletion is scheduled. Disabling changes nothing:
    a disabled key is billed. Written in the transaction that changes the key.
    """

    __tablename__ = "kms_key_hosting"
    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(foreign_key="kms_key.id", index=True, max_length=36)
    account_id: str = Field(index=True, max_length=32)
    region: str = Field(max_length=64)
    started_at: datetime
    ended_at: datetime | None = None
