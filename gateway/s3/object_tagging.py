"""Object tagging (Put/Get/DeleteObjectTagging): the client's tags, kept by the backend beside
the gateway's own.

A format v4 multipart object keeps its manifest in an `ssegw-manifest` tag (manifest_tags.py).
That tag is never shown, never replaced or removed here, and its key is refused to clients; an
object that holds it leaves the client one tag less than S3's ten. Tags are stored as given
(S3 does not encrypt them either): do not put secrets in them.
"""

from __future__ import annotations

from gateway.s3 import manifest_tags, xml_bodies
from gateway.s3.backend import Backend, BackendResponse, backend_error
from gateway.s3.bodies import buffered_body
from gateway.s3.buckets import Buckets
from gateway.s3.envelope import MANIFEST_TAG
from gateway.s3.messages import Reply, S3Request, version_of


class ObjectTagging:
    def __init__(self, backend: Backend, buckets: Buckets) -> None:
        self.backend = backend
        self.buckets = buckets

    async def _current(self, req: S3Request) -> tuple[dict[str, str], dict[str, str]]:
        """(the object's tags as the backend holds them, the version header to answer with);
        the backend's error (NoSuchKey, NoSuchVersion...) if it has no such object."""
        assert req.bucket is not None and req.key is not None
        version = version_of(req)
        r = await self.backend.send("GET", req.bucket, req.key, query=manifest_tags.query(version))
        if r.status_code != 200:
            await backend_error(r)
        return manifest_tags.parse(r.content), _version_header(r)

    async def get_object_tagging(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        tags, headers = await self._current(req)
        shown = {k: v for k, v in tags.items() if k != MANIFEST_TAG}
        return Reply(200, {"content-type": "application/xml", **headers}, manifest_tags.tagging_xml(shown))

    async def put_object_tagging(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        wanted = xml_bodies.object_tagging(await buffered_body(req, xml_bodies.SMALL_LIMIT))
        if MANIFEST_TAG in wanted:
            raise manifest_tags.reserved_key()
        current, _ = await self._current(req)
        kept = {MANIFEST_TAG: current[MANIFEST_TAG]} if MANIFEST_TAG in current else {}
        if len(wanted) + len(kept) > xml_bodies.MAX_TAGS:
            raise xml_bodies.too_many_tags(xml_bodies.MAX_TAGS - len(kept),
                                           " on this object (the gateway keeps its manifest in the tenth)")
        return await self._replace(req, {**wanted, **kept})

    async def delete_object_tagging(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        current, headers = await self._current(req)
        if MANIFEST_TAG not in current:
            assert req.bucket is not None and req.key is not None
            r = await self.backend.send("DELETE", req.bucket, req.key, query=manifest_tags.query(version_of(req)))
            if r.status_code not in (200, 204):
                await backend_error(r)
            return Reply(204, _version_header(r) or headers)
        reply = await self._replace(req, {MANIFEST_TAG: current[MANIFEST_TAG]})
        return Reply(204, reply.headers)

    async def _replace(self, req: S3Request, tags: dict[str, str]) -> Reply:
        assert req.bucket is not None and req.key is not None
        r = await manifest_tags.put_all(self.backend, req.bucket, req.key, version_of(req), tags)
        if r.status_code != 200:
            await backend_error(r)
        return Reply(200, _version_header(r))


def _version_header(r: BackendResponse) -> dict[str, str]:
    version = r.headers.get("x-amz-version-id")
    return {"x-amz-version-id": version} if version else {}
