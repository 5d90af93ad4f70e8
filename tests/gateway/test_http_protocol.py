"""gateway/http_protocol.py: request bodies through a real uvicorn server on loopback, as the
stock protocol hands them over (content-length, chunked, pipelined, 100-continue, a client that
goes away), and the check that the installed uvicorn still fits."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway.http_protocol import PiecesProtocol, protocol_class

DISCONNECTS: list[str] = []


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the body was: its SHA-256, length, and how it came (message types)."""
    digest, size, types, more = hashlib.sha256(), 0, set(), True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            DISCONNECTS.append(scope["path"])
            return
        body = message["body"]
        types.add(type(body).__name__)
        digest.update(body)
        size += len(body)
        more = message["more_body"]
    answer = json.dumps({"sha256": digest.hexdigest(), "size": size, "types": sorted(types)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    assert protocol_class() is PiecesProtocol, "uvicorn no longer fits gateway/http_protocol.py"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app, log_level="warning", lifespan="off", http=PiecesProtocol, loop="uvloop")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


def _answers(port: int, raw: bytes, count: int = 1, pause_after: int | None = None) -> list[dict[str, Any]]:
    """Sends `raw` (one or more requests) on one connection; the JSON of `count` answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        if pause_after is None:
            s.sendall(raw)
        else:
            s.sendall(raw[:pause_after])
            time.sleep(0.05)
            s.sendall(raw[pause_after:])
        data = b""
        answers: list[dict[str, Any]] = []
        while len(answers) < count:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                if len(rest) >= length:
                    answers.append(json.loads(rest[:length]))
                    data = rest[length:]
                    continue
            chunk = s.recv(1 << 20)
            assert chunk, "the server closed the connection"
            data += chunk
    return answers


def _put(body: bytes, path: str = "/x") -> bytes:
    return f"PUT {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 256_000, 5 * 1024 * 1024 + 3])
def test_bodies_arrive_whole_and_as_bytes(port: int, size: int) -> None:
    body = os.urandom(size)
    (answer,) = _answers(port, _put(body), pause_after=len(body) // 2 + 40)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest() and answer["size"] == size
    assert answer["types"] == ["bytes"]  # the ASGI spec's type, whatever the buffering


def test_chunked_bodies_and_pipelined_requests(port: int) -> None:
    one, two = os.urandom(300_000), os.urandom(70_000)
    chunked = (b"PUT /c HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
               + b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (one[:1000], one[1000:]))
               + b"0\r\n\r\n")
    answers = _answers(port, chunked + _put(two) + _put(b""), count=3)
    assert [a["sha256"] for a in answers] == [hashlib.sha256(b).hexdigest() for b in (one, two, b"")]


def test_expect_100_continue(port: int) -> None:
    body = os.urandom(100_000)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"PUT /e HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\nexpect: 100-continue\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        data = b""
        while not data.endswith(b"}"):
            data += s.recv(65536)
    assert json.loads(data.partition(b"\r\n\r\n")[2])["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_client_that_goes_away_mid_body_is_a_disconnect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"PUT /gone HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\n\r\n" + os.urandom(300_000))
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while "/gone" not in DISCONNECTS:
        assert time.monotonic() < deadline, "the application never saw the disconnect"
        time.sleep(0.02)


def test_a_uvicorn_that_changed_gets_its_own_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    # Say on_body appended with extend(): _Pieces has none, so every upload would fail.
    real = inspect.getsource

    def changed(obj: Any) -> str:
        text = real(obj)
        return text.replace("self.cycle.body += body", "self.cycle.body.extend(body)")

    monkeypatch.setattr(inspect, "getsource", changed)
    assert protocol_class() == "httptools"
    monkeypatch.setattr(inspect, "getsource", real)
    assert protocol_class() is PiecesProtocol
