"""Fixtures for the block adapter: volumes on a real KMS, an in-process NBD server, and
`ssegw` as a user runs it, on one data directory (the classes are in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.block.nbd_server import NbdServer
from adapters.block.volume import Volume, create_volume, open_volume
from kms_core.client.inprocess import InProcessKmsClient
from tests.adapters.block.helpers import Cli, MiB, ServerThread


@pytest.fixture
def client(kms: Any, caller: Any) -> InProcessKmsClient:
    return InProcessKmsClient(kms.service, caller)


@pytest.fixture
def volume(tmp_path: Path, client: InProcessKmsClient) -> Iterator[Volume]:
    image = tmp_path / "vol.img"
    create_volume(image, 64 * MiB, client)
    v = open_volume(image, client)
    yield v
    v.close()


@pytest.fixture
def nbd(volume: Volume, tmp_path: Path) -> Iterator[ServerThread]:
    t = ServerThread(NbdServer(volume, name="vol", description="test volume"),
                     tmp_path / "nbd.sock")
    yield t
    t.close()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path / "var")
    acct = c.json("account", "create", "--name", "ops")
    c.env["SSEGW_ACCESS_KEY_ID"] = acct["accessKeyId"]
    c.env["SSEGW_SECRET_ACCESS_KEY"] = acct["secretAccessKey"]
    return c


