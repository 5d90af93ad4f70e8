"""What an S3 operation is handed and what it answers, and the headers every operation shares.

The edge (app.py) turns each HTTP request into an `S3Request` and each `Reply` back into an
HTTP answer; the operations in between (objects.py, copy.py, uploads.py, ...) see only these,
never starlette. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime

from gateway.s3 import envelope
from gateway.s3.auth import Authenticated
from gateway.s3.errors import invalid_argument
from gateway.s3.names import check_metadata

# The SSE request and answer headers (SSE-KMS and SSE-S3; SSE-C's are in sse_c.py).
SSE = "x-amz-server-side-encryption"
SSE_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
SSE_CTX = "x-amz-server-side-encryption-context"
SSE_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
SSE_HEADERS = (SSE, SSE_KEY, SSE_CTX, SSE_BUCKET_KEY)

# Standard headers a new object keeps from the request that writes it.
PUT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-language",
               "expires", "x-amz-storage-class", "x-amz-tagging", "x-amz-website-redirect-location")
# Kept from the stored object when a copy keeps its metadata (x-amz-metadata-directive: COPY).
COPIED_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires", "x-amz-website-redirect-location")


@dataclass
class S3Request:
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)  # they may carry an SSE-C key
    auth: Authenticated
    body: AsyncIterator[bytes]
    request_id: str
    secure: bool = False  # came over TLS (SSE-C is refused otherwise, unless allowed)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] | None = None
    body: bytes | AsyncIterator[bytes | memoryview] = b""


def xml_doc(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()


def version_of(req: S3Request) -> str | None:
    """The versionId a request names (None: the current version)."""
    value = req.query.get("versionId")
    if value is None:
        return None
    if not value:
        raise invalid_argument("Version id cannot be the empty string")
    return value


def version_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """x-amz-version-id and x-amz-delete-marker of a backend answer, for the client."""
    return {h: headers[h] for h in ("x-amz-version-id", "x-amz-delete-marker") if headers.get(h)}


def last_modified(headers: Mapping[str, str]) -> datetime | None:
    value = headers.get("last-modified")
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


def put_headers(req: S3Request) -> dict[str, str]:
    """The client's metadata and standard headers to store with a new object."""
    check_metadata(req.headers)
    out = {}
    for name, value in req.headers.items():
        if name.startswith("x-amz-meta-"):
            if name.startswith(envelope.META_PREFIX):
                raise invalid_argument(f"metadata names starting with {envelope.META_PREFIX} are reserved")
            out[name] = value
        elif name in PUT_HEADERS:
            out[name] = value
    enc = req.headers.get("content-encoding")
    if enc:
        rest = ",".join(e for e in (x.strip() for x in enc.split(",")) if e and e != "aws-chunked")
        if rest:
            out["content-encoding"] = rest
    return out


def copied_headers(stored: Mapping[str, str]) -> dict[str, str]:
    """The user metadata and standard headers of a stored object that a copy of it keeps."""
    out = {}
    for name, value in stored.items():
        name = name.lower()
        if (name.startswith("x-amz-meta-") and not name.startswith(envelope.META_PREFIX)) or name in COPIED_HEADERS:
            out[name] = value
    return out
