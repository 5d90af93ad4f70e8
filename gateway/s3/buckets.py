"""Bucket ownership (claimed in the KMS) and default encryption (tags on the backend bucket).

Which account owns a bucket name is a claim in the KMS database every gateway node shares
(`kms_core.buckets`, reached through the caller's KMS client): the first claim of a name wins
it on every node at once, the loser gets BucketAlreadyExists before the backend is touched. A
backend bucket nobody claimed is nobody's: it stays unreachable through the proxy until an
operator assigns it (`ssegw s3 assign-bucket`). Buckets made by earlier releases carry their
owner in an `ssegw-owner` tag: that owner's claim is recorded the first time they use it.

Default encryption lives in the bucket's tag set, which only the proxy writes. Reads are cached
briefly (CACHE_TTL, shorter than the KMS's REUSE_DELAY for a deleted bucket's name); writes
through this proxy refresh the cache at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from xml.sax.saxutils import escape

import anyio

from gateway.s3.auth import Authenticated
from gateway.s3.backend import S3_NS, Backend, BackendError
from gateway.s3.errors import S3Error, access_denied, from_kms, no_such_bucket
from gateway.s3.messages import S3Request
from kms_core.client import KmsClient, KmsError

T = TypeVar("T")

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


def bucket_exists_error(bucket: str) -> S3Error:
    return S3Error("BucketAlreadyExists", "The requested bucket name is not available. The bucket "
                   "namespace is shared by all users of the system. Please select a different name "
                   "and try again.", 409, f"/{bucket}")


def already_yours(bucket: str) -> S3Error:
    return S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket "
                   "succeeded and you already own it.", 409, f"/{bucket}")


class Buckets:
    def __init__(self, backend: Backend, kms_for: Callable[[Authenticated], KmsClient]) -> None:
        self._backend = backend
        self._kms_for = kms_for
        self._cache: dict[str, tuple[float, BucketInfo]] = {}
        # (bucket, account) -> (expiry, owns it): the claim as this node last heard it.
        self._claims: dict[tuple[str, str], tuple[float, bool]] = {}

    async def _kms(self, auth: Authenticated, fn: Callable[[KmsClient], T]) -> T:
        client = self._kms_for(auth)
        try:
            return await anyio.to_thread.run_sync(lambda: fn(client))
        except KmsError as e:
            raise from_kms(e) from None

    async def _remember(self, bucket: str, account_id: str, owns: bool) -> None:
        if len(self._claims) > 100_000:
            self._claims.clear()
        self._claims[(bucket, account_id)] = (time.monotonic() + CACHE_TTL, owns)

    async def owns(self, bucket: str, auth: Authenticated) -> bool:
        """Whether the caller owns `bucket`: its claim, or (adopted now) its legacy owner tag."""
        account = auth.caller.account_id
        hit = self._claims.get((bucket, account))
        if hit and hit[0] > time.monotonic():
            return hit[1]
        access = await self._kms(auth, lambda c: c.bucket_access(bucket))
        if access == "none":
            # A bucket from before claims: its tagged owner's claim is recorded on first sight.
            # An untagged one (made in the backend directly) is nobody's until assigned.
            if (await self.info(bucket)).owner != account:
                return False
            claim = await self._kms(auth, lambda c: c.claim_bucket(bucket))
            access = "mine" if claim in ("created", "yours") else "other"
        owns = access == "mine"
        await self._remember(bucket, account, owns)
        return owns

    async def owned_among(self, names: list[str], auth: Authenticated) -> set[str]:
        """Which of `names` the caller owns: one KMS call, plus adoption of tagged old buckets."""
        owned = set(await self._kms(auth, lambda c: c.owned_buckets()))
        account = auth.caller.account_id
        for name in owned:
            await self._remember(name, account, True)
        rest = [n for n in names if n not in owned]
        infos = await asyncio.gather(*(self.info(n) for n in rest), return_exceptions=True)
        for name, info in zip(rest, infos, strict=True):
            if isinstance(info, BucketInfo) and info.owner == account and await self.owns(name, auth):
                owned.add(name)
        return {n for n in names if n in owned}

    async def owned(self, req: S3Request) -> BucketInfo:
        """The info of the bucket a request names, which the caller must own (else S3Error)."""
        assert req.bucket is not None
        return await self.check(req.bucket, req.auth)

    async def check(self, bucket: str, auth: Authenticated) -> BucketInfo:
        """The bucket's settings, if the caller owns it (AccessDenied / NoSuchBucket otherwise)."""
        if not await self.owns(bucket, auth):
            await self.info(bucket)  # NoSuchBucket when there is no such bucket at all
            raise access_denied()
        return await self.info(bucket)

    async def create(self, bucket: str, auth: Authenticated) -> None:
        """Claim `bucket` for the caller, then make it in the backend (only the winner does)."""
        account = auth.caller.account_id
        claim = await self._kms(auth, lambda c: c.claim_bucket(bucket))
        if claim == "taken":
            raise bucket_exists_error(bucket)
        if claim == "busy":
            raise S3Error("OperationAborted", "A conflicting conditional operation is currently in "
                          "progress against this resource. Please try again.", 409, f"/{bucket}")
        self._claims.pop((bucket, account), None)
        self.forget(bucket)
        head = await self._backend.send("HEAD", bucket)
        if head.status_code == 200:
            if claim == "yours":
                raise already_yours(bucket)
            # The name was free in our claims but the backend has the bucket: one from before
            # claims (adopted if the caller's tag says so) or one made around the proxy (nobody's).
            info = await self.info(bucket)
            if info.owner == account:
                raise already_yours(bucket)
            await self._kms(auth, lambda c: c.release_bucket(bucket, hold=False))
            raise bucket_exists_error(bucket)
        try:
            r = await self._backend.send("PUT", bucket)
        except BackendError:
            await self._kms(auth, lambda c: c.release_bucket(bucket, hold=False))
            raise
        if r.status_code != 200:
            await self._kms(auth, lambda c: c.release_bucket(bucket, hold=False))
            raise S3Error("ServiceUnavailable", f"the backend answered {r.status_code} creating the bucket", 503)
        await self.write(bucket, account, None)
        await self._remember(bucket, account, True)

    async def release(self, bucket: str, auth: Authenticated) -> None:
        """The bucket is gone from the backend: give its name up."""
        self._claims.pop((bucket, auth.caller.account_id), None)
        self.forget(bucket)
        await self._kms(auth, lambda c: c.release_bucket(bucket))

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
