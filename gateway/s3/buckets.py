"""Bucket ownership and default encryption, kept as tags on the backend bucket.

The proxy keeps no state of its own (several proxies can share a backend), so which account
owns a bucket and its default encryption live in the bucket's tag set, which only the proxy
writes. Reads are cached briefly; writes through this proxy refresh the cache at once.
"""

from __future__ import annotations

import base64
import hashlib
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from gateway.s3.backend import S3_NS, Backend
from gateway.s3.errors import S3Error, access_denied, no_such_bucket

OWNER_TAG = "ssegw-owner"
SSE_TAG = "ssegw-sse"
KEY_TAG = "ssegw-kms-key"
BUCKET_KEY_TAG = "ssegw-bucket-key"
CACHE_TTL = 5.0


@dataclass(frozen=True)
class BucketEncryption:
    sse: str  # "aws:kms" or "AES256"
    kms_key: str | None = None
    bucket_key: bool = False


@dataclass(frozen=True)
class BucketInfo:
    owner: str | None
    encryption: BucketEncryption | None


def _tagging_xml(tags: dict[str, str]) -> bytes:
    items = "".join(f"<Tag><Key>{escape(k)}</Key><Value>{escape(v)}</Value></Tag>"
                    for k, v in sorted(tags.items()))
    return f'<Tagging xmlns="{S3_NS}"><TagSet>{items}</TagSet></Tagging>'.encode()


def _parse_tags(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    tags = {}
    for tag in root.iter(f"{{{S3_NS}}}Tag"):
        k, v = tag.findtext(f"{{{S3_NS}}}Key"), tag.findtext(f"{{{S3_NS}}}Value")
        if k is not None:
            tags[k] = v or ""
    return tags


class Buckets:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._cache: dict[str, tuple[float, BucketInfo]] = {}

    async def info(self, bucket: str) -> BucketInfo:
        hit = self._cache.get(bucket)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        r = await self._backend.send("GET", bucket, query={"tagging": ""})
        if r.status_code == 404 and b"NoSuchBucket" in r.content:
            raise no_such_bucket(bucket)
        if r.status_code == 404:  # NoSuchTagSet: a bucket made outside the proxy
            tags: dict[str, str] = {}
        elif r.status_code != 200:
            raise S3Error("InternalError", f"backend answered {r.status_code} reading bucket tags", 500)
        else:
            tags = _parse_tags(r.content)
        enc = None
        if SSE_TAG in tags:
            enc = BucketEncryption(tags[SSE_TAG], tags.get(KEY_TAG) or None,
                                   tags.get(BUCKET_KEY_TAG) == "true")
        info = BucketInfo(tags.get(OWNER_TAG), enc)
        self._cache[bucket] = (time.monotonic() + CACHE_TTL, info)
        return info

    async def check_owner(self, bucket: str, account_id: str) -> BucketInfo:
        info = await self.info(bucket)
        if info.owner != account_id:
            raise access_denied()
        return info

    async def write(self, bucket: str, owner: str, encryption: BucketEncryption | None) -> None:
        tags = {OWNER_TAG: owner}
        if encryption is not None:
            tags[SSE_TAG] = encryption.sse
            if encryption.kms_key:
                tags[KEY_TAG] = encryption.kms_key
            if encryption.bucket_key:
                tags[BUCKET_KEY_TAG] = "true"
        body = _tagging_xml(tags)
        r = await self._backend.send("PUT", bucket, query={"tagging": ""}, body=body, headers={
            "content-type": "application/xml",
            "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()})
        if r.status_code not in (200, 204):
            raise S3Error("InternalError", f"backend answered {r.status_code} writing bucket tags", 500)
        self._cache[bucket] = (time.monotonic() + CACHE_TTL, BucketInfo(owner, encryption))

    def forget(self, bucket: str) -> None:
        self._cache.pop(bucket, None)
