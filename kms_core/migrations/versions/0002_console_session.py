"""The web console's sign-in sessions (kms_core.console.sessions).

Revision ID: 0002_console
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_console"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A process that ran the console before this migration existed created the table from the
    # model (kms_core.schema): adopt it.
    if sa.inspect(op.get_bind()).has_table("console_session"):
        return
    op.create_table(
        "console_session",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("access_key_id", sa.String(32), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_session_account_id", "console_session", ["account_id"])
    op.create_index("ix_console_session_last_seen", "console_session", ["last_seen"])


def downgrade() -> None:
    op.drop_table("console_session")
