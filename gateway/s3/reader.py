"""Reading stored objects: what the backend holds, its layout, and its plaintext as a stream.

`stat` turns a backend HEAD (or GET) into a `Stored`: envelope, plaintext size and ETag, and
for multipart objects the part layout, learnt from the backend (multipart.py) and cached by
backend ETag (an object's ETag changes whenever its bytes do, so a cached layout is never
stale; the cache only saves round trips and is not state: any proxy can rebuild it).
`plaintext` streams a range: one backend request (resumed where it broke off, resume.py),
decrypted package by package.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.s3 import envelope, manifest_tags
from gateway.s3.backend import Backend, BackendResponse
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta, PackageCipher
from gateway.s3.errors import S3Error
from gateway.s3.multipart import Layout, SegmentOpener, plan
from gateway.s3.resume import ResumableBody, answered_span, read_ahead

_PARTS_CONCURRENCY = 16
# Bytes of an open whole-object answer skipped rather than asking again for a range (plaintext).
REUSE_SKIP = 1024 * 1024
_LAYOUT_CACHE = 10_000
_MP_ETAG = re.compile(r'^"?[0-9a-fA-F]+-(\d+)"?$')


@dataclass
class Stored:
    """An object as the backend holds it (from a HEAD or the headers of a GET)."""

    bucket: str
    key: str
    headers: Mapping[str, str]  # case-insensitive (the backend's answer)
    meta: ObjectMeta | None  # None: a plaintext object put into the backend directly
    layout: Layout | None  # None for plaintext objects
    version_id: str | None = None  # the version asked for (None: the current one)

    @property
    def version_query(self) -> dict[str, str]:
        return {"versionId": self.version_id} if self.version_id is not None else {}

    @property
    def backend_etag(self) -> str:
        return str(self.headers.get("etag", ""))

    @property
    def size(self) -> int:
        if self.layout is not None:
            return self.layout.size
        return int(self.headers.get("content-length", 0))

    @property
    def etag(self) -> str:
        return client_etag(self.meta, self.backend_etag)

    @property
    def parts_count(self) -> int | None:
        return self.layout.count if self.layout is not None and self.layout.first == 1 else None


def client_etag(meta: ObjectMeta | None, backend_etag: str) -> str:
    """The ETag clients see: the plaintext MD5 when we know it (objects buffered before upload).

    Otherwise the backend's ETag, which is the MD5 of ciphertext: given as is, clients such as
    rclone would take it for the plaintext MD5 and call every streamed upload corrupt, so it
    gets the multipart form ("...-1"), which they know is not an MD5 (AWS SSE-KMS ETags are
    not MD5s either).
    """
    if meta is None:
        return backend_etag
    if meta.md5:
        return f'"{meta.md5}"'
    bare = backend_etag.strip('"')
    if not bare or "-" in bare:
        return backend_etag
    return f'"{bare}-1"'


# Finishes the manifest of a v4 object whose Complete stopped after the backend completed it:
# (bucket, key, metadata, version id, stored length) -> the manifest written, or None.
Healer = Callable[[str, str, ObjectMeta, str | None, int | None], Awaitable[str | None]]


def derived_listing(size: int, etag: str) -> tuple[int, str]:
    """What a listing shows of an object whose metadata cannot be trusted: the plaintext size
    of `size` stored bytes read as one sealed stream (the stored size if no stream is that
    long), and the backend's ETag in multipart form (not an MD5 of anyone's data)."""
    try:
        size = envelope.plain_size(size)
    except ObjectCorrupt:
        pass
    bare = etag.strip('"')
    return size, f'"{bare}"' if not bare or "-" in bare else f'"{bare}-1"'


def _v3_layout(meta: ObjectMeta) -> Layout:
    """A v3/v4 multipart object's layout, from its metadata or manifest (bound by their MACs)."""
    if meta.layout is None:
        raise S3Error("InternalError", "The object's multipart upload was not completed through the "
                      "proxy (its layout was never sealed); it is not served", 500)
    try:
        layout = Layout(meta.layout, first=1, header=envelope.PART_HEADER)
    except ObjectCorrupt as e:
        raise S3Error("InternalError", f"The object's parts do not fit the format: {e}", 500) from None
    if layout.size != meta.size:
        raise S3Error("InternalError", "The object's layout does not match its size", 500)
    return layout


