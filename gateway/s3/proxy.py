"""S3 operations of the proxy: what each request does to the backend and the KMS.

Every object written is sealed with the envelope format (`envelope.py`); every read opens and
authenticates packages before a byte reaches the client. Objects that were put into the backend
without the proxy (no envelope metadata) are served as they are.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import unquote
from xml.sax.saxutils import escape

import anyio
import httpx

from gateway.s3 import aws_chunked, envelope
from gateway.s3.auth import Authenticated
from gateway.s3.backend import S3_NS, Backend
from gateway.s3.buckets import BucketEncryption, BucketInfo, Buckets
from gateway.s3.envelope import Algorithm, ObjectCorrupt, ObjectMeta
from gateway.s3.errors import S3Error, from_kms, invalid_argument, no_such_key, not_implemented
from gateway.s3.ranges import RangeNotSatisfiable, check_conditions, parse_range
from kms_core.client import DataKey, KmsClient
from kms_core.errors import KmsError

T = TypeVar("T")

PRODUCT = "oss"
BUFFER_LIMIT = 16 * 1024 * 1024  # objects up to this size get the plaintext MD5 as ETag
MAX_PUT = 5 * 1024**3
SSE = "x-amz-server-side-encryption"
SSE_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
SSE_CTX = "x-amz-server-side-encryption-context"
SSE_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
_PUT_HEADERS = ("content-type", "cache-control", "content-disposition", "content-language",
                "expires", "x-amz-storage-class", "x-amz-tagging", "x-amz-website-redirect-location")
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
    headers: dict[str, str]
    auth: Authenticated
    body: AsyncIterator[bytes]
    request_id: str


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] | None = None
    body: bytes | AsyncIterator[bytes] = b""


def _xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()


async def _sync(fn: Callable[[], T]) -> T:
    """KMS calls may do I/O (an HTTP KMS, a first-use database write): off the event loop."""
    return await anyio.to_thread.run_sync(fn)


class S3Proxy:
    def __init__(self, backend: Backend, kms_for: Callable[[Authenticated], KmsClient]) -> None:
        self.backend = backend
        self.buckets = Buckets(backend)
        self._kms_for = kms_for
        self._specs: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._list_cache: dict[tuple[str, str, str], tuple[int, str]] = {}

    # ------------------------------------------------------------------ helpers

    async def _kms(self, req: S3Request, call: Callable[[KmsClient], T]) -> T:
        client = self._kms_for(req.auth)
        try:
            return await _sync(lambda: call(client))
        except KmsError as e:
            raise from_kms(e) from None

    async def _owned(self, req: S3Request) -> BucketInfo:
        assert req.bucket is not None
        return await self.buckets.check_owner(req.bucket, req.auth.caller.account_id)

    @staticmethod
    async def _backend_error(r: httpx.Response) -> Reply:
        body = await r.aread() if not r.is_closed else r.content
        return Reply(r.status_code, {"content-type": "application/xml"}, body)

    async def _key_spec(self, req: S3Request, key: str) -> tuple[str, str]:
        """(key id, spec) of a user-named key, cached for a minute (specs never change)."""
        ck = (req.auth.caller.account_id, key)
        hit = self._specs.get(ck)
        if hit and hit[0] > time.monotonic():
            return hit[1], hit[2]
        meta = await self._kms(req, lambda c: c.describe_key(key))
        self._specs[ck] = (time.monotonic() + 60, meta.key_id, meta.spec)
        return meta.key_id, meta.spec

    # ------------------------------------------------------------------ buckets

    async def list_buckets(self, req: S3Request) -> Reply:
        r = await self.backend.send("GET")
        if r.status_code != 200:
            return await self._backend_error(r)
        root = ET.fromstring(r.content)
        names = [(b.findtext(f"{{{S3_NS}}}Name") or "", b.findtext(f"{{{S3_NS}}}CreationDate") or "")
                 for b in root.iter(f"{{{S3_NS}}}Bucket")]
        infos = await asyncio.gather(*(self.buckets.info(n) for n, _ in names), return_exceptions=True)
        mine = [(n, d) for (n, d), info in zip(names, infos, strict=True)
                if isinstance(info, BucketInfo) and info.owner == req.auth.caller.account_id]
        items = "".join(f"<Bucket><Name>{escape(n)}</Name><CreationDate>{d}</CreationDate></Bucket>"
                        for n, d in mine)
        owner = f"<Owner><ID>{req.auth.caller.account_id}</ID><DisplayName>{req.auth.caller.account_id}</DisplayName></Owner>"
        return Reply(200, {"content-type": "application/xml"},
                     _xml(f'<ListAllMyBucketsResult xmlns="{S3_NS}">{owner}<Buckets>{items}</Buckets>'
                          "</ListAllMyBucketsResult>"))

    async def create_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        async for _ in req.body:  # a LocationConstraint is the client's region, not the backend's
            pass
        r = await self.backend.send("PUT", req.bucket)
        if r.status_code not in (200, 409):
            return await self._backend_error(r)
        self.buckets.forget(req.bucket)
        info = await self.buckets.info(req.bucket)
        if info.owner == req.auth.caller.account_id:
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named "
                          "bucket succeeded and you already own it.", 409, f"/{req.bucket}")
        if info.owner is not None or r.status_code == 409:
            raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.",
                          409, f"/{req.bucket}")
        await self.buckets.write(req.bucket, req.auth.caller.account_id, None)
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
        return Reply(204)

    async def put_bucket_encryption(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self._owned(req)
        body = b"".join([c async for c in req.body])
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed", 400) from None
        ns = f"{{{S3_NS}}}"
        rule = root.find(f"{ns}Rule") or root.find("Rule")
        if rule is None:
            raise S3Error("MalformedXML", "ServerSideEncryptionConfiguration needs a Rule", 400)

        def text(parent: ET.Element, name: str) -> str | None:
            el = parent.find(f"{ns}{name}")
            el = el if el is not None else parent.find(name)
            return el.text.strip() if el is not None and el.text else None

        default = rule.find(f"{ns}ApplyServerSideEncryptionByDefault")
        default = default if default is not None else rule.find("ApplyServerSideEncryptionByDefault")
        if default is None:
            raise S3Error("MalformedXML", "the Rule needs ApplyServerSideEncryptionByDefault", 400)
        sse = text(default, "SSEAlgorithm")
        key = text(default, "KMSMasterKeyID")
        if sse not in ("AES256", "aws:kms"):
            raise invalid_argument("SSEAlgorithm must be AES256 or aws:kms")
        if key and sse != "aws:kms":
            raise invalid_argument("KMSMasterKeyID is allowed only with aws:kms")
        if key:
            await self._key_spec(req, key)  # the key must exist and be the caller's
        bucket_key = (text(rule, "BucketKeyEnabled") or "false").lower() == "true"
        await self.buckets.write(req.bucket, req.auth.caller.account_id,
                                 BucketEncryption(sse, key, bucket_key))
        return Reply(200)

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
        await self._owned(req)
        await self.buckets.write(req.bucket, req.auth.caller.account_id, None)
        return Reply(204)

    # ------------------------------------------------------------------ listing

    async def _plain_stat(self, bucket: str, key: str, etag: str, size: int) -> tuple[int, str]:
        """Plaintext (size, ETag) of a listed object; HEADs it once per backend ETag."""
        ck = (bucket, key, etag)
        hit = self._list_cache.get(ck)
        if hit:
            return hit
        r = await self.backend.send("HEAD", bucket, key)
        result = (size, etag)
        if r.status_code == 200:
            try:
                meta = ObjectMeta.decode(r.headers)
            except ObjectCorrupt:
                meta = None
            if meta is not None:
                result = (meta.size, f'"{meta.md5}"' if meta.md5 else etag)
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
                size, etag = await self._plain_stat(req.bucket or "", unquote(key) if url_encoded else key,
                                                    etag_el.text or "", int(size_el.text or 0))
            size_el.text, etag_el.text = str(size), etag

        await asyncio.gather(*(fix(el) for el in contents))
        return Reply(200, {"content-type": "application/xml"},
                     b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))

    async def delete_objects(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self._owned(req)
        body = b"".join([c async for c in req.body])
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        if "content-md5" in req.headers and req.headers["content-md5"] != md5:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        r = await self.backend.send("POST", req.bucket, query={"delete": ""}, body=body,
                                    headers={"content-md5": md5, "content-type": "application/xml"})
        return Reply(r.status_code, {"content-type": "application/xml"}, r.content)

    # ------------------------------------------------------------------ objects

    def _requested_encryption(self, req: S3Request, info: BucketInfo) -> tuple[str, str | None]:
        """(sse, key) the object is to be encrypted with: request headers, else bucket default."""
        sse = req.headers.get(SSE)
        key = req.headers.get(SSE_KEY)
        if any(h.startswith("x-amz-server-side-encryption-customer-") for h in req.headers):
            raise not_implemented("SSE-C (customer-provided keys) is not supported by this proxy")
        if sse is None:
            if key:
                raise invalid_argument(f"{SSE_KEY} requires {SSE}: aws:kms")
            if info.encryption is not None:
                return info.encryption.sse, info.encryption.kms_key
            return "AES256", None
        if sse not in ("AES256", "aws:kms"):
            raise invalid_argument(f"{SSE} must be AES256 or aws:kms")
        if key and sse != "aws:kms":
            raise invalid_argument(f"{SSE_KEY} is allowed only with aws:kms")
        if sse == "aws:kms" and not key and info.encryption is not None and info.encryption.sse == "aws:kms":
            key = info.encryption.kms_key
        return sse, key or None

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

    async def _data_key(self, req: S3Request, sse: str, key: str | None,
                        context: dict[str, str]) -> tuple[DataKey, Algorithm]:
        algorithm = Algorithm.AES_256_GCM
        if key:
            _, spec = await self._key_spec(req, key)
            if spec == "SM4":
                algorithm = Algorithm.SM4_GCM
        dk = await self._kms(req, lambda c: c.generate_data_key(PRODUCT, key, context, algorithm.key_len))
        return dk, algorithm

    def _sse_headers(self, req: S3Request, meta: ObjectMeta) -> dict[str, str]:
        out = {SSE: meta.sse}
        if meta.sse == "aws:kms":
            c = req.auth.caller
            out[SSE_KEY] = f"arn:aws:kms:{c.region}:{c.account_id}:key/{meta.kms_key_id}"
        if meta.context:
            out[SSE_CTX] = base64.b64encode(json.dumps(dict(meta.context)).encode()).decode()
        return out

    def _body_stream(self, req: S3Request) -> tuple[AsyncIterator[bytes], int]:
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
            if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type":
                try:
                    checksum = (name, aws_chunked.Checksum(name[len("x-amz-checksum-"):]))
                except aws_chunked.ChunkedError as e:
                    raise S3Error(e.code, e.message, 501) from None
        seen = 0
        async for chunk in req.body:
            seen += len(chunk)
            if seen > length:
                raise S3Error("IncompleteBody", "the body is longer than Content-Length")
            if digest is not None:
                digest.update(chunk)
            if checksum is not None:
                checksum[1].update(chunk)
            yield chunk
        if seen != length:
            raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header")
        if digest is not None and not hmac.compare_digest(digest.hexdigest(), payload.lower()):
            raise S3Error("XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if checksum is not None and not hmac.compare_digest(checksum[1].value(), req.headers[checksum[0]]):
            raise S3Error("BadDigest", f"The {checksum[0]} you specified did not match the calculated checksum.")

    def _put_headers(self, req: S3Request) -> dict[str, str]:
        out = {}
        for name, value in req.headers.items():
            if name.startswith("x-amz-meta-"):
                if name.startswith(envelope.META_PREFIX):
                    raise invalid_argument(f"metadata names starting with {envelope.META_PREFIX} are reserved")
                out[name] = value
            elif name in _PUT_HEADERS:
                out[name] = value
        enc = req.headers.get("content-encoding")
        if enc:
            rest = ",".join(e for e in (x.strip() for x in enc.split(",")) if e and e != "aws-chunked")
            if rest:
                out["content-encoding"] = rest
        return out

    async def put_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        info = await self._owned(req)
        if "x-amz-copy-source" in req.headers:
            raise not_implemented("CopyObject is not supported yet")
        sse, key = self._requested_encryption(req, info)
        user_ctx = self._user_context(req)
        stream, size = self._body_stream(req)
        if size > MAX_PUT:
            raise S3Error("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
        context = envelope.object_context(req.bucket, req.key, user_ctx)
        dk, algorithm = await self._data_key(req, sse, key, context)
        assert dk.plaintext is not None
        cipher = envelope.PackageCipher(algorithm, dk.plaintext, nonce := envelope.new_base_nonce())
        sealer = envelope.Sealer(cipher)
        headers = self._put_headers(req)
        headers["content-length"] = str(envelope.sealed_size(size))
        headers.setdefault("content-type", "binary/octet-stream")

        def meta_for(md5: str | None) -> ObjectMeta:
            return ObjectMeta(algorithm, dk.sealed, nonce, size, dk.key_id, sse, md5, user_ctx)

        try:
            if size <= BUFFER_LIMIT:
                # Small enough to hold: read and verify it all first, so the plaintext MD5 can
                # travel as metadata (the ETag) and a bad body never reaches the backend.
                md5 = hashlib.md5()
                sealed: list[bytes] = []
                async for chunk in stream:
                    md5.update(chunk)
                    sealed.extend(sealer.feed(chunk))
                sealed.append(sealer.finish())
                meta = meta_for(md5.hexdigest())
                headers.update(meta.encode())
                r = await self.backend.send("PUT", req.bucket, req.key, headers=headers, body=b"".join(sealed))
            else:
                meta = meta_for(None)
                headers.update(meta.encode())
                r = await self.backend.send("PUT", req.bucket, req.key, headers=headers,
                                            body=self._sealed_stream(stream, sealer))
        except aws_chunked.ChunkedError as e:
            raise S3Error(e.code, e.message, 403 if e.code == "SignatureDoesNotMatch" else 400) from None
        except httpx.HTTPError as e:
            # Raised out of our own body generator (bad chunk, short body): the backend saw an
            # incomplete upload and stored nothing.
            cause = e.__cause__ or e.__context__
            if isinstance(cause, S3Error):
                raise cause from None
            if isinstance(cause, aws_chunked.ChunkedError):
                raise S3Error(cause.code, cause.message, 400) from None
            raise S3Error("ServiceUnavailable", f"the storage backend failed: {type(e).__name__}", 503) from None
        if r.status_code != 200:
            return await self._backend_error(r)
        etag = f'"{meta.md5}"' if meta.md5 else r.headers.get("etag", "")
        return Reply(200, {"etag": etag, **self._sse_headers(req, meta)})

    @staticmethod
    async def _sealed_stream(stream: AsyncIterator[bytes], sealer: envelope.Sealer) -> AsyncIterator[bytes]:
        # The final package is sealed only after the whole body verified (the decoders raise
        # at the end otherwise), so a bad body aborts the upload before it can complete.
        async for chunk in stream:
            for sealed in sealer.feed(chunk):
                yield sealed
        yield sealer.finish()

    def _refuse_sse_on_read(self, req: S3Request) -> None:
        for h in (SSE, SSE_KEY, SSE_CTX, SSE_BUCKET_KEY):
            if h in req.headers:
                raise S3Error("InvalidArgument", f"The {h} header is not supported for this operation.", 400)

    def _object_headers(self, req: S3Request, backend_headers: Mapping[str, str], meta: ObjectMeta | None) -> dict[str, str]:
        out = {"accept-ranges": "bytes"}
        for name, value in backend_headers.items():
            name = name.lower()
            if (name.startswith("x-amz-meta-") and not name.startswith(envelope.META_PREFIX)) or name in _GET_HEADERS:
                out[name] = value
        if meta is None:
            for name in ("etag", "content-length", SSE, SSE_KEY):
                if name in backend_headers:
                    out[name] = backend_headers[name]
            return out
        out["etag"] = f'"{meta.md5}"' if meta.md5 else backend_headers.get("etag", "")
        out.update(self._sse_headers(req, meta))
        return out

    async def head_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self._owned(req)
        self._refuse_sse_on_read(req)
        r = await self.backend.send("HEAD", req.bucket, req.key)
        if r.status_code == 404:
            return Reply(404)
        if r.status_code != 200:
            return Reply(r.status_code)
        meta = self._meta(r.headers)
        headers = self._object_headers(req, r.headers, meta)
        size = meta.size if meta else int(r.headers.get("content-length", 0))
        status = check_conditions(req.headers, headers.get("etag", ""), _last_modified(r.headers))
        if status is not None:
            return Reply(status, {"etag": headers.get("etag", "")} if status == 304 else None)
        headers["content-length"] = str(size)
        return Reply(200, headers)

    @staticmethod
    def _meta(headers: Mapping[str, str]) -> ObjectMeta | None:
        try:
            return ObjectMeta.decode(headers)
        except ObjectCorrupt as e:
            raise S3Error("InternalError", f"The object's encryption metadata is damaged: {e}", 500) from None

    async def get_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self._owned(req)
        self._refuse_sse_on_read(req)
        if "partNumber" in req.query:
            raise not_implemented("GetObject by partNumber is not supported yet")
        r = await self.backend.send("GET", req.bucket, req.key, stream=True)
        if r.status_code != 200:
            await r.aread()
            await r.aclose()
            if r.status_code == 404 and b"NoSuchKey" in r.content:
                raise no_such_key(req.bucket, req.key)
            return Reply(r.status_code, {"content-type": "application/xml"}, r.content)
        try:
            meta = self._meta(r.headers)
            headers = self._object_headers(req, r.headers, meta)
            size = meta.size if meta else int(r.headers.get("content-length", 0))
            status = check_conditions(req.headers, headers.get("etag", ""), _last_modified(r.headers))
            if status is not None:
                await r.aclose()
                return Reply(status, {"etag": headers.get("etag", "")} if status == 304 else None)
            try:
                wanted = parse_range(req.headers.get("range"), size)
            except RangeNotSatisfiable:
                await r.aclose()
                raise S3Error("InvalidRange", "The requested range is not satisfiable", 416) from None
            if meta is None:
                return self._plain_reply(r, headers, wanted, size)
            if wanted is not None:
                await r.aclose()  # re-fetch only the packages the range needs
            return await self._sealed_reply(req, r, headers, meta, wanted)
        except BaseException:
            await r.aclose()
            raise

    def _plain_reply(self, r: httpx.Response, headers: dict[str, str], wanted: tuple[int, int] | None,
                     size: int) -> Reply:
        start, end = wanted or (0, size)

        async def body() -> AsyncIterator[bytes]:
            try:
                pos = 0
                async for chunk in r.aiter_bytes():
                    lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
                    if lo < hi:
                        yield chunk[lo:hi]
                    pos += len(chunk)
                    if pos >= end:
                        break
            finally:
                await r.aclose()

        headers["content-length"] = str(end - start)
        if wanted is not None:
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        return Reply(206 if wanted else 200, headers, body())

    async def _sealed_reply(self, req: S3Request, r: httpx.Response, headers: dict[str, str],
                            meta: ObjectMeta, wanted: tuple[int, int] | None) -> Reply:
        assert req.bucket is not None and req.key is not None
        context = envelope.object_context(req.bucket, req.key, meta.context)
        dk = await self._kms(req, lambda c: c.decrypt_data_key(meta.sealed_key, context))
        assert dk.plaintext is not None
        try:
            cipher = envelope.PackageCipher(meta.algorithm, dk.plaintext, meta.base_nonce)
        except ValueError:
            raise S3Error("InternalError", "The object's data key does not fit its format", 500) from None
        total = envelope.package_count(meta.size)
        if meta.size == 0:
            start, end = 0, 0
            span = envelope.PackageSpan(0, 0, 0, envelope.sealed_size(0), 0, 0)
        else:
            start, end = wanted or (0, meta.size)
            span = envelope.span(start, end, meta.size)
        if wanted is not None:
            r = await self.backend.send(
                "GET", req.bucket, req.key, stream=True,
                headers={"range": f"bytes={span.sealed_start}-{span.sealed_end - 1}"})
            if r.status_code not in (200, 206):
                await r.aread()
                await r.aclose()
                return Reply(r.status_code, {"content-type": "application/xml"}, r.content)
        # A stored object shorter or longer than its recorded size is damaged: say so up front
        # rather than break off mid-body.
        stored = r.headers.get("content-range", "").rpartition("/")[2] or r.headers.get("content-length")
        if stored is not None and stored.isdigit() and int(stored) != envelope.sealed_size(meta.size):
            await r.aclose()
            raise S3Error("InternalError", "The stored object does not match its recorded size; "
                          "it was truncated or changed and is not served", 500)
        opener = envelope.Opener(cipher, span.first, total)
        expect_final = span.last == total - 1

        async def packages() -> AsyncIterator[bytes]:
            try:
                async for chunk in r.aiter_bytes():
                    for plain in opener.feed(chunk):
                        yield plain
                tail = opener.finish(expect_final)
                if tail:
                    yield tail
            finally:
                await r.aclose()

        async def trimmed(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            skip, left = span.skip, span.length
            async for plain in source:
                if skip:
                    cut = min(skip, len(plain))
                    plain, skip = plain[cut:], skip - cut
                if plain and left:
                    piece = plain if len(plain) <= left else plain[:left]
                    left -= len(piece)
                    yield piece
            if left:
                raise ObjectCorrupt("the object is shorter than its recorded size")

        stream = trimmed(packages())
        # Open the first package before answering, so a damaged object gets an S3 error rather
        # than a 200 that breaks off; later damage breaks the connection, never sends bad bytes.
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = b""
        except ObjectCorrupt as e:
            raise S3Error("InternalError", f"The object failed authentication and was not served: {e}", 500) from None

        async def body() -> AsyncIterator[bytes]:
            if first:
                yield first
            async for piece in stream:
                yield piece

        headers["content-length"] = str(end - start)
        if wanted is not None:
            headers["content-range"] = f"bytes {start}-{end - 1}/{meta.size}"
        return Reply(206 if wanted is not None else 200, headers, body())

    async def delete_object(self, req: S3Request) -> Reply:
        assert req.bucket is not None and req.key is not None
        await self._owned(req)
        r = await self.backend.send("DELETE", req.bucket, req.key)
        if r.status_code not in (200, 204):
            return await self._backend_error(r)
        return Reply(204)


def _last_modified(headers: Mapping[str, str]) -> datetime | None:
    value = headers.get("last-modified")
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None

