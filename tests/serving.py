"""`ssegw serve` started as a user starts it, for the tests of several packages (not a test
module: test modules import `start` and `stop` from here, never from each other)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import urllib3

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    env: dict[str, str]
    s3_url: str = ""
    banner: str = ""


def start(data_dir: Path, *extra: str, backend: str = "moto-memory") -> Served:
    """`ssegw serve` on free ports; KMS tests keep objects in moto (SeaweedFS takes seconds to
    start and ~15 s to stop), the tests of stored objects pass backend="seaweedfs"."""
    port, s3_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir),
         "--kms-port", str(port), "--s3-port", str(s3_port), "--backend", backend, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    banner = ""
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while "AWS_DEFAULT_REGION" not in banner:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, f"serve exited: {banner}"
        banner += line
        assert time.monotonic() < deadline, banner
    creds = dict(re.findall(r"export (\w+)=(\S+)", banner))
    scheme = "https" if "--tls-cert" in extra else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib3.request("GET", url + "/health", retries=False, timeout=1)
            break
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
    return Served(proc, url, data_dir, {**env, **creds}, f"{scheme}://127.0.0.1:{s3_port}", banner)


def stop(s: Served) -> None:
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(timeout=90)  # an embedded SeaweedFS takes ~15 s of it
