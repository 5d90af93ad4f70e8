"""The proxy's backend client: names and bytes reach the backend exactly, failures are 503s."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.s3.app import create_app
from gateway.s3.backend import Backend, BackendConfig
from gateway.s3.proxy import S3Proxy
from gateway.serve import _credentials, _kms_clients
from kms_core.embedded import Kms
from tests.gateway.s3.conftest import BACKEND_KEY, S3Stack, _run, bucket_name
from tests.serving import free_port

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS

# Every character class that URL quoting treats specially, plus non-ASCII and a pre-quoted look.
ODD_KEYS = ["a b+c", "dir/sub dir/x~y", "100%25 sure", "q?x=1&y=2#frag", "ünï/cødé ✓", "semi;colon,comma:'s'",
            "(paren)[bracket]{brace}!*@$", "trailing/", "dots/../and/./"]


def test_odd_key_names_round_trip_under_their_own_names(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    keys = ODD_KEYS
    if s3.store.name == "seaweedfs":
        # SeaweedFS keeps objects as filer paths: it refuses `.`/`..` segments (the proxy answers
        # with the store's own error) and keeps a key ending in / as a directory, without a body.
        keys = [k for k in ODD_KEYS if k not in ("dots/../and/./", "trailing/")]
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=b, Key="dots/../and/./", Body=b"x")
        assert e.value.response["Error"]["Code"] == "InvalidRequest"
    for i, key in enumerate(keys):
        c.put_object(Bucket=b, Key=key, Body=f"body {i}".encode())
    stored = {o["Key"] for o in s3.backend.list_objects_v2(Bucket=b)["Contents"]}
    assert stored == set(keys)
    listed = {o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]}
    assert listed == set(keys)
    for i, key in enumerate(keys):
        assert c.get_object(Bucket=b, Key=key)["Body"].read() == f"body {i}".encode()
        assert c.head_object(Bucket=b, Key=key)["ContentLength"] == len(f"body {i}")


def test_content_encoding_describes_the_plaintext_and_is_never_applied(s3: S3Stack) -> None:
    # The backend answers with the object's Content-Encoding; a client that decoded it would
    # try to gunzip ciphertext.
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    packed = gzip.compress(b"hello " * 10_000)
    for key, body in (("small.gz", packed), ("large.gz", packed * 300)):
        c.put_object(Bucket=b, Key=key, Body=body, ContentEncoding="gzip")
        got = c.get_object(Bucket=b, Key=key)
        assert got["ContentEncoding"] == "gzip"
        assert got["Body"].read() == body


def test_backend_down_is_a_503_in_s3_xml(s3: S3Stack) -> None:
    t = s3.tenant()
    dead = Backend(BackendConfig(f"http://127.0.0.1:{free_port()}", *BACKEND_KEY))
    server, port = _run(create_app(S3Proxy(dead, _kms_clients(s3.kms, None, None)), _credentials(s3.kms)), None)
    try:
        c: Any = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="cn-east-1",
                              aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
                              config=Config(retries={"max_attempts": 1}))
        call: Callable[[], object]
        for call in (lambda: c.list_objects_v2(Bucket="bucket-x"),
                     lambda: c.put_object(Bucket="bucket-x", Key="k", Body=b"x" * 1000)):
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert e.value.response["Error"]["Code"] == "ServiceUnavailable"
    finally:
        server.should_exit = True


@pytest.fixture
def tls_moto(tls_cert: tuple[Path, Path]) -> Iterator[str]:
    """moto behind TLS with the test certificate, as production backends are HTTPS.

    Its own process (moto's `moto_server -c/-k`), not a thread of the test process: a werkzeug
    TLS server sharing the GIL with the proxy and the client broke off large answers under load.
    """
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port),
                             "-c", str(tls_cert[0]), "-k", str(tls_cert[1])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server with TLS did not start") from None
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_https_backend_verified_with_its_ca(kms: Kms, tls_moto: str, tls_cert: tuple[Path, Path]) -> None:
    # Its own TLS moto is the store (not the `store` fixture), so it runs once, not per store.
    _, t = kms.accounts.create_account(f"t-{uuid.uuid4().hex[:8]}")
    trusted = Backend(BackendConfig(tls_moto, *BACKEND_KEY, verify_tls=str(tls_cert[0])))
    untrusted = Backend(BackendConfig(tls_moto, *BACKEND_KEY))  # system CAs only
    served = [_run(create_app(S3Proxy(be, _kms_clients(kms, None, None)), _credentials(kms)), None)
              for be in (trusted, untrusted)]
    servers, ports = [s for s, _ in served], [p for _, p in served]
    try:
        c, u = (boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="cn-east-1",
                             aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
                             config=Config(retries={"max_attempts": 1})) for port in ports)
        b = bucket_name()
        c.create_bucket(Bucket=b)
        small, large = os.urandom(1000), os.urandom(17 * 1024 * 1024 + 5)  # buffered and streamed PUTs
        c.put_object(Bucket=b, Key="small", Body=small)
        c.put_object(Bucket=b, Key="large", Body=large)
        up = c.create_multipart_upload(Bucket=b, Key="mp")
        parts = [c.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=large[:5 * 2**20 + n])
                 for n in (1, 2)]
        c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": p["ETag"]} for n, p in zip((1, 2), parts, strict=True)]})
        # Under load moto's TLS server now and then ends a large answer early; the proxy resumes
        # it (resume.py), so the client still gets every byte.
        assert c.get_object(Bucket=b, Key="small")["Body"].read() == small
        assert c.get_object(Bucket=b, Key="large")["Body"].read() == large
        assert c.get_object(Bucket=b, Key="mp")["Body"].read() == large[:5 * 2**20 + 1] + large[:5 * 2**20 + 2]
        with pytest.raises(ClientError) as e:  # a certificate it cannot verify: refused, not trusted
            u.get_object(Bucket=b, Key="small")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        for server in servers:
            server.should_exit = True
