"""CompleteMultipartUpload: the parts checked, the backend upload completed, the layout bound.

Completion checks the parts (numbered 1..N, each but the last at least 5 MiB of plaintext, a
layout readers can learn, each named by an ETag we handed out or the backend lists), completes
the backend upload and binds the layout to the object: v4 in its manifest tag (recorded as in
flight first, so a Complete retried after a crash, or a reader, can finish it), v3 in its
metadata (the object copied onto itself), v2 in nothing (readers learn it from the parts).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from gateway.s3 import bodies, checksums, conditions, envelope, manifest_tags, sse_c, xml_bodies
from gateway.s3.backend import S3_NS, Backend, backend_error
from gateway.s3.backend import xml_text as _text
from gateway.s3.checksums import ObjectChecksum
from gateway.s3.copy import Copier
from gateway.s3.encryption import ObjectEncryption
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta
from gateway.s3.errors import S3Error
from gateway.s3.messages import Reply, S3Request, copied_headers, version_headers, xml_doc
from gateway.s3.multipart import MIN_PART, Layout, UploadToken, ambiguous, decode_token, is_token
from gateway.s3.reader import Reader, Stored, client_etag
from gateway.s3.upload_lookup import UploadLookup, etag_md5, no_such_upload, token_meta
from gateway.s3.upload_state import PartRecord, UploadState, part_key

_NS = f"{{{S3_NS}}}"

# Every part of a backend upload: number -> (sealed size, backend ETag).
Parts = dict[int, tuple[int, str]]


class Completion:
    def __init__(self, backend: Backend, reader: Reader, sse: ObjectEncryption, upload_state: UploadState,
                 copier: Copier, lookup: UploadLookup) -> None:
        self.backend = backend
        self.reader = reader
        self.sse = sse
        self.upload_state = upload_state
        self.copier = copier
        self.lookup = lookup

    async def complete(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        upload_id, backend_id = await self.lookup.upload_ids(req)
        upload_id = await self.lookup.issued_id(req.bucket, upload_id)
        token = decode_token(upload_id) if is_token(upload_id) else None
        customer = self.sse.customer_key(req)
        if token is not None and customer is not None:
            # S3 needs the key on Complete only for some uploads; given, it must be the upload's.
            # (The record in the UploadId is unauthenticated here, but Complete unseals nothing.)
            sse_c.verify(customer, token.customer, mismatch=sse_c.part_key_mismatch())
        # Its x-amz-checksum-<alg> header is the whole object's checksum (_object_checksum).
        listed = xml_bodies.complete_multipart(await bodies.buffered_body(req, xml_bodies.COMPLETE_LIMIT,
                                                                          checksum_header=False))
        wanted = _ascending(listed)
        try:
            have = await self._backend_parts(req.bucket, req.key, backend_id)
        except S3Error as e:
            if e.code != "NoSuchUpload":
                raise
            return await self._completed_before(req, upload_id, len(wanted), e)
        v4 = token is not None and token.format == envelope.FORMAT_VERSION_4
        # A v4 upload's part records, listed once: its parts' MD5s (their ETags) are in them too.
        recorded = await self.upload_state.part_salts(req.bucket, backend_id) if v4 else None
        await self._check_etags(req.bucket, backend_id, token, listed, have, recorded)
        guard = await conditions.write_conditions(self.reader, req)
        layout = _checked_layout(token, customer, wanted, have)
        manifest, salts, checksum, crcs = "", list[bytes](), None, dict[int, str]()
        if token is not None and recorded is not None:
            manifest, salts, checksum, crcs = await self._manifest(req, token, upload_id, listed, have, layout,
                                                                   recorded)
        await self.fault("before-backend-complete")
        etag, versions = await self._backend_complete(req, backend_id, wanted, have, guard, crcs)
        await self.fault("after-backend-complete")
        etag = await self._bind_layout(req, token, customer, etag, versions, layout, manifest, salts)
        await self.upload_state.forget(req.bucket, backend_id,
                                       (req.key, token.base_nonce) if v4 and token is not None else None)
        sse: dict[str, str] = {}
        if token is not None:
            sse = self.sse.sse_headers(req.auth, token_meta(token), customer)
        return _completed(req, etag, {**sse, **versions}, checksum)

    async def fault(self, point: str) -> None:
        """Test seam: tests replace this to fail a Complete at `point`, as a crash there
        would leave it (nothing on the network reaches it)."""

    async def _backend_parts(self, bucket: str, key: str, backend_id: str) -> Parts:
        """Every part of a backend upload: number -> (sealed size, backend ETag)."""
        parts: Parts = {}
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

    async def _check_etags(self, bucket: str, backend_id: str, token: UploadToken | None,
                           listed: list[xml_bodies.CompletedPart], have: Parts,
                           recorded: dict[tuple[int, str], PartRecord] | None) -> None:
        """Every part the Complete names is one the backend holds, under an ETag it was given
        (`recorded`: the upload's v4 part records, when listed already)."""
        md5_etags = token is None or etag_md5(token) is not None
        md5s: dict[tuple[int, str], str] | None = None
        for part in listed:
            if part.number not in have:
                raise S3Error("InvalidPart", f"Part {part.number} could not be found.", 400)
            if md5_etags and md5s is None and not _same_etag(part.etag, have[part.number][1]):
                md5s = await self.upload_state.part_md5s(bucket, backend_id, recorded)
            if not _etag_fits(part, have[part.number][1], md5s):
                raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part "
                              "may not have been uploaded, or the specified entity tag may not match the "
                              f"part's entity tag (part {part.number}).", 400)

    async def _backend_complete(self, req: S3Request, backend_id: str, wanted: list[int], have: Parts,
                                guard: dict[str, str], crcs: dict[int, str]) -> tuple[str, dict[str, str]]:
        """The backend upload completed with exactly the parts named (with their sealed CRC32
        where the backend upload declared it): (its ETag, version headers)."""
        assert req.bucket is not None and req.key is not None
        parts_xml = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(have[n][1])}</ETag>"
                            + (f"<ChecksumCRC32>{escape(crcs[n])}</ChecksumCRC32>" if n in crcs else "")
                            + "</Part>" for n in wanted)
        done = await self.backend.send(
            "POST", req.bucket, req.key, query={"uploadId": backend_id},
            body=f'<CompleteMultipartUpload xmlns="{S3_NS}">{parts_xml}</CompleteMultipartUpload>'.encode(),
            headers={"content-type": "application/xml", **guard})
        # S3 may answer 200 and still put an <Error> in the body (the answer starts before it ends).
        if done.status_code != 200 or b"<Error>" in done.content:
            await backend_error(done)
        return _text(ET.fromstring(done.content), "ETag") or "", version_headers(done.headers)

    async def _bind_layout(self, req: S3Request, token: UploadToken | None, customer: sse_c.CustomerKey | None,
                           etag: str, versions: dict[str, str], layout: Layout, manifest: str,
                           salts: list[bytes]) -> str:
        """The completed object's layout bound as its format wants it; returns the client's ETag
        (and sets the version header a v3 copy made)."""
        assert req.bucket is not None and req.key is not None
        if token is not None and token.format == envelope.FORMAT_VERSION_4:
            await manifest_tags.write(self.backend, req.bucket, req.key, versions.get("x-amz-version-id"), manifest)
            await self.fault("after-manifest")
            self.reader.remember_salts(req.bucket, req.key, etag, salts)
            return client_etag(token_meta(token), etag)
        if token is None or token.format in envelope.SALTED_VERSIONS:
            etag, new_version = await self._seal_layout(req, etag, layout, versions.get("x-amz-version-id"),
                                                        customer)
            if new_version:
                versions["x-amz-version-id"] = new_version
            return etag
        self.reader.remember(req.bucket, req.key, etag, layout)
        return etag

    async def _manifest(self, req: S3Request, token: UploadToken, upload_id: str,
                        listed: list[xml_bodies.CompletedPart], have: Parts, layout: Layout,
                        recorded: dict[tuple[int, str], PartRecord],
                        ) -> tuple[str, list[bytes], ObjectChecksum | None, dict[int, str]]:
        """A v4 upload's manifest (and its parts' salts, in order, the object's checksum if it
        has one, and the sealed parts' CRC32s by number if the backend upload
        declared them), from what UploadPart recorded for exactly the sealed parts Complete
        names; recorded as in flight, so a Complete retried after a crash, or a reader, can
        finish writing it."""
        assert req.bucket is not None and req.key is not None
        data_key = await self.lookup.data_key(req, token, upload_id)
        records = []
        for part in listed:
            record = recorded.get(part_key(part.number, have[part.number][1]))
            if (record is None or len(record.salt) != envelope.PART_HEADER
                    or (token.backend_checksum is not None and record.sealed_crc32 is None)):
                raise S3Error("InvalidPart", f"Part {part.number} was not uploaded through this gateway (or its "
                              "record was lost): upload it again", 400)
            records.append(record)
        salts = [r.salt for r in records]
        checksum = _object_checksum(req, token, listed, [r.checksum for r in records], layout)
        sealed = checksums.seal(checksum, data_key, token.algorithm) if checksum is not None else None
        if sealed is not None and not envelope.manifest_fits(layout.sealed, sealed):
            sealed = None  # parts of many sizes leave no room in the tag: the object keeps none
        meta = token_meta(token).with_manifest(data_key, layout.size, layout.sealed, envelope.parts_digest(salts),
                                               sealed)
        manifest = meta.manifest()
        await self.upload_state.remember_completion(req.bucket, req.key, token.base_nonce, manifest)
        crcs = {part.number: r.sealed_crc32 for part, r in zip(listed, records, strict=True)
                if token.backend_checksum is not None and r.sealed_crc32 is not None}
        return manifest, salts, checksum, crcs

    async def finish_manifest(self, bucket: str, key: str, meta: ObjectMeta, version_id: str | None,
                              sealed_total: int | None) -> str | None:
        """The manifest of a v4 object whose Complete stopped after the backend completed it
        (a crash, a lost connection), written now; None when no Complete was in flight."""
        manifest = await self.upload_state.completion(bucket, key, meta.base_nonce)
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
            stored = await self.reader.stat(req.bucket, req.key)
        except S3Error:
            raise gone from None  # e.g. completed in the backend but its layout never sealed
        meta = stored.meta if stored is not None else None
        if (stored is None or meta is None or not meta.multipart or meta.base_nonce != token.base_nonce
                or meta.sealed_key != token.sealed_key or stored.parts_count != count):
            raise gone
        if meta.manifest_in_tag:
            await self.upload_state.forget(req.bucket, token.backend_id, (req.key, token.base_nonce))
        sse = self.sse.sse_headers(req.auth, meta, self.sse.customer_key(req))
        return _completed(req, stored.etag, {**sse, **version_headers(stored.headers)})

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
            data_key = await self.sse.keys.open(req.auth, req.bucket, req.key, meta.algorithm, meta.sealed_key,
                                                meta.bucket_key_salt, meta.context)
        salts = await self.reader.part_salts(req.bucket, req.key, etag, layout, version_id)
        final = dataclasses.replace(meta, size=layout.size, layout=layout.sealed,
                                    parts_digest=envelope.parts_digest(salts), mac=None)
        final = final.signed(data_key, req.bucket, req.key)
        src = Stored(req.bucket, req.key, head.headers, meta, layout, version_id)
        headers = copied_headers(src.headers)
        headers.setdefault("content-type", "binary/octet-stream")
        headers.update(final.encode())
        new_etag, _, new_version = await self.copier.backend_copy(src, req.bucket, req.key, headers)
        if version_id and new_version and new_version != version_id:
            # A versioned bucket kept the unsealed object as a version of its own: it can never
            # be read (its layout is not bound), so it goes.
            await self.backend.send("DELETE", req.bucket, req.key, query={"versionId": version_id})
        self.reader.forget(req.bucket, req.key, etag)
        self.reader.remember_salts(req.bucket, req.key, new_etag, salts)
        return new_etag, new_version


