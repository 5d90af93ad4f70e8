"""A volume mounted for real: nbdfuse + losetup + mkfs.ext4 + mount, then served again.

This machine has no nbd kernel module and no device-mapper; /dev/fuse and loop devices are
how a block export becomes a mountable filesystem (DESIGN.md)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.adapters.block.helpers import Cli, tool, wait_for


@contextmanager
def mounted(cli: Cli, image: Path, work: Path, *, mkfs: bool) -> Iterator[Path]:
    sock, fuse_dir, mnt = work / "s.sock", work / "fuse", work / "mnt"
    fuse_dir.mkdir(exist_ok=True)
    mnt.mkdir(exist_ok=True)
    server = cli.serve(image, sock)
    fuse = subprocess.Popen(["nbdfuse", str(fuse_dir / "disk"), "--unix", str(sock)],
                            stderr=subprocess.PIPE)
    loop = ""
    is_mounted = False
    try:
        wait_for(lambda: (fuse_dir / "disk").exists(), what="nbdfuse")
        loop = tool("losetup", "-f", "--show", str(fuse_dir / "disk")).decode().strip()
        if mkfs:
            tool("mkfs.ext4", "-q", "-F", loop)
        tool("mount", loop, str(mnt))
        is_mounted = True
        yield mnt
    finally:
        if is_mounted:
            subprocess.run(["umount", str(mnt)], check=False)
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        subprocess.run(["fusermount3", "-u", str(fuse_dir)], check=False)
        try:
            fuse.wait(30)
        except subprocess.TimeoutExpired:
            fuse.kill()
        server.terminate()
        server.wait(30)


def test_ext4_on_the_volume_survives_a_restart(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "v.img"
    cli.json("volume", "create", str(image), "--size", "64M")
    files = {f"f{i}.bin": os.urandom(256 << 10 if i else 3 << 20) for i in range(5)}
    with mounted(cli, image, tmp_path, mkfs=True) as mnt:
        (mnt / "dir").mkdir()
        for name, data in files.items():
            (mnt / "dir" / name).write_bytes(data)
        (mnt / "hello.txt").write_text("hello from an encrypted volume\n")
        os.sync()
    with mounted(cli, image, tmp_path, mkfs=False) as mnt:
        assert (mnt / "hello.txt").read_text() == "hello from an encrypted volume\n"
        for name, data in files.items():
            assert hashlib.sha256((mnt / "dir" / name).read_bytes()).digest() == \
                hashlib.sha256(data).digest(), name
    raw = image.read_bytes()
    assert b"hello from an encrypted volume" not in raw
    assert files["f1.bin"][:4096] not in raw
