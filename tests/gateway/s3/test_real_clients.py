"""Everyday S3 tools through the proxy, bytes compared end to end: the aws CLI (cp, sync, copies
between keys, after a rewrap), s3cmd, rclone, and a bucket mounted with s3fs-fuse.

The tools are installed by `make test` (Debian packages s3cmd, rclone, s3fs; awscli from the
test extras); these tests never skip for a missing tool.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.s3.rewrap import rewrap
from tests.gateway.s3.conftest import S3Stack, bucket_name

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS

MiB = 1024 * 1024
AWS = str(Path(sys.executable).parent / "aws")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: `make test` installs it (Makefile DEB_PKGS)"
    return path


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment without the machine's AWS settings (a CA bundle there breaks rclone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp), AWS_CONFIG_FILE=str(tmp / "aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp / "aws-credentials"), **extra)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> str:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd[:3]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def make_tree(root: Path) -> Path:
    """Files below, at and above the tools' multipart thresholds (5 MiB parts + odd bytes)."""
    (root / "sub" / "deeper").mkdir(parents=True)
    sizes = {"big.bin": 11 * MiB + 17, "sub/mid.bin": 5 * MiB + 3, "sub/deeper/small.txt": 10,
             "sub/empty": 0, "exactly-5MiB": 5 * MiB}
    past = time.time() - 3600  # older than any upload: S3 times have whole seconds, files not
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
        os.utime(root / name, (past, past))
    return root


def same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


def test_aws_cli_cp_sync_copy_between_keys_and_rewrap(s3: S3Stack, tree: Path, tmp_path: Path) -> None:
    t = s3.tenant()
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID=t.access_key_id, AWS_SECRET_ACCESS_KEY=t.secret_access_key,
                    AWS_DEFAULT_REGION="cn-east-1", AWS_CA_BUNDLE=str(s3.cert))
    b = bucket_name()

    def aws(*args: str) -> str:
        quiet = ["--only-show-errors"] if args[0] == "s3" and args[1] in ("cp", "sync") else []
        return run([AWS, "--endpoint-url", s3.url, *args, *quiet], env)

    c: Any = s3.client(t)
    c.create_bucket(Bucket=b)
    aws("s3", "sync", str(tree), f"s3://{b}/tree")
    aws("s3", "cp", str(tree / "big.bin"), f"s3://{b}/single/big.bin")
    stored = s3.backend.head_object(Bucket=b, Key="tree/big.bin")
    assert stored["ETag"].endswith('-2"') and stored["Metadata"]["ssegw-mp"] == "1"  # 8 MiB parts
    listing = aws("s3", "ls", "--recursive", f"s3://{b}/")
    assert f"{11 * MiB + 17} tree/big.bin" in listing and f"{5 * MiB + 3} tree/sub/mid.bin" in listing
    assert f"{11 * MiB + 17} single/big.bin" in listing
    down = tmp_path / "down"
    aws("s3", "sync", f"s3://{b}/tree", str(down))
    same_tree(tree, down)
    assert aws("s3", "sync", str(tree), f"s3://{b}/tree", "--dryrun") == ""  # sizes match: nothing to do
    aws("s3", "cp", f"s3://{b}/single/big.bin", str(tmp_path / "one.bin"))
    assert filecmp.cmp(tree / "big.bin", tmp_path / "one.bin", shallow=False)

    # Copies to another key: small ones by CopyObject, big ones part by part (UploadPartCopy).
    key = s3.kms.service.create_key(t.caller, alias="cli-copies").key_id
    aws("s3", "cp", "--recursive", f"s3://{b}/tree", f"s3://{b}/copies", "--sse", "aws:kms",
        "--sse-kms-key-id", "alias/cli-copies")
    head = c.head_object(Bucket=b, Key="copies/big.bin")
    assert head["SSEKMSKeyId"].endswith(key) and head["ContentLength"] == 11 * MiB + 17

    # Rewrap everything under yet another key; the old one is disabled; read it all back.
    other = s3.kms.service.create_key(t.caller).key_id
    with open(os.devnull, "w") as quiet:
        summary = rewrap(c, b, "", other, progress_out=quiet)
    assert summary.counts["failed"] == 0 and summary.counts["rewrapped"] == 2 * 5 + 1
    s3.kms.service.disable_key(t.caller, key)
    copies = tmp_path / "copies"
    aws("s3", "sync", f"s3://{b}/copies", str(copies))
    same_tree(tree, copies)
    assert c.head_object(Bucket=b, Key="tree/sub/mid.bin")["SSEKMSKeyId"].endswith(other)


def test_s3cmd(s3: S3Stack, tree: Path, tmp_path: Path) -> None:
    t = s3.tenant()
    host = s3.http_url.removeprefix("http://")
    cfg = tmp_path / "s3cfg"
    cfg.write_text(f"[default]\naccess_key = {t.access_key_id}\nsecret_key = {t.secret_access_key}\n"
                   f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nbucket_location = cn-east-1\n"
                   "signature_v2 = False\nmultipart_chunk_size_mb = 5\n")
    env = clean_env(tmp_path)
    b = bucket_name()

    def s3cmd(*args: str) -> str:
        return run([tool("s3cmd"), "-c", str(cfg), "--no-progress", *args], env)

    s3cmd("mb", f"s3://{b}")
    s3cmd("sync", f"{tree}/", f"s3://{b}/tree/")
    assert s3.backend.head_object(Bucket=b, Key="tree/big.bin")["ETag"].endswith('-3"')  # 5 MiB parts
    listing = s3cmd("ls", "--recursive", f"s3://{b}/")
    assert f"{11 * MiB + 17}" in listing and f"{5 * MiB + 3}" in listing
    down = tmp_path / "down"
    s3cmd("sync", f"s3://{b}/tree/", f"{down}/")
    same_tree(tree, down)
    s3cmd("get", f"s3://{b}/tree/big.bin", str(tmp_path / "got.bin"))
    assert filecmp.cmp(tree / "big.bin", tmp_path / "got.bin", shallow=False)
    s3cmd("cp", f"s3://{b}/tree/sub/mid.bin", f"s3://{b}/copy.bin")
    s3cmd("get", f"s3://{b}/copy.bin", str(tmp_path / "copy.bin"))
    assert filecmp.cmp(tree / "sub" / "mid.bin", tmp_path / "copy.bin", shallow=False)


