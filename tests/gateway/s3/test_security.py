"""Authentication, tenancy, damaged objects and interrupted uploads through the proxy."""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.s3.app import create_app
from gateway.s3.backend import Backend
from gateway.s3.proxy import S3Proxy
from gateway.serve import _credentials, _kms_clients
from kms_core.sigv4 import sign_headers, signing_key
from tests.gateway.s3.checksum_refs import value_of
from tests.gateway.s3.chunked_bodies import sign_chunks, signed_body
from tests.gateway.s3.conftest import S3Stack, Tenant, _run, bucket_name
from tests.serving import free_port

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_signatures_and_tenancy(s3: S3Stack) -> None:
    alice, bob = s3.tenant(), s3.tenant()
    a: Any = s3.client(alice)
    b = bucket_name()
    a.create_bucket(Bucket=b)
    a.put_object(Bucket=b, Key="secret", Body=b"alice's")
    wrong: Any = s3.client(Tenant(alice.account_id, alice.access_key_id, "not-the-secret", alice.caller))
    with pytest.raises(ClientError) as e:
        wrong.get_object(Bucket=b, Key="secret")
    assert code(e) == "SignatureDoesNotMatch"
    unknown: Any = s3.client(Tenant("0", "SSEGUNKNOWN000000000", "x", alice.caller))
    with pytest.raises(ClientError) as e:
        unknown.list_buckets()
    assert code(e) == "InvalidAccessKeyId"
    bobc: Any = s3.client(bob)
    call: Callable[[], object]
    for call in (lambda: bobc.get_object(Bucket=b, Key="secret"),
                 lambda: bobc.put_object(Bucket=b, Key="x", Body=b"x"),
                 lambda: bobc.list_objects_v2(Bucket=b),
                 lambda: bobc.delete_object(Bucket=b, Key="secret"),
                 lambda: bobc.delete_bucket(Bucket=b),
                 lambda: bobc.get_bucket_encryption(Bucket=b)):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert bobc.list_buckets()["Buckets"] == []
    with pytest.raises(ClientError) as e:
        bobc.create_bucket(Bucket=b)
    assert code(e) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as e:
        a.create_bucket(Bucket=b)
    assert code(e) == "BucketAlreadyOwnedByYou"
    assert a.get_object(Bucket=b, Key="secret")["Body"].read() == b"alice's"
    anonymous = urllib3.request("GET", f"{s3.http_url}/{b}/secret")
    assert anonymous.status == 403 and b"AccessDenied" in anonymous.data


def test_presigned_get(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant(), https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="shared file.txt", Body=b"via a link")
    url = c.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "shared file.txt"}, ExpiresIn=60)
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"via a link"
    tampered = url.replace("shared%20file.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered)
    assert e.value.code == 403


def test_tampered_and_truncated_objects_are_never_served(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    data = os.urandom(3_000_000)  # bigger than the proxy's 1 MiB output pieces
    c.put_object(Bucket=b, Key="o", Body=data)
    raw = s3.backend.get_object(Bucket=b, Key="o")
    stored, meta = bytearray(raw["Body"].read()), raw["Metadata"]
    for name, damaged in {
        "flipped first package": bytes([stored[0] ^ 1]) + bytes(stored[1:]),
        "truncated": bytes(stored[:-1000]),
        "last package dropped": bytes(stored[: 3 * 65552]),
    }.items():
        s3.backend.put_object(Bucket=b, Key="o", Body=damaged, Metadata=meta)
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=b, Key="o")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500, name
    # Damage past the first package: the reply breaks off; no unauthenticated byte arrives.
    late = bytearray(stored)
    late[2_500_000] ^= 1
    s3.backend.put_object(Bucket=b, Key="o", Body=bytes(late), Metadata=meta)
    got = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(s3.cert))
    signed: Any = c.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "o"})
    r = got.request("GET", signed, preload_content=False)
    received = b""
    with pytest.raises((urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError)):
        for piece in r.stream(65536):
            received += piece
        r.release_conn()
        raise urllib3.exceptions.HTTPError("the body was complete")  # never reached when cut off
    assert len(received) < 2_500_000 and data.startswith(received)  # authenticated packages only