def decode_meta(headers: Mapping[str, str]) -> ObjectMeta | None:
    try:
        return ObjectMeta.decode(headers)
    except ObjectCorrupt as e:
        raise S3Error("InternalError", f"The object's encryption metadata is damaged: {e}", 500) from None


def damaged(message: str) -> S3Error:
    return S3Error("InternalError", f"The object failed authentication and was not served: {message}", 500)


class Reader:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._layouts: OrderedDict[tuple[str, str, str], Layout] = OrderedDict()
        self._salts: OrderedDict[tuple[str, str, str], list[bytes]] = OrderedDict()
        # v4 manifests by (bucket, key, backend ETag, base nonce): not trusted for being
        # cached (the MAC is checked on every read), only spared a request.
        self._manifests: OrderedDict[tuple[str, str, str, bytes], str] = OrderedDict()
        self.heal: Healer | None = None  # set by uploads.py

    def remember(self, bucket: str, key: str, etag: str, layout: Layout) -> None:
        self._layouts[(bucket, key, etag)] = layout
        self._layouts.move_to_end((bucket, key, etag))
        while len(self._layouts) > _LAYOUT_CACHE:
            self._layouts.popitem(last=False)

    def forget(self, bucket: str, key: str, etag: str) -> None:
        self._layouts.pop((bucket, key, etag), None)
        self._salts.pop((bucket, key, etag), None)

    async def stat(self, bucket: str, key: str, r: BackendResponse | None = None,
                   headers: Mapping[str, str] | None = None, version_id: str | None = None) -> Stored | None:
        """The object (or its version `version_id`) from `r` (an open GET) or from a HEAD; None
        when it does not exist. A delete marker, or a version that does not exist, raises the
        S3 error the backend gave (with x-amz-delete-marker and x-amz-version-id)."""
        if r is None:
            query = {"versionId": version_id} if version_id is not None else None
            r = await self.backend.send("HEAD", bucket, key, headers=headers, query=query)
            if r.status_code in (400, 404, 405) and (version_id is not None or "x-amz-delete-marker" in r.headers):
                raise _head_error(r.status_code, r.headers, bucket, key, version_id)
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise S3Error("InternalError", f"the backend answered {r.status_code} to HEAD", 500)
        meta = decode_meta(r.headers)
        total = _stored_length(r)
        layout = None
        if meta is not None:
            if meta.manifest_in_tag:
                meta = await self._with_manifest(bucket, key, meta, r.headers.get("etag", ""), version_id, total)
            if meta.salted and meta.multipart:
                layout = _v3_layout(meta)
            elif meta.multipart:
                layout = await self.layout(bucket, key, r.headers.get("etag", ""), total, version_id)
            else:
                assert meta.size is not None
                try:
                    layout = Layout((envelope.sealed_size(meta.size),), first=0)
                except ObjectCorrupt as e:
                    raise S3Error("InternalError", f"The object's size is damaged: {e}", 500) from None
            if total is not None and total != layout.sealed_total:
                # Shorter or longer than recorded: damaged. Say so up front, not mid-body.
                raise S3Error("InternalError", "The stored object does not match its recorded size; "
                              "it was truncated or changed and is not served", 500)
        return Stored(bucket, key, r.headers, meta, layout, version_id)

    def distrust(self, stored: Stored) -> None:
        """Forgets the manifest cached for an object whose metadata failed authentication: a
        tampered manifest tag is read again (and an object put right reads again) rather than
        failing from the cache until it is evicted."""
        if stored.meta is not None:
            self._manifests.pop((stored.bucket, stored.key, stored.backend_etag, stored.meta.base_nonce), None)

    async def _with_manifest(self, bucket: str, key: str, meta: ObjectMeta, etag: str, version_id: str | None,
                             total: int | None) -> ObjectMeta:
        """A v4 multipart object's metadata with its manifest (from its tag), unchecked: the
        caller's `verify` checks the manifest's MAC with the metadata's. An object whose
        Complete stopped before the manifest was written gets it now (`heal`)."""
        ck = (bucket, key, etag, meta.base_nonce)
        text = self._manifests.get(ck)
        if text is None:
            text = (await manifest_tags.read(self.backend, bucket, key, version_id)).get(envelope.MANIFEST_TAG)
            if text is None and self.heal is not None:
                text = await self.heal(bucket, key, meta, version_id, total)
            if text is not None:
                self._manifests[ck] = text
                while len(self._manifests) > _LAYOUT_CACHE:
                    self._manifests.popitem(last=False)
        try:
            return meta.read_manifest(text)
        except ObjectCorrupt as e:
            raise S3Error("InternalError", f"The object's encryption metadata is damaged: {e}", 500) from None

    @staticmethod
    async def listed(stored: Stored | None, size: int, etag: str,
                     vouch: Callable[[Stored], Awaitable[bytes | None]]) -> tuple[int, str]:
        """The (size, ETag) a listing shows for an object the backend lists with `size` and
        `etag`: what HEAD answers, once `vouch` (opening the data key and checking the
        metadata's and manifest's MACs, as HEAD does) accepts the metadata. Otherwise
        (damaged or edited metadata; SSE-C objects, whose key a listing does not have) nothing
        from the metadata: the plaintext size follows from the stored length by the format's
        rules and the ETag is the backend's, in multipart form (never an MD5 someone could have
        written). v1/v2 objects carry no MAC: their size is the stored length's (stat checks
        that they agree) and their ETag MD5 is taken as HEAD takes it."""
        if stored is None or stored.meta is None:
            return size, etag  # not the gateway's object (reads refuse it): the backend's figures
        meta = stored.meta
        if not meta.salted:
            return stored.size, stored.etag
        if meta.customer is None:
            try:
                await vouch(stored)
                return stored.size, stored.etag
            except S3Error:
                pass
        layout = stored.layout
        if layout is not None and layout.sealed_total == size:
            return layout.size, client_etag(dataclasses.replace(meta, md5=None), etag)
        return derived_listing(size, etag)

    async def layout(self, bucket: str, key: str, etag: str, total: int | None,
                     version_id: str | None = None) -> Layout:
        hit = self._layouts.get((bucket, key, etag))
        if hit is not None:
            return hit
        first = await self._part_head(bucket, key, 1, version_id)
        s1 = int(first.headers.get("content-length", -1))
        count_text = first.headers.get("x-amz-mp-parts-count")
        m = _MP_ETAG.match(etag)
        count = int(count_text) if count_text and count_text.isdigit() else int(m.group(1)) if m else 1
        if total is None:
            total = _stored_length(first)
            if total is None:
                raise S3Error("InternalError", "the backend did not say how big the object is", 500)
        last = None
        if count >= 3:
            last = int((await self._part_head(bucket, key, count, version_id)).headers.get("content-length", -1))
        layout = Layout.guess(total, count, s1, last)
        if layout is None:
            # Parts of different sizes: ask for every one (rare: clients use one part size).
            sem = asyncio.Semaphore(_PARTS_CONCURRENCY)

            async def size(n: int) -> int:
                async with sem:
                    return int((await self._part_head(bucket, key, n, version_id)).headers.get("content-length", -1))

            sizes = await asyncio.gather(*(size(n) for n in range(1, count + 1)))
            try:
                layout = Layout(tuple(sizes))
            except ObjectCorrupt as e:
                raise S3Error("InternalError", f"The object's parts do not fit the format: {e}", 500) from None
            if layout.sealed_total != total:
                raise S3Error("InternalError", "The object's parts do not add up to its size", 500)
        self.remember(bucket, key, etag, layout)
        return layout

    async def part_salts(self, bucket: str, key: str, etag: str, layout: Layout,
                         version_id: str | None = None) -> list[bytes]:
        """The headers (salts) of a v3 multipart object's parts, as stored: one small ranged
        GET per part, cached by backend ETag like layouts (each node learns them once)."""
        ck = (bucket, key, etag)
        hit = self._salts.get(ck)
        if hit is not None:
            return hit
        sem = asyncio.Semaphore(_PARTS_CONCURRENCY)
        h = layout.header

        async def one(offset: int) -> bytes:
            async with sem:
                headers = {"range": f"bytes={offset}-{offset + h - 1}"}
                if etag:
                    headers["if-match"] = etag
                query = {"versionId": version_id} if version_id is not None else None
                r = await self.backend.send("GET", bucket, key, headers=headers, query=query)
                if r.status_code == 412:
                    raise S3Error("InternalError", "The object changed while it was read; retry", 500)
                if r.status_code != 206 or len(r.content) != h:
                    raise S3Error("InternalError", f"the backend answered {r.status_code} reading a part header", 500)
                return bytes(r.content)

        salts = list(await asyncio.gather(*(one(o) for o in layout.sealed_offsets)))
        self.remember_salts(bucket, key, etag, salts)
        return salts

    async def checked_salts(self, stored: Stored) -> list[bytes]:
        """A v3 multipart object's part salts, once they match the digest its (MAC'd)
        metadata holds: a part replaced by another upload of its number, or parts swapped,
        is refused here, before any byte."""
        assert stored.meta is not None and stored.layout is not None
        salts = await self.part_salts(stored.bucket, stored.key, stored.backend_etag, stored.layout,
                                      stored.version_id)
        if envelope.parts_digest(salts) != stored.meta.parts_digest:
            self.forget(stored.bucket, stored.key, stored.backend_etag)
            raise damaged("its parts are not the ones it was completed with")
        return salts

    def remember_salts(self, bucket: str, key: str, etag: str, salts: list[bytes]) -> None:
        # Not trusted for being cached: every read checks them against the metadata's digest.
        ck = (bucket, key, etag)
        self._salts[ck] = salts
        self._salts.move_to_end(ck)
        while len(self._salts) > _LAYOUT_CACHE // 10:
            self._salts.popitem(last=False)

    async def _part_head(self, bucket: str, key: str, number: int, version_id: str | None) -> BackendResponse:
        query = {"partNumber": str(number)}
        if version_id is not None:
            query["versionId"] = version_id
        r = await self.backend.send("HEAD", bucket, key, query=query)
        if r.status_code not in (200, 206):
            raise S3Error("InternalError", f"the backend answered {r.status_code} to HEAD part {number}", 500)
        return r

    async def plaintext(self, stored: Stored, data_key: bytes | None, start: int, end: int,
                        r: BackendResponse | None = None) -> AsyncIterator[bytes | memoryview]:
        """Plaintext bytes [start, end) of `stored`, streamed in pieces never written again once
        handed on; `r`, if given, is an open GET of the whole object (used when the range needs
        all of it, closed otherwise).

        Raises ObjectCorrupt from the iterator when a package fails authentication: callers
        must stop sending at once (never forward unauthenticated bytes).
        """
        if stored.meta is None or stored.layout is None:
            return self._plain(stored, start, end, r)
        assert data_key is not None
        layout = stored.layout
        sealed_start, sealed_end, segments = plan(layout, start, end)
        # The whole object's answer serves a range that runs to its end from near its start (a
        # v4 multipart object's plaintext starts after part 1's 16-byte salt): a ranged GET
        # instead would make the backend begin a second answer (moto reads the object again).
        skip = sealed_start if sealed_end == layout.sealed_total and sealed_start <= REUSE_SKIP else 0
        if r is not None and (sealed_start - skip, sealed_end) != (0, layout.sealed_total):
            await r.aclose()
            r = None
        if r is None:
            headers = {"if-match": stored.backend_etag} if stored.backend_etag else {}
            if (sealed_start, sealed_end) != (0, layout.sealed_total):
                headers["range"] = f"bytes={sealed_start}-{sealed_end - 1}"
            r = await self.backend.send("GET", stored.bucket, stored.key, headers=headers, stream=True,
                                        query=stored.version_query)
            if r.status_code not in (200, 206):
                await r.aread()
                await r.aclose()
                if r.status_code == 412:
                    raise S3Error("InternalError", "The object changed while it was read; retry", 500)
                raise S3Error("InternalError", f"the backend answered {r.status_code} to GET", 500)
        meta = stored.meta
        ciphers: dict[int, PackageCipher] = {}
        salts: list[bytes] = []
        if meta.salted and meta.multipart:
            try:
                salts = await self.checked_salts(stored)
            except BaseException:
                await r.aclose()
                raise

        def cipher_for(part: int) -> PackageCipher:
            c = ciphers.get(part)
            if c is None:
                try:
                    if salts:
                        key, nonce = envelope.part_key(data_key, salts[part - 1], part, meta.algorithm)
                    else:
                        key, nonce = data_key, envelope.part_nonce(meta.base_nonce, part)
                    c = ciphers[part] = PackageCipher(meta.algorithm, key, nonce, part, version=meta.version)
                except ValueError:
                    raise S3Error("InternalError", "The object's data key does not fit its format",
                                  500) from None
            return c

        opener = SegmentOpener(segments, cipher_for, lambda part: salts[part - 1])
        return _decrypted(ResumableBody(self.backend, r, stored.bucket, stored.key, stored.version_query,
                                        skip if answered_span(r) == (0, layout.sealed_total - 1) else 0), opener)

    def _plain(self, stored: Stored, start: int, end: int,
               r: BackendResponse | None) -> AsyncIterator[bytes | memoryview]:
        async def body() -> AsyncIterator[bytes | memoryview]:
            resp = r
            if resp is not None and (start, end) != (0, stored.size):
                await resp.aclose()
                resp = None
            if resp is None:
                if start == end:
                    return
                resp = await self.backend.send("GET", stored.bucket, stored.key, stream=True,
                                               headers={"range": f"bytes={start}-{end - 1}"},
                                               query=stored.version_query)
                if resp.status_code not in (200, 206):
                    await resp.aclose()
                    raise S3Error("InternalError", f"the backend answered {resp.status_code} to GET", 500)
                skip = start if resp.status_code == 200 else 0
            else:
                skip = 0
            raw = ResumableBody(self.backend, resp, stored.bucket, stored.key, stored.version_query)
            try:
                left = end - start
                async for chunk in raw:
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if len(chunk) > left:
                        chunk = chunk[:left]
                    if chunk:
                        left -= len(chunk)
                        yield chunk
                    if not left:
                        break
            finally:
                await raw.aclose()

        return body()