def _object_checksum(req: S3Request, token: UploadToken, listed: list[xml_bodies.CompletedPart],
                     recorded: list[ObjectChecksum | None], layout: Layout) -> ObjectChecksum | None:
    """The completed object's checksum, of the type the upload declared (S3's default where it
    declared none), after S3's checks: every part named with the checksum UploadPart gave it,
    and the whole object's checksum as the client computed it, if sent."""
    if token.checksum is None:
        default = _default_checksum(recorded, layout)
        if default is not None:
            _check_whole(req, default)
        return default
    algorithm, kind = token.checksum
    tag = checksums.element(algorithm)
    for part, kept in zip(listed, recorded, strict=True):
        sent = part.checksums.get(tag)
        if sent is None:
            raise S3Error("InvalidRequest", f"The upload was created using a {algorithm.lower()} checksum. The "
                          "complete request must include the checksum for each part. It was missing for part "
                          f"{part.number} in the request.")
        if kept is None or kept.algorithm != algorithm or checksums.decode_value(algorithm, sent) != kept.digest:
            raise S3Error("InvalidPart", "One or more of the specified parts could not be found. The part may "
                          "not have been uploaded, or the specified entity tag or checksum may not match the "
                          f"part's (part {part.number}).", 400)
    digests = [c.digest for c in recorded if c is not None]
    if kind == checksums.COMPOSITE:
        out = checksums.composite(algorithm, digests)
    else:
        out = checksums.full_object(algorithm, list(zip(digests, layout.plain, strict=True)))
    asked = req.headers.get("x-amz-checksum-type")
    if asked is not None and asked.strip().upper() != kind:
        raise S3Error("BadDigest", f"The upload was created using the {kind} checksum mode. The complete "
                      f"request must use the same checksum mode.")
    _check_whole(req, out)
    return out


