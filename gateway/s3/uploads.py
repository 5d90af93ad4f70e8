"""Multipart uploads through the proxy: each part sealed on its own as it streams.

CreateMultipartUpload makes one data key for the upload (per-object or bucket-key, as for a
PUT), sealed once: the envelope goes into the backend upload's initiation metadata (so the
completed object carries it) and, with a MAC, into the UploadId we return (multipart.py), so
UploadPart needs no state and no lookup. Part p is sealed under `part_nonce(nonce, p)` with p in
every package's AAD. CompleteMultipartUpload checks the parts and completes the backend upload
(complete.py).

ListMultipartUploads lists the backend's upload ids; ListParts and AbortMultipartUpload take
those or ours, UploadPart needs ours (the data key travels in it).
"""

from __future__ import annotations

import asyncio
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from gateway.s3 import bodies, checksums, envelope, manifest_tags
from gateway.s3.acl import check_acl_headers
from gateway.s3.backend import S3_NS, Backend, BackendResponse, backend_error
from gateway.s3.backend import xml_text as _text
from gateway.s3.buckets import Buckets
from gateway.s3.complete import Completion
from gateway.s3.copy import Copier
from gateway.s3.encryption import ObjectEncryption
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta
from gateway.s3.errors import S3Error, invalid_argument
from gateway.s3.listing import drop_checksums, owned_by_caller
from gateway.s3.messages import Reply, S3Request, last_modified, put_headers, xml_doc
from gateway.s3.multipart import BACKEND_CHECKSUM, UploadToken, backend_upload_id, decode_token, is_token
from gateway.s3.reader import Reader
from gateway.s3.streaming import sealed_stream
from gateway.s3.upload_lookup import UploadLookup, etag_md5, no_such_upload, token_meta
from gateway.s3.upload_state import UploadState, part_key

_NS = f"{{{S3_NS}}}"


