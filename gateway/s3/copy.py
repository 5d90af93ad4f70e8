"""CopyObject and re-keying: re-seal ~100 bytes of metadata, never re-encrypt when avoidable.

An object's data key is sealed with its ARN as context (bucket-key objects: its bucket key with
the bucket's ARN), so a copy to another name, bucket or CMK only needs the sealed key
re-sealed by the KMS (`reseal_data_key`: the plaintext key never leaves the KMS) and the
ciphertext copied by the backend itself. Multipart objects are copied part by part
(UploadPartCopy) so their layout survives: their packages are bound to their part numbers.

The data is re-encrypted through the proxy only when it must be: the source is a plaintext
object, the destination CMK needs the other package algorithm (AES <-> SM4), or a bucket-key
object is to be bound to a client encryption context.

Rewrap (`x-ssegw-rewrap: true` on a copy of an object onto itself, used by `ssegw s3 rewrap`)
re-seals the key under the object's own CMK's primary version, or the CMK named by the
request, keeping everything else; an object already sealed under that version is left alone
(`x-ssegw-rewrap-result: current`), which is what makes an interrupted rewrap resumable.
`x-ssegw-rewrap: check` on a copy of any version of an object onto its key writes nothing and
answers `current` or `stale`: versions other than the current one cannot be rewritten (S3
versions are immutable; a copy makes a new current version), so rewrap reports them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, unquote, urlencode
from xml.sax.saxutils import escape

from gateway.s3 import checksums, envelope, manifest_tags, sse_c
from gateway.s3.acl import check_acl_headers
from gateway.s3.backend import S3_NS, Backend, BackendResponse, backend_error
from gateway.s3.backend import xml_text as _text
from gateway.s3.buckets import Buckets
from gateway.s3.checksums import BodyChecksum
from gateway.s3.conditions import precondition_failed
from gateway.s3.encryption import Encryption, ObjectEncryption
from gateway.s3.envelope import ObjectMeta
from gateway.s3.errors import S3Error, invalid_argument, no_such_key
from gateway.s3.messages import (
    SSE_CTX,
    SSE_HEADERS,
    SSE_KEY,
    Reply,
    S3Request,
    copied_headers,
    last_modified,
    put_headers,
    xml_doc,
)
from gateway.s3.objects import stored_checksum
from gateway.s3.ranges import check_conditions
from gateway.s3.reader import Reader, Stored, client_etag
from gateway.s3.writer import write_sealed

REWRAP = "x-ssegw-rewrap"
REWRAP_RESULT = "x-ssegw-rewrap-result"
COPY_LIMIT = 5 * 1024**3  # the backend's largest single CopyObject (S3: 5 GiB)
COPY_PIECE = 1024**3  # pieces of a part-by-part copy of a single-stream object
_COPY_CONCURRENCY = 4


class Copier:
    def __init__(self, backend: Backend, buckets: Buckets, reader: Reader, sse: ObjectEncryption, *,
                 upgrading: bool = False) -> None:
        self.backend = backend
        self.buckets = buckets
        self.reader = reader
        self.sse = sse
        self.upgrading = upgrading  # SSEGW_UPGRADING: write nothing the previous release misreads

    async def source(self, req: S3Request, *, check_customer: bool = True) -> Stored:
        """The object named by x-amz-copy-source: owned by the caller, conditions checked, and
        (`check_customer`) the x-amz-copy-source-server-side-encryption-customer-* key its own."""
        raw = req.headers.get("x-amz-copy-source", "")
        path, _, query = raw.partition("?")
        version_id = None
        if query:
            args = parse_qs(query, keep_blank_values=True)
            if set(args) != {"versionId"} or len(args["versionId"]) != 1 or not args["versionId"][0]:
                raise invalid_argument("The only query argument a copy source may have is one versionId")
            version_id = args["versionId"][0]
        bucket, _, key = unquote(path).lstrip("/").partition("/")
        if not bucket or not key:
            raise invalid_argument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
        await self.buckets.check(bucket, req.auth)
        stored = await self.reader.stat(bucket, key, version_id=version_id)
        if stored is None:
            raise no_such_key(bucket, key)
        conditions = {name[len("x-amz-copy-source-"):]: value for name, value in req.headers.items()
                      if name.startswith("x-amz-copy-source-if-")}
        last = last_modified(stored.headers)
        if conditions and check_conditions(conditions, stored.etag, last) is not None:
            raise precondition_failed()  # for copies every failed condition is 412 (S3 answers no 304 here)
        if check_customer:
            sse_c.verify(self.sse.customer_key(req, copy_source=True),
                         stored.meta.customer if stored.meta is not None else None)
        return stored

    async def copy_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        info = await self.buckets.owned(req)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        mode = req.headers.get(REWRAP, "").lower()
        rewrap, check = mode in ("1", "true", "check"), mode == "check"
        src = await self.source(req, check_customer=not rewrap)
        headers = _new_headers(req, src, rewrap, check)
        headers.pop("x-amz-tagging", None)  # the tagging directive decides, not the metadata one
        tagging = await self._tags_for_copy(req, src)
        if tagging:
            headers["x-amz-tagging"] = tagging
        headers[_TAGGING_DIRECTIVE] = "REPLACE"  # for a backend copy: these tags, not the source's
        if not rewrap:
            enc = self.sse.encryption(req, info)
            if (enc.context is None and enc.customer is None and src.meta is not None and src.meta.context
                    and SSE_CTX not in req.headers):
                enc = dataclasses.replace(enc, context=dict(src.meta.context))
        elif src.meta is None:
            return await self._result(req, src, None, "plaintext")
        elif src.meta.customer is not None:  # sealed by its owner's key, not by a CMK: nothing to rewrap
            return await self._result(req, src, src.meta, "customer-key")
        else:
            enc = _rewrap_encryption(req, src.meta)
        meta = src.meta
        if meta is not None and enc.customer is not None and meta.algorithm is envelope.Algorithm.AES_256_GCM:
            return await self._rebind(req, src, meta, enc, headers)
        if (meta is not None and meta.customer is None and enc.customer is None
                and not (meta.bucket_key_salt is not None and enc.context)
                and await self.sse.keys.algorithm(req.auth, enc.cmk) == meta.algorithm):
            return await self._rekey(req, src, meta, enc, headers, rewrap, check)
        if check:
            return await self._result(req, src, meta, "stale")
        if src.size > COPY_LIMIT:
            raise invalid_argument("The specified copy source is larger than the maximum allowable size "
                                   f"for a copy source: {COPY_LIMIT}")
        return await self._reencrypt(req, src, enc, headers)

    async def _tags_for_copy(self, req: S3Request, src: Stored) -> str | None:
        """The copy's tags as x-amz-tagging, by x-amz-tagging-directive: the request's own
        (REPLACE), or the source's (COPY, the default; read only when it has any), never the
        gateway's manifest tag (backend_copy writes the copy's own). None: no tags."""
        directive = req.headers.get("x-amz-tagging-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise invalid_argument("Unknown tagging directive.")
        if directive == "REPLACE":
            manifest_tags.refuse_reserved(req.headers.get("x-amz-tagging"))
            return req.headers.get("x-amz-tagging") or None
        if src.headers.get("x-amz-tagging-count") == "0":
            return None  # (not every store says so on HEAD; without the count, read them)
        tags = await manifest_tags.read(self.backend, src.bucket, src.key, src.version_id)
        tags.pop(envelope.MANIFEST_TAG, None)
        return urlencode(tags, quote_via=quote) or None

    async def _rekey(self, req: S3Request, src: Stored, meta: ObjectMeta, enc: Encryption,
                     headers: dict[str, str], rewrap: bool, check: bool = False) -> Reply:
        """Backend copy of the ciphertext with a re-sealed key: no data passes through here."""
        assert req.bucket is not None and req.key is not None
        if meta.bucket_key_salt is not None:
            src_ctx, dst_ctx = envelope.bucket_context(src.bucket), envelope.bucket_context(req.bucket)
        else:
            src_ctx = envelope.object_context(src.bucket, src.key, meta.context)
            dst_ctx = envelope.object_context(req.bucket, req.key, enc.context)
        checksum = None
        resealed = await self.sse.keys.reseal(req.auth, meta.sealed_key, src_ctx, enc.cmk, dst_ctx)
        if rewrap:
            unchanged = (resealed.source_key_id, resealed.source_version_id) == (resealed.key_id, resealed.version_id)
            if unchanged and meta.sse == enc.sse:
                return await self._result(req, src, meta, "current")
            if check:  # a version can only be looked at: S3 versions are never rewritten
                return await self._result(req, src, meta, "stale")
        new = dataclasses.replace(meta, sealed_key=resealed.sealed, kms_key_id=resealed.key_id, sse=enc.sse,
                                  context=enc.context if meta.bucket_key_salt is None else None)
        if new.salted:
            # The MAC binds the sealed key, CMK and name: it is made anew for the copy (the
            # data key itself does not change, so neither do the sealed bytes).
            data_key = await self.sse.open_key(req.auth, src)
            assert data_key is not None
            checksum = await stored_checksum(self.backend, src, data_key)  # the data key is the source's
            new = _checksum_inline(new, checksum, data_key).signed(data_key, req.bucket, req.key)
        headers.update(new.encode())
        assert src.layout is not None
        etag, modified, version = await self.backend_copy(src, req.bucket, req.key, headers)
        stored_etag = client_etag(new, etag)
        if new.multipart:
            self.reader.remember(req.bucket, req.key, etag, src.layout)
        return self._reply(req, new, stored_etag, modified, "rewrapped" if rewrap else None,
                           src=src, version=version, checksum=checksum)

    async def _rebind(self, req: S3Request, src: Stored, meta: ObjectMeta, enc: Encryption,
                      headers: dict[str, str]) -> Reply:
        """To SSE-C: the source's data key (from the KMS, or unwrapped with the source's customer
        key) wrapped under the destination's customer key and name; the backend copies the data."""
        assert req.bucket is not None and req.key is not None and enc.customer is not None
        data_key = await self.sse.open_key(req.auth, src, self.sse.customer_key(req, copy_source=True))
        assert data_key is not None
        wrapped, record = sse_c.bind(enc.customer, data_key, req.bucket, req.key)
        new = dataclasses.replace(meta, sealed_key=wrapped, kms_key_id="", sse=sse_c.SSE, md5=None, context=None,
                                  bucket_key_salt=None, customer=record.encode())
        checksum = await stored_checksum(self.backend, src, data_key)
        new = _checksum_inline(new, checksum, data_key)
        new = new.signed(data_key, req.bucket, req.key)  # v3: the MAC binds the new fields and name
        headers.update(new.encode())
        assert src.layout is not None
        etag, modified, version = await self.backend_copy(src, req.bucket, req.key, headers)
        if new.multipart:
            self.reader.remember(req.bucket, req.key, etag, src.layout)
        return self._reply(req, new, client_etag(new, etag), modified, None, enc.customer, src, version, checksum)

    async def backend_copy(self, src: Stored, bucket: str, key: str,
                           headers: dict[str, str]) -> tuple[str, str, str | None]:
        """Copy `src`'s bytes to bucket/key with `headers` as its metadata: (ETag, LastModified,
        the new version's id if the bucket keeps versions)."""
        assert src.layout is not None
        layout = src.layout
        copy_source = "/" + quote(src.bucket, safe="") + "/" + quote(src.key, safe="-_.~/")
        if src.version_id is not None:
            copy_source += "?versionId=" + quote(src.version_id, safe="")
        guard = {"x-amz-copy-source": copy_source}
        if src.backend_etag:
            guard["x-amz-copy-source-if-match"] = src.backend_etag
        pieces: list[tuple[int, int]] = []
        if layout.first == 1 and layout.count > 1 and not (src.meta is not None and src.meta.salted):
            # v2 readers learn the layout from the backend's parts, which the copy must keep
            # (v3/v4 keep it in their metadata or manifest).
            pieces = [(o, o + s) for o, s in zip(layout.sealed_offsets, layout.sealed, strict=True)]
        elif layout.sealed_total > COPY_LIMIT:
            total = layout.sealed_total
            pieces = [(o, min(o + COPY_PIECE, total)) for o in range(0, total, COPY_PIECE)]
        out: tuple[str, str, str | None]
        if pieces:
            out = await self._copy_in_parts(bucket, key, headers, guard, pieces)
        else:
            r = await self.backend.send("PUT", bucket, key, headers={
                **headers, **guard, "x-amz-metadata-directive": "REPLACE"})
            out = (*self._copy_answer(r, "CopyObjectResult"), r.headers.get("x-amz-version-id"))
        if src.meta is not None and src.meta.manifest_in_tag:
            # The manifest (not bound to the name) holds for the copy's identical bytes.
            await manifest_tags.write(self.backend, bucket, key, out[2], src.meta.manifest())
        return out

    async def _copy_in_parts(self, bucket: str, key: str, headers: dict[str, str], guard: dict[str, str],
                             pieces: list[tuple[int, int]]) -> tuple[str, str, str | None]:
        r = await self.backend.send("POST", bucket, key, query={"uploads": ""}, headers=_without_directive(headers))
        if r.status_code != 200:
            raise S3Error("InternalError", f"the backend answered {r.status_code} starting a copy", 500)
        upload = _text(ET.fromstring(r.content), "UploadId") or ""
        sem = asyncio.Semaphore(_COPY_CONCURRENCY)

        async def piece(n: int, start: int, end: int) -> str:
            async with sem:
                r = await self.backend.send("PUT", bucket, key, query={"partNumber": str(n), "uploadId": upload},
                                            headers={**guard, "x-amz-copy-source-range": f"bytes={start}-{end - 1}"})
                return self._copy_answer(r, "CopyPartResult")[0]

        try:
            etags = await asyncio.gather(*(piece(n, s, e) for n, (s, e) in enumerate(pieces, 1)))
            parts = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(t)}</ETag></Part>"
                            for n, t in enumerate(etags, 1))
            r = await self.backend.send(
                "POST", bucket, key, query={"uploadId": upload}, headers={"content-type": "application/xml"},
                body=f'<CompleteMultipartUpload xmlns="{S3_NS}">{parts}</CompleteMultipartUpload>'.encode())
            etag, _ = self._copy_answer(r, "CompleteMultipartUploadResult")
        except BaseException:
            await self.backend.send("DELETE", bucket, key, query={"uploadId": upload})
            raise
        return etag, _iso(datetime.now(UTC)), r.headers.get("x-amz-version-id")

    @staticmethod
    def _copy_answer(r: BackendResponse, element: str) -> tuple[str, str]:
        # S3 may answer a copy 200 and put an <Error> in the body (it answers before it ends).
        if r.status_code == 412:
            raise S3Error("PreconditionFailed", "The source object changed during the copy; retry", 412)
        if r.status_code == 404:
            raise S3Error("NoSuchKey", "The source object disappeared during the copy", 404)
        if r.status_code != 200 or b"<Error>" in r.content:
            raise S3Error("InternalError", f"the backend could not copy the object ({r.status_code})", 500)
        root = ET.fromstring(r.content)
        etag = _text(root, "ETag") or r.headers.get("etag") or ""
        return etag, _text(root, "LastModified") or _iso(datetime.now(UTC))

    async def _reencrypt(self, req: S3Request, src: Stored, enc: Encryption, headers: dict[str, str]) -> Reply:
        """The slow path: decrypt (or read) the source and seal it afresh as a single stream."""
        assert req.bucket is not None and req.key is not None
        ok = await self.sse.new_key(req, enc, req.bucket, req.key)
        src_key = await self.sse.open_key(req.auth, src, self.sse.customer_key(req, copy_source=True))
        plain = await self.reader.plaintext(src, src_key, 0, src.size)
        # The copy keeps the source's whole-object checksum; a composite one (of parts the copy
        # does not have) becomes the whole object's checksum of its algorithm, computed here.
        kept = await stored_checksum(self.backend, src, src_key) if src_key is not None else None
        checksum = None
        if kept is not None and kept.type == checksums.FULL_OBJECT:
            checksum = BodyChecksum(kept.algorithm, kept.digest, kept.digest)
        elif kept is not None:
            checksum = BodyChecksum(kept.algorithm)
            plain = checksums.checksummed(plain, checksum)
        new, r = await write_sealed(self.backend, req.bucket, req.key, ok, enc, src.size, plain,
                                    _without_directive(headers), checksum=checksum, checksum_tag=not self.upgrading)
        if r.status_code != 200:
            await backend_error(r)
        return self._reply(req, new, client_etag(new, r.headers.get("etag", "")), _iso(datetime.now(UTC)), None,
                           enc.customer, src, r.headers.get("x-amz-version-id"),
                           checksum.result() if checksum is not None else None)

    async def _result(self, req: S3Request, src: Stored, meta: ObjectMeta | None, result: str) -> Reply:
        modified = last_modified(src.headers) or datetime.now(UTC)
        return self._reply(req, meta, src.etag, _iso(modified), result)

    def _reply(self, req: S3Request, meta: ObjectMeta | None, etag: str, modified: str, rewrap: str | None,
               customer: sse_c.CustomerKey | None = None, src: Stored | None = None,
               version: str | None = None, checksum: checksums.ObjectChecksum | None = None) -> Reply:
        headers = {"content-type": "application/xml"}
        if version:
            headers["x-amz-version-id"] = version
        source_version = src.version_id or src.headers.get("x-amz-version-id") if src is not None else None
        if source_version and source_version != "null":
            headers["x-amz-copy-source-version-id"] = source_version
        if meta is not None:
            headers.update(self.sse.sse_headers(req.auth, meta, customer))
        if rewrap is not None:
            headers[REWRAP_RESULT] = rewrap
        body = (f'<CopyObjectResult xmlns="{S3_NS}"><LastModified>{escape(modified)}</LastModified>'
                f"<ETag>{escape(etag)}</ETag>{checksum.xml() if checksum is not None else ''}</CopyObjectResult>")
        return Reply(200, headers, xml_doc(body))


