"""The KMS HTTP app (starlette): SigV4 authentication, then one of two dialects.

    POST /v1/kms/<operation>                 REST dialect (kms_core.http.rest)
    POST /  + X-Amz-Target: TrentService.Op  AWS-compatible dialect (kms_core.http.aws)
    GET  /health                             liveness, unauthenticated
    /console/...                             the web console, when given (kms_core.console)

Cryptographic calls run on the event loop: they are served from in-memory key snapshots in
microseconds, and a thread hop would cost more than the call. Management calls write to the
database (and may wait for its lock), so they run in the thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kms_core import envelope
from kms_core.embedded import Kms
from kms_core.errors import (
    AccessDenied,
    IncompleteSignature,
    InvalidAccessKeyId,
    InvalidRegion,
    KmsError,
    MalformedRequest,
    MissingAuthentication,
    RequestExpired,
    SignatureDoesNotMatch,
    UnknownOperation,
)
from kms_core.http import aws, rest
from kms_core.http.params import Params
from kms_core.observe import REQUEST_ID
from kms_core.sigv4 import ErrorKind, SigV4Error, UnknownAccessKey, amz_and_content_headers, verify_header
from kms_core.types import Caller

log = logging.getLogger("ssegw.kms.http")

MAX_BODY = 64 * 1024
AWS_JSON = "application/x-amz-json-1.1"
# Calls that never touch the database on the hot path (see module docstring).
INLINE_OPERATIONS = frozenset({
    "encrypt", "decrypt", "generateDataKey", "generateDataKeyWithoutPlaintext", "reEncrypt",
    "generateRandom", "Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "ReEncrypt", "GenerateRandom",
})

_SIGV4_ERRORS: dict[ErrorKind, type[KmsError]] = {
    ErrorKind.MISSING: MissingAuthentication,
    ErrorKind.MALFORMED: IncompleteSignature,
    ErrorKind.UNKNOWN_KEY: InvalidAccessKeyId,
    ErrorKind.EXPIRED: RequestExpired,
    ErrorKind.MISMATCH: SignatureDoesNotMatch,
    # X-Amz-Target names the operation: a request signed as one must not be replayed as another.
    ErrorKind.UNSIGNED: IncompleteSignature,
}

Handler = Callable[[Kms, Caller, Params], dict[str, Any]]


class InternalError(KmsError):
    pass


_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_SEQUENCE = itertools.count(1)


def _request_id() -> str:
    # Unique across worker processes (random per-process prefix) and cheaper than a uuid4.
    return f"{_ID_PREFIX}-{next(_ID_SEQUENCE):08x}"


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by (lowercase) name, repeated ones joined with commas as SigV4
    canonicalises them; read once from the ASGI scope (names arrive lowercased)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


async def _read_body(request: Request, headers: dict[str, str]) -> bytes:
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise MalformedRequest(f"the request body must be at most {MAX_BODY} bytes")
    # The ASGI messages themselves, not request.stream(): one async generator less per request.
    receive, chunks, size = request.receive, [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise MalformedRequest(f"the request body must be at most {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _authenticate(kms: Kms, request: Request, headers: dict[str, str], body: bytes) -> Caller:
    payload_hash = hashlib.sha256(body).hexdigest()
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and not hmac.compare_digest(claimed.lower(), payload_hash):
        raise SignatureDoesNotMatch("x-amz-content-sha256 does not match the request body")

    def secret_for(access_key_id: str) -> str:
        try:
            return kms.accounts.credentials(access_key_id).secret_access_key
        except AccessDenied:
            raise UnknownAccessKey(access_key_id) from None

    try:
        signed = verify_header(
            method=request.method,
            # Not .get(key, request.url...): that default is built (~6 us) even when unused.
            raw_path=(request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1"),
            raw_query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            payload_hash=payload_hash,
            secret_for=secret_for,
            service="kms",
            must_sign=amz_and_content_headers,
        )
    except SigV4Error as e:
        raise _SIGV4_ERRORS[e.kind](e.message) from None
    served = kms.config.served_regions
    if signed.region not in served:
        # As AWS answers a credential scoped to another region: never a key in a pool nobody serves.
        raise InvalidRegion(
            f"Credential should be scoped to a valid region: {signed.region!r} is not served here; "
            f"expecting {' or '.join(repr(r) for r in served)}"
        )
    account_id = kms.accounts.credentials(signed.access_key_id).account_id
    return Caller(account_id, signed.region, signed.access_key_id)


MAX_JSON_DEPTH = 8  # the deepest KMS request (a context or a grant constraint) nests 3 levels


def _json_depth_ok(body: bytes) -> bool:
    """Whether no value in `body` nests deeper than MAX_JSON_DEPTH (checked before json.loads,
    which would recurse once per bracket). Brackets inside strings are skipped."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return True  # the usual case, decided at C speed
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def _parse_json(body: bytes) -> Params:
    if not _json_depth_ok(body):
        raise MalformedRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedRequest("the request body must be a JSON object")
    return Params(data)


