"""Bring the metadata database to the current schema: Alembic migrations, under a lock.

Every node migrates at start-up, so any number of them may start at once on an empty or an
older database: on PostgreSQL the migrations run under a session advisory lock, on SQLite under
an exclusive lock on a file beside the database. The first starter migrates; the others wait,
then find the database at head and go on (one query each).

The migrations live in `kms_core/migrations` (found through the package, so an installed
gateway finds them too). Revision 0001 adopts databases made before migrations existed.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import kms_core.audit
import kms_core.console.sessions
import kms_core.metering
import kms_core.models

# Importing these registers their tables on SQLModel.metadata.
_TABLE_MODULES = (kms_core.audit, kms_core.console.sessions, kms_core.metering, kms_core.models)

log = logging.getLogger("kms_core.schema")
# Alembic says "Context impl SQLiteImpl" and the like at INFO on every start-up, even with
# nothing to migrate; commands that configure INFO logging (ssegw volume) then print it on
# stderr, where their one JSON error must be alone. Migrations we run are logged by us below.
logging.getLogger("alembic").setLevel(logging.WARNING)

SCRIPT_LOCATION = "kms_core:migrations"
# pg_advisory_lock key of schema migrations: "ssegw-db" as a big-endian 64-bit integer.
ADVISORY_LOCK_ID = int.from_bytes(b"ssegw-db", "big", signed=True)


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _heads() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: Engine) -> None:
    """Migrate to head (idempotent; safe with any number of concurrent callers)."""
    with _migration_lock(engine) as conn:
        current = current_revisions(conn)
        conn.rollback()
        if current != _heads():
            log.info("migrating the metadata database from %s to %s",
                     ", ".join(sorted(current)) or "nothing", ", ".join(sorted(_heads())))
            command.upgrade(alembic_config(conn), "heads")
            conn.commit()
        _create_unmigrated_tables(conn)


def _create_unmigrated_tables(conn: Connection) -> None:
    # A table added to the models without a migration yet (tests/kms_core/test_schema.py fails
    # until one is written) is still created, so the process works; its migration must then
    # create it only if it is missing.
    inspector = inspect(conn)
    missing = [t for t in SQLModel.metadata.sorted_tables if not inspector.has_table(t.name)]
    conn.rollback()
    if missing:
        log.warning("tables without a migration, created from the models: %s",
                    ", ".join(t.name for t in missing))
        SQLModel.metadata.create_all(conn, tables=missing)
        conn.commit()


def _migration_lock(engine: Engine) -> AbstractContextManager[Connection]:
    return cluster_lock(engine, "schema")


_local_locks: dict[str, threading.Lock] = {}


@contextmanager
def cluster_lock(engine: Engine, name: str) -> Iterator[Connection]:
    """Hold a lock named `name` that every process on this database respects; yield a connection.

    PostgreSQL: a session advisory lock (so every node of a cluster waits for it). SQLite: an
    exclusive lock on a file beside the database. An in-memory database has one process only.
    """
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"ssegw/{name}".encode()).digest()[:8], "big",
                             signed=True)
        if name == "schema":
            key = ADVISORY_LOCK_ID
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        with _local_locks.setdefault(name, threading.Lock()), engine.connect() as conn:
            yield conn
        return
    suffix = ".migrate.lock" if name == "schema" else f".{name}.lock"
    lock_path = Path(database).with_name(Path(database).name + suffix)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with engine.connect() as conn:
            yield conn
