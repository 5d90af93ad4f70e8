"""The KMS core tests run on both metadata databases: SQLite (embedded) and PostgreSQL; `ssegw`
commands run as a user runs them (`cli`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kms_core.embedded import Kms
from kms_core.keystore.hsm import HsmConfig
from tests.kms_core.lifecycle_support import FakeClock, close_kms, open_clocked_kms

ROOT = Path(__file__).parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def kms_db_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ckms(tmp_path: Path, hsm_config: HsmConfig, clock: FakeClock,
         kms_db_url: str | None) -> Iterator[Kms]:
    """A KMS on `clock` (the lifecycle tests move time), on each metadata database."""
    k = open_clocked_kms(tmp_path / "kms", hsm_config, clock, kms_db_url)
    yield k
    close_kms(k)


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.account_id = ""

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--data-dir", str(self.data_dir)],
                           capture_output=True, text=True, env=self.env, timeout=120)
        if ok:
            assert p.returncode == 0, p.stderr
        return p

    def json(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.run(*args).stdout)
        return out


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path / "var")
    acct = c.json("account", "create", "--name", "alice")
    assert set(acct) >= {"accountId", "accessKeyId", "secretAccessKey"}
    c.account_id = acct["accountId"]
    c.env["SSEGW_ACCESS_KEY_ID"] = acct["accessKeyId"]
    c.env["SSEGW_SECRET_ACCESS_KEY"] = acct["secretAccessKey"]
    return c
