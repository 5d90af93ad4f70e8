"""A client that gives up mid-body and an object that fails authentication mid-GET: one log
line each naming the request and what happened, no traceback."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from kms_core.sigv4 import sign_headers
from tests.gateway.s3.conftest import S3Stack, bucket_name, signed


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog that also hears uvicorn, whose loggers do not propagate to the root logger."""
    caplog.set_level(logging.INFO)
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    yield caplog
    uvicorn_log.removeHandler(caplog.handler)


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or "Exception in ASGI" in r.getMessage()
             or "without completing response" in r.getMessage()]
    assert noisy == [], [r.getMessage() for r in noisy]


def _wait_for(caplog: pytest.LogCaptureFixture, text: str, event: threading.Event) -> list[logging.LogRecord]:
    for _ in range(200):  # the server thread logs after the socket closes
        found = [r for r in caplog.records if text in r.getMessage()]
        if found:
            return found
        event.wait(0.05)
    raise AssertionError(f"no log line with {text!r}")


def test_client_disconnect_mid_body_is_one_line(s3: S3Stack, logs: pytest.LogCaptureFixture) -> None:
    caplog = logs
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = urlsplit(f"{s3.http_url}/{b}/big")
    headers = sign_headers(method="PUT", path=parts.path, raw_query="", headers={"host": parts.netloc},
                           payload_hash="UNSIGNED-PAYLOAD", access_key_id=t.access_key_id,
                           secret=t.secret_access_key, region="cn-east-1", service="s3")
    head = f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: 10000000\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode() + os.urandom(200_000))
    records = _wait_for(caplog, "disconnected before sending the whole body", threading.Event())
    assert len(records) == 1 and "PUT" in records[0].getMessage()
    _no_tracebacks(caplog)


def test_integrity_failure_mid_stream_is_one_line(s3: S3Stack, logs: pytest.LogCaptureFixture) -> None:
    caplog = logs
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    data = os.urandom(3_000_000)
    c.put_object(Bucket=b, Key="o", Body=data)
    raw = s3.backend.get_object(Bucket=b, Key="o")
    stored, meta = bytearray(raw["Body"].read()), raw["Metadata"]
    stored[2_500_000] ^= 1
    s3.backend.put_object(Bucket=b, Key="o", Body=bytes(stored), Metadata=meta)
    url = f"{s3.http_url}/{b}/o"
    received = b""
    with pytest.raises(httpx.HTTPError), httpx.stream("GET", url, headers=signed(t, "GET", url)) as r:
        assert r.status_code == 200
        for piece in r.iter_bytes():
            received += piece
    assert len(received) < 2_500_000 and data.startswith(received)
    records = _wait_for(caplog, "failed authentication", threading.Event())
    assert len(records) == 1 and records[0].getMessage().startswith("request ")
    _no_tracebacks(caplog)