def _checksum_inline(meta: ObjectMeta, checksum: checksums.ObjectChecksum | None, data_key: bytes) -> ObjectMeta:
    """A backend copy's metadata, with a checksum its source kept in its tag (which the copy
    does not get: its tags are set by the tagging directive) sealed in the metadata."""
    if meta.checksum != envelope.CHECKSUM_IN_TAG:
        return meta
    return dataclasses.replace(meta, checksum=checksums.seal(checksum, data_key, meta.algorithm)
                               if checksum is not None else None)


_TAGGING_DIRECTIVE = "x-amz-tagging-directive"


def _without_directive(headers: dict[str, str]) -> dict[str, str]:
    """`headers` for a request that writes a new object (its tags are x-amz-tagging's)."""
    return {k: v for k, v in headers.items() if k != _TAGGING_DIRECTIVE}


def _new_headers(req: S3Request, src: Stored, rewrap: bool, check: bool) -> dict[str, str]:
    """The copy's headers (x-amz-metadata-directive: the source's, or the request's), once the
    request is a copy S3 allows."""
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown metadata directive.")
    # A copy of an older version onto its own key restores it (a new current version).
    same_key = (src.bucket, src.key) == (req.bucket, req.key)
    same = same_key and src.version_id is None
    asks_sse = any(h in req.headers for h in SSE_HEADERS) or sse_c.present(req.headers)
    if rewrap and not (same or (check and same_key)):
        raise invalid_argument(f"{REWRAP} applies to a copy of an object onto itself "
                               f"({REWRAP}: check to any version of it)")
    if same and directive == "COPY" and not asks_sse and not rewrap:
        raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an "
                      "object to itself without changing the object's metadata, storage class, website "
                      "redirect location or encryption attributes.", 400)
    if directive == "REPLACE":
        headers = put_headers(req)
    else:
        headers = copied_headers(src.headers)
        if "x-amz-storage-class" in req.headers:
            headers["x-amz-storage-class"] = req.headers["x-amz-storage-class"]
    headers.setdefault("content-type", "binary/octet-stream")
    return headers


def _rewrap_encryption(req: S3Request, meta: ObjectMeta) -> Encryption:
    """A rewrap keeps the object's encryption, re-sealed under its own CMK's new primary
    version, or under the CMK the request names."""
    cmk = req.headers.get(SSE_KEY) or meta.kms_key_id
    sse = "aws:kms" if SSE_KEY in req.headers else meta.sse
    context = dict(meta.context) if meta.context else None
    return Encryption(sse, cmk, meta.bucket_key_salt is not None, context)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
