"""The KMS HTTP API on a loopback port, in a thread of the test process (not a test module:
the `kms_server` fixture of tests/conftest.py starts it; tests import its types from here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
import uvicorn
from botocore.config import Config

from kms_core.embedded import Kms
from kms_core.http.app import create_app
from tests.serving import free_port


@dataclass
class Tenant:
    account_id: str
    access_key_id: str
    secret_access_key: str


@dataclass
class KmsServer:
    url: str
    kms: Kms
    region: str = "cn-east-1"

    def tenant(self, name: str) -> Tenant:
        info, creds = self.kms.accounts.create_account(name)
        return Tenant(info.account_id, creds.access_key_id, creds.secret_access_key)

    def boto(self, t: Tenant, **config: object) -> object:
        return boto3.client(
            "kms", endpoint_url=self.url, region_name=self.region,
            aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
            config=Config(retries={"max_attempts": 1}, **config),
        )


@contextmanager
def serve_kms(kms: Kms) -> Iterator[KmsServer]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(kms), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "KMS server did not start"
        time.sleep(0.02)
    try:
        yield KmsServer(f"http://127.0.0.1:{port}", kms)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
