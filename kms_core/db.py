"""Database engine for the metadata: a SQLite file under the data dir, or any SQLAlchemy URL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from kms_core.schema import upgrade


def make_engine(url: str, migrate: bool = True) -> Engine:
    """An engine for `url`; with `migrate`, the database is first brought to the current schema."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_pre_ping=False
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers run beside the single writer of several server processes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (below) instead of pysqlite.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A deferred transaction that reads and then writes fails outright (SQLITE_BUSY)
            # when another process wrote in between; taking the write lock up front makes
            # concurrent processes queue on busy_timeout instead.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True)
    if migrate:
        upgrade(engine)
    return engine
