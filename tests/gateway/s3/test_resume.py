"""A backend answer that breaks off mid-GET is resumed by a ranged GET of the rest (resume.py).

Between the proxy and moto sits a TCP relay that cuts the connection after a number of bytes of
an answer, as a backend or a load balancer resetting a long transfer does. At the end: how far
`read_ahead` reads a backend body ahead of a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from gateway.s3.resume import READ_AHEAD, read_ahead
from kms_core.embedded import Kms
from tests.gateway.s3.conftest import BACKEND_KEY, MiB, S3Stack, Store, bucket_name, proxy_in_front_of, upload


class CuttingRelay:
    """Forwards TCP to `target`; the next `cuts` answers longer than `cut_after` bytes are cut
    there (both connections closed), calling `on_cut` first."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cuts = 0
        self.cut_after = 1 * MiB
        self.cut_count = 0
        self.on_cut: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.target)
                threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
                threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts == 0:
                return False
            self.cuts -= 1
            self.cut_count += 1
            return True

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if answers and sent + len(data) > self.cut_after and self._take_cut():
                    dst.sendall(data[:self.cut_after - sent])
                    self.on_cut()
                    break
                dst.sendall(data)
                sent += len(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def relay(moto_url: str) -> Iterator[CuttingRelay]:
    host, port = moto_url.removeprefix("http://").split(":")
    r = CuttingRelay((host, int(port)))
    yield r
    r.close()


@pytest.fixture
def cut_s3(kms: Kms, relay: CuttingRelay, tls_cert: tuple[Path, Path]) -> Iterator[S3Stack]:
    with proxy_in_front_of(Store("moto", relay.url, *BACKEND_KEY), kms, tls_cert) as stack:
        yield stack


def _raw_get(s3: S3Stack, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, bool]:
    """Status, the bytes received and whether the body arrived whole (not broken off)."""
    http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(s3.cert), retries=False)
    r = http.request("GET", url, headers=headers, preload_content=False)
    received = b""
    try:
        for piece in r.stream(65536):
            received += piece
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.HTTPError):
        return r.status, received, False
    return r.status, received, True


def test_a_broken_off_get_is_resumed_and_the_client_gets_every_byte(cut_s3: S3Stack, relay: CuttingRelay) -> None:
    c: Any = cut_s3.client(cut_s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    data = os.urandom(3 * MiB + 12345)
    c.put_object(Bucket=b, Key="o", Body=data)
    relay.cuts = 2  # the first answer and the first resumption are both cut
    assert c.get_object(Bucket=b, Key="o")["Body"].read() == data
    assert relay.cut_count == 2
    relay.cuts = 1  # a ranged read resumes inside its range
    got = c.get_object(Bucket=b, Key="o", Range="bytes=100000-2999999")["Body"].read()
    assert got == data[100000:3000000]
    assert relay.cut_count == 3


def test_a_whole_multipart_object_is_one_backend_get_also_when_resumed(
        cut_s3: S3Stack, relay: CuttingRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    # A v4 multipart object's sealed bytes start with part 1's 16-byte salt, which a reader
    # skips: the GET that fetched the object's metadata serves the read, no second, ranged GET
    # (moto read the whole object again for it: a 1 GiB GET ran at 0.3x direct). Cut, it
    # resumes at the right byte.
    c: Any = cut_s3.client(cut_s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB + 3), os.urandom(MiB)]
    upload(c, b, "mp", parts)
    backend = cut_s3.proxy.backend
    send = backend.send
    gets: list[str | None] = []

    async def counted(method: str, bucket: str | None = None, key: str | None = None, **kw: Any) -> Any:
        if method == "GET" and key == "mp" and "tagging" not in (kw.get("query") or {}):
            gets.append((kw.get("headers") or {}).get("range"))
        return await send(method, bucket, key, **kw)

    monkeypatch.setattr(backend, "send", counted)
    assert c.get_object(Bucket=b, Key="mp")["Body"].read() == b"".join(parts)
    assert gets == [None]
    gets.clear()
    relay.cuts = 1
    assert c.get_object(Bucket=b, Key="mp")["Body"].read() == b"".join(parts)
    assert relay.cut_count == 1 and len(gets) == 2 and gets[0] is None
    assert gets[1] is not None and gets[1].startswith("bytes=") and not gets[1].startswith("bytes=16-")
    assert c.get_object(Bucket=b, Key="mp", PartNumber=2)["Body"].read() == parts[1]


def test_a_backend_that_keeps_breaking_off_breaks_the_clients_stream_never_its_bytes(
        cut_s3: S3Stack, relay: CuttingRelay) -> None:
    c: Any = cut_s3.client(cut_s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    data = os.urandom(5 * MiB)
    c.put_object(Bucket=b, Key="o", Body=data)
    relay.cuts = 100
    url = c.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "o"})
    status, received, whole = _raw_get(cut_s3, url)
    assert status == 200 and not whole
    assert len(received) < len(data) and data.startswith(received)
    assert relay.cut_count == 4  # the first answer and three resumptions


def test_an_object_replaced_while_it_was_read_is_not_joined_from_two_versions(
        cut_s3: S3Stack, relay: CuttingRelay, moto_url: str) -> None:
    c: Any = cut_s3.client(cut_s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    old, new = os.urandom(3 * MiB), os.urandom(3 * MiB)
    c.put_object(Bucket=b, Key="o", Body=old)
    c.put_object(Bucket=b, Key="other", Body=new)
    direct: Any = Store("moto", moto_url, *BACKEND_KEY).client()
    # At the cut the backend's object becomes another sealed object (same length, other bytes).
    relay.on_cut = lambda: direct.copy_object(Bucket=b, Key="o", CopySource={"Bucket": b, "Key": "other"},
                                              MetadataDirective="COPY")
    relay.cuts, relay.cut_after = 1, 2 * MiB  # after the first MiB of plaintext went out
    url = c.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "o"})
    status, received, whole = _raw_get(cut_s3, url)
    assert status == 200 and not whole
    assert len(received) >= MiB and old.startswith(received)


# ---------------------------------------------------------------------- read_ahead

CHUNK = 256_000  # what one socket read gives under uvloop


def test_a_slow_reader_holds_at_most_the_budget_in_bytes() -> None:
    chunks = [os.urandom(CHUNK) for _ in range(60)]  # 15 MiB: several budgets
    produced = consumed = 0
    most_ahead = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for c in chunks:
            produced += len(c)
            yield c

    async def run() -> bytes:
        nonlocal consumed, most_ahead
        out = []
        async for c in read_ahead(body()):
            await asyncio.sleep(0.002)  # the client takes its time: the pump runs ahead
            most_ahead = max(most_ahead, produced - consumed)
            consumed += len(c)
            out.append(c)
        return b"".join(out)

    assert asyncio.run(run()) == b"".join(chunks)
    # The budget, overshot by at most its last chunk, plus the chunk in the consumer's hands and
    # the one the pump holds while it waits for room (64 chunks ahead, as before, were 16 MB).
    assert READ_AHEAD <= most_ahead <= READ_AHEAD + 3 * CHUNK


def test_a_body_that_fails_fails_the_reader_after_what_came_before() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 10
        raise ConnectionError("the backend broke off")

    async def run() -> list[bytes]:
        seen = []
        async for c in read_ahead(body()):
            seen.append(c)
        return seen

    with pytest.raises(ConnectionError):
        asyncio.run(run())
