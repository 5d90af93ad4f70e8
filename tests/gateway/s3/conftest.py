"""The S3 stack for tests: a real object store as the backend, our proxy over HTTPS in front of it.

Two stores: moto's S3 server and SeaweedFS (one `weed server` for the whole session, started
as `ssegw serve` starts it). A test that uses `s3` (or `store`) runs against moto; marked
`@pytest.mark.every_store` (the integration tests of objects, multipart, copies, ranges,
bucket keys, rewrap and real clients are, module-wide), it runs against SeaweedFS too.

The proxy runs in a thread of the test process (so tests can use the same KMS), on a loopback
port with a certificate generated here: boto3 sends aws-chunked bodies with checksum trailers
only over HTTPS, so the real SDK exercises that path.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import urllib3
import uvicorn
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from gateway.http_protocol import protocol_class
from gateway.s3.app import create_app
from gateway.s3.backend import Backend, BackendConfig
from gateway.s3.proxy import S3Proxy
from gateway.seaweed import EmbeddedSeaweed, SeaweedConfig
from gateway.serve import _credentials, _kms_clients
from kms_core.embedded import Kms
from kms_core.sigv4 import sign_headers
from kms_core.types import Caller
from tests.serving import free_port

BACKEND_KEY = ("backend-key", "backend-secret")
MiB = 1024 * 1024
STORES = ("moto", "seaweedfs")


@dataclass(frozen=True)
class Store:
    """An S3 store the proxy can sit in front of, and the key the proxy uses on it."""

    name: str
    url: str
    access_key_id: str
    secret_access_key: str

    def config(self, **kw: Any) -> BackendConfig:
        return BackendConfig(self.url, self.access_key_id, self.secret_access_key, **kw)

    def client(self) -> Any:
        """boto3 straight to the store: what is really stored. It checks a stored object's
        checksum only when asked (ChecksumMode): moto gives a copy of a multipart object its
        source's composite CRC32 without S3's `-<parts>` suffix, which boto3 then takes for a
        whole-object CRC32 that the bytes do not match."""
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key,
                            config=Config(response_checksum_validation="when_required"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_store: run against every store (moto and SeaweedFS), not moto only")
    config.addinivalue_line("markers", "only_store(name): run against that store alone (a behaviour only it has)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("only_store")
        stores = list(STORES) if metafunc.definition.get_closest_marker("every_store") else ["moto"]
        stores = [only.args[0]] if only is not None else stores
        metafunc.parametrize("store", stores, indirect=True)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSeaweed]:
    """One SeaweedFS (master, volume server, filer, S3) for the session, as `ssegw serve` runs it."""
    weed = EmbeddedSeaweed(SeaweedConfig(tmp_path_factory.mktemp("seaweedfs"), volume_size_limit_mb=64))
    weed.start()
    yield weed
    weed.stop()


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "moto":
        return Store("moto", request.getfixturevalue("moto_url"), *BACKEND_KEY)
    weed: EmbeddedSeaweed = request.getfixturevalue("seaweedfs")
    assert weed.credentials is not None
    return Store("seaweedfs", weed.url, weed.credentials.access_key_id, weed.credentials.secret_access_key)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:*.localhost"],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class Tenant:
    account_id: str
    access_key_id: str
    secret_access_key: str
    caller: Caller


@dataclass
class S3Stack:
    url: str
    http_url: str
    cert: Path
    kms: Kms
    backend: Any  # boto3 client straight to the store: what is really stored
    proxy: S3Proxy
    store: Store

    def tenant(self, name: str | None = None) -> Tenant:
        info, creds = self.kms.accounts.create_account(name or f"t-{uuid.uuid4().hex[:8]}")
        return Tenant(info.account_id, creds.access_key_id, creds.secret_access_key,
                      Caller(info.account_id, "cn-east-1", creds.access_key_id))

    def client(self, t: Tenant, *, https: bool = True, **config: Any) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url if https else self.http_url, region_name="cn-east-1",
            aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
            verify=str(self.cert),
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, **config),
        )


def _run(app: Any, cert: tuple[Path, Path] | None) -> tuple[uvicorn.Server, int]:
    """The proxy served as `ssegw serve` serves it (its HTTP protocol), on a port bound here:
    a port picked free and bound later by the server could be taken in between."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, http=protocol_class(),
        ssl_certfile=str(cert[0]) if cert else None, ssl_keyfile=str(cert[1]) if cert else None))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "proxy did not start"
        time.sleep(0.02)
    return server, sock.getsockname()[1]


@contextlib.contextmanager
def proxy_in_front_of(store: Store, kms: Kms, tls_cert: tuple[Path, Path], **proxy_options: Any) -> Iterator[S3Stack]:
    """Our proxy (HTTPS and HTTP) in front of `store`, with `kms`, until the block ends."""
    backend = Backend(store.config())
    proxy = S3Proxy(backend, _kms_clients(kms, None, None), **proxy_options)
    app = create_app(proxy, _credentials(kms), frozen=kms.accounts.is_frozen)
    (tls, tls_port), (plain, http_port) = _run(app, tls_cert), _run(app, None)
    servers = [tls, plain]
    try:
        yield S3Stack(f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{http_port}", tls_cert[0],
                      kms, store.client(), proxy, store)
    finally:
        for s in servers:
            s.should_exit = True


