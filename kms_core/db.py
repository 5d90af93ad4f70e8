"""Database engine for the metadata: a SQLite file under the data dir, or any SQLAlchemy URL."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel, create_engine

import kms_core.audit  # noqa: F401  (registers the tables)
import kms_core.metering  # noqa: F401
import kms_core.models  # noqa: F401
from kms_core.schema import add_missing_columns


def make_engine(url: str) -> Engine:
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
    for attempt in range(5):
        try:
            SQLModel.metadata.create_all(engine)
            break
        except OperationalError:
            # Two processes creating the schema at once: the loser sees "already exists".
            if attempt == 4:
                raise
            time.sleep(0.2)
    add_missing_columns(engine)  # data dirs made before newer nullable columns existed
    return engine
