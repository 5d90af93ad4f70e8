"""ListObjects (v1 and v2): the backend's listing with each object's plaintext size and ETag.

A listed object's plaintext size and ETag are in its envelope metadata, which a listing does
not show: each is learnt with one HEAD per backend ETag and kept (an ETag names the stored
bytes, whichever key or version holds them). ListObjectVersions (versions.py) uses the same.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from urllib.parse import unquote

from gateway.s3.auth import Authenticated
from gateway.s3.backend import S3_NS, Backend, backend_error
from gateway.s3.buckets import Buckets
from gateway.s3.encryption import ObjectEncryption
from gateway.s3.errors import S3Error
from gateway.s3.messages import Reply, S3Request
from gateway.s3.reader import Reader, derived_listing

_LIST_CONCURRENCY = 16
_LIST_ARGS = ("prefix", "delimiter", "max-keys", "marker", "continuation-token", "start-after",
              "encoding-type", "fetch-owner", "list-type")
_CACHE_LIMIT = 100_000


def drop_checksums(el: ET.Element) -> None:
    """Removes every Checksum* element under `el`: the backend's, of ciphertext."""
    for child in list(el):
        if child.tag.removeprefix(f"{{{S3_NS}}}").startswith("Checksum"):
            el.remove(child)
        else:
            drop_checksums(child)


def owned_by_caller(root: ET.Element, req: S3Request) -> None:
    """Every Owner and Initiator in a listing names the caller: the backend's account (its
    canonical ID and display name) is not the client's to see."""
    ns = f"{{{S3_NS}}}"
    for owner in list(root.iter(f"{ns}Owner")) + list(root.iter(f"{ns}Initiator")):
        for child in owner:
            child.text = req.auth.caller.account_id


class Listing:
    def __init__(self, backend: Backend, buckets: Buckets, reader: Reader, sse: ObjectEncryption) -> None:
        self.backend = backend
        self.buckets = buckets
        self.reader = reader
        self.sse = sse  # a listed object's metadata is vouched for as HEAD does
        self._cache: dict[tuple[str, str, str], tuple[int, str]] = {}

    def forget_all(self) -> None:
        """Drop what was learnt (as another node would start: with nothing)."""
        self._cache.clear()

    async def plain_stat(self, auth: Authenticated, bucket: str, key: str, etag: str, size: int,
                         version_id: str | None = None) -> tuple[int, str]:
        """Plaintext (size, ETag) of a listed object (or version), as HEAD would answer them
        (`reader.listed`); HEADs it once per backend ETag (an ETag names the stored bytes,
        whichever version holds them)."""
        ck = (bucket, key, etag)
        hit = self._cache.get(ck)
        if hit:
            return hit
        try:
            stored = await self.reader.stat(bucket, key, version_id=version_id)
            result = await self.reader.listed(stored, size, etag, lambda s: self.sse.open_key(auth, s))
        except S3Error:  # damaged metadata: listed by the format's rules, reads will refuse it
            result = derived_listing(size, etag)
        if len(self._cache) > _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ck] = result
        return result

    async def list_objects(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        query = {k: v for k, v in req.query.items() if k in _LIST_ARGS}
        r = await self.backend.send("GET", req.bucket, query=query)
        if r.status_code != 200:
            await backend_error(r)
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        await self.plain_entries(req, list(root.iter(f"{{{S3_NS}}}Contents")))
        owned_by_caller(root, req)
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))

    async def plain_entries(self, req: S3Request, entries: list[ET.Element]) -> None:
        """Rewrites each listed entry's Size and ETag (of a ListObjects `Contents` or a
        ListObjectVersions `Version`) to the plaintext's, and drops the backend's checksum
        algorithm: it is of the ciphertext (a multipart object's sealed parts are sent with
        CRC32), and the listing does not carry the plaintext checksum's."""
        ns = f"{{{S3_NS}}}"
        for el in entries:
            drop_checksums(el)
        url_encoded = req.query.get("encoding-type") == "url"
        sem = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def fix(el: ET.Element) -> None:
            key = el.findtext(f"{ns}Key") or ""
            version = el.findtext(f"{ns}VersionId")
            size_el, etag_el = el.find(f"{ns}Size"), el.find(f"{ns}ETag")
            if size_el is None or etag_el is None:
                return
            async with sem:
                size, etag = await self.plain_stat(req.auth, req.bucket or "",
                                                   unquote(key) if url_encoded else key, etag_el.text or "",
                                                   int(size_el.text or 0), version)
            size_el.text, etag_el.text = str(size), etag

        await asyncio.gather(*(fix(el) for el in entries))
