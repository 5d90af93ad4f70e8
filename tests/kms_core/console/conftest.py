"""One `ssegw serve` (console, KMS API, S3 proxy on moto) and one Debian chromium per test session.

The server is the real composition root started as a user starts it; tests drive the console in
the browser and check effects through the API (boto3 against the same ports). Accounts are made
and frozen through the same data directory (the account service, as `ssegw account` does).
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config

from gateway.cli import build_parser
from kms_core.embedded import Kms, KmsConfig, open_kms
from tests.serving import start, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REGION = "cn-east-1"
SECOND_POOL = "cn-beijing-5"


@dataclass
class Tenant:
    account_id: str
    access_key_id: str
    secret_access_key: str


@dataclass
class ConsoleServer:
    proc: subprocess.Popen[str]
    kms_url: str
    s3_url: str
    banner: str
    demo: Tenant
    accounts: Kms  # the same data directory, for making and freezing accounts

    @property
    def console(self) -> str:
        return f"{self.kms_url}/console"

    def tenant(self, prefix: str = "t") -> Tenant:
        info, creds = self.accounts.accounts.create_account(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return Tenant(info.account_id, creds.access_key_id, creds.secret_access_key)

    def kms(self, t: Tenant, region: str = REGION) -> Any:
        return boto3.client("kms", endpoint_url=self.kms_url, region_name=region,
                            aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
                            config=Config(retries={"max_attempts": 1}))

    def s3(self, t: Tenant) -> Any:
        return boto3.client("s3", endpoint_url=self.s3_url, region_name=REGION,
                            aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
                            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    data_dir = tmp_path_factory.mktemp("console") / "var"
    pools = ["--region", REGION]
    if isinstance(build_parser().parse_args(["serve", "--region", "a", "--region", "b"]).region, list):
        pools += ["--region", SECOND_POOL]  # a second pool for the drop-down, where serve takes one
    # Objects need not outlive the session: moto, no SeaweedFS.
    served = start(data_dir, *pools, backend="moto-memory")
    creds = served.credentials
    account = re.search(r"demo account (\d+)", served.banner)
    assert account, served.banner
    demo = Tenant(account.group(1), creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
    accounts = open_kms(KmsConfig(data_dir=data_dir))
    yield ConsoleServer(served.proc, served.url, served.s3_url, served.banner, demo, accounts)
    try:
        stop(served, timeout=30)
    finally:
        accounts.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Per module, not per session: Playwright's sync API keeps its event loop running in the
    # main thread while it is open, and every later test there calling asyncio.run would fail
    # (serially the console's modules happened to run last; in parallel they do not).
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US",
                              extra_http_headers={"Accept-Language": "en-US,en;q=0.9"},
                              accept_downloads=True)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def sign_in(page: Any, server: ConsoleServer, t: Tenant) -> None:
    page.goto(f"{server.console}/signin")
    page.get_by_label("Access key ID").fill(t.access_key_id)
    page.get_by_label("Secret access key").fill(t.secret_access_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.console}/keys")


@pytest.fixture
def tenant(server: ConsoleServer) -> Tenant:
    return server.tenant()


@pytest.fixture
def signed_in(page: Any, server: ConsoleServer, tenant: Tenant) -> Any:
    sign_in(page, server, tenant)
    return page
