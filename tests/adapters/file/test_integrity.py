"""What the backing store holds and what happens when it is damaged, re-keyed or crashed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.file import contentenc as ce
from tests.adapters.file.conftest import SfsCli, make_mount

MARKER = b"PLAINTEXT-MARKER-7f3a"
NAME = "secret-name-of-a-file"


def backing_files(backing: Path) -> list[Path]:
    return [p for p in backing.rglob("*") if p.is_file() and not p.is_symlink()]


def find_backing(backing: Path, size: int) -> Path:
    found = [p for p in backing_files(backing) if p.stat().st_size == ce.cipher_size(size)]
    assert len(found) == 1, found
    return found[0]


def check(cli: SfsCli, backing: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    p = cli.run("fs", "check", str(backing), ok=False)
    assert p.returncode in (0, 2), p.stderr
    return p.returncode, json.loads(p.stdout)


def test_backing_store_holds_no_plaintext(sfs_cli: SfsCli, tmp_path: Path) -> None:
    m = make_mount(sfs_cli, tmp_path)
    try:
        d = m.mnt / f"{NAME}-dir"
        d.mkdir()
        (d / NAME).write_bytes(MARKER * 5000)
        (d / (NAME * 10)[:250]).write_bytes(MARKER)  # long name
        os.symlink(f"/{NAME}/target", d / "link")
        (m.mnt / "zeros").write_bytes(bytes(100_000))
    finally:
        m.unmount()
    for p in m.backing.rglob("*"):
        assert NAME not in p.name and "link" not in p.name and "zeros" not in p.name
        if p.is_symlink():
            assert NAME not in os.readlink(p)
        elif p.is_file():
            data = p.read_bytes()
            assert MARKER not in data and NAME.encode() not in data
            assert b"\0" * 64 not in data or p.name == "sfs.conf"  # zeros are encrypted too


def test_changed_byte_gives_eio_for_that_block_and_check_names_it(
    sfs_cli: SfsCli, tmp_path: Path
) -> None:
    m = make_mount(sfs_cli, tmp_path)
    size = 10 * ce.BLOCK_SIZE + 123
    content = os.urandom(size)
    (m.mnt / "dir").mkdir()
    (m.mnt / "dir" / "victim").write_bytes(content)
    (m.mnt / "other").write_bytes(b"fine")
    code, report = check(sfs_cli, m.backing)
    assert code == 0 and report["ok"] and report["files"] == 2
    m.unmount()

    target = find_backing(m.backing, size)
    with open(target, "r+b") as f:
        f.seek(ce.cipher_offset(3) + 100)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))

    m = make_mount(sfs_cli, tmp_path)
    try:
        with open(m.mnt / "dir" / "victim", "rb", buffering=0) as f:
            assert f.read(3 * ce.BLOCK_SIZE) == content[: 3 * ce.BLOCK_SIZE]
            with pytest.raises(OSError) as e:
                f.read(ce.BLOCK_SIZE)
            assert e.value.errno == errno.EIO
            f.seek(4 * ce.BLOCK_SIZE)
            assert f.read() == content[4 * ce.BLOCK_SIZE :]
        assert (m.mnt / "other").read_bytes() == b"fine"
    finally:
        m.unmount()
    code, report = check(sfs_cli, m.backing)
    assert code == 2 and not report["ok"]
    assert [(d["path"], d["what"], d.get("block")) for d in report["damage"]] == [
        ("/dir/victim", "block", 3)
    ]


def test_damaged_names_and_headers_are_reported(sfs_cli: SfsCli, tmp_path: Path) -> None:
    m = make_mount(sfs_cli, tmp_path)
    (m.mnt / "a").write_bytes(b"x" * 100)
    (m.mnt / "b").write_bytes(b"y" * 200)
    m.unmount()
    a = find_backing(m.backing, 100)
    b = find_backing(m.backing, 200)
    a.rename(a.with_name(a.name[:-2] + ("AA" if a.name[-2:] != "AA" else "BB")))
    with open(b, "r+b") as f:
        f.write(b"\x09")  # unknown header version
    code, report = check(sfs_cli, m.backing)
    assert code == 2
    assert sorted((d["what"], d["path"]) for d in report["damage"]) == [
        ("header", "/b"), ("name", "/?")]


def test_kill_9_leaves_at_most_the_blocks_in_flight_damaged(
    sfs_cli: SfsCli, tmp_path: Path
) -> None:
    m = make_mount(sfs_cli, tmp_path)
    chunk = 64 * 1024
    (m.mnt / "busy").write_bytes(bytes(16 * chunk))
    code = (
        "import os,sys\n"
        "fd=os.open(sys.argv[1],os.O_RDWR)\n"
        "i=0\n"
        "while True:\n"
        "    os.pwrite(fd, os.urandom(64*1024), (i%16)*64*1024); i+=1\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(m.mnt / "busy")],
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    m.kill9()
    writer.wait(timeout=30)
    code_, report = check(sfs_cli, m.backing)
    # One writer, so one 64 KiB write request in flight: whatever is damaged lies in it.
    blocks = {d["block"] for d in report["damage"]}
    assert all(d["path"] == "/busy" and d["what"] == "block" for d in report["damage"])
    assert len({b // 16 for b in blocks}) <= 1, blocks
    m2 = make_mount(sfs_cli, tmp_path)
    try:
        assert (m2.mnt / "busy").stat().st_size == 16 * chunk
        with open(m2.mnt / "busy", "rb", buffering=0) as f:
            for i in range(16):
                if i not in {b // 16 for b in blocks}:
                    assert len(f.read(chunk)) == chunk
                else:
                    f.seek(chunk, os.SEEK_CUR)
    finally:
        m2.unmount()


def test_rekey_reseals_the_master_key(sfs_cli: SfsCli, tmp_path: Path) -> None:
    m = make_mount(sfs_cli, tmp_path)
    (m.mnt / "kept").write_bytes(b"across the rekey")
    m.unmount()
    before = json.loads((m.backing / "sfs.conf").read_text())
    key = sfs_cli.json("kms", "create-key", "--alias", f"files-{tmp_path.name}")
    out = sfs_cli.json("fs", "rekey", str(m.backing), "--to-key", f"files-{tmp_path.name}")
    after = json.loads((m.backing / "sfs.conf").read_text())
    assert out["cmkUuid"] == key["cmkUuid"] == after["cmkUuid"] != before["cmkUuid"]
    assert after["sealedMasterKey"] != before["sealedMasterKey"]
    assert after["fsId"] == before["fsId"]
    m = make_mount(sfs_cli, tmp_path)
    try:
        assert (m.mnt / "kept").read_bytes() == b"across the rekey"
    finally:
        m.unmount()
    # a disabled CMK stops the mount, with the KMS's error
    sfs_cli.json("kms", "disable-key", key["cmkUuid"])
    p = sfs_cli.run("fs", "mount", str(m.backing), str(m.mnt), ok=False)
    assert p.returncode == 1 and json.loads(p.stderr)["errorCode"] == "Disabled"
    assert not os.path.ismount(m.mnt)


def test_init_with_a_user_key_and_a_swapped_config_is_refused(
    sfs_cli: SfsCli, tmp_path: Path
) -> None:
    key = sfs_cli.json("kms", "create-key", "--alias", f"user-{tmp_path.name}")
    one = sfs_cli.json("fs", "init", str(tmp_path / "one"), "--key", key["cmkUuid"])
    two = sfs_cli.json("fs", "init", str(tmp_path / "two"))
    assert one["cmkUuid"] == key["cmkUuid"] and two["cmkUuid"] != key["cmkUuid"]
    default = sfs_cli.json("kms", "describe-key", "alias_sfs")
    assert default["cmkUuid"] == two["cmkUuid"]
    # the sealed key of one filesystem does not open another (fs id is the encryption context)
    c1 = json.loads((tmp_path / "one" / "sfs.conf").read_text())
    c2 = json.loads((tmp_path / "two" / "sfs.conf").read_text())
    c2["sealedMasterKey"] = c1["sealedMasterKey"]
    (tmp_path / "two" / "sfs.conf").chmod(0o600)
    (tmp_path / "two" / "sfs.conf").write_text(json.dumps(c2))
    p = sfs_cli.run("fs", "check", str(tmp_path / "two"), ok=False)
    assert p.returncode == 1 and "errorCode" in json.loads(p.stderr)