def _raw_put(s3: S3Stack, t: Tenant, bucket: str, key: str, declared: int, body: bytes,
             payload_hash: str) -> tuple[int, bytes]:
    url = urlsplit(s3.http_url)
    path = f"/{bucket}/{key}"
    headers = {"host": url.netloc, "content-length": str(declared)}
    auth = sign_headers(method="PUT", path=path, raw_query="", headers={"host": url.netloc},
                        payload_hash=payload_hash, access_key_id=t.access_key_id,
                        secret=t.secret_access_key, region="cn-east-1", service="s3")
    headers.update(auth)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode() + body)
        if len(body) < declared:
            sock.shutdown(socket.SHUT_WR)  # the client gives up mid-upload
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply else 0
    return status, reply


def test_interrupted_and_corrupted_uploads_leave_nothing(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="keep", Body=b"old version")
    big = os.urandom(20 * 1024 * 1024)  # above the buffering limit: streamed to the backend
    for key, size in (("small", 1000), ("keep", 1000), ("large", len(big))):
        _raw_put(s3, t, b, key, size, big[: size // 2], "UNSIGNED-PAYLOAD")
    status, reply = _raw_put(s3, t, b, "hashed", 1000, big[:1000], hashlib.sha256(b"other").hexdigest())
    assert status == 400 and b"XAmzContentSHA256Mismatch" in reply
    status, _ = _raw_put(s3, t, b, "large-bad", len(big), big, hashlib.sha256(b"other").hexdigest())
    assert status == 400
    keys = {o["Key"] for o in s3.backend.list_objects_v2(Bucket=b).get("Contents", [])}
    assert keys == {"keep"}
    assert c.get_object(Bucket=b, Key="keep")["Body"].read() == b"old version"


def test_signed_chunks_end_to_end(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    chunks = [os.urandom(65536), os.urandom(65536), os.urandom(1234)]
    url = urlsplit(s3.http_url)
    path = f"/{b}/chunked"
    decoded = sum(map(len, chunks))
    extra = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(decoded)}
    auth = sign_headers(method="PUT", path=path, raw_query="", headers={"host": url.netloc, **extra},
                        payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD", access_key_id=t.access_key_id,
                        secret=t.secret_access_key, region="cn-east-1", service="s3")
    seed = auth["authorization"].split("Signature=")[1]
    from gateway.s3.aws_chunked import ChunkSigning

    amz_date = auth["x-amz-date"]
    signing = ChunkSigning(signing_key(t.secret_access_key, amz_date[:8], "cn-east-1", "s3"), amz_date,
                           f"{amz_date[:8]}/cn-east-1/s3/aws4_request", seed)
    body = signed_body(chunks, sign_chunks(chunks, signing))
    r = urllib3.request("PUT", s3.http_url + path, body=body, headers={**extra, **auth})
    assert r.status == 200, r.data
    # No checksum sent: S3's default is computed through the signed-chunk decoder.
    assert r.headers["x-amz-checksum-crc64nvme"] == value_of("CRC64NVME", b"".join(chunks))
    assert c.get_object(Bucket=b, Key="chunked")["Body"].read() == b"".join(chunks)
    forged = signed_body([chunks[0], os.urandom(65536), chunks[2]], sign_chunks(chunks, signing))
    r = urllib3.request("PUT", s3.http_url + f"/{b}/forged", body=forged, headers={**extra, **auth})
    assert r.status == 403 and b"SignatureDoesNotMatch" in r.data
    assert "forged" not in {o["Key"] for o in s3.backend.list_objects_v2(Bucket=b)["Contents"]}


def test_virtual_host_addressing(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="dir/v.txt", Body=b"virtual")
    port = urlsplit(s3.http_url).port
    host = f"{b}.localhost:{port}"
    auth = sign_headers(method="GET", path="/dir/v.txt", raw_query="", headers={"host": host},
                        payload_hash=hashlib.sha256(b"").hexdigest(), access_key_id=t.access_key_id,
                        secret=t.secret_access_key, region="cn-east-1", service="s3")
    r = urllib3.request("GET", f"{s3.http_url}/dir/v.txt", headers={"host": host, **auth})
    assert r.status == 200 and r.data == b"virtual"


def test_kms_unreachable_is_503(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="o", Body=b"x")
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = S3Proxy(Backend(s3.store.config()), _kms_clients(s3.kms, dead, None))
    server, port = _run(create_app(proxy, _credentials(s3.kms)), None)
    try:
        offline: Any = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="cn-east-1",
                                    aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
                                    config=Config(retries={"max_attempts": 1}))
        call: Callable[[], object]
        for call in (lambda: offline.get_object(Bucket=b, Key="o"),
                     lambda: offline.put_object(Bucket=b, Key="n", Body=b"n")):
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        server.should_exit = True
