"""Baseline: the metadata tables as they were before migrations existed.

Adopts databases made by earlier releases (which created tables with `create_all` and added
nullable columns at start-up): a table that exists gains whatever nullable columns and indexes
it lacks; a missing one is created. A fresh database simply gets every table.

The tables are spelled out here, frozen, rather than taken from the models: later migrations
change the schema from this point, so this file must never follow the models.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_meta = sa.MetaData()

sa.Table(
    'account',
    _meta,
    sa.Column('id', sa.String(32), primary_key=True),
    sa.Column('name', sa.String(128), nullable=False),
    sa.Column('frozen', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Index('ix_account_name', 'name', unique=True),
)
sa.Table(
    'kms_audit',
    _meta,
    sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_id', sa.String(64), nullable=False),
    sa.Column('account_id', sa.String(32), nullable=False),
    sa.Column('region', sa.String(64), nullable=False),
    sa.Column('principal', sa.String(128), nullable=False),
    sa.Column('operation', sa.String(64), nullable=False),
    sa.Column('key_id', sa.String(36), nullable=True),
    sa.Column('version_id', sa.String(36), nullable=True),
    sa.Column('result', sa.String(64), nullable=False),
    sa.Index('ix_kms_audit_account_id', 'account_id', unique=False),
    sa.Index('ix_kms_audit_at', 'at', unique=False),
    sa.Index('ix_kms_audit_key_id', 'key_id', unique=False),
)
sa.Table(
    'kms_key',
    _meta,
    sa.Column('id', sa.String(36), primary_key=True),
    sa.Column('account_id', sa.String(32), nullable=False),
    sa.Column('region', sa.String(64), nullable=False),
    sa.Column('enterprise_project', sa.String(64), nullable=False),
    sa.Column('description', sa.String(8192), nullable=False),
    sa.Column('spec', sa.String(16), nullable=False),
    sa.Column('usage', sa.String(32), nullable=False),
    sa.Column('protection', sa.String(16), nullable=False),
    sa.Column('origin', sa.String(16), nullable=False),
    sa.Column('state', sa.String(32), nullable=False),
    sa.Column('creator', sa.String(128), nullable=False),
    sa.Column('default_product', sa.String(16), nullable=True),
    sa.Column('primary_version_id', sa.String(36), nullable=True),
    sa.Column('deletion_date', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotation_period_days', sa.Integer(), nullable=True),
    sa.Column('next_rotation_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('material_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('material_digest', sa.LargeBinary(), nullable=True),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(96), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Index('ix_kms_key_account_id', 'account_id', unique=False),
    sa.Index('ix_kms_key_material_expires_at', 'material_expires_at', unique=False),
    sa.Index('ix_kms_key_next_rotation_at', 'next_rotation_at', unique=False),
    sa.Index('ix_kms_key_region', 'region', unique=False),
)
sa.Table(
    'kms_material_trash',
    _meta,
    sa.Column('id', sa.String(36), primary_key=True),
    sa.Column('key_id', sa.String(36), nullable=False),
    sa.Column('version_id', sa.String(36), nullable=False),
    sa.Column('spec', sa.String(16), nullable=False),
    sa.Column('protection', sa.String(16), nullable=False),
    sa.Column('stored', sa.LargeBinary(), nullable=False),
    sa.Column('lease_owner', sa.String(96), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Index('ix_kms_material_trash_key_id', 'key_id', unique=False),
)
sa.Table(
    'kms_usage',
    _meta,
    sa.Column('account_id', sa.String(32), primary_key=True),
    sa.Column('month', sa.String(7), primary_key=True),
    sa.Column('operation', sa.String(64), primary_key=True),
    sa.Column('count', sa.Integer(), nullable=False),
)
sa.Table(
    'access_key',
    _meta,
    sa.Column('access_key_id', sa.String(32), primary_key=True),
    sa.Column('account_id', sa.String(32), sa.ForeignKey('account.id'), nullable=False),
    sa.Column('sealed_secret', sa.LargeBinary(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Index('ix_access_key_account_id', 'account_id', unique=False),
)
sa.Table(
    'kms_alias',
    _meta,
    sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column('account_id', sa.String(32), nullable=False),
    sa.Column('region', sa.String(64), nullable=False),
    sa.Column('name', sa.String(256), nullable=False),
    sa.Column('key_id', sa.String(36), sa.ForeignKey('kms_key.id'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint('account_id', 'region', 'name', name='uq_alias_name'),
    sa.Index('ix_kms_alias_key_id', 'key_id', unique=False),
)
sa.Table(
    'kms_default_key',
    _meta,
    sa.Column('account_id', sa.String(32), primary_key=True),
    sa.Column('region', sa.String(64), primary_key=True),
    sa.Column('product', sa.String(16), primary_key=True),
    sa.Column('key_id', sa.String(36), sa.ForeignKey('kms_key.id'), nullable=False),
)
sa.Table(
    'kms_import_token',
    _meta,
    sa.Column('id', sa.String(64), primary_key=True),
    sa.Column('key_id', sa.String(36), sa.ForeignKey('kms_key.id'), nullable=False),
    sa.Column('wrapping_algorithm', sa.String(32), nullable=False),
    sa.Column('wrapping_key_spec', sa.String(16), nullable=False),
    sa.Column('sealed_private_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Index('ix_kms_import_token_expires_at', 'expires_at', unique=False),
    sa.Index('ix_kms_import_token_key_id', 'key_id', unique=False),
)
sa.Table(
    'kms_key_rotation',
    _meta,
    sa.Column('seq', sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column('key_id', sa.String(36), sa.ForeignKey('kms_key.id'), nullable=False),
    sa.Column('version_id', sa.String(36), nullable=False),
    sa.Column('rotation_type', sa.String(16), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint('version_id'),
    sa.Index('ix_kms_key_rotation_key_id', 'key_id', unique=False),
)
sa.Table(
    'kms_key_version',
    _meta,
    sa.Column('id', sa.String(36), primary_key=True),
    sa.Column('key_id', sa.String(36), sa.ForeignKey('kms_key.id'), nullable=False),
    sa.Column('stored', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=True),
    sa.Index('ix_kms_key_version_key_id', 'key_id', unique=False),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in _meta.sorted_tables:
        if not inspector.has_table(table.name):
            table.create(bind)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise RuntimeError(
                    f"the metadata database lacks column {table.name}.{column.name}, which cannot "
                    "be added automatically; it was made by a release too old to upgrade in place"
                )
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
        indexes = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_meta.sorted_tables):
        table.drop(bind, checkfirst=True)
