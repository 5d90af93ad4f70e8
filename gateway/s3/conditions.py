"""Conditional requests: If-Match, If-None-Match and the date conditions of reads and writes,
compared with the ETag the client sees (the plaintext's, not the backend's)."""

from __future__ import annotations

from gateway.s3.errors import S3Error, no_such_key
from gateway.s3.messages import Reply, S3Request, last_modified
from gateway.s3.ranges import check_conditions
from gateway.s3.reader import Reader, Stored


def precondition_failed(resource: str = "") -> S3Error:
    return S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                   412, resource)


def read_conditions(req: S3Request, stored: Stored) -> Reply | None:
    """304 (a Reply) or 412 (raised, with S3's XML body on GET) when the request's
    conditions say so, compared with the ETag the client sees; None: serve the object."""
    status = check_conditions(req.headers, stored.etag, last_modified(stored.headers))
    if status == 412:
        raise precondition_failed(f"/{stored.bucket}/{stored.key}")
    if status == 304:
        headers = {"etag": stored.etag}
        for name in ("last-modified", "x-amz-version-id"):
            if stored.headers.get(name):
                headers[name] = stored.headers[name]
        return Reply(304, headers)
    return None


async def write_conditions(reader: Reader, req: S3Request) -> dict[str, str]:
    """If-None-Match: * and If-Match on a write (PutObject, CompleteMultipartUpload),
    checked against the ETag the client sees: 412 (or 404 for If-Match on no object) when
    they fail. Returns the same conditions in the backend's terms, so the backend refuses
    the write if the object changed in between."""
    assert req.bucket is not None and req.key is not None
    if_match, if_none = req.headers.get("if-match"), req.headers.get("if-none-match")
    if if_match is None and if_none is None:
        return {}
    if if_none is not None and if_none.strip() != "*":
        raise S3Error("NotImplemented", "If-None-Match on a write accepts only *", 501)
    stored = await reader.stat(req.bucket, req.key)
    failed = precondition_failed(f"/{req.bucket}/{req.key}")
    guard: dict[str, str] = {}
    if if_none is not None:
        if stored is not None:
            raise failed
        guard["if-none-match"] = "*"
    if if_match is not None:
        if stored is None:
            raise no_such_key(req.bucket, req.key)
        wanted = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
        if "*" not in wanted and stored.etag.strip('"') not in wanted:
            raise failed
        if stored.backend_etag:
            guard["if-match"] = stored.backend_etag
    return guard
