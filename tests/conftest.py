"""Shared fixtures: a real SoftHSM2 token for the whole session, and fresh KMS instances.

SoftHSM2 reads SOFTHSM2_CONF once per process when the PKCS#11 library is first initialised,
and sees tokens made by other processes only after re-initialising, so the session's token is
created here, before anything loads the library. Each KMS instance gets its own HSM root key
label on that token, so instances never share a root. Subprocesses (CLI tests) inherit
SOFTHSM2_CONF and create their own embedded tokens beside it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kms_core.keystore.hsm import HsmConfig
from kms_core.keystore.softhsm import find_softhsm_module, init_token
from tests.postgres import PostgresCluster

if TYPE_CHECKING:
    from tests.kms_server import KmsServer

_HSM_DIR = Path(tempfile.mkdtemp(prefix="ssegw-test-hsm-"))
atexit.register(shutil.rmtree, _HSM_DIR, True)
(_HSM_DIR / "tokens").mkdir()
_CONF = _HSM_DIR / "softhsm2.conf"
_CONF.write_text(
    f"directories.tokendir = {_HSM_DIR / 'tokens'}\nobjectstore.backend = file\n"
    "log.level = ERROR\nslots.removable = false\n"
)
os.environ["SOFTHSM2_CONF"] = str(_CONF)
_TOKEN_LABEL = "ssegw-tests"
_PIN = secrets.token_hex(8)
init_token(_CONF, _TOKEN_LABEL, _PIN)


@pytest.fixture(scope="session")
def hsm_token() -> HsmConfig:
    return HsmConfig(module=find_softhsm_module(), token_label=_TOKEN_LABEL, pin=_PIN)


@pytest.fixture
def hsm_config(hsm_token: HsmConfig) -> HsmConfig:
    return HsmConfig(hsm_token.module, hsm_token.token_label, hsm_token.pin,
                     root_label=f"ssegw-root-{uuid.uuid4()}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's private PostgreSQL cluster, started on first use."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def _pg_template(postgres: PostgresCluster) -> str:
    # Migrated once; every test database is a copy (CREATE DATABASE ... TEMPLATE), which is
    # faster than running the migrations each time.
    from kms_core.db import make_engine

    name = postgres.create_database()
    make_engine(postgres.url(name)).dispose()
    return name


@pytest.fixture
def pg_url(postgres: PostgresCluster, _pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the current schema, dropped after the test."""
    name = postgres.create_database(template=_pg_template)
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture
def pg_empty_url(postgres: PostgresCluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (no tables), dropped after the test."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture
def kms_db_url() -> str | None:
    """The metadata database of the `kms` fixture: None is SQLite in the data dir.

    tests/kms_core/conftest.py runs the KMS core tests on PostgreSQL as well.
    """
    return None


@pytest.fixture
def kms(tmp_path: Path, hsm_config: HsmConfig, kms_db_url: str | None) -> Iterator[object]:
    from kms_core.embedded import KmsConfig, open_kms

    k = open_kms(KmsConfig(data_dir=tmp_path / "kms", hsm=hsm_config, db_url=kms_db_url))
    yield k
    k.close()


@pytest.fixture
def kms_server(kms: object) -> Iterator[KmsServer]:
    """The KMS HTTP API over `kms`, on a loopback port (for the HTTP and the S3 proxy tests)."""
    from kms_core.embedded import Kms
    from tests.kms_server import serve_kms

    assert isinstance(kms, Kms)
    with serve_kms(kms) as server:
        yield server


@pytest.fixture
def caller(kms: object) -> object:
    from kms_core.types import Caller

    info, creds = kms.accounts.create_account(f"acct-{uuid.uuid4().hex[:8]}")  # type: ignore[attr-defined]
    return Caller(info.account_id, "cn-east-1", creds.access_key_id)