class Uploads:
    def __init__(self, backend: Backend, buckets: Buckets, reader: Reader, sse: ObjectEncryption,
                 upload_state: UploadState, copier: Copier, *, upgrading: bool = False) -> None:
        self.backend = backend
        # While nodes of the previous release still serve (SSEGW_UPGRADING): uploads are made
        # and recorded as that release did, so any node can take their parts and complete them
        # (it reads neither 13-field UploadIds nor MD5s in part records). Every node reads both.
        self.upgrading = upgrading
        self.buckets = buckets
        self.reader = reader
        self.sse = sse
        self.upload_state = upload_state
        self.copier = copier
        self.lookup = UploadLookup(buckets, sse, upload_state)
        self.completion = Completion(backend, reader, sse, upload_state, copier, self.lookup)
        # A reader that finds a v4 object without its manifest finishes an interrupted Complete.
        reader.heal = self.completion.finish_manifest

    # ------------------------------------------------------------------ create

    async def create(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        info = await self.buckets.owned(req)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        enc = self.sse.encryption(req, info)
        manifest_tags.check_user_tags(req.headers.get("x-amz-tagging"))
        try:
            declared = checksums.declared_upload(req.headers.get("x-amz-checksum-algorithm"),
                                                 req.headers.get("x-amz-checksum-type"))
        except ValueError as e:
            raise S3Error("InvalidRequest", str(e)) from None
        ok = await self.sse.new_key(req, enc, req.bucket, req.key)
        nonce = envelope.new_base_nonce()
        # Format v4: the metadata is whole now (size and layout go into the manifest tag at
        # completion), so it is MAC'd now, and the object is never copied onto itself.
        meta = ObjectMeta(ok.algorithm, ok.sealed, nonce, None, ok.kms_key_id, enc.sse, None, enc.context,
                          multipart=True, bucket_key_salt=ok.salt, customer=ok.customer,
                          format=envelope.FORMAT_VERSION_4).signed(ok.plaintext, req.bucket, req.key)
        headers = put_headers(req)
        headers.setdefault("content-type", "binary/octet-stream")
        headers.update(meta.encode())
        # The backend upload checks each sealed part's CRC32 as it arrives (_send_part), so a part
        # damaged on its way is refused while the client can still send it again, not found on
        # the first read. (The checksums the client declares are of its plaintext and stay
        # with the proxy.) A backend that does not say it took the algorithm gets plain parts.
        if not self.upgrading:
            headers["x-amz-checksum-algorithm"] = BACKEND_CHECKSUM
        r = await self.backend.send("POST", req.bucket, req.key, query={"uploads": ""}, headers=headers)
        if r.status_code != 200:
            return await backend_error(r)
        backend_id = _text(ET.fromstring(r.content), "UploadId")
        if not backend_id:
            raise S3Error("InternalError", "the backend returned no UploadId", 500)
        taken = not self.upgrading and r.headers.get("x-amz-checksum-algorithm", "").upper() == BACKEND_CHECKSUM
        token = UploadToken(backend_id, req.bucket, req.key, ok.algorithm, nonce, ok.sealed, ok.kms_key_id,
                            enc.sse, enc.context, ok.salt, ok.customer, checksum=declared,
                            backend_checksum=BACKEND_CHECKSUM if taken else None).encode(ok.plaintext)
        try:
            await self.upload_state.remember_upload(req.bucket, backend_id, token)
        except S3Error:
            await self.backend.send("DELETE", req.bucket, req.key, query={"uploadId": backend_id})
            raise
        body = (f'<InitiateMultipartUploadResult xmlns="{S3_NS}"><Bucket>{escape(req.bucket)}</Bucket>'
                f"<Key>{escape(req.key)}</Key><UploadId>{token}</UploadId></InitiateMultipartUploadResult>")
        headers = {"content-type": "application/xml", **self.sse.sse_headers(req.auth, meta, enc.customer)}
        if declared is not None:
            headers.update({"x-amz-checksum-algorithm": declared[0], "x-amz-checksum-type": declared[1]})
        return Reply(200, headers, xml_doc(body))

    # ------------------------------------------------------------------ parts

    async def _token(self, req: S3Request) -> tuple[UploadToken, bytes, str]:
        """(token, data key, UploadId) of the upload a part request names."""
        assert req.bucket is not None and req.key is not None
        upload_id = await self.lookup.issued_id(req.bucket, req.query.get("uploadId", ""))
        if not is_token(upload_id):
            raise no_such_upload()
        try:
            token = decode_token(upload_id)
        except ValueError:
            raise no_such_upload() from None
        if (token.bucket, token.key) != (req.bucket, req.key):
            raise no_such_upload()
        return token, await self.lookup.data_key(req, token, upload_id), upload_id

    def _sse_headers(self, req: S3Request, token: UploadToken) -> dict[str, str]:
        return self.sse.sse_headers(req.auth, token_meta(token), self.sse.customer_key(req))

    async def upload_part(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        number = self._number(req)
        token, data_key, _ = await self._token(req)
        # An upload that declared a checksum algorithm gets every part's checksum: the client's,
        # or computed here when the part carries none (S3's default where it declared none).
        stream, size, received = bodies.body_stream(req, compute=_computed(token))
        if token.checksum is not None and received.algorithm != token.checksum[0]:
            raise S3Error("InvalidRequest", "Checksum Type mismatch occurred, expected checksum Type: "
                          f"{token.checksum[0].lower()}, actual checksum Type: {(received.algorithm or '').lower()}")
        if size > envelope.MAX_PART_SIZE:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        md5 = etag_md5(token)
        r, salt, sealed_crc = await self._send_part(req, number, token, data_key, stream, size,
                                                    bodies.content_md5(req), md5)
        if r.status_code != 200:
            return await self._part_failed(req, token, r)
        checksum = received.result()
        await self._remember_part(req, token, number, md5, salt, r, checksum, sealed_crc)
        return Reply(200, {"etag": self._part_etag(md5, r), **self._sse_headers(req, token),
                           **({checksums.header(checksum.algorithm): checksum.value()} if checksum else {})})

    async def _part_failed(self, req: S3Request, token: UploadToken, r: BackendResponse) -> Reply:
        """The backend refused a part: NoSuchUpload when the upload is gone (aborted or
        completed meanwhile; not every backend says so itself: moto answers 500), else what
        the backend said."""
        assert req.bucket is not None and req.key is not None
        if r.status_code != 404:
            listed = await self.backend.send("GET", req.bucket, req.key,
                                             query={"uploadId": token.backend_id, "max-parts": "1"})
            if listed.status_code != 404:
                return await backend_error(r)
        raise no_such_upload()

    async def _remember_part(self, req: S3Request, token: UploadToken, number: int, md5: hashlib._Hash | None,
                             salt: bytes, r: BackendResponse, checksum: checksums.ObjectChecksum | None,
                             sealed_crc: str | None) -> None:
        """Records what Complete needs of a part and cannot read back: the plaintext MD5 handed
        out as its ETag (SSE-S3), and its salt (v4) with its checksum and the sealed part's
        CRC32, each under the sealed part's ETag. The part is answered only once they are
        recorded."""
        assert req.bucket is not None
        state, etag = self.upload_state, r.headers.get("etag", "")
        hexdigest = md5.hexdigest() if md5 is not None else None
        v4 = token.format == envelope.FORMAT_VERSION_4
        md5_apart = hexdigest is not None and (not v4 or self.upgrading)
        writes = []
        if v4:
            writes.append(state.remember_salt(req.bucket, token.backend_id, number, etag, salt, checksum, sealed_crc,
                                              None if md5_apart else hexdigest))
        if md5_apart:
            assert hexdigest is not None
            writes.append(state.remember_part(req.bucket, token.backend_id, number, etag, hexdigest))
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
                         stream: AsyncIterator[bytes | memoryview], size: int, expected_md5: bytes | None,
                         md5: hashlib._Hash | None) -> tuple[BackendResponse, bytes, str | None]:
        """The backend's answer to the sealed part, the part's salt (v3/v4; b"" for v2) and,
        where the backend upload declared it, the sealed part's CRC32 (base64)."""
        assert req.bucket is not None and req.key is not None
        v3 = token.format in envelope.SALTED_VERSIONS
        salt = envelope.new_part_salt() if v3 else b""
        if v3:
            key, nonce = envelope.part_key(data_key, salt, number, token.algorithm)
        else:
            key, nonce = data_key, envelope.part_nonce(token.base_nonce, number)
        cipher = envelope.PackageCipher(token.algorithm, key, nonce, number, version=token.format)
        sealer = envelope.Sealer(cipher, envelope.Pieces(envelope.SEALED_PIECE, envelope.sealed_size(size)))
        # With a CRC32 trailer where the backend upload declared CRC32 (as SDKs send parts), else
        # a plain body: S3 refuses a part checksum on an upload created without the algorithm
        # ("Checksum Type mismatch"). Complete repeats each part's CRC32 from the part's record
        # (S3 lists them in ListParts, SeaweedFS 4.48 does not). Every package is authenticated
        # (AEAD) besides, so damage a plain part took on its way is caught, at the latest on read.
        body = sealed_stream(stream, sealer, expected_md5, md5)
        crc = checksums.Running(BACKEND_CHECKSUM) if token.backend_checksum is not None else None
        r = await self.backend.send(
            "PUT", req.bucket, req.key, query={"partNumber": str(number), "uploadId": token.backend_id},
            headers={"content-length": str(len(salt) + envelope.sealed_size(size))},
            body=_prefixed(salt, body) if salt else body, crc32_trailer=crc)
        return r, salt, crc.value() if crc is not None and r.status_code == 200 else None

    async def upload_part_copy(self, req: S3Request) -> Reply:
        """UploadPartCopy: the source's plaintext (any object we can read), sealed as part `number`.

        The backend cannot copy it for us: the part must be sealed with this upload's key,
        nonce and part number.
        """
        await self.buckets.owned(req)
        number = self._number(req)
        token, data_key, _ = await self._token(req)
        source = await self.copier.source(req)
        size = source.size
        start, end = 0, size
        rng = req.headers.get("x-amz-copy-source-range")
        if rng is not None:
            parsed = _copy_range(rng, size)
            start, end = parsed
        if end - start > envelope.MAX_PART_SIZE:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        src_key = await self.sse.open_key(req.auth, source, self.sse.customer_key(req, copy_source=True))
        plain = await self.reader.plaintext(source, src_key, start, end)
        algorithm = _computed(token)
        computed = checksums.BodyChecksum(algorithm) if algorithm is not None else None
        if computed is not None:
            plain = checksums.checksummed(plain, computed)
        md5 = etag_md5(token)
        r, salt, sealed_crc = await self._send_part(req, number, token, data_key, plain, end - start, None, md5)
        if r.status_code != 200:
            return await self._part_failed(req, token, r)
        checksum = computed.result() if computed is not None else None
        await self._remember_part(req, token, number, md5, salt, r, checksum, sealed_crc)
        modified = last_modified(r.headers)
        when = (modified or _now()).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        tag = checksums.element(checksum.algorithm) if checksum is not None else ""
        body = (f'<CopyPartResult xmlns="{S3_NS}"><LastModified>{when}</LastModified>'
                f'<ETag>{escape(self._part_etag(md5, r))}</ETag>'
                + (f"<{tag}>{checksum.value()}</{tag}>" if checksum is not None else "") + "</CopyPartResult>")
        headers = {"content-type": "application/xml", **self._sse_headers(req, token)}
        if source.version_id is not None:
            headers["x-amz-copy-source-version-id"] = source.version_id
        return Reply(200, headers, xml_doc(body))

    # ------------------------------------------------------------------ abort, list

    async def abort(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        _, backend_id = await self.lookup.upload_ids(req)
        r = await self.backend.send("DELETE", req.bucket, req.key, query={"uploadId": backend_id})
        if r.status_code == 404:
            raise no_such_upload()
        if r.status_code not in (200, 204):
            return await backend_error(r)
        await self.upload_state.forget(req.bucket, backend_id)
        return Reply(204)

    async def list_parts(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        upload_id, backend_id = await self.lookup.upload_ids(req)
        query = {k: v for k, v in req.query.items() if k in ("max-parts", "part-number-marker", "encoding-type")}
        query["uploadId"] = backend_id
        r = await self.backend.send("GET", req.bucket, req.key, query=query)
        if r.status_code == 404:
            raise no_such_upload()
        if r.status_code != 200:
            return await backend_error(r)
        v3 = not is_token(upload_id) or decode_token(upload_id).format in envelope.SALTED_VERSIONS
        header = envelope.PART_HEADER if v3 else 0
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        for el in root.iter(_NS + "UploadId"):
            el.text = upload_id
        drop_checksums(root)  # they are the backend's, of ciphertext: meaningless to the client
        owned_by_caller(root, req)
        token = decode_token(upload_id) if is_token(upload_id) else None
        if token is not None:
            await self._list_as_uploaded(req.bucket, backend_id, token, root)
        for p in root.iter(_NS + "Part"):
            size_el = p.find(_NS + "Size")
            if size_el is not None and size_el.text and size_el.text.isdigit():
                try:
                    size_el.text = str(envelope.plain_size(int(size_el.text) - header))
                except ObjectCorrupt:
                    pass  # not one of ours: leave the backend's size
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))

    async def _list_as_uploaded(self, bucket: str, backend_id: str, token: UploadToken, root: ET.Element) -> None:
        """ListParts as S3 lists them, from what UploadPart recorded (found by the sealed part's
        ETag the backend lists): each part's ETag as UploadPart gave it (SSE-S3: the plaintext
        MD5), and for an upload that declared a checksum its algorithm, type and each part's
        checksum of its plaintext."""
        want_md5s, declared = etag_md5(token) is not None, token.checksum
        if not want_md5s and declared is None:
            return
        recorded = (await self.upload_state.part_salts(bucket, backend_id)
                    if token.format == envelope.FORMAT_VERSION_4 else {})  # v2/v3 parts keep none
        md5s = await self.upload_state.part_md5s(bucket, backend_id, recorded) if want_md5s else {}
        if declared is not None:
            for name, value in zip(("ChecksumAlgorithm", "ChecksumType"), declared, strict=True):
                ET.SubElement(root, _NS + name).text = value
        for p in root.iter(_NS + "Part"):
            number, etag_el = _text(p, "PartNumber") or "", p.find(_NS + "ETag")
            if etag_el is None or not number.isdigit():
                continue
            key = part_key(int(number), etag_el.text or "")
            kept = recorded[key].checksum if key in recorded else None
            if declared is not None and kept is not None and kept.algorithm == declared[0]:
                ET.SubElement(p, _NS + checksums.element(declared[0])).text = kept.value()
            if key in md5s:
                etag_el.text = f'"{md5s[key]}"'

    async def list_uploads(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
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
            return await backend_error(r)
        # Each upload listed with the UploadId we issued, so that it can go on with its parts.
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        ids = [el for upload in root.iter(_NS + "Upload") for el in upload.iter(_NS + "UploadId")]
        issued = await self.upload_state.upload_ids(req.bucket, [el.text or "" for el in ids])
        for el in ids:
            el.text = issued.get(el.text or "", el.text)
        for upload in root.iter(_NS + "Upload"):
            # The backend's algorithm is of the sealed parts; the client's, of its plaintext.
            drop_checksums(upload)
            declared = _declared(_text(upload, "UploadId") or "")
            for name, value in zip(("ChecksumAlgorithm", "ChecksumType"), declared or (), strict=False):
                ET.SubElement(upload, _NS + name).text = value
        owned_by_caller(root, req)
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))


async def _prefixed(head: bytes, body: AsyncIterator[memoryview]) -> AsyncIterator[bytes | memoryview]:
    yield head
    async for chunk in body:
        yield chunk


def _declared(upload_id: str) -> tuple[str, str] | None:
    """The checksum (algorithm, type) the client declared for an upload we issued."""
    try:
        return decode_token(upload_id).checksum if is_token(upload_id) else None
    except ValueError:
        return None


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


def _computed(token: UploadToken) -> str | None:
    """The checksum a part gets computed when it carries none: the upload's declared one, or
    for a v4 upload that declared none S3's default, from which Complete makes the object's
    (v2/v3 parts keep no checksum)."""
    if token.checksum is not None:
        return token.checksum[0]
    return checksums.DEFAULT if token.format == envelope.FORMAT_VERSION_4 else None
