"""Versioning: the bucket's versioning state and ListObjectVersions, as the backend keeps them.

Versions are the backend's: each PUT through the proxy is sealed on its own (its own data key,
sealed with the bucket and object name as context, the same for every version of a key), so
every version opens as the object it was, whatever happened to the key since. The proxy only
reads versions by id (GET, HEAD, copy sources: objects.py, reader.py, copy.py) and shows the
listing with plaintext sizes and ETags, as it does ListObjects.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET

from gateway.s3 import xml_bodies
from gateway.s3.backend import S3_NS, Backend, backend_error
from gateway.s3.bodies import buffered_body
from gateway.s3.buckets import Buckets
from gateway.s3.errors import S3Error
from gateway.s3.listing import Listing, owned_by_caller
from gateway.s3.messages import Reply, S3Request, xml_doc

_NS = f"{{{S3_NS}}}"
_LIST_ARGS = ("delimiter", "encoding-type", "key-marker", "max-keys", "prefix", "version-id-marker")


class Versions:
    def __init__(self, backend: Backend, buckets: Buckets, listing: Listing) -> None:
        self.backend = backend
        self.buckets = buckets
        self.listing = listing

    async def put_bucket_versioning(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        status = xml_bodies.versioning(await buffered_body(req, xml_bodies.SMALL_LIMIT))
        clean = f'<VersioningConfiguration xmlns="{S3_NS}"><Status>{status}</Status></VersioningConfiguration>'.encode()
        r = await self.backend.send("PUT", req.bucket, query={"versioning": ""}, body=clean, headers={
            "content-type": "application/xml",
            "content-md5": base64.b64encode(hashlib.md5(clean).digest()).decode()})
        if r.status_code != 200:
            await backend_error(r)
        return Reply(200)

    async def get_bucket_versioning(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        r = await self.backend.send("GET", req.bucket, query={"versioning": ""})
        if r.status_code != 200:
            await backend_error(r)
        try:
            status = ET.fromstring(r.content).findtext(f"{_NS}Status")
        except ET.ParseError:
            raise S3Error("InternalError", "the backend's versioning answer is not XML", 500) from None
        inner = f"<Status>{status}</Status>" if status in ("Enabled", "Suspended") else ""
        return Reply(200, {"content-type": "application/xml"},
                     xml_doc(f'<VersioningConfiguration xmlns="{S3_NS}">{inner}</VersioningConfiguration>'))

    async def list_object_versions(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        query = {k: v for k, v in req.query.items() if k in _LIST_ARGS}
        query["versions"] = ""
        r = await self.backend.send("GET", req.bucket, query=query)
        if r.status_code != 200:
            await backend_error(r)
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        owned_by_caller(root, req)
        await self.listing.plain_entries(req, list(root.iter(f"{_NS}Version")))
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))
