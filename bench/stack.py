"""What the S3 benchmarks share: a backend store process and `ssegw serve` in front of it.

The store is moto's S3 server or SeaweedFS (`--backend`, `weed server` as `ssegw serve` embeds
it). Both run as separate processes, so the proxy, the backend and the client each have their
own interpreter (and GIL), as they would in production.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKEND_KEY = ("bench", "bench-secret")
BACKENDS = ("moto", "seaweedfs")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    proxy_url: str
    kms_url: str
    backend_url: str
    credentials: dict[str, str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)  # the store's, then serve's
    backend_key: tuple[str, str] = BACKEND_KEY  # the store's own key: the direct client's

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def start(data_dir: Path, backend: str = "moto") -> Stack:
    """The store (moto or SeaweedFS) on free ports, then `ssegw serve` with it as --backend-url;
    waits for the banner."""
    s3_port, kms_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    if backend == "seaweedfs":
        from gateway.seaweed import EmbeddedSeaweed, SeaweedConfig

        weed = EmbeddedSeaweed(SeaweedConfig(data_dir.parent / "seaweedfs")).start()
        assert weed.process is not None and weed.credentials is not None
        stack = Stack(f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{kms_port}", weed.url, {},
                      backend_key=(weed.credentials.access_key_id, weed.credentials.secret_access_key))
        stack.procs.append(weed.process)  # type: ignore[arg-type]  # its output is never read
    else:
        moto_port = free_port()
        stack = Stack(f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{kms_port}",
                      f"http://127.0.0.1:{moto_port}", {})
        stack.procs.append(subprocess.Popen(
            [sys.executable, "-c", "from moto.server import ThreadedMotoServer as S; import time;"
                                   f"S(port={moto_port}).start(); time.sleep(1e6)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir),
         "--s3-port", str(s3_port), "--kms-port", str(kms_port), "--backend-url", stack.backend_url,
         "--backend-access-key", stack.backend_key[0], "--backend-secret-key", stack.backend_key[1]],
        # cwd: `-m` puts the working directory first on sys.path, ahead of PYTHONPATH, so a bench
        # of another tree (a worktree's bench/) would otherwise serve the caller's tree's code.
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    stack.procs.append(serve)
    banner = ""
    assert serve.stdout is not None
    while "AWS_DEFAULT_REGION" not in banner:
        line = serve.stdout.readline()
        if not line:
            stack.stop()
            raise RuntimeError(banner)
        banner += line
    stack.credentials = dict(re.findall(r"export (\w+)=(\S+)", banner))
    return stack


def passthrough(backend_url: str, work: Path) -> tuple[str, subprocess.Popen[str]]:
    """HAProxy (Debian's, its default buffers) relaying HTTP to the store, no encryption: what a
    native proxy adds to a store's figures on this machine, beside what ours adds. (url, process)"""
    port = free_port()
    target = backend_url.removeprefix("http://")
    cfg = work / "haproxy.cfg"
    cfg.write_text("global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n"
                   f"  timeout server 60s\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n"
                   f"backend b\n  server store {target}\n")
    proc = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"http://127.0.0.1:{port}", proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("haproxy did not start")
