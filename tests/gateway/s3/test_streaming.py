"""gateway/s3/streaming.py's BodyBudget: bodies read whole before they are stored share a bounded
room, wait for it, and are told to slow down (S3's 503 SlowDown) when it stays full; and an
upload whose client stalls is ended with S3's RequestTimeout (bodies.idle_limited)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from gateway.s3 import bodies, streaming
from gateway.s3.errors import S3Error
from gateway.s3.streaming import BodyBudget
from kms_core.sigv4 import sign_headers
from tests.gateway.s3.conftest import S3Stack, Tenant, bucket_name


def test_holders_never_exceed_the_budget_and_all_get_their_turn() -> None:
    async def run() -> tuple[int, list[int]]:
        budget = BodyBudget(100, wait=5)
        held = most = 0
        done: list[int] = []

        async def one(i: int, size: int) -> None:
            nonlocal held, most
            async with budget.hold(size):
                held += min(size, 100)
                most = max(most, held)
                await asyncio.sleep(0.01)
                held -= min(size, 100)
            done.append(i)

        # 250 bytes wants more than there is: it waits for all of it.
        await asyncio.gather(*(one(i, s) for i, s in enumerate([60, 60, 30, 250, 10, 100])))
        assert budget.free == 100
        return most, sorted(done)

    most, done = asyncio.run(run())
    assert most <= 100 and done == list(range(6))


def test_a_body_that_finds_no_room_in_time_is_told_to_slow_down() -> None:
    async def run() -> None:
        budget = BodyBudget(100, wait=0.05)
        async with budget.hold(80):
            with pytest.raises(S3Error) as e:
                async with budget.hold(30):
                    pass
            assert (e.value.code, e.value.status) == ("SlowDown", 503)
        assert budget.free == 100  # the refused one took nothing
        async with budget.hold(30):  # and there is room again
            pass

    asyncio.run(run())


def _put_all(s3: S3Stack, bodies: list[bytes]) -> tuple[Any, str, list[BaseException | None]]:
    t = s3.tenant()
    c = s3.client(t, max_pool_connections=len(bodies))
    b = bucket_name()
    c.create_bucket(Bucket=b)

    def put(i: int) -> BaseException | None:
        try:
            c.put_object(Bucket=b, Key=f"k{i}", Body=bodies[i])
        except ClientError as e:
            refused: BaseException = e
            return refused
        return None

    with ThreadPoolExecutor(len(bodies)) as ex:
        return c, b, list(ex.map(put, range(len(bodies))))


def test_puts_wait_their_turn_when_the_budget_is_small(s3: S3Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "BUFFER_BUDGET", 1024 * 1024)  # less than one body: one at a time
    bodies = [os.urandom(3 * 1024 * 1024 + i) for i in range(5)]
    c, b, errors = _put_all(s3, bodies)
    assert errors == [None] * 5
    for i, body in enumerate(bodies):
        got = c.get_object(Bucket=b, Key=f"k{i}")
        assert got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"' and got["Body"].read() == body


def test_a_put_that_finds_no_room_is_refused_and_stores_nothing(s3: S3Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "BUFFER_BUDGET", 1024 * 1024)
    monkeypatch.setattr(streaming, "BUFFER_WAIT", 0.3)
    monkeypatch.setattr(bodies, "BODY_IDLE", 5.0)
    t = s3.tenant()
    c = s3.client(t, https=False)  # the server the stalled PUT goes to (each has its own room)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    # A PUT that takes all the room and keeps it: its client sends a little and stalls.
    with _stalled_put(s3, t, f"/{b}/holder", 4 * 1024 * 1024):
        deadline = time.monotonic() + 10
        while not any(budget.free < budget.capacity for budget in list(BodyBudget._budgets.values())):
            assert time.monotonic() < deadline, "the stalled PUT never took its room"
            time.sleep(0.01)
        with pytest.raises(ClientError) as refused:
            c.put_object(Bucket=b, Key="late", Body=os.urandom(2 * 1024 * 1024))
        assert refused.value.response["Error"]["Code"] == "SlowDown"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        with pytest.raises(ClientError) as missing:
            c.head_object(Bucket=b, Key="late")
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # The stalled one timed out (or its client went away): the room is free again.
    deadline = time.monotonic() + 15
    while True:
        try:
            c.put_object(Bucket=b, Key="later", Body=b"x" * 1000)
            break
        except ClientError as e:
            assert e.response["Error"]["Code"] == "SlowDown" and time.monotonic() < deadline
    assert c.get_object(Bucket=b, Key="later")["Body"].read() == b"x" * 1000


@contextlib.contextmanager
def _stalled_put(s3: S3Stack, t: Tenant, path: str, size: int) -> Iterator[socket.socket]:
    """A PUT of `size` bytes whose client sends its headers and 100 KB, then nothing (the socket
    is closed when the block ends)."""
    url = urlsplit(s3.http_url)
    headers = {"host": url.netloc, "content-length": str(size)}
    auth = sign_headers(method="PUT", path=path, raw_query="", headers=headers, payload_hash="UNSIGNED-PAYLOAD",
                        access_key_id=t.access_key_id, secret=t.secret_access_key, region="cn-east-1",
                        service="s3")
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, **auth}.items())
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\n{head}\r\n".encode() + os.urandom(100_000))
        yield sock


@pytest.mark.parametrize("size", [1024 * 1024, 40 * 1024 * 1024])  # buffered, and streamed
def test_an_upload_that_stalls_is_timed_out_and_stores_nothing(s3: S3Stack, monkeypatch: pytest.MonkeyPatch,
                                                               size: int) -> None:
    monkeypatch.setattr(bodies, "BODY_IDLE", 0.5)
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    with _stalled_put(s3, t, f"/{b}/stalled", size) as sock:
        started = time.monotonic()
        answer = b""
        while b"</Error>" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"<Code>RequestTimeout</Code>" in answer
    assert time.monotonic() - started < 20  # the idle limit, not a client-side timeout
    with pytest.raises(ClientError) as missing:
        c.head_object(Bucket=b, Key="stalled")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "Uploads" not in c.list_multipart_uploads(Bucket=b)
