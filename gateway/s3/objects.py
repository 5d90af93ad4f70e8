"""Object operations: PutObject, GetObject, HeadObject, DeleteObject and DeleteObjects.

Every object written is sealed with the envelope format (`envelope.py`, written by
`writer.py`); every read opens and authenticates packages before a byte reaches the client
(`reader.py`, `streaming.first_checked`). Objects put into the backend without the proxy (no
envelope metadata) are refused unless the operator serves plaintext objects (encryption.py).
"""

from __future__ import annotations

import base64
import hashlib
from xml.sax.saxutils import escape

from gateway.s3 import checksums, envelope, manifest_tags, sse_c, xml_bodies
from gateway.s3.acl import check_acl_headers
from gateway.s3.auth import Authenticated
from gateway.s3.backend import S3_NS, Backend, BackendResponse, backend_error
from gateway.s3.bodies import body_stream, buffered_body, content_md5
from gateway.s3.buckets import Buckets
from gateway.s3.conditions import read_conditions, write_conditions
from gateway.s3.encryption import ObjectEncryption, refuse_sse_on_read
from gateway.s3.envelope import ObjectCorrupt
from gateway.s3.errors import S3Error, invalid_argument, no_such_key
from gateway.s3.messages import (
    SSE,
    SSE_KEY,
    Reply,
    S3Request,
    put_headers,
    version_headers,
    version_of,
    xml_doc,
)
from gateway.s3.ranges import RangeNotSatisfiable, parse_range
from gateway.s3.reader import Reader, Stored, client_etag, damaged
from gateway.s3.streaming import first_checked
from gateway.s3.writer import write_sealed

MAX_PUT = 5 * 1024**3
_GET_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                "content-language", "expires", "last-modified", "x-amz-storage-class",
                "x-amz-tagging-count", "x-amz-version-id", "x-amz-website-redirect-location")

# GET and HEAD may ask for other response headers than the stored ones: S3's response-* query
# parameters, which presigned download links use to name the file or set its type.
_OVERRIDES = {
    "response-cache-control": "cache-control", "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding", "response-content-language": "content-language",
    "response-content-type": "content-type", "response-expires": "expires",
}


def _overridden(req: S3Request, headers: dict[str, str]) -> None:
    """Puts the response-* parameters of `req` in `headers`, in place of the stored values.
    A value a header line cannot carry (a control character such as CR or LF, which would
    split the response, or text outside ISO-8859-1) is refused as S3 refuses it."""
    for param, name in _OVERRIDES.items():
        value = req.query.get(param)
        if value is None:
            continue
        if any((c < " " and c != "\t") or "\x7f" <= c < "\xa0" or c > "\xff" for c in value):
            raise invalid_argument("Header value cannot be represented using ISO-8859-1.")
        headers[name] = value


