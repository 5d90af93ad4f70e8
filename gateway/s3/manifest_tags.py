"""A format v4 multipart object's manifest, kept as its `ssegw-manifest` object tag.

The manifest (envelope.py) is written after the backend completed the upload, with
PutObjectTagging: S3 changes no byte, ETag or version for it, which is what makes completion
cost one small request instead of a copy of the object onto itself. The client's own tags
(x-amz-tagging on CreateMultipartUpload) are kept beside it; the proxy leaves them one tag
less than S3's ten (`envelope.MAX_USER_TAGS`).
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from gateway.s3.backend import S3_NS, Backend, BackendResponse
from gateway.s3.envelope import MANIFEST_TAG, MAX_USER_TAGS
from gateway.s3.errors import S3Error

_NS = f"{{{S3_NS}}}"


def query(version_id: str | None) -> dict[str, str]:
    """The query of a tagging request on `version_id` (the null version: the current one)."""
    query = {"tagging": ""}
    if version_id is not None and version_id != "null":
        query["versionId"] = version_id
    return query


async def read(backend: Backend, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
    """The object's tags as the backend holds them (empty: none, or no such object)."""
    r = await backend.send("GET", bucket, key, query=query(version_id))
    if r.status_code == 404:
        return {}
    if r.status_code != 200:
        raise S3Error("InternalError", f"the backend answered {r.status_code} reading the object's tags", 500)
    return parse(r.content)


def parse(answer: bytes) -> dict[str, str]:
    """The tags of the backend's GetObjectTagging answer, in order."""
    try:
        root = ET.fromstring(answer)
    except ET.ParseError:
        raise S3Error("InternalError", "the backend's answer to a tagging read is not XML", 500) from None
    return {t.findtext(_NS + "Key") or "": t.findtext(_NS + "Value") or "" for t in root.iter(_NS + "Tag")}


async def write(backend: Backend, bucket: str, key: str, version_id: str | None, manifest: str) -> None:
    """Sets the manifest tag, keeping the object's other tags. Idempotent."""
    tags = await read(backend, bucket, key, version_id)
    if tags.get(MANIFEST_TAG) == manifest:
        return
    tags[MANIFEST_TAG] = manifest
    r = await put_all(backend, bucket, key, version_id, tags)
    if r.status_code != 200:
        raise S3Error("InternalError", f"the backend answered {r.status_code} writing the object's manifest", 500)


async def put_all(backend: Backend, bucket: str, key: str, version_id: str | None,
                  tags: dict[str, str]) -> BackendResponse:
    """Replaces the object's whole tag set with `tags`: the backend's answer."""
    body = _tagging(tags).encode()
    return await backend.send("PUT", bucket, key, query=query(version_id), body=body, headers={
        "content-type": "application/xml", "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()})


def tagging_xml(tags: dict[str, str]) -> bytes:
    """A GetObjectTagging answer's body."""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{_tagging(tags)}'.encode()


def _tagging(tags: dict[str, str]) -> str:
    items = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>" for k, v in tags.items())
    return f'<Tagging xmlns="{S3_NS}"><TagSet>{items}</TagSet></Tagging>'


def has_room(header: str | None) -> bool:
    """Whether an object written with this x-amz-tagging leaves S3's tenth tag for the gateway."""
    return header is None or len(parse_qsl(header, keep_blank_values=True)) <= MAX_USER_TAGS


def check_user_tags(header: str | None) -> None:
    """InvalidTag when a multipart upload's x-amz-tagging leaves no room for the manifest."""
    if not has_room(header):
        raise S3Error("InvalidTag", f"Object tags cannot be greater than {MAX_USER_TAGS} on a multipart upload "
                      "through this gateway (it keeps the object's manifest in the tenth)", 400)
    refuse_reserved(header)


def refuse_reserved(header: str | None) -> None:
    """InvalidTag when an x-amz-tagging header names the manifest's tag key (on any write: the
    key means a multipart object's manifest wherever the gateway finds it)."""
    if header is not None and any(k == MANIFEST_TAG for k, _ in parse_qsl(header, keep_blank_values=True)):
        raise reserved_key()


def reserved_key() -> S3Error:
    return S3Error("InvalidTag", f"The tag key {MANIFEST_TAG} is reserved by this gateway", 400)
