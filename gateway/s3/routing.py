"""Which S3 operation a request is: one table, (method, level, sub-resources, header) -> operation.

S3 names most operations by a sub-resource in the query string (`?versioning`, `?acl`,
`?uploads`...). Every name the S3 API reference uses is listed in SUBRESOURCES; a request is
matched on the exact set of those names it carries (other query parameters such as `prefix`,
`x-id` or `response-content-type` are arguments, not selectors). A request that matches no row
is answered 501 NotImplemented naming what it asked for: a sub-resource we do not serve must
never fall through to another operation (`PUT /b?ownershipControls` is not CreateBucket, and
`GET /b?versions` is not ListObjects).

Pure: no HTTP, no proxy. `bind(proxy)` (in app.py) maps the operation names to handlers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.s3.errors import S3Error

Level = Literal["service", "bucket", "object"]
METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")

# Every query-string name that selects or qualifies an operation in the S3 API reference
# (botocore's S3 model, plus the qualifiers versionId, partNumber, uploadId and the names the
# reference documents for older operations). tests/gateway/s3/test_routing.py checks this list
# against the botocore model installed, so a new S3 operation shows up as a failing test.
SUBRESOURCES: frozenset[str] = frozenset({
    "abac", "accelerate", "acl", "analytics", "annotation", "attributes", "cors",
    "default-storage-class", "delete", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "location", "logging", "metadataAnnotationTable",
    "metadataConfiguration", "metadataInventoryTable", "metadataJournalTable", "metadataTable",
    "metrics", "notification", "object-lock", "ownershipControls", "part", "partNumber", "policy",
    "policyStatus", "publicAccessBlock", "renameObject", "replication", "requestPayment",
    "restore", "retention", "select", "session", "tagging", "torrent", "uploadId", "uploads",
    "versionId", "versioning", "versions", "website",
})


@dataclass(frozen=True)
class Route:
    method: str
    level: Level
    operation: str  # the S3 operation's name, e.g. "ListObjectVersions"
    required: frozenset[str] = frozenset()  # sub-resources that must all be present
    optional: frozenset[str] = frozenset()  # sub-resources that may also be present
    header: str | None = None  # a header that must be present (x-amz-copy-source)

    def matches(self, method: str, level: Level, present: frozenset[str], headers: Mapping[str, str]) -> bool:
        return (self.method == method and self.level == level and self.required <= present
                and present - self.required <= self.optional
                and (self.header is None or self.header in headers))


def _r(method: str, level: Level, operation: str, required: Iterable[str] = (), optional: Iterable[str] = (),
       header: str | None = None) -> Route:
    return Route(method, level, operation, frozenset(required), frozenset(optional), header)


_COPY = "x-amz-copy-source"

# First match wins: rows with a header come before the same row without it.
ROUTES: tuple[Route, ...] = (
    _r("GET", "service", "ListBuckets"),
    # buckets
    _r("PUT", "bucket", "CreateBucket"),
    _r("HEAD", "bucket", "HeadBucket"),
    _r("DELETE", "bucket", "DeleteBucket"),
    _r("GET", "bucket", "ListObjects"),
    _r("GET", "bucket", "ListObjectVersions", ["versions"]),
    _r("GET", "bucket", "ListMultipartUploads", ["uploads"]),
    _r("GET", "bucket", "GetBucketLocation", ["location"]),
    _r("POST", "bucket", "DeleteObjects", ["delete"]),
    _r("PUT", "bucket", "PutBucketEncryption", ["encryption"]),
    _r("GET", "bucket", "GetBucketEncryption", ["encryption"]),
    _r("DELETE", "bucket", "DeleteBucketEncryption", ["encryption"]),
    _r("PUT", "bucket", "PutBucketVersioning", ["versioning"]),
    _r("GET", "bucket", "GetBucketVersioning", ["versioning"]),
    _r("PUT", "bucket", "PutBucketAcl", ["acl"]),
    _r("GET", "bucket", "GetBucketAcl", ["acl"]),
    # objects
    _r("PUT", "object", "CopyObject", header=_COPY),
    _r("PUT", "object", "PutObject"),
    _r("GET", "object", "GetObject", optional=["versionId", "partNumber"]),
    _r("HEAD", "object", "HeadObject", optional=["versionId", "partNumber"]),
    _r("DELETE", "object", "DeleteObject", optional=["versionId"]),
    _r("POST", "object", "CreateMultipartUpload", ["uploads"]),
    _r("PUT", "object", "UploadPartCopy", ["uploadId", "partNumber"], header=_COPY),
    _r("PUT", "object", "UploadPart", ["uploadId", "partNumber"]),
    _r("POST", "object", "CompleteMultipartUpload", ["uploadId"]),
    _r("DELETE", "object", "AbortMultipartUpload", ["uploadId"]),
    _r("GET", "object", "ListParts", ["uploadId"]),
    _r("PUT", "object", "PutObjectAcl", ["acl"], ["versionId"]),
    _r("GET", "object", "GetObjectAcl", ["acl"], ["versionId"]),
    _r("GET", "object", "GetObjectAttributes", ["attributes"], ["versionId"]),
    _r("PUT", "object", "PutObjectTagging", ["tagging"], ["versionId"]),
    _r("GET", "object", "GetObjectTagging", ["tagging"], ["versionId"]),
    _r("DELETE", "object", "DeleteObjectTagging", ["tagging"], ["versionId"]),
)

_WHERE = {"service": "the service", "bucket": "a bucket", "object": "an object"}


def level_of(bucket: str | None, key: str | None) -> Level:
    return "service" if bucket is None else "bucket" if key is None else "object"


def subresources(query: Iterable[str]) -> frozenset[str]:
    return frozenset(q for q in query if q in SUBRESOURCES)


def resolve(method: str, level: Level, query: Iterable[str], headers: Mapping[str, str]) -> Route:
    """The route of a request, or S3Error NotImplemented (501) naming what is not served."""
    if method not in METHODS:
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)
    present = subresources(query)
    for route in ROUTES:
        if route.matches(method, level, present, headers):
            return route
    raise unrouted(method, level, present)


def unrouted(method: str, level: Level, present: frozenset[str]) -> S3Error:
    where = _WHERE[level]
    served = {n for r in ROUTES if r.method == method and r.level == level for n in r.required | r.optional}
    unknown = sorted(present - served) or sorted(present)
    if unknown:
        names = ", ".join(f"?{n}" for n in unknown)
        return S3Error("NotImplemented", f"{method} on {where} with {names} is not implemented by this "
                       "gateway", 501)
    if method == "POST" and level == "bucket":
        return S3Error("NotImplemented", "POST on a bucket (browser form uploads, PostObject) is not "
                       "implemented by this gateway", 501)
    return S3Error("NotImplemented", f"{method} on {where} is not implemented by this gateway", 501)