class Objects:
    def __init__(self, backend: Backend, buckets: Buckets, reader: Reader, sse: ObjectEncryption, *,
                 upgrading: bool = False) -> None:
        self.backend = backend
        self.buckets = buckets
        self.reader = reader
        self.sse = sse
        self.upgrading = upgrading  # SSEGW_UPGRADING: write nothing the previous release misreads

    # ------------------------------------------------------------------ writes

    async def put_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        info = await self.buckets.owned(req)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        manifest_tags.refuse_reserved(req.headers.get("x-amz-tagging"))
        guard = await write_conditions(self.reader, req)
        enc = self.sse.encryption(req, info)
        stream, size, received = body_stream(req, compute=checksums.DEFAULT)
        if size > MAX_PUT:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        expected_md5 = content_md5(req)
        ok = await self.sse.new_key(req, enc, req.bucket, req.key)
        headers = {**put_headers(req), **guard}
        headers.setdefault("content-type", "binary/octet-stream")
        meta, r = await write_sealed(self.backend, req.bucket, req.key, ok, enc, size, stream, headers,
                                     expected_md5, received, checksum_tag=not self.upgrading)
        if r.status_code != 200:
            await backend_error(r)
        verified = received.result()
        return Reply(200, {"etag": client_etag(meta, r.headers.get("etag", "")),
                           **self.sse.sse_headers(req.auth, meta, enc.customer), **version_headers(r.headers),
                           **(verified.headers() if verified is not None else {})})

    async def delete_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self.buckets.owned(req)
        version_id = version_of(req)
        r = await self.backend.send("DELETE", req.bucket, req.key,
                                    query={"versionId": version_id} if version_id is not None else None)
        if r.status_code not in (200, 204):
            await backend_error(r)
        return Reply(204, version_headers(r.headers))

    async def delete_objects(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        request = xml_bodies.delete_objects(await buffered_body(req, xml_bodies.DELETE_LIMIT))
        # The backend gets our own rendering of what was validated, never the client's bytes.
        items = "".join(f"<Object><Key>{escape(k)}</Key>"
                        + (f"<VersionId>{escape(v)}</VersionId>" if v else "") + "</Object>"
                        for k, v in request.objects)
        quiet = "<Quiet>true</Quiet>" if request.quiet else ""
        body = f'<Delete xmlns="{S3_NS}">{quiet}{items}</Delete>'.encode()
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        r = await self.backend.send("POST", req.bucket, query={"delete": ""}, body=body,
                                    headers={"content-md5": md5, "content-type": "application/xml"})
        if r.status_code != 200:
            await backend_error(r)
        return Reply(200, {"content-type": "application/xml"}, r.content)

    # ------------------------------------------------------------------ reads

    async def head_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self.buckets.owned(req)
        refuse_sse_on_read(req)
        part = _part_number(req)
        customer = self.sse.customer_key(req)
        stored, data_key = await self._vouched(req, customer)
        headers = self.object_headers(req.auth, stored, customer)
        not_modified = read_conditions(req, stored)
        if not_modified is not None:
            return not_modified
        _overridden(req, headers)
        wanted = _wanted(req, stored, part, headers)
        if part is not None and wanted is not None:
            start, end = wanted
            headers["content-length"] = str(end - start)
            if end > start:
                headers["content-range"] = f"bytes {start}-{end - 1}/{stored.size}"
            return Reply(206, headers)
        headers["content-length"] = str(stored.size)
        if data_key is not None:
            headers.update(await _checksum_headers(self.backend, req, stored, data_key))
        return Reply(200, headers)

    async def get_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self.buckets.owned(req)
        refuse_sse_on_read(req)
        part = _part_number(req)
        customer = self.sse.customer_key(req)
        if part is not None or "range" in req.headers:
            # A piece of the object: learn its envelope with a HEAD, then fetch only the
            # packages needed. A plain GET first would make the backend start sending the
            # whole object, once per piece (clients fetch big objects in many ranges).
            return await self._answer(req, await self._stat(req), part, customer)
        version_id = version_of(req)
        r = await self.backend.send("GET", req.bucket, req.key, stream=True,
                                    query={"versionId": version_id} if version_id is not None else None)
        if r.status_code != 200:
            await r.aread()
            await r.aclose()
            await backend_error(r)
        try:
            stored = await self.reader.stat(req.bucket, req.key, r, version_id=version_id)
            assert stored is not None
            return await self._answer(req, stored, None, customer, r)
        except BaseException:
            await r.aclose()
            raise

    async def get_object_attributes(self, req: S3Request) -> Reply:
        """GetObjectAttributes: what a HEAD knows (plaintext size, ETag, storage class), the
        object's checksum and its parts, in one XML answer, for the attributes asked for."""
        assert req.bucket is not None and req.key is not None
        await self.buckets.owned(req)
        asked = _object_attributes(req)
        max_parts = min(_header_int(req, "x-amz-max-parts", 1000), 1000)
        marker = _header_int(req, "x-amz-part-number-marker", 0)
        customer = self.sse.customer_key(req)
        stored, data_key = await self._vouched(req, customer)
        out = []
        if "ETag" in asked:
            bare_etag = stored.etag.strip('"')  # GetObjectAttributes shows it unquoted
            out.append(f"<ETag>{escape(bare_etag)}</ETag>")
        checksum = (await stored_checksum(self.backend, stored, data_key)
                    if data_key is not None and "Checksum" in asked else None)
        if checksum is not None:
            tag = checksums.element(checksum.algorithm)
            # The bare checksum of checksums, without S3's `-<parts>` of HEAD and GET.
            bare = checksum.value().split("-")[0]
            out.append(f"<Checksum><{tag}>{bare}</{tag}><ChecksumType>{checksum.type}</ChecksumType></Checksum>")
        count = stored.parts_count
        if "ObjectParts" in asked and count is not None and stored.layout is not None:
            shown = list(range(marker + 1, min(count, marker + max_parts) + 1))
            parts = "".join(f"<Part><PartNumber>{n}</PartNumber><Size>{stored.layout.plain[n - 1]}</Size></Part>"
                            for n in shown)
            truncated = bool(shown) and shown[-1] < count
            out.append(f"<ObjectParts><PartsCount>{count}</PartsCount><PartNumberMarker>{marker}</PartNumberMarker>"
                       f"<NextPartNumberMarker>{shown[-1] if shown else marker}</NextPartNumberMarker>"
                       f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{str(truncated).lower()}</IsTruncated>"
                       f"{parts}</ObjectParts>")
        if "StorageClass" in asked:
            out.append(f"<StorageClass>{escape(stored.headers.get('x-amz-storage-class', 'STANDARD'))}</StorageClass>")
        if "ObjectSize" in asked:
            out.append(f"<ObjectSize>{stored.size}</ObjectSize>")
        headers = {"content-type": "application/xml", **version_headers(stored.headers)}
        if "last-modified" in stored.headers:
            headers["last-modified"] = stored.headers["last-modified"]
        body = f'<GetObjectAttributesResponse xmlns="{S3_NS}">{"".join(out)}</GetObjectAttributesResponse>'
        return Reply(200, headers, xml_doc(body))

    async def _stat(self, req: S3Request) -> Stored:
        assert req.bucket is not None and req.key is not None
        stored = await self.reader.stat(req.bucket, req.key, version_id=version_of(req))
        if stored is None:
            raise no_such_key(req.bucket, req.key)
        return stored

    async def _answer(self, req: S3Request, stored: Stored, part: int | None, customer: sse_c.CustomerKey | None,
                      r: BackendResponse | None = None) -> Reply:
        """The GET answer for `stored` (its plaintext read from `r`, the backend's GET answer,
        if there is one, else fetched)."""
        sse_c.verify(customer, stored.meta.customer if stored.meta else None)
        headers = self.object_headers(req.auth, stored, customer)
        not_modified = read_conditions(req, stored)
        if not_modified is not None:
            if r is not None:
                await r.aclose()
            return not_modified
        _overridden(req, headers)
        wanted = _wanted(req, stored, part, headers)
        start, end = wanted or (0, stored.size)
        data_key = await self.sse.open_key(req.auth, stored, customer)
        if wanted is None and data_key is not None:
            headers.update(await _checksum_headers(self.backend, req, stored, data_key))
        body = await first_checked(await self.reader.plaintext(stored, data_key, start, end, r))
        headers["content-length"] = str(end - start)
        if wanted is not None and end > start:
            headers["content-range"] = f"bytes {start}-{end - 1}/{stored.size}"
        return Reply(206 if wanted is not None else 200, headers, body)

    async def _vouched(self, req: S3Request, customer: sse_c.CustomerKey | None) -> tuple[Stored, bytes | None]:
        """The object a HEAD-like request names, with its metadata vouched for, and its data
        key (None: a plaintext object, if those are served)."""
        stored = await self._stat(req)
        sse_c.verify(customer, stored.meta.customer if stored.meta else None)
        if stored.meta is None:
            self.sse.refuse_plaintext(stored)
            return stored, None
        return stored, await self._vouch(req, stored, customer)

    async def _vouch(self, req: S3Request, stored: Stored, customer: sse_c.CustomerKey | None) -> bytes | None:
        """S3Error unless what a HEAD would answer from `stored`'s metadata is authentic; returns
        the object's data key.

        v3: the metadata's MAC, and for a multipart object its parts' salts. v1/v2 metadata
        has no MAC, so its size is vouched for by opening the final package (its place and
        final flag are authenticated), which also refuses a v3 object relabelled v1/v2 (v3
        packages do not open as v1): one small GET. A v1/v2 ETag MD5 stays unauthenticated.
        """
        assert stored.meta is not None
        data_key = await self.sse.open_key(req.auth, stored, customer)
        if stored.meta.salted:
            if stored.meta.multipart:
                await self.reader.checked_salts(stored)
            return data_key
        size = stored.size
        start = max(0, size - 1)
        async for _ in await first_checked(await self.reader.plaintext(stored, data_key, start, size)):
            pass
        return data_key

    def object_headers(self, auth: Authenticated, stored: Stored,
                       customer: sse_c.CustomerKey | None = None) -> dict[str, str]:
        out = {"accept-ranges": "bytes"}
        for name, value in stored.headers.items():
            name = name.lower()
            if (name.startswith("x-amz-meta-") and not name.startswith(envelope.META_PREFIX)) or name in _GET_HEADERS:
                out[name] = value
        if stored.meta is None:
            for name in ("etag", SSE, SSE_KEY):
                if name in stored.headers:
                    out[name] = stored.headers[name]
            return out
        out["etag"] = stored.etag
        out.update(self.sse.sse_headers(auth, stored.meta, customer))
        count = out.get("x-amz-tagging-count", "")
        if stored.meta.tagged and count.isdigit():  # the manifest tag is the gateway's
            if int(count) > 1:
                out["x-amz-tagging-count"] = str(int(count) - 1)
            else:
                del out["x-amz-tagging-count"]
        return out


async def stored_checksum(backend: Backend, stored: Stored, data_key: bytes) -> checksums.ObjectChecksum | None:
    """The checksum kept with an object (None: it was stored without one)."""
    meta = stored.meta
    if meta is not None and meta.checksum == envelope.CHECKSUM_IN_TAG:
        version = stored.version_id or stored.headers.get("x-amz-version-id")
        text = (await manifest_tags.read(backend, stored.bucket, stored.key, version)).get(envelope.MANIFEST_TAG)
        try:
            return checksums.open_sealed(text, data_key, meta.algorithm) if text is not None else None
        except ObjectCorrupt:
            # Sealed under another data key: a PUT of the same name that raced this one's
            # tagging (envelope.py). The tag can hide the checksum, never forge one.
            return None
    try:
        return checksums.stored(meta, data_key)
    except ObjectCorrupt as e:
        raise damaged(str(e)) from None


async def _checksum_headers(backend: Backend, req: S3Request, stored: Stored, data_key: bytes) -> dict[str, str]:
    """The object's checksum headers, for a GET or HEAD of the whole object that asks for them
    (`x-amz-checksum-mode: ENABLED`), as S3 gives them."""
    if req.headers.get("x-amz-checksum-mode", "").upper() != "ENABLED":
        return {}
    checksum = await stored_checksum(backend, stored, data_key)
    return checksum.headers() if checksum is not None else {}


_ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")


def _object_attributes(req: S3Request) -> set[str]:
    """The attributes x-amz-object-attributes asks for (at least one, each one S3 has)."""
    names = {n.strip() for n in req.headers.get("x-amz-object-attributes", "").split(",") if n.strip()}
    if not names:
        raise S3Error("InvalidRequest", "The x-amz-object-attributes header specifying the attributes to be "
                      "retrieved is either missing or empty", 400)
    unknown = names - set(_ATTRIBUTES)
    if unknown:
        raise invalid_argument(f"Invalid attribute name specified: {sorted(unknown)[0]}")
    return names


def _header_int(req: S3Request, name: str, default: int) -> int:
    text = req.headers.get(name)
    if text is None:
        return default
    if not text.strip().isdigit():
        raise invalid_argument(f"Provided {name} not an integer or within integer range")
    return int(text)


def _part_number(req: S3Request) -> int | None:
    text = req.query.get("partNumber")
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= envelope.MAX_PART:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
    if "range" in req.headers:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter.")
    return int(text)


def _wanted(req: S3Request, stored: Stored, part: int | None, headers: dict[str, str]) -> tuple[int, int] | None:
    """The plaintext [start, end) a GET or HEAD asks for (None: the whole object)."""
    if part is not None:
        count = stored.parts_count
        if count is None:  # a single-PUT object is its own part 1 (as S3 does)
            if part != 1:
                raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
            headers["x-amz-mp-parts-count"] = "1"
            return (0, stored.size)
        if part > count:
            raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
        assert stored.layout is not None
        headers["x-amz-mp-parts-count"] = str(count)
        return stored.layout.part_range(part)
    try:
        return parse_range(req.headers.get("range"), stored.size)
    except RangeNotSatisfiable:
        raise S3Error("InvalidRange", "The requested range is not satisfiable", 416) from None
