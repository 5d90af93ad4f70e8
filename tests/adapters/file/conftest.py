"""Real mounts: `ssegw fs ...` as a user runs it, in subprocesses, with a real embedded KMS.

The KMS data directory and its account are made once per test session (a process per
command costs about a second); each test module mounts its own filesystem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[3]


class SfsCli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(self, *args: str, ok: bool = True, store: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        extra = ["--data-dir", str(self.data_dir)] if store else []
        p = subprocess.run([sys.executable, "-m", "gateway.cli", *args, *extra],
                           capture_output=True, text=True, env=self.env, timeout=timeout)
        if ok:
            assert p.returncode == 0, p.stderr + p.stdout
        return p

    def json(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.run(*args).stdout)
        return out


@dataclass
class Mount:
    cli: SfsCli
    backing: Path
    mnt: Path
    pid: int
    log: Path

    def unmount(self) -> None:
        """fusermount3 -u, then wait for the daemon to exit by itself."""
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=True, timeout=30)
        wait_gone(self.pid)

    def kill9(self) -> None:
        os.kill(self.pid, 9)
        wait_gone(self.pid)
        subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], timeout=30)


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # The daemon is not our child (it was forked by the CLI), so no waitpid here;
        # a zombie reparented to us would still answer kill(0): look at its state.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"mount daemon {pid} did not exit")


@pytest.fixture(scope="session")
def sfs_cli(tmp_path_factory: pytest.TempPathFactory) -> SfsCli:
    cli = SfsCli(tmp_path_factory.mktemp("sfs-kms") / "var")
    acct = cli.json("account", "create", "--name", "files")
    cli.env["SSEGW_ACCESS_KEY_ID"] = acct["accessKeyId"]
    cli.env["SSEGW_SECRET_ACCESS_KEY"] = acct["secretAccessKey"]
    return cli


def make_mount(cli: SfsCli, base: Path, *extra: str) -> Mount:
    backing, mnt = base / "backing", base / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    if not (backing / "sfs.conf").exists():
        cli.json("fs", "init", str(backing))
    log = base / "mount.log"
    info = cli.json("fs", "mount", str(backing), str(mnt), "--log", str(log), *extra)
    assert os.path.ismount(mnt)
    return Mount(cli, backing, mnt, int(info["pid"]), log)


@pytest.fixture(scope="module")
def mounted(sfs_cli: SfsCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    m = make_mount(sfs_cli, tmp_path_factory.mktemp("sfs"))
    yield m
    m.unmount()
    errors = [line for line in m.log.read_text().splitlines() if "Traceback" in line]
    assert not errors, m.log.read_text()
