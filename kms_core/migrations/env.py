"""Alembic environment: always handed an open connection by kms_core.schema (under its lock).

`alembic -c <ini> ...` from a shell is not supported on purpose: every node migrates at
start-up under the lock, and so does any operator command on the database (`ssegw account
list`, for one), which is how to migrate without serving.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import kms_core.audit
import kms_core.console.sessions
import kms_core.metering
import kms_core.models

# Importing these registers their tables on SQLModel.metadata, for autogenerate.
_TABLE_MODULES = (kms_core.audit, kms_core.console.sessions, kms_core.metering, kms_core.models)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("kms_core migrations run through kms_core.schema.upgrade(engine)")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