async def _decrypted(body: ResumableBody, opener: SegmentOpener) -> AsyncIterator[memoryview]:
    # Plaintext leaves in pieces of about envelope.PIECE (the opener writes them whole):
    # every piece costs a trip through starlette's and uvicorn's send layers, and 64 KiB
    # packages one by one made those trips a third of a large GET's time.
    try:
        async for chunk in read_ahead(body):
            for piece in opener.feed(chunk):
                yield piece
        for piece in opener.finish():
            yield piece
    finally:
        await body.aclose()


def _head_error(status: int, headers: Mapping[str, str], bucket: str, key: str,
                version_id: str | None) -> S3Error:
    """What S3 answers a GET of a delete marker or of a version that is not there (a HEAD
    answer has no body to say it)."""
    kept = {h: headers[h] for h in ("x-amz-delete-marker", "x-amz-version-id") if headers.get(h)}
    resource = f"/{bucket}/{key}"
    if status == 405:
        return S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.",
                       405, resource, kept)
    if status == 400:
        return S3Error("InvalidArgument", "Invalid version id specified", 400, resource, kept)
    if version_id is not None and "x-amz-delete-marker" not in headers:
        return S3Error("NoSuchVersion", "The specified version does not exist.", 404, resource, kept)
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, resource, kept)


def _stored_length(r: BackendResponse) -> int | None:
    total = r.headers.get("content-range", "").rpartition("/")[2]
    if total.isdigit():
        return int(total)
    length = r.headers.get("content-length")
    return int(length) if length is not None and length.isdigit() else None