def _check_whole(req: S3Request, out: ObjectChecksum) -> None:
    """BadDigest unless the whole object's checksum the client sent, if any, is `out`'s."""
    whole = req.headers.get(checksums.header(out.algorithm))
    if whole is not None and whole.strip() not in (out.value(), out.value().split("-")[0]):
        raise S3Error("BadDigest", f"The {checksums.header(out.algorithm)} you specified did not match the "
                      "calculated checksum.")


def _default_checksum(recorded: list[ObjectChecksum | None], layout: Layout) -> ObjectChecksum | None:
    """S3's default for an upload that declared no checksum: the whole object's CRC64NVME,
    combined from its parts' (UploadPart computed them); none when a part has none (recorded by
    an older version) or one of another algorithm (the client sent its own)."""
    digests = []
    for kept in recorded:
        if kept is None or kept.algorithm != checksums.DEFAULT:
            return None
        digests.append(kept.digest)
    if not digests:
        return None
    return checksums.full_object(checksums.DEFAULT, list(zip(digests, layout.plain, strict=True)))


def _completed(req: S3Request, etag: str, headers: dict[str, str], checksum: ObjectChecksum | None = None) -> Reply:
    assert req.bucket is not None and req.key is not None
    location = f"/{req.bucket}/{req.key}"
    out = (f'<CompleteMultipartUploadResult xmlns="{S3_NS}"><Location>{escape(location)}</Location>'
           f"<Bucket>{escape(req.bucket)}</Bucket><Key>{escape(req.key)}</Key>"
           f"<ETag>{escape(etag)}</ETag>{checksum.xml() if checksum is not None else ''}"
           "</CompleteMultipartUploadResult>")
    return Reply(200, {"content-type": "application/xml", **headers}, xml_doc(out))


def _bare(etag: str) -> str:
    return etag.strip().strip('"').lower()


def _ssec_key_needed() -> S3Error:
    return S3Error("InvalidRequest", "This proxy needs the SSE-C key (the x-amz-server-side-encryption-customer-* "
                   "headers) on CompleteMultipartUpload of an SSE-C upload: it seals the object's layout with it",
                   400)


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
    return md5s.get(part_key(part.number, backend)) == _bare(part.etag)


def _ascending(listed: list[xml_bodies.CompletedPart]) -> list[int]:
    """The part numbers a Complete names, which must ascend without repeats."""
    wanted = [p.number for p in listed]
    if wanted != sorted(wanted) or len(set(wanted)) != len(wanted):
        raise S3Error("InvalidPartOrder", "The list of parts was not in ascending order. "
                      "Parts must be ordered by part number.", 400)
    return wanted


def _checked_layout(token: UploadToken | None, customer: sse_c.CustomerKey | None, wanted: list[int],
                    have: Parts) -> Layout:
    """The layout of the parts named, if readers will be able to learn it and trust it."""
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
    return layout
