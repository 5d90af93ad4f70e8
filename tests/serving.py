"""`ssegw serve` started as a user starts it, for the tests of every package.

Not a test module: the tests of the gateway, the adapters, the console and the examples import
`start`, `stop` and `free_port` from here (never from each other or another directory's conftest).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from gateway.seaweed import listen_port

ROOT = Path(__file__).parents[1]
# The banner's last line: once it is out, the demo account and every address have been printed.
_BANNER_END = "aws kms list-keys"


def free_port() -> int:
    """A loopback port to hand a server started later: chosen where no outgoing connection can
    take it meanwhile (gateway.seaweed.listen_port)."""
    return listen_port("127.0.0.1")


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str  # the KMS API (and console) address
    data_dir: Path
    env: dict[str, str]  # os.environ with PYTHONPATH and the AWS_* exports the banner prints
    s3_url: str = ""
    banner: str = ""
    output: list[str] = field(default_factory=list)  # what the server printed after its banner
    log: Path | None = None  # its stderr, when `start` was given a file for it

    @property
    def credentials(self) -> dict[str, str]:
        return dict(re.findall(r"export (\w+)=(\S+)", self.banner))


def _wait_listening(url: str, deadline: float) -> None:
    # Any HTTP answer will do (the S3 port answers /health without credentials too).
    while True:
        try:
            urllib3.request("GET", url + "/health", retries=False, timeout=1)
            return
        except urllib3.exceptions.HTTPError:
            assert time.monotonic() < deadline, f"{url} is not listening"
            time.sleep(0.05)


def start(data_dir: Path, *extra: str, backend: str | None = "moto-memory", timeout: float = 90,
          stderr: Path | None = None) -> Served:
    """`ssegw serve` on free ports, returned once both ports answer.

    KMS tests keep objects in moto (`backend="moto-memory"`: SeaweedFS takes seconds to start
    and to stop); the tests of stored objects pass `backend="seaweedfs"`, and tests with their
    own store pass `backend=None` and `--backend-url ...` in `extra`. With `stderr`, the logs go
    to that file and only the banner to the pipe; either way the pipe is drained after the
    banner, so a chatty server never blocks on it.
    """
    port, s3_port = _option(extra, "--kms-port") or free_port(), _option(extra, "--s3-port") or free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir),
            "--kms-port", str(port), "--s3-port", str(s3_port), *extra]
    if backend is not None:
        argv += ["--backend", backend]
    err = stderr.open("w") if stderr is not None else None
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err or subprocess.STDOUT, text=True,
                                env=env, cwd=ROOT)
    finally:
        if err is not None:
            err.close()  # the child holds its own descriptor
    assert proc.stdout is not None
    banner = ""
    deadline = time.monotonic() + timeout
    while _BANNER_END not in banner:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            logs = stderr.read_text() if stderr is not None else ""
            raise AssertionError(f"ssegw serve exited with {proc.returncode}: {banner}{logs}")
        banner += line
        assert time.monotonic() < deadline, banner
    served = Served(proc, "", data_dir, env, banner=banner, log=stderr)
    threading.Thread(target=_drain, args=(proc, served.output), daemon=True).start()
    scheme = "https" if "--tls-cert" in extra else "http"
    served.url, served.s3_url = f"{scheme}://127.0.0.1:{port}", f"{scheme}://127.0.0.1:{s3_port}"
    served.env.update(served.credentials)
    if scheme == "http":  # over TLS the caller checks with its own CA
        _wait_listening(served.url, deadline)
        _wait_listening(served.s3_url, deadline)
    return served


def _option(argv: tuple[str, ...], name: str) -> int | None:
    """The value of a port option the caller chose itself (the last one wins, as in argparse)."""
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]
    return int(values[-1]) if values else None


def _drain(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line)


def stop(s: Served, timeout: float = 90) -> None:
    """SIGTERM, as a service manager stops it: the server flushes and exits cleanly."""
    s.proc.send_signal(signal.SIGTERM)
    try:
        s.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()
        raise
