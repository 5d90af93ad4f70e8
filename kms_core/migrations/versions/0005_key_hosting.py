"""Key-hosting metering (FAQ 5.1): the spans in which a user master key is billed per day.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kms_key_hosting",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(36), sa.ForeignKey("kms_key.id"), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_kms_key_hosting_key_id", "kms_key_hosting", ["key_id"])
    op.create_index("ix_kms_key_hosting_account_id", "kms_key_hosting", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_kms_key_hosting_account_id", "kms_key_hosting")
    op.drop_index("ix_kms_key_hosting_key_id", "kms_key_hosting")
    op.drop_table("kms_key_hosting")
