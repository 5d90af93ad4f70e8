"""The S3 proxy as a starlette app: addressing, authentication, routing, S3 XML errors."""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

from gateway.s3 import routing
from gateway.s3.auth import Authenticated, authenticate
from gateway.s3.bodies import idle_limited
from gateway.s3.errors import S3Error
from gateway.s3.messages import Reply, S3Request
from gateway.s3.names import check_key
from gateway.s3.proxy import S3Proxy

log = logging.getLogger("ssegw.s3")

Credentials = Callable[[str], tuple[str, str]]
Operation = Callable[[S3Request], Awaitable[Reply]]

_ID_PREFIX = uuid.uuid4().hex[:8].upper()
_IDS = itertools.count(1)


def split_address(host: str, path: str, domains: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(bucket, key) of a request: virtual-host style when Host is <bucket>.<one of domains>."""
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    for domain in domains:
        if hostname.endswith("." + domain):
            bucket = hostname[: -len(domain) - 1]
            key = path[1:] if len(path) > 1 else None
            return bucket, key
    parts = path[1:].split("/", 1) if len(path) > 1 else [""]
    return parts[0] or None, parts[1] if len(parts) > 1 and parts[1] != "" else None


def handlers(proxy: S3Proxy) -> dict[str, Operation]:
    """The handler of every operation the routing table names."""
    buckets, objects, up = proxy.bucket_ops, proxy.objects, proxy.uploads
    versions, acl = proxy.versions, proxy.acl
    return {
        "ListBuckets": buckets.list_buckets, "CreateBucket": buckets.create_bucket,
        "HeadBucket": buckets.head_bucket, "DeleteBucket": buckets.delete_bucket,
        "ListObjects": proxy.listing.list_objects, "ListObjectVersions": versions.list_object_versions,
        "ListMultipartUploads": up.list_uploads, "GetBucketLocation": buckets.bucket_location,
        "DeleteObjects": objects.delete_objects, "PutBucketEncryption": buckets.put_bucket_encryption,
        "GetBucketEncryption": buckets.get_bucket_encryption,
        "DeleteBucketEncryption": buckets.delete_bucket_encryption,
        "PutBucketVersioning": versions.put_bucket_versioning,
        "GetBucketVersioning": versions.get_bucket_versioning,
        "PutBucketAcl": acl.put_bucket_acl, "GetBucketAcl": acl.get_bucket_acl,
        "CopyObject": proxy.copier.copy_object, "PutObject": objects.put_object,
        "GetObject": objects.get_object, "HeadObject": objects.head_object,
        "DeleteObject": objects.delete_object, "CreateMultipartUpload": up.create,
        "UploadPartCopy": up.upload_part_copy, "UploadPart": up.upload_part,
        "CompleteMultipartUpload": up.completion.complete, "AbortMultipartUpload": up.abort,
        "ListParts": up.list_parts, "PutObjectAcl": acl.put_object_acl, "GetObjectAcl": acl.get_object_acl,
        "GetObjectAttributes": objects.get_object_attributes,
        "PutObjectTagging": proxy.tagging.put_object_tagging, "GetObjectTagging": proxy.tagging.get_object_tagging,
        "DeleteObjectTagging": proxy.tagging.delete_object_tagging,
    }


def _client_disconnect(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the disconnect may come wrapped (the backend upload reading our body)
        if seen is None:
            return False
        if isinstance(seen, ClientDisconnect):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Set in a request's task when its streamed answer was broken off on purpose; uvicorn then
# reports "ASGI callable returned without completing response", which our own line already says.
_BROKEN_OFF: ContextVar[bool] = ContextVar("ssegw_s3_broken_off", default=False)


class _BrokenOffNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_BROKEN_OFF.get() and "without completing response" in record.getMessage())


logging.getLogger("uvicorn.error").addFilter(_BrokenOffNotice())


class BrokenOffStream(Response):
    """A streamed answer that, when its body fails midway (an object that fails authentication
    past the first package, a backend that breaks off), stops without completing the response:
    the client sees the connection close short of Content-Length, never a clean end, and the log
    gets one line saying which request and what happened instead of an ASGI traceback."""

    def __init__(self, body: AsyncIterator[bytes | memoryview], status: int, headers: dict[str, str],
                 request_id: str) -> None:
        super().__init__(None, status, headers)
        self.body_iterator = body
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        try:
            async for piece in self.body_iterator:
                sent += len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        except S3Error as e:  # the stored object failed authentication, or the backend broke off
            _BROKEN_OFF.set(True)
            log.warning("request %s: %s after %d bytes were sent; connection broken off",
                        self.request_id, e.detail or e.message, sent)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def wrong_region(auth: Authenticated, headers: dict[str, str], regions: tuple[str, ...]) -> S3Error | None:
    """S3's answer to a request signed for a pool not served here (None when it is served): the
    object would otherwise be sealed in a pool whose readers never see it."""
    region = auth.caller.region
    if region in regions:
        return None
    if "authorization" in headers:
        e = S3Error("AuthorizationHeaderMalformed", f"The authorization header is malformed; the region "
                    f"'{region}' is wrong; expecting '{regions[0]}'", 400)
    else:
        e = S3Error("AuthorizationQueryParametersError", "Error parsing the X-Amz-Credential parameter; "
                    f"the region '{region}' is wrong; expecting '{regions[0]}'", 400)
    e.details["Region"] = regions[0]
    return e


class _Addressed:
    """What the edge reads from an HTTP request before anything is checked."""

    def __init__(self, request: Request, domains: tuple[str, ...]) -> None:
        self.method = request.method
        self.headers: dict[str, str] = {}
        for name, value in request.headers.items():
            name = name.lower()
            self.headers[name] = f"{self.headers[name]},{value}" if name in self.headers else value
        self.raw_path = request.scope.get("raw_path", b"/").decode("latin-1").split("?", 1)[0]
        self.path = unquote(self.raw_path)
        self.raw_query = request.scope.get("query_string", b"").decode("latin-1")
        self.query = dict(parse_qsl(self.raw_query, keep_blank_values=True))
        self.bucket, self.key = split_address(self.headers.get("host", ""), self.path, domains)


def error_response(exc: Exception, request_id: str, method: str, path: str) -> Response:
    """S3's XML answer to a failed request: an S3Error's own code and status, InternalError for
    anything else (a bug of ours: logged with its traceback)."""
    if _client_disconnect(exc):
        # Nobody is left to answer: one line, no traceback, not a failed request of ours.
        log.info("request %s: the client disconnected before sending the whole body (%s %s)",
                 request_id, method, path)
        return Response(b"", 400, {"connection": "close"})
    if isinstance(exc, S3Error):
        e = exc
        if e.detail:
            log.warning("request %s: %s", request_id, e.detail)
    else:
        log.exception("request %s failed", request_id)
        e = S3Error("InternalError", "We encountered an internal error. Please try again.", 500)
    e.resource = e.resource or path
    headers = {**e.headers, "x-amz-request-id": request_id, "content-type": "application/xml"}
    if method in ("PUT", "POST"):
        # The body may be unread; closing keeps its bytes from being parsed as the next
        # request on this connection.
        headers["connection"] = "close"
    return Response(b"" if method == "HEAD" else e.to_xml(request_id), e.status, headers)


def reply_response(reply: Reply, method: str, request_id: str) -> Response:
    headers = {"x-amz-request-id": request_id, **(reply.headers or {})}
    if not isinstance(reply.body, bytes):
        return BrokenOffStream(reply.body, reply.status, headers, request_id)
    if method == "HEAD":
        resp = Response(b"", reply.status, headers)
        if "content-length" in headers:
            resp.headers["content-length"] = headers["content-length"]
        return resp
    return Response(reply.body, reply.status, headers)


def create_app(proxy: S3Proxy, credentials: Credentials, *,
               domains: tuple[str, ...] = ("localhost",),
               frozen: Callable[[str], bool] | None = None,
               regions: tuple[str, ...] | None = None) -> Starlette:
    """`credentials(access_key_id)` → (account id, secret), UnknownAccessKey if unknown;
    `frozen(account id)` says whether the account is frozen (then every call is refused);
    `regions`: the resource pools served (None: any, as in tests of the proxy alone)."""
    ops = handlers(proxy)

    def admitted(at: _Addressed) -> Authenticated:
        """The request's caller, once its signature, pool, account and key name are fine."""
        auth = authenticate(method=at.method, raw_path=at.raw_path, raw_query=at.raw_query,
                            headers=at.headers, credentials=credentials)
        if regions is not None and (refused := wrong_region(auth, at.headers, regions)) is not None:
            raise refused
        if frozen is not None and frozen(auth.caller.account_id):
            raise S3Error("AccessDenied", "The account is frozen: every request is refused until "
                          "an operator thaws it.", 403)
        if at.key is not None:
            check_key(at.key)
        return auth

    async def handle(request: Request) -> Response:
        request_id = f"{_ID_PREFIX}{next(_IDS):012X}"
        at = _Addressed(request, domains)
        try:
            auth = admitted(at)
            route = routing.resolve(at.method, routing.level_of(at.bucket, at.key), at.query, at.headers)
            reply = await ops[route.operation](S3Request(
                at.method, at.bucket, at.key, at.query, at.headers, auth, idle_limited(request.stream()), request_id,
                secure=request.url.scheme == "https"))
        except Exception as exc:  # noqa: BLE001 - every failure gets S3's XML answer; error_response logs the unexpected
            return error_response(exc, request_id, at.method, at.path)
        return reply_response(reply, at.method, request_id)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.backend.close()  # this server's loop's backend connections

    # Every path and method goes to `handle`, so each answer is S3's XML: no route pattern that
    # a key with a newline (%0a) fails to match, and even OPTIONS or PATCH get S3's answer
    # (routing.resolve: 405 MethodNotAllowed), never starlette's plain-text one.
    app = Starlette(routes=[], lifespan=lifespan)
    app.router.default = request_response(handle)
    return app
