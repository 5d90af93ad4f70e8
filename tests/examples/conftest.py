"""One `ssegw serve` for the examples that talk to a running gateway, as their readers would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3

ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    kms_url: str
    s3_url: str
    env: dict[str, str]  # the AWS_* exports the banner prints, as a reader pastes them


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    kms_port, s3_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path_factory.mktemp("gw")),
         "--kms-port", str(kms_port), "--s3-port", str(s3_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    assert proc.stdout is not None
    banner, deadline = "", time.monotonic() + 90
    while "AWS_DEFAULT_REGION" not in banner:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"ssegw serve exited: {banner}"
        banner += line
        assert time.monotonic() < deadline, banner
    exports = dict(re.findall(r"export (\w+)=(\S+)", banner))
    kms_url, s3_url = f"http://127.0.0.1:{kms_port}", f"http://127.0.0.1:{s3_port}"
    for _ in range(200):
        try:
            urllib3.request("GET", kms_url + "/health", retries=False, timeout=1)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.05)
    yield Gateway(kms_url, s3_url, {**env, **exports, "SSEGW_KMS_URL": kms_url, "SSEGW_S3_URL": s3_url})
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