async def _dispatch(kms: Kms, request: Request, op: str, table: dict[str, Handler],
                    request_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    if headers is None:
        headers = _headers(request.scope)
    body = await _read_body(request, headers)
    caller = _authenticate(kms, request, headers, body)
    handler = table.get(op)
    if handler is None:
        raise UnknownOperation(f"unknown operation {op!r}")
    # A frozen account is refused every call of either dialect, whatever it touches (FAQ 5.1).
    kms.observer.admit(caller)
    params = _parse_json(body)

    def call() -> dict[str, Any]:
        token = REQUEST_ID.set(request_id)
        try:
            return handler(kms, caller, params)
        finally:
            REQUEST_ID.reset(token)

    if op in INLINE_OPERATIONS:
        return call()
    return await run_in_threadpool(call)


def _internal(exc: Exception, request_id: str) -> KmsError:
    log.exception("request %s failed", request_id, exc_info=exc)
    return InternalError(f"internal error (request {request_id})")


class _AwsFront:
    """POST / (the AWS dialect: every SDK call, the hot path) straight to its endpoint; the rest
    through Starlette. Starlette's error and exception middlewares and its router cost ~10 us
    per request (measured in-process: 13-17 us of framework against 3-5 us without them), and
    the endpoint already answers every failure in the protocol's format (its last resort is a
    logged 500), so they add nothing to that route."""

    def __init__(self, app: Starlette, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/":
            response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(kms: Kms, console: ASGIApp | None = None) -> ASGIApp:
    async def rest_endpoint(request: Request) -> Response:
        request_id = _request_id()
        op = request.path_params["operation"]
        try:
            result = await _dispatch(kms, request, op, rest.OPERATIONS, request_id)
            body, status = envelope.success(result), 200
        except KmsError as e:
            body, status = envelope.failure(e), e.http_status
        except Exception as e:  # noqa: BLE001 - answer in the protocol's format, log the rest
            err = _internal(e, request_id)
            body, status = envelope.failure(err), 500
        body["requestId"] = request_id
        return JSONResponse(body, status_code=status, headers={"x-request-id": request_id})

    async def aws_endpoint(request: Request) -> Response:
        request_id = _request_id()
        headers = _headers(request.scope)
        target = headers.get("x-amz-target", "")
        service, _, op = target.partition(".")
        try:
            if service != "TrentService":
                await _read_body(request, headers)
                raise UnknownOperation(f"X-Amz-Target {target!r} is not a KMS operation")
            result = await _dispatch(kms, request, op, aws.OPERATIONS, request_id, headers)
            content, status = json.dumps(result), 200
        except KmsError as e:
            content, status = json.dumps(aws.error_body(e)), aws.error_status(e)
        except Exception as e:  # noqa: BLE001
            err = _internal(e, request_id)
            content, status = json.dumps(aws.error_body(err)), 500
        return Response(content, status_code=status, media_type=AWS_JSON,
                        headers={"x-amzn-RequestId": request_id})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes: list[BaseRoute] = [
        Route("/v1/kms/{operation}", rest_endpoint, methods=["POST"]),
        Route("/", aws_endpoint, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    if console is not None:
        async def to_console(_: Request) -> Response:
            return RedirectResponse("/console/", status_code=307)

        routes += [Route("/console", to_console, methods=["GET"]), Mount("/console", console)]
    return _AwsFront(Starlette(routes=routes), aws_endpoint)
