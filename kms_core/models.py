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


class KeyVersion(SQLModel, table=True):
    __tablename__ = "kms_key_version"
    id: str = Field(primary_key=True, max_length=36)
    key_id: str = Field(foreign_key="kms_key.id", index=True, max_length=36)
    stored: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


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
