"""Bucket claims: which account owns each S3 bucket name, shared by every gateway node.

The bucket name is the primary key, so of two nodes claiming one name exactly one insert
commits (kms_core/buckets.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database adopted by 0001 may have the table already (made by create_all): keep it.
    if sa.inspect(op.get_bind()).has_table("bucket_claim"):
        return
    op.create_table(
        "bucket_claim",
        sa.Column("bucket", sa.String(63), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_bucket_claim_account_id", "bucket_claim", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bucket_claim_account_id", table_name="bucket_claim")
    op.drop_table("bucket_claim")
