"""Bring an existing metadata database up to the current tables: add missing nullable columns.

`create_all` creates missing tables but never alters an existing one, so a data dir made by an
older release would fail on the first query that names a new column (the lifecycle columns of
`kms_key`, for instance). Adding a nullable column is portable (`ALTER TABLE ... ADD COLUMN`
works alike on SQLite and PostgreSQL) and safe beside running processes; anything more (NOT
NULL columns, changed types) needs a real migration and is only reported.
"""

from __future__ import annotations

import logging

from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import SQLModel

log = logging.getLogger("kms_core.schema")


def add_missing_columns(engine: Engine) -> list[str]:
    """Add every nullable column the models have and the database lacks; return their names."""
    added: list[str] = []
    insp = inspect(engine)
    preparer = engine.dialect.identifier_preparer
    for table in SQLModel.metadata.sorted_tables:
        if not insp.has_table(table.name):
            continue
        present = {c["name"] for c in insp.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in present]
        for column in missing:
            name = f"{table.name}.{column.name}"
            if not column.nullable or column.primary_key:
                log.warning("column %s is missing and cannot be added automatically", name)
                continue
            ddl = (
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                f"{preparer.format_column(column)} {column.type.compile(dialect=engine.dialect)}"
            )
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
            except (OperationalError, ProgrammingError):
                # Another process added it first ("duplicate column"); anything else shows up
                # on the re-inspection below.
                pass
            added.append(name)
        if missing:
            for index in table.indexes:
                try:
                    index.create(engine, checkfirst=True)
                except (OperationalError, ProgrammingError):
                    pass  # created by a concurrent starter
    if added:
        still = [
            n for n in added
            if n.split(".", 1)[1] not in {c["name"] for c in inspect(engine).get_columns(
                n.split(".", 1)[0])}
        ]
        if still:
            raise RuntimeError(f"could not add columns {still} to the metadata database")
        log.info("added columns to the metadata database: %s", ", ".join(added))
    return added