@pytest.fixture
def s3(kms: Kms, store: Store, tls_cert: tuple[Path, Path]) -> Iterator[S3Stack]:
    with proxy_in_front_of(store, kms, tls_cert) as stack:
        yield stack


def bucket_name() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def signed_request(s3: S3Stack, t: Tenant, method: str, path: str, query: str = "",
                   headers: dict[str, str] | None = None, body: bytes = b"") -> urllib3.BaseHTTPResponse:
    """One SigV4-signed request to the proxy over plain HTTP, exactly as given (no SDK rules)."""
    url = urlsplit(s3.http_url)
    base = {"host": url.netloc, **(headers or {})}
    auth = sign_headers(method=method, path=path, raw_query=query, headers=base,
                        payload_hash=hashlib.sha256(body).hexdigest(), access_key_id=t.access_key_id,
                        secret=t.secret_access_key, region="cn-east-1", service="s3")
    return _HTTP.request(method, f"{s3.http_url}{path}{'?' + query if query else ''}",
                         headers={**base, **auth}, body=body or None, retries=False, redirect=False)


_HTTP = urllib3.PoolManager()


def error_of(r: urllib3.BaseHTTPResponse) -> dict[str, str]:
    """Code, Message, Resource and RequestId of an S3 XML error answer."""
    root = ET.fromstring(r.data)
    assert root.tag == "Error", r.data
    return {c.tag: c.text or "" for c in root}


@dataclass
class Side:
    """One side of a differential test: a boto3 client and the bucket it works in."""

    name: str
    client: Any
    bucket: str


@pytest.fixture
def sides(s3: S3Stack, moto_url: str) -> list[Side]:
    """The proxy (as a fresh tenant) and moto straight, each with an empty bucket of its own."""
    return make_sides(s3, moto_url)


def make_sides(s3: S3Stack, moto_url: str, **config: Any) -> list[Side]:
    """`sides`, with botocore `config` options for both clients."""
    t = s3.tenant()
    proxy = s3.client(t, **config)
    direct = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id=BACKEND_KEY[0], aws_secret_access_key=BACKEND_KEY[1],
                          config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, **config))
    out = []
    for name, client in (("proxy", proxy), ("moto", direct)):
        b = bucket_name()
        client.create_bucket(Bucket=b)
        out.append(Side(name, client, b))
    return out


def outcome(fn: Any, **kwargs: Any) -> tuple[int, str | None, dict[str, Any]]:
    """(HTTP status, error code or None, the parsed answer) of one boto3 call."""
    try:
        r = fn(**kwargs)
    except ClientError as e:
        return (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response.get("Error", {}).get("Code"),
                dict(e.response))
    return r["ResponseMetadata"]["HTTPStatusCode"], None, r


def signed(t: Tenant, method: str, url: str, body: bytes = b"",
           headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers of a request signed over `body` (payload hash included), as boto3 would send
    them: tests alter them afterwards, as an attacker replaying a captured request would."""
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    S3SigV4Auth(BotoCredentials(t.access_key_id, t.secret_access_key), "s3", "cn-east-1").add_auth(req)
    return dict(req.headers.items())


def presigned(t: Tenant, method: str, url: str, headers: dict[str, str] | None = None) -> str:
    """A presigned URL for `url` signing `headers` too (botocore's S3 query signer)."""
    req = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    S3SigV4QueryAuth(BotoCredentials(t.access_key_id, t.secret_access_key), "s3", "cn-east-1",
                     expires=300).add_auth(req)
    return str(req.url)


def stored_upload_part(bucket: str, number: int) -> bytes:
    """The sealed bytes of part `number` of the (one) upload in progress in `bucket`, read from
    the moto backend's memory: what an attacker with storage access sees before completion
    (S3 itself offers no read of an unfinished upload's parts)."""
    from moto.s3.models import s3_backends

    for regions in s3_backends.values():
        for backend in regions.values():
            b = backend.buckets.get(bucket)
            if b is not None:
                (upload,) = b.multiparts.values()
                return bytes(upload.parts[number].value)
    raise KeyError(bucket)


def upload(c: Any, b: str, key: str, parts: list[bytes], **kw: Any) -> dict[str, Any]:
    """A multipart upload of `parts` through client `c` (with `ChecksumAlgorithm` in `kw`, each
    part sent with that checksum and named with it in Complete); the Complete reply."""
    up = c.create_multipart_upload(Bucket=b, Key=key, **kw)
    algorithm = kw.get("ChecksumAlgorithm")
    done = []
    for n, data in enumerate(parts, 1):
        r = c.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data,
                          **({"ChecksumAlgorithm": algorithm} if algorithm else {}))
        if r["ServerSideEncryption"] == "AES256":  # SSE-KMS part ETags are opaque, as in S3
            assert r["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        done.append({"PartNumber": n, "ETag": r["ETag"],
                     **({f"Checksum{algorithm}": r[f"Checksum{algorithm}"]} if algorithm else {})})
    completed: dict[str, Any] = c.complete_multipart_upload(Bucket=b, Key=key, UploadId=up["UploadId"],
                                                            MultipartUpload={"Parts": done})
    return completed
