"""S3 operations of the proxy: what each request does to the backend and the KMS.

Every object written is sealed with the envelope format (`envelope.py`); every read opens and
authenticates packages before a byte reaches the client. Objects that were put into the backend
without the proxy (no envelope metadata) are served as they are. Multipart uploads live in
`uploads.py`, CopyObject and re-keying in `copy.py`; data keys come from `objkeys.py` and
stored objects are read through `reader.py`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn
from urllib.parse import unquote
from xml.sax.saxutils import escape

from gateway.s3 import aws_chunked, envelope, sse_c, xml_bodies
from gateway.s3.acl import Acl, check_acl_headers
from gateway.s3.auth import Authenticated
from gateway.s3.backend import S3_NS, Backend, BackendError, BackendResponse
from gateway.s3.buckets import BucketEncryption, BucketInfo, Buckets
from gateway.s3.digests import Digests
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta
from gateway.s3.errors import S3Error, from_backend, invalid_argument, no_such_key
from gateway.s3.keycache import DEFAULT_TTL
from gateway.s3.names import check_bucket_name, check_metadata
from gateway.s3.objkeys import ObjectKey, ObjectKeys
from gateway.s3.ranges import RangeNotSatisfiable, check_conditions, parse_range
from gateway.s3.reader import OUT_CHUNK, Reader, Stored, client_etag, damaged, derived_listing
from gateway.s3.upload_state import UploadState, default_state_bucket
from kms_core.client import KmsClient

log = logging.getLogger("gateway.s3.proxy")

BUFFER_LIMIT = 16 * 1024 * 1024  # objects up to this size get the plaintext MD5 as ETag
MAX_PUT = 5 * 1024**3
SSE = "x-amz-server-side-encryption"
SSE_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
SSE_CTX = "x-amz-server-side-encryption-context"
SSE_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
PUT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-language",
               "expires", "x-amz-storage-class", "x-amz-tagging", "x-amz-website-redirect-location")
# Kept from the stored object when a copy keeps its metadata (x-amz-metadata-directive: COPY).
COPIED_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                  "content-language", "expires", "x-amz-website-redirect-location")
_GET_HEADERS = ("content-type", "cache-control", "content-disposition", "content-encoding",
                "content-language", "expires", "last-modified", "x-amz-storage-class",
                "x-amz-tagging-count", "x-amz-version-id", "x-amz-website-redirect-location")
_LIST_CONCURRENCY = 16


@dataclass
class S3Request:
    method: str
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str] = field(repr=False)  # they may carry an SSE-C key
    auth: Authenticated
    body: AsyncIterator[bytes]
    request_id: str
    secure: bool = False  # came over TLS (SSE-C is refused otherwise, unless allowed)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] | None = None
    body: bytes | AsyncIterator[bytes] = b""


@dataclass(frozen=True)
class Encryption:
    """How a new object is to be encrypted, from the request's headers and the bucket's default."""

    sse: str  # "aws:kms" or "AES256" (the product default key)
    cmk: str | None  # None: the product default key
    bucket_key: bool
    context: dict[str, str] | None  # the client's x-amz-server-side-encryption-context
    customer: sse_c.CustomerKey | None = None  # SSE-C: the key that binds the data key


def xml_doc(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()


_xml = xml_doc


def backend_failure(e: BackendError) -> S3Error:
    return S3Error("ServiceUnavailable", f"the storage backend failed: {e}", 503)


class BackendListError(Exception):
    """The backend refused to list buckets; `response` is its answer."""

    def __init__(self, response: BackendResponse) -> None:
        super().__init__(f"backend answered {response.status_code} listing buckets")
        self.response = response


class S3Proxy:
    def __init__(self, backend: Backend, kms_for: Callable[[Authenticated], KmsClient], *,
                 key_cache_ttl: float | None = None, allow_sse_c_over_http: bool = False,
                 state_bucket: str | None = None, serve_plaintext: bool = False) -> None:
        from gateway.s3.copy import Copier
        from gateway.s3.uploads import Uploads
        from gateway.s3.versions import Versions

        if key_cache_ttl is None:
            key_cache_ttl = float(os.environ.get("SSEGW_KEY_CACHE_SECONDS", DEFAULT_TTL))
        self.backend = backend
        # As AWS: customer keys only over TLS, unless a test rig on loopback says otherwise.
        self.allow_sse_c_over_http = allow_sse_c_over_http
        # An object with no envelope was not written through the gateway, or an attacker with
        # write access to the backend stripped its envelope: serving it would hand out bytes
        # nobody authenticated (ciphertext as if it were the object, or planted content). Only
        # an operator migrating a bucket of plaintext objects turns this on.
        self.serve_plaintext = serve_plaintext
        self.buckets = Buckets(backend, kms_for)
        self.keys = ObjectKeys(kms_for, key_cache_ttl)
        self.reader = Reader(backend)
        self.uploads = Uploads(self)
        self.copier = Copier(self)
        self.versions = Versions(self)
        self.acl = Acl(self)
        # Upload state every node must see (upload_state.py): a backend bucket no tenant owns.
        self.state_bucket = (state_bucket or os.environ.get("SSEGW_STATE_BUCKET")
                             or default_state_bucket(backend.config.url, backend.config.access_key_id))
        self.upload_state = UploadState(backend, self.state_bucket)
        self._list_cache: dict[tuple[str, str, str], tuple[int, str]] = {}

    # ------------------------------------------------------------------ helpers

    async def _owned(self, req: S3Request) -> BucketInfo:
        assert req.bucket is not None
        return await self.buckets.check(req.bucket, req.auth)

    owned = _owned

    @staticmethod
    async def _backend_error(r: BackendResponse) -> NoReturn:
        """Raises the backend's error answer as an S3Error of ours."""
        body = await r.aread() if not r.is_closed else r.content
        raise from_backend(r.status_code, body, r.headers)

    backend_error = _backend_error

    async def _key_spec(self, req: S3Request, key: str) -> tuple[str, str]:
        """(key id, spec) of a user-named key (cached: specs never change)."""
        return await self.keys.spec(req.auth, key)

    # ------------------------------------------------------------------ buckets

    async def owned_buckets(self, auth: Authenticated) -> list[tuple[str, str, BucketInfo]]:
        """(name, creation date, info) of every backend bucket the caller owns.

        Raises BackendListError when the backend refuses to list."""
        r = await self.backend.send("GET")
        if r.status_code != 200:
            raise BackendListError(r)
        root = ET.fromstring(r.content)
        names = [(b.findtext(f"{{{S3_NS}}}Name") or "", b.findtext(f"{{{S3_NS}}}CreationDate") or "")
                 for b in root.iter(f"{{{S3_NS}}}Bucket")]
        owned = await self.buckets.owned_among([n for n, _ in names], auth)
        mine = [(n, d) for n, d in names if n in owned]
        infos = await asyncio.gather(*(self.buckets.info(n) for n, _ in mine), return_exceptions=True)
        return [(n, d, info) for (n, d), info in zip(mine, infos, strict=True)
                if isinstance(info, BucketInfo)]

    async def list_buckets(self, req: S3Request) -> Reply:
        try:
            owned = await self.owned_buckets(req.auth)
        except BackendListError as e:
            return await self._backend_error(e.response)
        mine = [(n, d) for n, d, _ in owned]
        items = "".join(f"<Bucket><Name>{escape(n)}</Name><CreationDate>{d}</CreationDate></Bucket>"
                        for n, d in mine)
        account = req.auth.caller.account_id
        owner = f"<Owner><ID>{account}</ID><DisplayName>{account}</DisplayName></Owner>"
        return Reply(200, {"content-type": "application/xml"},
                     _xml(f'<ListAllMyBucketsResult xmlns="{S3_NS}">{owner}<Buckets>{items}</Buckets>'
                          "</ListAllMyBucketsResult>"))

    async def create_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        if req.bucket == self.state_bucket:
            raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.", 409, f"/{req.bucket}")
        check_bucket_name(req.bucket)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        # A LocationConstraint is the client's region, not the backend's: checked, not forwarded.
        xml_bodies.create_bucket(await self.buffered_body(req, xml_bodies.SMALL_LIMIT))
        await self.buckets.create(req.bucket, req.auth)
        return Reply(200, {"location": f"/{req.bucket}"})

    async def head_bucket(self, req: S3Request) -> Reply:
        await self._owned(req)
        return Reply(200, {"x-amz-bucket-region": req.auth.caller.region})

    async def bucket_location(self, req: S3Request) -> Reply:
        await self._owned(req)
        return Reply(200, {"content-type": "application/xml"},
                     _xml(f'<LocationConstraint xmlns="{S3_NS}">{escape(req.auth.caller.region)}'
                          "</LocationConstraint>"))

    async def delete_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self._owned(req)
        r = await self.backend.send("DELETE", req.bucket)
        self.buckets.forget(req.bucket)
        if r.status_code != 204:
            return await self._backend_error(r)
        await self.buckets.release(req.bucket, req.auth)
        return Reply(204)

    async def put_bucket_encryption(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self._owned(req)
        rule = xml_bodies.bucket_encryption(await self.buffered_body(req, xml_bodies.SMALL_LIMIT))
        await self.set_bucket_encryption(req.auth, req.bucket, rule)
        return Reply(200)

    async def set_bucket_encryption(self, auth: Authenticated, bucket: str,
                                    rule: xml_bodies.EncryptionRule) -> None:
        """A bucket's default encryption, checked and written: PutBucketEncryption and the
        console's product-encryption page both come here."""
        await self.buckets.check(bucket, auth)
        if rule.kms_key:
            await self.keys.spec(auth, rule.kms_key)  # the key must exist and be the caller's
        await self.buckets.write(bucket, auth.caller.account_id,
                                 BucketEncryption(rule.sse, rule.kms_key, rule.bucket_key))

    async def remove_bucket_encryption(self, auth: Authenticated, bucket: str) -> None:
        await self.buckets.check(bucket, auth)
        await self.buckets.write(bucket, auth.caller.account_id, None)

    async def get_bucket_encryption(self, req: S3Request) -> Reply:
        info = await self._owned(req)
        enc = info.encryption or BucketEncryption("AES256")
        key = f"<KMSMasterKeyID>{escape(enc.kms_key)}</KMSMasterKeyID>" if enc.kms_key else ""
        return Reply(200, {"content-type": "application/xml"}, _xml(
            f'<ServerSideEncryptionConfiguration xmlns="{S3_NS}"><Rule>'
            f"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>{enc.sse}</SSEAlgorithm>{key}"
            "</ApplyServerSideEncryptionByDefault>"
            f"<BucketKeyEnabled>{'true' if enc.bucket_key else 'false'}</BucketKeyEnabled>"
            "</Rule></ServerSideEncryptionConfiguration>"))

    async def delete_bucket_encryption(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.remove_bucket_encryption(req.auth, req.bucket)
        return Reply(204)

    # ------------------------------------------------------------------ listing

    async def plain_stat(self, auth: Authenticated, bucket: str, key: str, etag: str, size: int,
                         version_id: str | None = None) -> tuple[int, str]:
        """Plaintext (size, ETag) of a listed object (or version), as HEAD would answer them
        (`reader.listed`); HEADs it once per backend ETag (an ETag names the stored bytes,
        whichever version holds them)."""
        ck = (bucket, key, etag)
        hit = self._list_cache.get(ck)
        if hit:
            return hit
        try:
            stored = await self.reader.stat(bucket, key, version_id=version_id)
            result = await self.reader.listed(stored, size, etag, lambda s: self.open_key(auth, s))
        except S3Error:  # damaged metadata: listed by the format's rules, reads will refuse it
            result = derived_listing(size, etag)
        if len(self._list_cache) > 100_000:
            self._list_cache.clear()
        self._list_cache[ck] = result
        return result

    async def list_objects(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self._owned(req)
        allowed = ("prefix", "delimiter", "max-keys", "marker", "continuation-token", "start-after",
                   "encoding-type", "fetch-owner", "list-type")
        query = {k: v for k, v in req.query.items() if k in allowed}
        r = await self.backend.send("GET", req.bucket, query=query)
        if r.status_code != 200:
            return await self._backend_error(r)
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(r.content)
        ns = f"{{{S3_NS}}}"
        url_encoded = req.query.get("encoding-type") == "url"
        contents = list(root.iter(f"{ns}Contents"))
        sem = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def fix(el: ET.Element) -> None:
            key = el.findtext(f"{ns}Key") or ""
            size_el, etag_el = el.find(f"{ns}Size"), el.find(f"{ns}ETag")
            if size_el is None or etag_el is None:
                return
            async with sem:
                size, etag = await self.plain_stat(req.auth, req.bucket or "", unquote(key) if url_encoded else key,
                                                   etag_el.text or "", int(size_el.text or 0))
            size_el.text, etag_el.text = str(size), etag

        await asyncio.gather(*(fix(el) for el in contents))
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))

    async def delete_objects(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self._owned(req)
        request = xml_bodies.delete_objects(await self.buffered_body(req, xml_bodies.DELETE_LIMIT))
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
            return await self._backend_error(r)
        return Reply(200, {"content-type": "application/xml"}, r.content)

    # ------------------------------------------------------------------ encryption of new objects

    def encryption(self, req: S3Request, info: BucketInfo) -> Encryption:
        """How a new object is encrypted: request headers, else the bucket's default.

        Bucket keys: the request's bucket-key header, else the bucket's BucketKeyEnabled (AWS
        applies it to requests that name their own key too).
        """
        sse = req.headers.get(SSE)
        key = req.headers.get(SSE_KEY)
        customer = self.customer_key(req)
        if customer is not None:
            if any(h in req.headers for h in (SSE, SSE_KEY, SSE_CTX, SSE_BUCKET_KEY)):
                raise sse_c.incompatible()
            return Encryption(sse_c.SSE, None, False, None, customer)
        bk_header = req.headers.get(SSE_BUCKET_KEY)
        if bk_header is not None and bk_header.lower() not in ("true", "false"):
            raise invalid_argument(f"{SSE_BUCKET_KEY} must be true or false")
        bucket_key = (bk_header.lower() == "true" if bk_header is not None
                      else bool(info.encryption and info.encryption.bucket_key))
        context = self._user_context(req)
        if sse is None:
            if key:
                raise invalid_argument(f"{SSE_KEY} requires {SSE}: aws:kms")
            if info.encryption is not None:
                return Encryption(info.encryption.sse, info.encryption.kms_key, bucket_key, context)
            return Encryption("AES256", None, bucket_key, context)
        if sse not in ("AES256", "aws:kms"):
            raise invalid_argument(f"{SSE} must be AES256 or aws:kms")
        if key and sse != "aws:kms":
            raise invalid_argument(f"{SSE_KEY} is allowed only with aws:kms")
        if sse == "aws:kms" and not key and info.encryption is not None and info.encryption.sse == "aws:kms":
            key = info.encryption.kms_key
        return Encryption(sse, key or None, bucket_key, context)

    @staticmethod
    def _user_context(req: S3Request) -> dict[str, str] | None:
        raw = req.headers.get(SSE_CTX)
        if raw is None:
            return None
        try:
            ctx = json.loads(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error):
            raise invalid_argument(f"{SSE_CTX} must be base64-encoded JSON") from None
        if not isinstance(ctx, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ctx.items()):
            raise invalid_argument(f"{SSE_CTX} must be a JSON object of strings")
        return ctx

    def customer_key(self, req: S3Request, *, copy_source: bool = False) -> sse_c.CustomerKey | None:
        """The SSE-C key the request gives for its object (or with `copy_source`, its copy source)."""
        return sse_c.parse(req.headers, copy_source=copy_source, secure=req.secure,
                           allow_http=self.allow_sse_c_over_http)

    async def new_key(self, req: S3Request, enc: Encryption, bucket: str, key: str) -> ObjectKey:
        if enc.customer is not None:
            # SSE-C: a fresh data key that only the customer's key unwraps; the KMS is not asked.
            plain = sse_c.new_data_key()
            wrapped, record = sse_c.bind(enc.customer, plain, bucket, key)
            return ObjectKey(plain, envelope.Algorithm.AES_256_GCM, wrapped, "", "", customer=record.encode())
        return await self.keys.new_key(req.auth, enc.cmk, bucket, key, enc.context, enc.bucket_key)

    def refuse_plaintext(self, stored: Stored) -> None:
        """S3Error for an object without an envelope, unless --serve-plaintext-objects.

        Empty "folder" objects (a key ending in /, no bytes) are served: stores such as SeaweedFS
        keep them as directories and drop their metadata, tools such as s3fs make them with
        mkdir, and there are no bytes in them to vouch for.
        """
        if stored.key.endswith("/") and stored.size == 0:
            return
        if not self.serve_plaintext:
            log.warning("refused %s/%s: no encryption envelope (not written through the gateway, or its "
                        "envelope was removed in the backend)", stored.bucket, stored.key)
            raise S3Error("InternalError", "The object carries no encryption envelope of this gateway, so "
                          "nothing vouches for its bytes and it is not served (an operator migrating "
                          "plaintext objects starts ssegw serve with --serve-plaintext-objects)", 500)

    async def open_key(self, auth: Authenticated, stored: Stored,
                       customer: sse_c.CustomerKey | None = None) -> bytes | None:
        """The data key of a stored object (SSE-C objects: with the request's `customer` key,
        checked; None for plaintext objects), once its metadata is authenticated (v3): nothing
        is read or served from metadata the MAC does not hold."""
        meta = stored.meta
        if meta is None:
            if customer is not None:
                raise sse_c.not_applicable()
            self.refuse_plaintext(stored)
            return None
        if meta.customer is not None or customer is not None:
            sse_c.verify(customer, meta.customer)
            assert customer is not None and meta.customer is not None
            data_key = sse_c.unbind(customer, meta.sealed_key, meta.customer, stored.bucket, stored.key)
        else:
            data_key = await self.keys.open(auth, stored.bucket, stored.key, meta.algorithm, meta.sealed_key,
                                            meta.bucket_key_salt, meta.context)
        try:
            meta.verify(data_key, stored.bucket, stored.key)
        except ObjectCorrupt as e:
            raise damaged(str(e)) from None
        return data_key

    def sse_headers(self, auth: Authenticated, meta: ObjectMeta,
                    customer: sse_c.CustomerKey | None = None) -> dict[str, str]:
        if meta.customer is not None:
            # SSE-C answers carry the algorithm and the key's MD5 (from the request), no SSE header.
            return customer.echo() if customer is not None else {}
        out = {SSE: meta.sse}
        if meta.sse == "aws:kms":
            c = auth.caller
            out[SSE_KEY] = f"arn:aws:kms:{c.region}:{c.account_id}:key/{meta.kms_key_id}"
        if meta.context:
            out[SSE_CTX] = base64.b64encode(json.dumps(dict(meta.context)).encode()).decode()
        if meta.bucket_key_salt is not None:
            out[SSE_BUCKET_KEY] = "true"
        return out

    # ------------------------------------------------------------------ request bodies

    async def buffered_body(self, req: S3Request, limit: int) -> bytes:
        """A small body read whole, refused before reading when it declares more than `limit`
        bytes, and checked like any other body (signed SHA-256 or chunk signatures, checksum,
        Content-MD5) before anyone acts on it."""
        h = req.headers
        declared = h.get("x-amz-decoded-content-length") if req.auth.payload.startswith("STREAMING-") \
            else h.get("content-length")
        if declared is None and "transfer-encoding" not in h and not req.auth.payload.startswith("STREAMING-"):
            stream: AsyncIterator[bytes] = self._verified(req, 0)  # no body at all
        else:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise xml_bodies.too_large(limit)
            stream, _ = self.body_stream(req)
        expected_md5 = self.content_md5(req)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise xml_bodies.too_large(limit)
                chunks.append(chunk)
        except aws_chunked.ChunkedError as e:
            raise S3Error(e.code, e.message, 403 if e.code == "SignatureDoesNotMatch" else 400) from None
        body = b"".join(chunks)
        self.check_md5(expected_md5, hashlib.md5(body) if expected_md5 is not None else None)
        return body

    def body_stream(self, req: S3Request) -> tuple[AsyncIterator[bytes], int]:
        """The decoded request body and its plaintext length (411 if unknown)."""
        h = req.headers
        payload = req.auth.payload
        if payload.startswith("STREAMING-"):
            length = h.get("x-amz-decoded-content-length")
            if length is None or not length.isdigit():
                raise S3Error("MissingContentLength", "aws-chunked uploads need x-amz-decoded-content-length", 411)
            stream = aws_chunked.decode(req.body, mode=payload, decoded_length=int(length),
                                        signing=req.auth.chunk_signing, trailer=h.get("x-amz-trailer"))
            return stream, int(length)
        length = h.get("content-length")
        if length is None or not length.isdigit():
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
        return self._verified(req, int(length)), int(length)

    async def _verified(self, req: S3Request, length: int) -> AsyncIterator[bytes]:
        """The plain body, checked against its declared SHA-256, length and checksum header."""
        payload = req.auth.payload
        digest = hashlib.sha256() if payload != "UNSIGNED-PAYLOAD" else None
        checksum = None
        for name in req.headers:
            if name.startswith("x-amz-checksum-") and name not in ("x-amz-checksum-type", "x-amz-checksum-algorithm"):
                try:
                    checksum = (name, aws_chunked.Checksum(name[len("x-amz-checksum-"):]))
                except aws_chunked.ChunkedError as e:
                    raise S3Error(e.code, e.message, 501) from None
        digests = Digests(digest, checksum[1] if checksum is not None else None)
        seen = 0
        async for chunk in req.body:
            if not chunk:
                continue
            seen += len(chunk)
            if seen > length:
                raise S3Error("IncompleteBody", "the body is longer than Content-Length")
            await digests.feed(chunk)
            yield chunk
        await digests.finish()
        if seen != length:
            raise S3Error("IncompleteBody",
                          "You did not provide the number of bytes specified by the Content-Length HTTP header")
        if digest is not None and not hmac.compare_digest(digest.hexdigest(), payload.lower()):
            raise S3Error("XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if checksum is not None and not hmac.compare_digest(checksum[1].value(), req.headers[checksum[0]]):
            raise S3Error("BadDigest", f"The {checksum[0]} you specified did not match the calculated checksum.")

    @staticmethod
    def content_md5(req: S3Request) -> bytes | None:
        """The body's declared MD5 (Content-MD5), checked by whoever reads the body."""
        value = req.headers.get("content-md5")
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 16:
            raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.")
        return raw

    @staticmethod
    def check_md5(expected: bytes | None, md5: hashlib._Hash | None) -> None:
        if expected is not None and md5 is not None and not hmac.compare_digest(expected, md5.digest()):
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")

    def put_headers(self, req: S3Request) -> dict[str, str]:
        """The client's metadata and standard headers to store with a new object."""
        check_metadata(req.headers)
        out = {}
        for name, value in req.headers.items():
            if name.startswith("x-amz-meta-"):
                if name.startswith(envelope.META_PREFIX):
                    raise invalid_argument(f"metadata names starting with {envelope.META_PREFIX} are reserved")
                out[name] = value
            elif name in PUT_HEADERS:
                out[name] = value
        enc = req.headers.get("content-encoding")
        if enc:
            rest = ",".join(e for e in (x.strip() for x in enc.split(",")) if e and e != "aws-chunked")
            if rest:
                out["content-encoding"] = rest
        return out

    # ------------------------------------------------------------------ objects

    async def copy_object(self, req: S3Request) -> Reply:
        info = await self._owned(req)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        return await self.copier.copy_object(req, info)

    async def put_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        info = await self._owned(req)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        guard = await self.write_conditions(req)
        enc = self.encryption(req, info)
        stream, size = self.body_stream(req)
        if size > MAX_PUT:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        expected_md5 = self.content_md5(req)
        ok = await self.new_key(req, enc, req.bucket, req.key)
        nonce = envelope.new_base_nonce()
        sealer = envelope.Sealer(envelope.PackageCipher(ok.algorithm, ok.plaintext, nonce,
                                                        version=envelope.FORMAT_VERSION_3))
        headers = {**self.put_headers(req), **guard}
        headers["content-length"] = str(envelope.sealed_size(size))
        headers.setdefault("content-type", "binary/octet-stream")

        def meta_for(md5: str | None) -> ObjectMeta:
            # SSE-C objects keep no plaintext MD5: it would let anyone who reads the backend
            # confirm a guess of the content, and S3's SSE-C ETags are no MD5 either.
            return ObjectMeta(ok.algorithm, ok.sealed, nonce, size, ok.kms_key_id, enc.sse,
                              None if ok.customer else md5, enc.context, bucket_key_salt=ok.salt,
                              customer=ok.customer).signed(ok.plaintext, req.bucket or "", req.key or "")

        try:
            if size <= BUFFER_LIMIT:
                # Small enough to hold: read and verify it all first, so the plaintext MD5 can
                # travel as metadata (the ETag) and a bad body never reaches the backend.
                md5 = hashlib.md5()
                digests = Digests(md5)
                sealed: list[bytes] = []
                async for chunk in stream:
                    await digests.feed(chunk)
                    sealed.extend(sealer.feed(chunk))
                await digests.finish()
                self.check_md5(expected_md5, md5)
                sealed.append(sealer.finish())
                meta = meta_for(md5.hexdigest())
                headers.update(meta.encode())
                r = await self.backend.send("PUT", req.bucket, req.key, headers=headers, body=b"".join(sealed))
            else:
                meta = meta_for(None)
                headers.update(meta.encode())
                r = await self.backend.send("PUT", req.bucket, req.key, headers=headers,
                                            body=sealed_stream(stream, sealer, expected_md5))
        except aws_chunked.ChunkedError as e:
            raise S3Error(e.code, e.message, 403 if e.code == "SignatureDoesNotMatch" else 400) from None
        except ObjectCorrupt as e:
            raise damaged(str(e)) from None
        except BackendError as e:
            raise backend_failure(e) from None
        if r.status_code != 200:
            return await self._backend_error(r)
        return Reply(200, {"etag": client_etag(meta, r.headers.get("etag", "")),
                           **self.sse_headers(req.auth, meta, enc.customer), **version_headers(r.headers)})

    def _refuse_sse_on_read(self, req: S3Request) -> None:
        for h in (SSE, SSE_KEY, SSE_CTX, SSE_BUCKET_KEY):
            if h in req.headers:
                raise S3Error("InvalidArgument", f"The {h} header is not supported for this operation.", 400)

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
        out.update(self.sse_headers(auth, stored.meta, customer))
        count = out.get("x-amz-tagging-count", "")
        if stored.meta.manifest_in_tag and count.isdigit():  # the manifest tag is the gateway's
            if int(count) > 1:
                out["x-amz-tagging-count"] = str(int(count) - 1)
            else:
                del out["x-amz-tagging-count"]
        return out

    @staticmethod
    def _part_number(req: S3Request) -> int | None:
        text = req.query.get("partNumber")
        if text is None:
            return None
        if not text.isdigit() or not 1 <= int(text) <= envelope.MAX_PART:
            raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
        if "range" in req.headers:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter.")
        return int(text)

    @staticmethod
    def _wanted(req: S3Request, stored: Stored, part: int | None, headers: dict[str, str]) -> tuple[int, int] | None:
        """The plaintext [start, end) a GET or HEAD asks for (None: the whole object)."""
        size = stored.size
        if part is not None:
            count = stored.parts_count
            if count is None:  # a single-PUT object is its own part 1 (as S3 does)
                if part != 1:
                    raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
                headers["x-amz-mp-parts-count"] = "1"
                return (0, size)
            if part > count:
                raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
            assert stored.layout is not None
            headers["x-amz-mp-parts-count"] = str(count)
            return stored.layout.part_range(part)
        try:
            return parse_range(req.headers.get("range"), size)
        except RangeNotSatisfiable:
            raise S3Error("InvalidRange", "The requested range is not satisfiable", 416) from None

    async def head_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self._owned(req)
        self._refuse_sse_on_read(req)
        part = self._part_number(req)
        customer = self.customer_key(req)
        stored = await self.reader.stat(req.bucket, req.key, version_id=version_of(req))
        if stored is None:
            raise no_such_key(req.bucket, req.key)
        sse_c.verify(customer, stored.meta.customer if stored.meta else None)
        if stored.meta is not None:
            await self._vouch(req, stored, customer)
        else:
            self.refuse_plaintext(stored)
        headers = self.object_headers(req.auth, stored, customer)
        not_modified = self.read_conditions(req, stored)
        if not_modified is not None:
            return not_modified
        wanted = self._wanted(req, stored, part, headers)
        if part is not None and wanted is not None:
            start, end = wanted
            headers["content-length"] = str(end - start)
            if end > start:
                headers["content-range"] = f"bytes {start}-{end - 1}/{stored.size}"
            return Reply(206, headers)
        headers["content-length"] = str(stored.size)
        return Reply(200, headers)

    async def _vouch(self, req: S3Request, stored: Stored, customer: sse_c.CustomerKey | None) -> None:
        """S3Error unless what a HEAD would answer from `stored`'s metadata is authentic.

        v3: the metadata's MAC, and for a multipart object its parts' salts. v1/v2 metadata
        has no MAC, so its size is vouched for by opening the final package (its place and
        final flag are authenticated), which also refuses a v3 object relabelled v1/v2 (v3
        packages do not open as v1): one small GET. A v1/v2 ETag MD5 stays unauthenticated.
        """
        assert stored.meta is not None
        data_key = await self.open_key(req.auth, stored, customer)
        if stored.meta.salted:
            if stored.meta.multipart:
                await self.reader.checked_salts(stored)
            return
        size = stored.size
        start = max(0, size - 1)
        async for _ in await first_checked(await self.reader.plaintext(stored, data_key, start, size)):
            pass

    async def get_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self._owned(req)
        self._refuse_sse_on_read(req)
        part = self._part_number(req)
        customer = self.customer_key(req)
        if part is not None or "range" in req.headers:
            # A piece of the object: learn its envelope with a HEAD, then fetch only the
            # packages needed. A plain GET first would make the backend start sending the
            # whole object, once per piece (clients fetch big objects in many ranges).
            return await self._get_piece(req, part, customer)
        version_id = version_of(req)
        r = await self.backend.send("GET", req.bucket, req.key, stream=True,
                                    query={"versionId": version_id} if version_id is not None else None)
        if r.status_code != 200:
            await r.aread()
            await r.aclose()
            await self._backend_error(r)
        try:
            stored = await self.reader.stat(req.bucket, req.key, r, version_id=version_id)
            assert stored is not None
            sse_c.verify(customer, stored.meta.customer if stored.meta else None)
            headers = self.object_headers(req.auth, stored, customer)
            not_modified = self.read_conditions(req, stored)
            if not_modified is not None:
                await r.aclose()
                return not_modified
            wanted = self._wanted(req, stored, part, headers)
            start, end = wanted or (0, stored.size)
            data_key = await self.open_key(req.auth, stored, customer)
            stream = await self.reader.plaintext(stored, data_key, start, end, r)
        except BaseException:
            await r.aclose()
            raise
        body = await first_checked(stream)
        headers["content-length"] = str(end - start)
        if wanted is not None and end > start:
            headers["content-range"] = f"bytes {start}-{end - 1}/{stored.size}"
        return Reply(206 if wanted is not None else 200, headers, body)

    async def _get_piece(self, req: S3Request, part: int | None, customer: sse_c.CustomerKey | None) -> Reply:
        assert req.bucket is not None and req.key is not None
        stored = await self.reader.stat(req.bucket, req.key, version_id=version_of(req))
        if stored is None:
            raise no_such_key(req.bucket, req.key)
        sse_c.verify(customer, stored.meta.customer if stored.meta else None)
        headers = self.object_headers(req.auth, stored, customer)
        not_modified = self.read_conditions(req, stored)
        if not_modified is not None:
            return not_modified
        wanted = self._wanted(req, stored, part, headers)
        start, end = wanted or (0, stored.size)
        data_key = await self.open_key(req.auth, stored, customer)
        body = await first_checked(await self.reader.plaintext(stored, data_key, start, end))
        headers["content-length"] = str(end - start)
        if wanted is not None and end > start:
            headers["content-range"] = f"bytes {start}-{end - 1}/{stored.size}"
        return Reply(206 if wanted is not None else 200, headers, body)

    async def delete_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self._owned(req)
        version_id = version_of(req)
        r = await self.backend.send("DELETE", req.bucket, req.key,
                                    query={"versionId": version_id} if version_id is not None else None)
        if r.status_code not in (200, 204):
            return await self._backend_error(r)
        return Reply(204, version_headers(r.headers))

    @staticmethod
    def read_conditions(req: S3Request, stored: Stored) -> Reply | None:
        """304 (a Reply) or 412 (raised, with S3's XML body on GET) when the request's
        conditions say so, compared with the ETag the client sees; None: serve the object."""
        status = check_conditions(req.headers, stored.etag, _last_modified(stored.headers))
        if status == 412:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                          412, f"/{stored.bucket}/{stored.key}")
        if status == 304:
            headers = {"etag": stored.etag}
            for name in ("last-modified", "x-amz-version-id"):
                if stored.headers.get(name):
                    headers[name] = stored.headers[name]
            return Reply(304, headers)
        return None

    async def write_conditions(self, req: S3Request) -> dict[str, str]:
        """If-None-Match: * and If-Match on a write (PutObject, CompleteMultipartUpload),
        checked against the ETag the client sees: 412 (or 404 for If-Match on no object) when
        they fail. Returns the same conditions in the backend's terms, so the backend refuses
        the write if the object changed in between."""
        assert req.bucket is not None and req.key is not None
        if_match, if_none = req.headers.get("if-match"), req.headers.get("if-none-match")
        if if_match is None and if_none is None:
            return {}
        if if_none is not None and if_none.strip() != "*":
            raise S3Error("NotImplemented", "If-None-Match on a write accepts only *", 501)
        stored = await self.reader.stat(req.bucket, req.key)
        failed = S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                         412, f"/{req.bucket}/{req.key}")
        guard: dict[str, str] = {}
        if if_none is not None:
            if stored is not None:
                raise failed
            guard["if-none-match"] = "*"
        if if_match is not None:
            if stored is None:
                raise no_such_key(req.bucket, req.key)
            wanted = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
            if "*" not in wanted and stored.etag.strip('"') not in wanted:
                raise failed
            if stored.backend_etag:
                guard["if-match"] = stored.backend_etag
        return guard


def version_of(req: S3Request) -> str | None:
    """The versionId a request names (None: the current version)."""
    value = req.query.get("versionId")
    if value is None:
        return None
    if not value:
        raise invalid_argument("Version id cannot be the empty string")
    return value


def version_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """x-amz-version-id and x-amz-delete-marker of a backend answer, for the client."""
    return {h: headers[h] for h in ("x-amz-version-id", "x-amz-delete-marker") if headers.get(h)}


async def first_checked(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`stream` with its first piece opened now: a damaged object gets an S3 error rather than a
    200 that breaks off; later damage breaks the connection and never sends bad bytes."""
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = b""
    except ObjectCorrupt as e:
        raise damaged(str(e)) from None

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for piece in stream:
            yield piece

    return body()


async def sealed_stream(stream: AsyncIterator[bytes], sealer: envelope.Sealer,
                        expected_md5: bytes | None = None,
                        md5: hashlib._Hash | None = None) -> AsyncIterator[bytes]:
    """Sealed packages of `stream` as they fill. The final package is sealed only after the
    whole body verified (the decoders raise at the end otherwise, as does a wrong Content-MD5),
    so a bad body aborts the backend upload before it can complete."""
    if expected_md5 is not None and md5 is None:
        md5 = hashlib.md5()
    digests = Digests(md5)
    # Sealed packages go out in pieces of about OUT_CHUNK: each piece is one trip through
    # aiohttp's writer and the event loop, which cost more than sealing when done per 64 KiB package.
    pending: list[bytes] = []
    size = 0
    async for chunk in stream:
        await digests.feed(chunk)
        for sealed in sealer.feed(chunk):
            pending.append(sealed)
            size += len(sealed)
        if size >= OUT_CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    await digests.finish()
    S3Proxy.check_md5(expected_md5, md5)
    pending.append(sealer.finish())
    yield b"".join(pending)


def _last_modified(headers: Mapping[str, str]) -> datetime | None:
    value = headers.get("last-modified")
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None


last_modified = _last_modified
