"""Multipart uploads through the proxy: each part sealed on its own as it streams.

CreateMultipartUpload makes one data key for the upload (per-object or bucket-key, as for a
PUT), sealed once: the envelope goes into the backend upload's initiation metadata (so the
completed object carries it) and, with a MAC, into the UploadId we return (multipart.py), so
UploadPart needs no state and no lookup. Part p is sealed under `part_nonce(nonce, p)` with p in
every package's AAD. Completion checks the parts (numbered 1..N, each but the last at least
5 MiB of plaintext, a layout readers can learn) and completes the backend upload.

ListMultipartUploads lists the backend's upload ids; ListParts and AbortMultipartUpload take
those or ours, UploadPart needs ours (the data key travels in it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote
from xml.sax.saxutils import escape

from gateway.s3 import envelope, manifest_tags, sse_c, xml_bodies
from gateway.s3.acl import check_acl_headers
from gateway.s3.backend import S3_NS, BackendResponse
from gateway.s3.backend import xml_text as _text
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta
from gateway.s3.errors import S3Error, invalid_argument
from gateway.s3.messages import Reply, S3Request, copied_headers, last_modified, version_headers, xml_doc
from gateway.s3.multipart import (
    MIN_PART,
    Layout,
    UploadToken,
    ambiguous,
    backend_upload_id,
    decode_token,
    is_token,
)
from gateway.s3.reader import Stored, client_etag
from gateway.s3.streaming import sealed_stream

if TYPE_CHECKING:
    from gateway.s3.proxy import S3Proxy

_NS = f"{{{S3_NS}}}"


def no_such_upload() -> S3Error:
    return S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                   "or the upload may have been aborted or completed.", 404)


class Uploads:
    def __init__(self, proxy: S3Proxy) -> None:
        self.proxy = proxy
        self.backend = proxy.backend
        # A reader that finds a v4 object without its manifest finishes an interrupted Complete.
        proxy.reader.heal = self.finish_manifest

    # ------------------------------------------------------------------ create

    async def create(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        info = await self.proxy.owned(req)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        enc = self.proxy.encryption(req, info)
        manifest_tags.check_user_tags(req.headers.get("x-amz-tagging"))
        ok = await self.proxy.new_key(req, enc, req.bucket, req.key)
        nonce = envelope.new_base_nonce()
        # Format v4: the metadata is whole now (size and layout go into the manifest tag at
        # completion), so it is MAC'd now, and the object is never copied onto itself.
        meta = ObjectMeta(ok.algorithm, ok.sealed, nonce, None, ok.kms_key_id, enc.sse, None, enc.context,
                          multipart=True, bucket_key_salt=ok.salt, customer=ok.customer,
                          format=envelope.FORMAT_VERSION_4).signed(ok.plaintext, req.bucket, req.key)
        headers = self.proxy.put_headers(req)
        headers.setdefault("content-type", "binary/octet-stream")
        headers.update(meta.encode())
        # No x-amz-checksum-algorithm: declared, S3 wants every part's checksum back in
        # CompleteMultipartUpload, and this proxy keeps no part checksums (see _send_part).
        r = await self.backend.send("POST", req.bucket, req.key, query={"uploads": ""}, headers=headers)
        if r.status_code != 200:
            return await self.proxy.backend_error(r)
        backend_id = _text(ET.fromstring(r.content), "UploadId")
        if not backend_id:
            raise S3Error("InternalError", "the backend returned no UploadId", 500)
        token = UploadToken(backend_id, req.bucket, req.key, ok.algorithm, nonce, ok.sealed, ok.kms_key_id,
                            enc.sse, enc.context, ok.salt, ok.customer).encode(ok.plaintext)
        try:
            await self.proxy.upload_state.remember_upload(req.bucket, backend_id, token)
        except S3Error:
            await self.backend.send("DELETE", req.bucket, req.key, query={"uploadId": backend_id})
            raise
        body = (f'<InitiateMultipartUploadResult xmlns="{S3_NS}"><Bucket>{escape(req.bucket)}</Bucket>'
                f"<Key>{escape(req.key)}</Key><UploadId>{token}</UploadId></InitiateMultipartUploadResult>")
        return Reply(200, {"content-type": "application/xml", **self.proxy.sse_headers(req.auth, meta, enc.customer)},
                     xml_doc(body))

    # ------------------------------------------------------------------ parts

    async def _token(self, req: S3Request) -> tuple[UploadToken, bytes, str]:
        """(token, data key, UploadId) of the upload a part request names."""
        assert req.bucket is not None and req.key is not None
        upload_id = await self._issued_id(req.bucket, req.query.get("uploadId", ""))
        if not is_token(upload_id):
            raise no_such_upload()
        try:
            token = decode_token(upload_id)
        except ValueError:
            raise no_such_upload() from None
        if (token.bucket, token.key) != (req.bucket, req.key):
            raise no_such_upload()
        return token, await self._data_key(req, token, upload_id), upload_id

    async def _data_key(self, req: S3Request, token: UploadToken, upload_id: str) -> bytes:
        """The upload's data key, once the UploadId's MAC shows it is one we issued."""
        assert req.bucket is not None and req.key is not None
        customer = self.proxy.customer_key(req)
        if token.customer is not None:
            # Every part of an SSE-C upload carries the key it was started with.
            data_key = sse_c.unbind(customer, token.sealed_key, token.customer, req.bucket, req.key,
                                    missing=sse_c.part_key_required(), mismatch=sse_c.part_key_mismatch())
        elif customer is not None:
            raise sse_c.not_applicable()
        else:
            data_key = await self.proxy.keys.open(req.auth, req.bucket, req.key, token.algorithm,
                                                  token.sealed_key, token.bucket_key_salt, token.context)
        if not token.verify(upload_id, data_key):
            raise no_such_upload()
        return data_key

    async def _issued_id(self, bucket: str, upload_id: str) -> str:
        """The UploadId we issued, for the backend's id of the same upload (as listings used to
        show it); any other id as it is."""
        if is_token(upload_id) or not upload_id:
            return upload_id
        return await self.proxy.upload_state.upload_id(bucket, upload_id) or upload_id

    def _meta(self, token: UploadToken) -> ObjectMeta:
        return ObjectMeta(token.algorithm, token.sealed_key, token.base_nonce, None, token.kms_key_id,
                          token.sse, None, token.context, multipart=True, bucket_key_salt=token.bucket_key_salt,
                          customer=token.customer, format=token.format)

    def _sse_headers(self, req: S3Request, token: UploadToken) -> dict[str, str]:
        return self.proxy.sse_headers(req.auth, self._meta(token), self.proxy.customer_key(req))

    async def upload_part(self, req: S3Request) -> Reply:
        await self.proxy.owned(req)
        number = self._number(req)
        token, data_key, _ = await self._token(req)
        stream, size = self.proxy.body_stream(req)
        if size > envelope.MAX_PART_SIZE:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        md5 = self._etag_md5(token)
        r, salt = await self._send_part(req, number, token, data_key, stream, size,
                                        self.proxy.content_md5(req), md5)
        if r.status_code != 200:
            return await self.proxy.backend_error(r)
        await self._remember_part(req, token, number, md5, salt, r)
        return Reply(200, {"etag": self._part_etag(md5, r), **self._sse_headers(req, token)})

    @staticmethod
    def _etag_md5(token: UploadToken) -> hashlib._Hash | None:
        """The plaintext MD5 a part's ETag needs, if it needs one.

        SSE-S3 (AES256) parts get the plaintext MD5, as S3 gives them (s3cmd checks it).
        SSE-KMS parts do not, in S3 or here: their ETag is opaque, and clients know it (s3cmd
        skips its check when the reply says aws:kms). At ~0.7 GB/s, that MD5 was the largest
        single cost of a part's upload through the proxy. Content-MD5, when sent, is checked
        either way. Completion matches parts by number against the backend's own list, so
        no ETag we hand out has to be kept.
        """
        return hashlib.md5() if token.sse == "AES256" else None

    async def _remember_part(self, req: S3Request, token: UploadToken, number: int, md5: hashlib._Hash | None,
                             salt: bytes, r: BackendResponse) -> None:
        """Records what Complete needs of a part and cannot read back: the plaintext MD5 handed
        out as its ETag (SSE-S3), and its salt (v4), each under the sealed part's ETag.
        The part is answered only once they are recorded."""
        assert req.bucket is not None
        state, etag = self.proxy.upload_state, r.headers.get("etag", "")
        writes = []
        if md5 is not None:
            writes.append(state.remember_part(req.bucket, token.backend_id, number, etag, md5.hexdigest()))
        if token.format == envelope.FORMAT_VERSION_4:
            writes.append(state.remember_salt(req.bucket, token.backend_id, number, etag, salt))
        await asyncio.gather(*writes)

    @staticmethod
    def _part_etag(md5: hashlib._Hash | None, backend: BackendResponse) -> str:
        """The plaintext MD5, or else the backend's ETag for the sealed part (the one
        ListParts shows)."""
        return f'"{md5.hexdigest()}"' if md5 is not None else backend.headers.get("etag", '""')

    @staticmethod
    def _number(req: S3Request) -> int:
        text = req.query.get("partNumber", "")
        if not text.isdigit() or not 1 <= int(text) <= envelope.MAX_PART:
            raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
        return int(text)

    async def _send_part(self, req: S3Request, number: int, token: UploadToken, data_key: bytes,
                         stream: AsyncIterator[bytes], size: int, expected_md5: bytes | None,
                         md5: hashlib._Hash | None) -> tuple[BackendResponse, bytes]:
        """The backend's answer to the sealed part, and the part's salt (v3/v4; b"" for v2)."""
        assert req.bucket is not None and req.key is not None
        v3 = token.format in envelope.SALTED_VERSIONS
        salt = envelope.new_part_salt() if v3 else b""
        if v3:
            key, nonce = envelope.part_key(data_key, salt, number, token.algorithm)
        else:
            key, nonce = data_key, envelope.part_nonce(token.base_nonce, number)
        cipher = envelope.PackageCipher(token.algorithm, key, nonce, number, version=token.format)
        sealer = envelope.Sealer(cipher)
        # A plain body, no checksum trailer: S3 refuses a part checksum on an upload created
        # without x-amz-checksum-algorithm ("Checksum Type mismatch"), and with the algorithm
        # declared, CompleteMultipartUpload must repeat every part's checksum, which the proxy
        # could only take from ListParts, and SeaweedFS (4.48) lists none: its Complete then
        # failed with InvalidRequest. Every package is authenticated (AEAD) and Complete checks
        # the parts' sizes and ETags, so damage in transit is caught, at the latest on read.
        body = sealed_stream(stream, sealer, expected_md5, md5)
        return await self.backend.send(
            "PUT", req.bucket, req.key, query={"partNumber": str(number), "uploadId": token.backend_id},
            headers={"content-length": str(len(salt) + envelope.sealed_size(size))},
            body=_prefixed(salt, body) if salt else body), salt

    async def upload_part_copy(self, req: S3Request) -> Reply:
        """UploadPartCopy: the source's plaintext (any object we can read), sealed as part `number`.

        The backend cannot copy it for us: the part must be sealed with this upload's key,
        nonce and part number.
        """
        await self.proxy.owned(req)
        number = self._number(req)
        token, data_key, _ = await self._token(req)
        source = await self.proxy.copier.source(req)
        size = source.size
        start, end = 0, size
        rng = req.headers.get("x-amz-copy-source-range")
        if rng is not None:
            parsed = _copy_range(rng, size)
            start, end = parsed
        if end - start > envelope.MAX_PART_SIZE:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        src_key = await self.proxy.open_key(req.auth, source, self.proxy.customer_key(req, copy_source=True))
        plain = await self.proxy.reader.plaintext(source, src_key, start, end)
        md5 = self._etag_md5(token)
        r, salt = await self._send_part(req, number, token, data_key, plain, end - start, None, md5)
        if r.status_code != 200:
            return await self.proxy.backend_error(r)
        await self._remember_part(req, token, number, md5, salt, r)
        modified = last_modified(r.headers)
        when = (modified or _now()).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = (f'<CopyPartResult xmlns="{S3_NS}"><LastModified>{when}</LastModified>'
                f'<ETag>{escape(self._part_etag(md5, r))}</ETag></CopyPartResult>')
        headers = {"content-type": "application/xml", **self._sse_headers(req, token)}
        if source.version_id is not None:
            headers["x-amz-copy-source-version-id"] = source.version_id
        return Reply(200, headers, xml_doc(body))

    # ------------------------------------------------------------------ complete, abort, list

    async def _backend_parts(self, bucket: str, key: str, backend_id: str) -> dict[int, tuple[int, str]]:
        """Every part of a backend upload: number -> (sealed size, backend ETag)."""
        parts: dict[int, tuple[int, str]] = {}
        marker = "0"
        while True:
            r = await self.backend.send("GET", bucket, key, query={"uploadId": backend_id,
                                                                    "part-number-marker": marker})
            if r.status_code == 404:
                raise no_such_upload()
            if r.status_code != 200:
                raise S3Error("InternalError", f"the backend answered {r.status_code} listing parts", 500)
            root = ET.fromstring(r.content)
            for p in root.iter(_NS + "Part"):
                n, size, etag = _text(p, "PartNumber"), _text(p, "Size"), _text(p, "ETag")
                if n and size and etag:
                    parts[int(n)] = (int(size), etag)
            if (_text(root, "IsTruncated") or "false").lower() != "true":
                return parts
            nxt = _text(root, "NextPartNumberMarker")
            if not nxt or nxt == marker:
                return parts
            marker = nxt

    async def _upload_ids(self, req: S3Request) -> tuple[str, str]:
        """(the UploadId as given, the backend's upload id) of an upload in the caller's bucket."""
        assert req.bucket is not None and req.key is not None
        await self.proxy.owned(req)
        upload_id = req.query.get("uploadId", "")
        try:
            return upload_id, backend_upload_id(upload_id)
        except ValueError:
            raise no_such_upload() from None

    async def complete(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        upload_id, backend_id = await self._upload_ids(req)
        upload_id = await self._issued_id(req.bucket, upload_id)
        token = decode_token(upload_id) if is_token(upload_id) else None
        customer = self.proxy.customer_key(req)
        if token is not None and customer is not None:
            # S3 needs the key on Complete only for some uploads; given, it must be the upload's.
            # (The record in the UploadId is unauthenticated here, but Complete unseals nothing.)
            sse_c.verify(customer, token.customer, mismatch=sse_c.part_key_mismatch())
        listed = xml_bodies.complete_multipart(
            await self.proxy.buffered_body(req, xml_bodies.COMPLETE_LIMIT))
        wanted = [p.number for p in listed]
        if wanted != sorted(wanted) or len(set(wanted)) != len(wanted):
            raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. "
                          "Parts must be ordered by part number.", 400)
        try:
            have = await self._backend_parts(req.bucket, req.key, backend_id)
        except S3Error as e:
            if e.code != "NoSuchUpload":
                raise
            return await self._completed_before(req, upload_id, len(wanted), e)
        md5_etags = token is None or self._etag_md5(token) is not None
        md5s: dict[tuple[int, str], str] | None = None
        for part in listed:
            if part.number not in have:
                raise S3Error("InvalidPart", f"Part {part.number} could not be found.", 400)
            if md5_etags and md5s is None and not _same_etag(part.etag, have[part.number][1]):
                md5s = await self.proxy.upload_state.part_md5s(req.bucket, backend_id)
            if not _etag_fits(part, have[part.number][1], md5s):
                raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part "
                              "may not have been uploaded, or the specified entity tag may not match the "
                              f"part's entity tag (part {part.number}).", 400)
        guard = await self.proxy.write_conditions(req)
        if wanted != list(range(1, len(wanted) + 1)):
            # Readers find part p by its place among the parts (HEAD partNumber), and its
            # packages carry the number it was uploaded as: the two must agree.
            raise S3Error("InvalidPart", "This proxy completes uploads whose parts are numbered "
                          "1, 2, 3, ... without gaps", 400)
        sealed = tuple(have[n][0] for n in wanted)
        # Uploads started before format v3 (their UploadId says so) have parts without a header.
        v3 = token is None or token.format in envelope.SALTED_VERSIONS
        v4 = token is not None and token.format == envelope.FORMAT_VERSION_4
        if v3 and customer is None and token is not None and token.customer is not None:
            # The layout is sealed with the data key, which only the customer's key unwraps.
            raise _ssec_key_needed()
        try:
            layout = Layout(sealed, header=envelope.PART_HEADER if v3 else 0)
        except ObjectCorrupt:
            raise S3Error("InvalidPart", "A part is not a sealed part of this proxy", 400) from None
        if any(p < MIN_PART for p in layout.plain[:-1]):
            raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed "
                          "object size.", 400)
        if (v4 and not envelope.manifest_fits(sealed)) or (
                v3 and len(envelope.encode_layout(sealed)) > envelope.MAX_LAYOUT_TEXT):
            raise S3Error("InvalidPart", "The parts' sizes vary too much to be recorded: use one size "
                          "for all parts but the last", 400)
        if not v3 and ambiguous(sealed):
            raise S3Error("InvalidPart", "The parts' sizes would make the object's layout ambiguous: "
                          "use one size for all parts but the last", 400)
        manifest, salts = "", list[bytes]()
        if v4:
            assert token is not None
            manifest, salts = await self._manifest(req, token, upload_id, backend_id, wanted, have, layout)
        parts_xml = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(have[n][1])}</ETag></Part>"
                            for n in wanted)
        await self.fault("before-backend-complete")
        done = await self.backend.send(
            "POST", req.bucket, req.key, query={"uploadId": backend_id},
            body=f'<CompleteMultipartUpload xmlns="{S3_NS}">{parts_xml}</CompleteMultipartUpload>'.encode(),
            headers={"content-type": "application/xml", **guard})
        # S3 may answer 200 and still put an <Error> in the body (the answer starts before it ends).
        if done.status_code != 200 or b"<Error>" in done.content:
            await self.proxy.backend_error(done)
        etag = _text(ET.fromstring(done.content), "ETag") or ""
        versions = version_headers(done.headers)
        await self.fault("after-backend-complete")
        if v4:
            assert token is not None
            await manifest_tags.write(self.backend, req.bucket, req.key, versions.get("x-amz-version-id"), manifest)
            await self.fault("after-manifest")
            self.proxy.reader.remember_salts(req.bucket, req.key, etag, salts)
            etag = client_etag(self._meta(token), etag)
        elif v3:
            etag, new_version = await self._seal_layout(req, etag, layout, versions.get("x-amz-version-id"),
                                                        customer)
            if new_version:
                versions["x-amz-version-id"] = new_version
        else:
            self.proxy.reader.remember(req.bucket, req.key, etag, layout)
        await self.proxy.upload_state.forget(req.bucket, backend_id,
                                             (req.key, token.base_nonce) if v4 and token is not None else None)
        sse: dict[str, str] = {}
        if token is not None:
            sse = self.proxy.sse_headers(req.auth, self._meta(token), customer)
        return self._completed(req, etag, {**sse, **versions})

    async def fault(self, point: str) -> None:
        """Test seam: tests replace this to fail a Complete at `point`, as a crash there
        would leave it (nothing on the network reaches it)."""

    async def _manifest(self, req: S3Request, token: UploadToken, upload_id: str, backend_id: str,
                        wanted: list[int], have: dict[int, tuple[int, str]],
                        layout: Layout) -> tuple[str, list[bytes]]:
        """A v4 upload's manifest (and its parts' salts, in order), from the salts UploadPart
        recorded for exactly the sealed parts Complete names; recorded as in flight, so a
        Complete retried after a crash, or a reader, can finish writing it."""
        assert req.bucket is not None and req.key is not None
        data_key = await self._data_key(req, token, upload_id)
        recorded = await self.proxy.upload_state.part_salts(req.bucket, backend_id)
        salts = []
        for n in wanted:
            salt = recorded.get((n, quote(_bare(have[n][1]), safe="")))
            if salt is None or len(salt) != envelope.PART_HEADER:
                raise S3Error("InvalidPart", f"Part {n} was not uploaded through this gateway (or its record "
                              "was lost): upload it again", 400)
            salts.append(salt)
        meta = self._meta(token).with_manifest(data_key, layout.size, layout.sealed, envelope.parts_digest(salts))
        manifest = meta.manifest()
        await self.proxy.upload_state.remember_completion(req.bucket, req.key, token.base_nonce, manifest)
        return manifest, salts

    async def finish_manifest(self, bucket: str, key: str, meta: ObjectMeta, version_id: str | None,
                              sealed_total: int | None) -> str | None:
        """The manifest of a v4 object whose Complete stopped after the backend completed it
        (a crash, a lost connection), written now; None when no Complete was in flight."""
        manifest = await self.proxy.upload_state.completion(bucket, key, meta.base_nonce)
        if manifest is None:
            return None
        try:
            layout = Layout(meta.read_manifest(manifest).layout or (), header=envelope.PART_HEADER)
        except ObjectCorrupt:
            return None
        if sealed_total is not None and sealed_total != layout.sealed_total:
            return None  # another completion of the upload (or damage): reading will tell
        await manifest_tags.write(self.backend, bucket, key, version_id, manifest)
        return manifest

    def _completed(self, req: S3Request, etag: str, headers: dict[str, str]) -> Reply:
        assert req.bucket is not None and req.key is not None
        location = f"/{req.bucket}/{req.key}"
        out = (f'<CompleteMultipartUploadResult xmlns="{S3_NS}"><Location>{escape(location)}</Location>'
               f"<Bucket>{escape(req.bucket)}</Bucket><Key>{escape(req.key)}</Key>"
               f"<ETag>{escape(etag)}</ETag></CompleteMultipartUploadResult>")
        return Reply(200, {"content-type": "application/xml", **headers}, xml_doc(out))

    async def _completed_before(self, req: S3Request, upload_id: str, count: int, gone: S3Error) -> Reply:
        """A Complete retried after it succeeded (SDKs retry when the answer was lost): S3
        answers success again. The object at the key was made by this upload when it carries
        the upload's sealed key and nonce (random per upload), so no record is needed.

        A v4 upload whose Complete stopped after the backend completed it (a crash, a lost
        connection) is finished here: reading the object writes its manifest from the record
        the first Complete left (`finish_manifest`), and this answers the same ETag."""
        assert req.bucket is not None and req.key is not None
        if not is_token(upload_id):
            raise gone
        token = decode_token(upload_id)
        try:
            stored = await self.proxy.reader.stat(req.bucket, req.key)
        except S3Error:
            raise gone from None  # e.g. completed in the backend but its layout never sealed
        meta = stored.meta if stored is not None else None
        if (stored is None or meta is None or not meta.multipart or meta.base_nonce != token.base_nonce
                or meta.sealed_key != token.sealed_key or stored.parts_count != count):
            raise gone
        if meta.manifest_in_tag:
            await self.proxy.upload_state.forget(req.bucket, token.backend_id, (req.key, token.base_nonce))
        sse = self.proxy.sse_headers(req.auth, meta, self.proxy.customer_key(req))
        return self._completed(req, stored.etag, {**sse, **version_headers(stored.headers)})

    async def _seal_layout(self, req: S3Request, etag: str, layout: Layout, version_id: str | None,
                           customer: sse_c.CustomerKey | None) -> tuple[str, str | None]:
        """Bind a completed v3 object's layout into its metadata; returns its final ETag and
        version id.

        The object's metadata was fixed at CreateMultipartUpload, before anyone knew how many
        parts there would be, how big, or which upload of each part number would be kept. Now
        that the backend assembled it, its part sizes, total size and each part's salt (read
        back from the stored parts: they are what readers will see) go into the metadata with
        a MAC under the data key, and the object is copied onto itself with that metadata
        (part by part, so its parts and ETag stay as they are). Readers then take the layout
        from the MAC'd metadata and refuse any object whose parts were dropped, duplicated,
        reordered, cut, extended or swapped for another upload of their number.

        The manifest lives in the object's own metadata, not in a second hidden object: one
        object stays atomic for every other operation (overwrite, delete, listing, copy), no
        node keeps anything, and a reader needs no extra request to find it. The price is
        one backend-side copy at completion.
        """
        assert req.bucket is not None and req.key is not None
        if version_id == "null":  # an unversioned (or suspended) bucket's one version
            version_id = None
        query = {"versionId": version_id} if version_id else None
        head = await self.backend.send("HEAD", req.bucket, req.key, query=query,
                                       headers={"if-match": etag} if etag else None)
        if head.status_code != 200:
            raise S3Error("InternalError", f"the backend answered {head.status_code} to HEAD after completing "
                          "the upload", 500)
        try:
            meta = ObjectMeta.decode(head.headers)
        except ObjectCorrupt as e:
            raise S3Error("InternalError", f"The upload's encryption metadata is damaged: {e}", 500) from None
        if meta is None or meta.version != envelope.FORMAT_VERSION_3 or not meta.multipart:
            raise S3Error("InternalError", "The completed upload is not a v3 multipart object", 500)
        if meta.customer is not None:
            if customer is None:  # completed with a listed upload id, which does not say SSE-C
                raise _ssec_key_needed()
            sse_c.verify(customer, meta.customer)
            data_key = sse_c.unbind(customer, meta.sealed_key, meta.customer, req.bucket, req.key)
        else:
            data_key = await self.proxy.keys.open(req.auth, req.bucket, req.key, meta.algorithm, meta.sealed_key,
                                                  meta.bucket_key_salt, meta.context)
        salts = await self.proxy.reader.part_salts(req.bucket, req.key, etag, layout, version_id)
        final = dataclasses.replace(meta, size=layout.size, layout=layout.sealed,
                                    parts_digest=envelope.parts_digest(salts), mac=None)
        final = final.signed(data_key, req.bucket, req.key)
        src = Stored(req.bucket, req.key, head.headers, meta, layout, version_id)
        headers = copied_headers(src.headers)
        headers.setdefault("content-type", "binary/octet-stream")
        headers.update(final.encode())
        new_etag, _, new_version = await self.proxy.copier._backend_copy(src, req.bucket, req.key, headers)
        if version_id and new_version and new_version != version_id:
            # A versioned bucket kept the unsealed object as a version of its own: it can never
            # be read (its layout is not bound), so it goes.
            await self.backend.send("DELETE", req.bucket, req.key, query={"versionId": version_id})
        self.proxy.reader.forget(req.bucket, req.key, etag)
        self.proxy.reader.remember_salts(req.bucket, req.key, new_etag, salts)
        return new_etag, new_version

    async def abort(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        _, backend_id = await self._upload_ids(req)
        r = await self.backend.send("DELETE", req.bucket, req.key, query={"uploadId": backend_id})
        if r.status_code == 404:
            raise no_such_upload()
        if r.status_code not in (200, 204):
            return await self.proxy.backend_error(r)
        await self.proxy.upload_state.forget(req.bucket, backend_id)
        return Reply(204)

    async def list_parts(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        upload_id, backend_id = await self._upload_ids(req)
        query = {k: v for k, v in req.query.items() if k in ("max-parts", "part-number-marker", "encoding-type")}
        query["uploadId"] = backend_id
        r = await self.backend.send("GET", req.bucket, req.key, query=query)
        if r.status_code == 404:
            raise no_such_upload()
        if r.status_code != 200:
            return await self.proxy.backend_error(r)
        v3 = not is_token(upload_id) or decode_token(upload_id).format in envelope.SALTED_VERSIONS
        header = envelope.PART_HEADER if v3 else 0
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        for el in root.iter(_NS + "UploadId"):
            el.text = upload_id
        _drop_checksums(root)  # they are the backend's, of ciphertext: meaningless to the client
        for p in root.iter(_NS + "Part"):
            size_el = p.find(_NS + "Size")
            if size_el is not None and size_el.text and size_el.text.isdigit():
                try:
                    size_el.text = str(envelope.plain_size(int(size_el.text) - header))
                except ObjectCorrupt:
                    pass  # not one of ours: leave the backend's size
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))

    async def list_uploads(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.proxy.owned(req)
        allowed = ("delimiter", "encoding-type", "key-marker", "max-uploads", "prefix", "upload-id-marker")
        query = {k: v for k, v in req.query.items() if k in allowed}
        if "upload-id-marker" in query:
            try:
                query["upload-id-marker"] = backend_upload_id(query["upload-id-marker"])
            except ValueError:
                raise invalid_argument("upload-id-marker is not an upload id of this bucket") from None
        query["uploads"] = ""
        r = await self.backend.send("GET", req.bucket, query=query)
        if r.status_code != 200:
            return await self.proxy.backend_error(r)
        # Each upload listed with the UploadId we issued, so that it can go on with its parts.
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        ids = [el for upload in root.iter(_NS + "Upload") for el in upload.iter(_NS + "UploadId")]
        issued = await self.proxy.upload_state.upload_ids(req.bucket, [el.text or "" for el in ids])
        for el in ids:
            el.text = issued.get(el.text or "", el.text)
        for owner in list(root.iter(_NS + "Owner")) + list(root.iter(_NS + "Initiator")):
            for child in owner:  # the backend's account is not the client's
                child.text = req.auth.caller.account_id
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))


def _bare(etag: str) -> str:
    return etag.strip().strip('"').lower()


def _ssec_key_needed() -> S3Error:
    return S3Error("InvalidRequest", "This proxy needs the SSE-C key (the x-amz-server-side-encryption-customer-* "
                   "headers) on CompleteMultipartUpload of an SSE-C upload: it seals the object's layout with it",
                   400)


async def _prefixed(head: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in body:
        yield chunk


def _same_etag(given: str | None, backend: str) -> bool:
    return given is not None and _bare(given) == _bare(backend)


def _etag_fits(part: xml_bodies.CompletedPart, backend: str, md5s: dict[tuple[int, str], str] | None) -> bool:
    """Whether a part's ETag in a Complete names the part the backend holds: the ETag ListParts
    shows (the sealed part's), or for SSE-S3 parts the plaintext MD5 UploadPart handed out,
    as recorded for that very sealed part (upload_state.py)."""
    if _same_etag(part.etag, backend):
        return True
    if part.etag is None or md5s is None:
        return False
    return md5s.get((part.number, quote(_bare(backend), safe=""))) == _bare(part.etag)


def _drop_checksums(el: ET.Element) -> None:
    for child in list(el):
        if child.tag.removeprefix(_NS).startswith("Checksum"):
            el.remove(child)
        else:
            _drop_checksums(child)


def _copy_range(value: str, size: int) -> tuple[int, int]:
    """x-amz-copy-source-range: `bytes=first-last`, both given and inside the source."""
    text = value.strip()
    if not text.startswith("bytes="):
        raise invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last")
    first, _, last = text[len("bytes="):].partition("-")
    if not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last")
    if int(last) >= size:
        raise S3Error("InvalidRange", "The requested range is not satisfiable", 416)
    return int(first), int(last) + 1


def _now() -> datetime:
    return datetime.now(UTC)
