"""What operators need from every port of a node: health, readiness, metrics, request logs.

`OpsMiddleware` wraps an ASGI app (the KMS API or the S3 proxy):
- `GET /healthz`: 200 while the process serves (liveness).
- `GET /readyz`: 200 when the database, the HSM and the S3 backend answer, else 503 with what
  failed (a load balancer's health check: a node that cannot reach them gets no traffic).
- `GET /metrics`: Prometheus text format (gateway.metrics, kms_core.metrics).
These answer only unsigned requests, so a bucket named `metrics` stays reachable to its owner.
- One JSON log line per request (logger `ssegw.access`) with its request id, which the reply
  also carries as `x-amz-request-id`.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import BYTES, LATENCY, REQUESTS

log = logging.getLogger("ssegw.access")

Check = Callable[[], None]  # raises when the dependency cannot be reached

_ID_HEADERS = (b"x-amz-request-id", b"x-amzn-requestid", b"x-request-id")
_OPS_PATHS = {"/healthz", "/readyz", "/metrics"}
_CHILDREN_KEPT = 512


def _signed(scope: Scope) -> bool:
    if b"x-amz-signature" in scope.get("query_string", b"").lower():
        return True
    return any(k == b"authorization" for k, _ in scope.get("headers", ()))


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


class OpsMiddleware:
    def __init__(self, app: ASGIApp, server: str, checks: dict[str, Check],
                 operation: Callable[[Scope], str]) -> None:
        self.app = app
        self.server = server  # "kms" or "s3"
        self.checks = checks
        self.operation = operation
        self.draining = False  # set on SIGTERM: /readyz says 503 while in-flight work finishes
        # The metric children per (operation, status), the first _CHILDREN_KEPT of them (a KMS
        # operation is named by the client's X-Amz-Target, so the names are not a closed set).
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in _OPS_PATHS and scope.get("method") == "GET" and not _signed(scope):
            await self._ops(path, send)
            return
        await self._observed(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        op = self.operation(scope)
        state: dict[str, Any] = {"status": 500, "id": None, "out": 0, "in": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["in"] += len(message.get("body", b""))
            return message

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                headers = list(message.get("headers", []))
                for k, v in headers:
                    if k.lower() in _ID_HEADERS:
                        state["id"] = v.decode("latin-1")
                        break
                if state["id"] is None:
                    state["id"] = f"{self.server}-{time.time_ns():x}"
                if not any(k.lower() == b"x-amz-request-id" for k, _ in headers):
                    headers.append((b"x-amz-request-id", state["id"].encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                state["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, observing_send)
        finally:
            elapsed = time.perf_counter() - started
            status = str(state["status"])
            children = self._children.get((op, status))
            if children is None:  # labels() validates and hashes its tuple: ~3 us per request
                children = (REQUESTS.labels(self.server, op, status), LATENCY.labels(self.server, op))
                if len(self._children) < _CHILDREN_KEPT:
                    self._children[(op, status)] = children
            children[0].inc()
            children[1].observe(elapsed)
            if self.server == "s3" and state["status"] < 300:
                if scope.get("method") in ("PUT", "POST"):
                    BYTES.labels("sealed").inc(state["in"])
                elif scope.get("method") == "GET":
                    BYTES.labels("opened").inc(state["out"])
            if log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("", 0)
                log.info(json.dumps({
                    "ts": round(time.time(), 3), "server": self.server, "request_id": state["id"],
                    "method": scope.get("method"), "path": scope.get("path"), "operation": op,
                    "status": state["status"], "bytes_in": state["in"], "bytes_out": state["out"],
                    "ms": round(elapsed * 1000, 2), "client": client[0],
                }, separators=(",", ":")))

    async def _ops(self, path: str, send: Send) -> None:
        if path == "/metrics":
            await _reply(send, 200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            await _reply(send, 200, b'{"status":"alive"}\n', "application/json")
        else:
            failed: dict[str, str] = {}
            if self.draining:
                failed["node"] = "shutting down"
            for name, check in self.checks.items():
                try:
                    await anyio.to_thread.run_sync(check)
                except Exception as exc:  # noqa: BLE001 - any failure means not ready
                    failed[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            body = {"status": "ready" if not failed else "not ready",
                    "checks": {n: failed.get(n, "ok") for n in [*self.checks, *failed]}}
            await _reply(send, 503 if failed else 200, json.dumps(body).encode() + b"\n",
                         "application/json")


async def _reply(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def kms_operation(scope: Scope) -> str:
    target = _header(scope, b"x-amz-target")
    if target:
        return target.rpartition(".")[2][:64] or "unknown"
    path = scope.get("path", "")
    if path.startswith("/v1/kms/"):
        return path[len("/v1/kms/"):][:64] or "unknown"
    return "other"


def s3_operation(scope: Scope) -> str:
    # Coarse on purpose: a label per bucket or key would grow without bound.
    method = scope.get("method", "GET")
    parts = scope.get("path", "/").lstrip("/").split("/", 1)
    query = scope.get("query_string", b"")
    level = "object" if len(parts) == 2 and parts[1] else "bucket" if parts[0] else "service"
    if b"uploadId" in query or b"uploads" in query:
        level += "_multipart"
    return f"{method}_{level}"


def ready_checks(kms_checks: Mapping[str, Check], backend_url: str) -> dict[str, Check]:
    """What a node needs to serve: what its KMS needs (its database and HSM, the KMS's own
    probes, handed in by the composition root) and its S3 backend."""

    def backend() -> None:
        url = urlsplit(backend_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname or "localhost", port), timeout=2).close()

    return {**kms_checks, "s3_backend": backend}
