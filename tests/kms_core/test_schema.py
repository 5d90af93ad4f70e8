"""An existing metadata database gains the nullable columns added since it was made."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from kms_core.db import make_engine
from kms_core.schema import add_missing_columns


def test_missing_nullable_columns_are_added(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        # What a data dir made before the lifecycle columns looks like.
        for column in ("rotation_period_days", "material_digest", "destroyed_at", "lease_owner"):
            conn.execute(text(f"ALTER TABLE kms_key DROP COLUMN {column}"))
    engine.dispose()

    engine = make_engine(url)
    names = {c["name"] for c in inspect(engine).get_columns("kms_key")}
    assert {"rotation_period_days", "material_digest", "destroyed_at", "lease_owner"} <= names
    with engine.begin() as conn:
        conn.execute(text("SELECT rotation_period_days, destroyed_at FROM kms_key")).all()
    assert add_missing_columns(engine) == []  # idempotent
    engine.dispose()
