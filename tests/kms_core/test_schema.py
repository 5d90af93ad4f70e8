"""The metadata schema: Alembic migrations, adoption of pre-migration databases, the lock."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from kms_core.db import make_engine
from kms_core.schema import _heads, current_revisions


def _sqlite(tmp_path: Path, name: str = "kms.db") -> str:
    return f"sqlite:///{tmp_path / name}"


def test_migrations_have_one_head() -> None:
    # Two migrations written side by side need a merge revision (alembic merge): one line of
    # history, one row in alembic_version.
    assert len(_heads()) == 1, sorted(_heads())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_build_exactly_the_models(backend: str, tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    # A table or column added to the models needs a migration: this fails until it has one.
    url = _sqlite(tmp_path) if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    with engine.connect() as conn:
        assert current_revisions(conn) == _heads()
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    engine.dispose()


def test_pre_migration_database_is_adopted(tmp_path: Path) -> None:
    url = _sqlite(tmp_path, "old.db")
    engine = make_engine(url)
    with engine.begin() as conn:
        # What a data dir made before migrations (and before the lifecycle columns) looks like.
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("DROP TABLE kms_material_trash"))
        conn.execute(text("DROP TABLE kms_root_key"))
        conn.execute(text("DROP TABLE kms_key_hosting"))  # newer than migrations (0003)
        for column in ("rotation_period_days", "material_digest", "destroyed_at", "lease_owner"):
            conn.execute(text(f"ALTER TABLE kms_key DROP COLUMN {column}"))
        conn.execute(text("INSERT INTO account (id, name, frozen, created_at) "
                          "VALUES ('000000000001', 'old', 0, '2025-01-01 00:00:00')"))
    engine.dispose()

    engine = make_engine(url)
    insp = inspect(engine)
    names = {c["name"] for c in insp.get_columns("kms_key")}
    assert {"rotation_period_days", "material_digest", "destroyed_at", "lease_owner"} <= names
    assert insp.has_table("kms_material_trash")
    with engine.connect() as conn:
        assert current_revisions(conn) == _heads()
        assert conn.execute(text("SELECT name FROM account")).scalar_one() == "old"  # data kept
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    engine.dispose()


def _open(url: str) -> None:
    make_engine(url).dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_first_starts_migrate_once(backend: str, tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    url = _sqlite(tmp_path) if backend == "sqlite" else request.getfixturevalue("pg_empty_url")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open, args=(url,)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    engine = make_engine(url, migrate=False)
    with engine.connect() as conn:
        assert current_revisions(conn) == _heads()
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    engine.dispose()
