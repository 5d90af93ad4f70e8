"""Merge point: the root key record (0002) and the console sessions (0002_console) were written
side by side; from here the history is one line again. No schema change.

Revision ID: 0003
Revises: 0002, 0002_console
"""

from __future__ import annotations

revision = "0003"
down_revision = ("0002", "0002_console")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
