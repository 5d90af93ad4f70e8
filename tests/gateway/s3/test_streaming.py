"""gateway/s3/streaming.py's BodyBudget: bodies read whole before they are stored share a bounded
room, wait for it, and are told to slow down (S3's 503 SlowDown) when it stays full."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.s3 import streaming
from gateway.s3.errors import S3Error
from gateway.s3.streaming import BodyBudget
from tests.gateway.s3.conftest import S3Stack, bucket_name


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


def test_puts_that_find_no_room_are_refused_and_store_nothing(s3: S3Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "BUFFER_BUDGET", 1024 * 1024)
    monkeypatch.setattr(streaming, "BUFFER_WAIT", 0.01)
    bodies = [os.urandom(4 * 1024 * 1024) for _ in range(6)]
    c, b, errors = _put_all(s3, bodies)
    refused = [i for i, e in enumerate(errors) if e is not None]
    assert refused, "six 4 MiB PUTs at once into 1 MiB of room with 10 ms to wait: some must be refused"
    for i, e in enumerate(errors):
        if e is None:
            assert c.get_object(Bucket=b, Key=f"k{i}")["Body"].read() == bodies[i]
        else:
            assert isinstance(e, ClientError)
            assert e.response["Error"]["Code"] == "SlowDown"
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            with pytest.raises(ClientError) as missing:
                c.head_object(Bucket=b, Key=f"k{i}")
            assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
