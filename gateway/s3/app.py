"""The S3 proxy as a starlette app: addressing, authentication, routing, S3 XML errors."""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.s3.auth import authenticate
from gateway.s3.backend import BackendError
from gateway.s3.errors import S3Error, not_implemented
from gateway.s3.proxy import Reply, S3Proxy, S3Request
from kms_core.sigv4 import UnknownAccessKey

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


def route(proxy: S3Proxy, method: str, bucket: str | None, key: str | None,
          query: dict[str, str]) -> Operation:
    if bucket is None:
        if method == "GET":
            return proxy.list_buckets
        raise not_implemented("only ListBuckets is served without a bucket")
    if key is None:
        table: dict[tuple[str, str | None], Operation] = {
            ("PUT", "encryption"): proxy.put_bucket_encryption,
            ("GET", "encryption"): proxy.get_bucket_encryption,
            ("DELETE", "encryption"): proxy.delete_bucket_encryption,
            ("GET", "location"): proxy.bucket_location,
            ("POST", "delete"): proxy.delete_objects,
            ("PUT", None): proxy.create_bucket,
            ("GET", None): proxy.list_objects,
            ("HEAD", None): proxy.head_bucket,
            ("DELETE", None): proxy.delete_bucket,
        }
        if "uploads" in query:
            if method != "GET":
                raise not_implemented(f"{method} on a bucket ?uploads is not supported")
            return proxy.uploads.list_uploads
        sub = next((q for q in ("encryption", "location", "delete") if q in query), None)
        if sub is None and any(q in query for q in ("tagging", "policy", "acl", "versioning",
                                                    "lifecycle", "cors", "website", "notification")):
            raise not_implemented(f"bucket subresource ?{next(iter(query))} is not supported")
        op = table.get((method, sub))
        if op is None:
            raise not_implemented(f"{method} on a bucket{f' ?{sub}' if sub else ''} is not supported")
        return op
    if "uploads" in query:
        if method != "POST":
            raise not_implemented(f"{method} on an object ?uploads is not supported")
        return proxy.uploads.create
    if "uploadId" in query:
        uploads: dict[str, Operation] = {"PUT": proxy.uploads.upload_part, "POST": proxy.uploads.complete,
                                         "DELETE": proxy.uploads.abort, "GET": proxy.uploads.list_parts}
        upload_op = uploads.get(method)
        if upload_op is None or (method == "PUT" and "partNumber" not in query):
            raise not_implemented(f"{method} on a multipart upload is not supported")
        return upload_op
    if any(q in query for q in ("tagging", "acl", "retention", "legal-hold",
                                "torrent", "restore", "select", "attributes")):
        raise not_implemented("this object subresource is not supported yet")
    ops: dict[str, Operation] = {"PUT": proxy.put_object, "GET": proxy.get_object,
                                 "HEAD": proxy.head_object, "DELETE": proxy.delete_object}
    op = ops.get(method)
    if op is None:
        raise not_implemented(f"{method} on an object is not supported")
    return op


def create_app(proxy: S3Proxy, credentials: Credentials, *,
               domains: tuple[str, ...] = ("localhost",)) -> Starlette:
    """`credentials(access_key_id)` → (account id, secret), UnknownAccessKey if unknown."""

    async def handle(request: Request) -> Response:
        request_id = f"{_ID_PREFIX}{next(_IDS):012X}"
        method = request.method
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        raw_path = request.scope.get("raw_path", b"/").decode("latin-1").split("?", 1)[0]
        path = unquote(raw_path)
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        bucket, key = split_address(headers.get("host", ""), path, domains)
        resource = path
        try:
            auth = authenticate(method=method, raw_path=raw_path, raw_query=raw_query,
                                headers=headers, credentials=credentials)
            op = route(proxy, method, bucket, key, query)
            reply = await op(S3Request(method, bucket, key, query, headers, auth, request.stream(),
                                       request_id, secure=request.url.scheme == "https"))
        except Exception as exc:
            if isinstance(exc, S3Error):
                e = exc
            elif isinstance(exc, BackendError):
                log.warning("request %s: %s", request_id, exc)
                e = S3Error("ServiceUnavailable", "The storage backend is unavailable. Please try again.", 503)
            elif isinstance(exc, UnknownAccessKey):
                e = S3Error("InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.", 403)
            else:
                log.exception("request %s failed", request_id)
                e = S3Error("InternalError", "We encountered an internal error. Please try again.", 500)
            e.resource = e.resource or resource
            error_headers = {"x-amz-request-id": request_id, "content-type": "application/xml"}
            if method in ("PUT", "POST"):
                # The body may be unread; closing keeps its bytes from being parsed as the
                # next request on this connection.
                error_headers["connection"] = "close"
            return Response(b"" if method == "HEAD" else e.to_xml(request_id), e.status, error_headers)
        out_headers = {"x-amz-request-id": request_id, **(reply.headers or {})}
        if isinstance(reply.body, bytes):
            if method == "HEAD":
                resp = Response(b"", reply.status, out_headers)
                if "content-length" in out_headers:
                    resp.headers["content-length"] = out_headers["content-length"]
                return resp
            return Response(reply.body, reply.status, out_headers)
        return StreamingResponse(reply.body, reply.status, out_headers)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.backend.close()  # this server's loop's backend connections

    methods = ["GET", "PUT", "POST", "DELETE", "HEAD"]
    return Starlette(routes=[Route("/", handle, methods=methods),
                             Route("/{path:path}", handle, methods=methods)], lifespan=lifespan)