def test_rclone(s3: S3Stack, tree: Path, tmp_path: Path) -> None:
    t = s3.tenant()
    conf = tmp_path / "rclone.conf"
    common = (f"type = s3\nprovider = Other\naccess_key_id = {t.access_key_id}\n"
              f"secret_access_key = {t.secret_access_key}\nregion = cn-east-1\nforce_path_style = true\n")
    # Two remotes: 5 MiB parts for anything above 5 MiB, and rclone's defaults (single PUTs up
    # to 200 MiB, whose ETag must not pass for a wrong MD5), over HTTPS with our CA.
    conf.write_text(f"[enc]\n{common}endpoint = {s3.http_url}\nupload_cutoff = 5M\nchunk_size = 5M\n\n"
                    f"[tls]\n{common}endpoint = {s3.url}\n")
    env = clean_env(tmp_path)
    b = bucket_name()

    def rclone(*args: str) -> str:
        return run([tool("rclone"), "--config", str(conf), *args], env)

    rclone("mkdir", f"enc:{b}")
    rclone("copy", str(tree), f"enc:{b}/tree")
    assert s3.backend.head_object(Bucket=b, Key="tree/big.bin")["ETag"].endswith('-3"')
    assert "0 differences found" in rclone("check", str(tree), f"enc:{b}/tree")
    down = tmp_path / "down"
    rclone("copy", f"enc:{b}/tree", str(down))
    same_tree(tree, down)
    rclone("copy", "--ca-cert", str(s3.cert), str(tree), f"tls:{b}/single")
    assert "0 differences found" in rclone("check", "--ca-cert", str(s3.cert), str(tree), f"tls:{b}/single")
    got = subprocess.run([tool("rclone"), "--config", str(conf), "cat", "--offset", str(5 * MiB - 3), "--count",
                          "10", f"enc:{b}/tree/big.bin"], env=env, capture_output=True, timeout=60).stdout
    assert got == (tree / "big.bin").read_bytes()[5 * MiB - 3:5 * MiB + 7]


@pytest.fixture
def mounted(s3: S3Stack, tmp_path: Path) -> Iterator[tuple[Any, str, Path, Any]]:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{t.access_key_id}:{t.secret_access_key}\n")
    passwd.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mount() -> None:
        run([tool("s3fs"), b, str(mnt), "-o", f"passwd_file={passwd}", "-o", f"url={s3.http_url}",
             "-o", "use_path_request_style", "-o", "endpoint=cn-east-1", "-o", "sigv4",
             "-o", "multipart_size=5", "-o", "stat_cache_expire=1"], clean_env(tmp_path))
        deadline = time.monotonic() + 10
        while not os.path.ismount(mnt):
            assert time.monotonic() < deadline, "s3fs did not mount"
            time.sleep(0.05)

    def unmount() -> None:
        subprocess.run(["fusermount3" if shutil.which("fusermount3") else "umount", "-u", str(mnt)]
                       if shutil.which("fusermount3") else ["umount", str(mnt)], check=True, timeout=60)

    mount()
    try:
        yield c, b, mnt, (mount, unmount)
    finally:
        if os.path.ismount(mnt):
            unmount()


def test_s3fs_mount(mounted: tuple[Any, str, Path, Any], tree: Path, tmp_path: Path) -> None:
    c, b, mnt, (mount, unmount) = mounted
    shutil.copytree(tree, mnt / "tree")
    unmount()  # everything written is flushed to the proxy; nothing is read from a cache
    stored = c.get_object(Bucket=b, Key="tree/big.bin")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256((tree / "big.bin").read_bytes()).digest()
    mount()
    same_tree(tree, mnt / "tree")
    # Overwrite bytes in the middle of a multipart file: s3fs re-uploads it, copying the parts
    # it did not change (UploadPartCopy), then appends.
    expected = bytearray((tree / "big.bin").read_bytes())
    with open(mnt / "tree" / "big.bin", "r+b") as f:
        f.seek(7 * MiB)
        f.write(b"CHANGED THROUGH THE MOUNT")
        f.seek(0, 2)
        f.write(b"appended")
    expected[7 * MiB:7 * MiB + 25] = b"CHANGED THROUGH THE MOUNT"
    expected += b"appended"
    (mnt / "tree" / "sub" / "new.txt").write_text("written in place")
    os.rename(mnt / "tree" / "sub" / "mid.bin", mnt / "tree" / "moved.bin")
    unmount()
    assert c.get_object(Bucket=b, Key="tree/big.bin")["Body"].read() == bytes(expected)
    assert c.get_object(Bucket=b, Key="tree/sub/new.txt")["Body"].read() == b"written in place"
    assert c.get_object(Bucket=b, Key="tree/moved.bin")["Body"].read() == (tree / "sub" / "mid.bin").read_bytes()
    mount()
    assert (mnt / "tree" / "big.bin").read_bytes() == bytes(expected)
    assert sorted(p.name for p in (mnt / "tree").iterdir()) == ["big.bin", "exactly-5MiB", "moved.bin", "sub"]
