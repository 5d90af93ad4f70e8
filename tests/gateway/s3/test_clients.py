"""Real S3 clients through the proxy: the aws CLI both ways, and a big object in bounded memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.gateway.s3.conftest import S3Stack, bucket_name
from tests.serving import free_port, start, stop

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS

ROOT = Path(__file__).parents[3]
AWS = str(Path(sys.executable).parent / "aws")


def test_aws_cli_cp_both_ways(s3: S3Stack, tmp_path: Path) -> None:
    t = s3.tenant()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": t.access_key_id, "AWS_SECRET_ACCESS_KEY": t.secret_access_key,
           "AWS_DEFAULT_REGION": "cn-east-1", "AWS_CA_BUNDLE": str(s3.cert)}
    b = bucket_name()

    def aws(*args: str) -> str:
        p = subprocess.run([AWS, "--endpoint-url", s3.url, *args], env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout

    aws("s3", "mb", f"s3://{b}")
    src = tmp_path / "report.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    aws("s3", "cp", str(src), f"s3://{b}/reports/report.bin")
    assert "report.bin" in aws("s3", "ls", f"s3://{b}/reports/")
    back = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{b}/reports/report.bin", str(back))
    assert back.read_bytes() == src.read_bytes()
    stored = s3.backend.get_object(Bucket=b, Key="reports/report.bin")["Body"].read()
    assert src.read_bytes()[:4096] not in stored


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_256_mib_object_in_bounded_memory(tmp_path: Path) -> None:
    """The proxy streams: its peak RSS grows by far less than the object it carries."""
    moto_port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", "from moto.server import ThreadedMotoServer as S; import time;"
                             f"S(port={moto_port}).start(); time.sleep(3600)"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = start(tmp_path / "var", "--backend-url", f"http://127.0.0.1:{moto_port}", "--backend-access-key", "k",
                   "--backend-secret-key", "s", backend=None)
    serve = served.proc
    try:
        creds = served.credentials
        c: Any = boto3.client("s3", endpoint_url=served.s3_url, region_name="cn-east-1",
                              aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                              config=Config(retries={"max_attempts": 1}))
        for _ in range(50):  # the moto process may still be starting
            try:
                c.create_bucket(Bucket="big-objects")
                break
            except ClientError:
                time.sleep(0.2)
        c.put_object(Bucket="big-objects", Key="warm", Body=b"x" * 1024)
        c.get_object(Bucket="big-objects", Key="warm")["Body"].read()
        base = _rss_kib(serve.pid, "VmRSS")
        size = 256 * 1024 * 1024
        src = tmp_path / "big.bin"
        want = hashlib.md5()
        with src.open("wb") as f:
            for _ in range(size // (4 * 1024 * 1024)):
                block = os.urandom(4 * 1024 * 1024)
                want.update(block)
                f.write(block)
        with src.open("rb") as f:
            c.put_object(Bucket="big-objects", Key="big", Body=f)
        src.unlink()
        got = c.get_object(Bucket="big-objects", Key="big")
        assert got["ContentLength"] == size
        have, stream = hashlib.md5(), got["Body"]
        while piece := stream.read(4 * 1024 * 1024):
            have.update(piece)
        assert have.hexdigest() == want.hexdigest()
        peak = _rss_kib(serve.pid, "VmHWM")
        assert (peak - base) < 64 * 1024, f"RSS grew by {(peak - base) // 1024} MiB"
    finally:
        moto.kill()
        stop(served, timeout=30)
        moto.wait(timeout=30)
