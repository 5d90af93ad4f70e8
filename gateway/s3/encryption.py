"""How objects are encrypted: what a request asks for, its data key, and what the answer says.

A new object's encryption comes from the request's SSE headers (SSE-KMS, SSE-S3 or SSE-C),
else the bucket's default (`Encryption`); its data key from the KMS (objkeys.py) or, for SSE-C,
fresh and wrapped by the customer's key (sse_c.py). A stored object's data key is opened the
same two ways, and only once its metadata is authenticated.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.s3 import envelope, sse_c
from gateway.s3.auth import Authenticated
from gateway.s3.buckets import BucketInfo
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta
from gateway.s3.errors import S3Error, invalid_argument
from gateway.s3.messages import SSE, SSE_BUCKET_KEY, SSE_CTX, SSE_HEADERS, SSE_KEY, S3Request
from gateway.s3.objkeys import ObjectKey, ObjectKeys
from gateway.s3.reader import Stored, damaged

log = logging.getLogger("gateway.s3.proxy")


@dataclass(frozen=True)
class Encryption:
    """How a new object is to be encrypted, from the request's headers and the bucket's default."""

    sse: str  # "aws:kms" or "AES256" (the product default key)
    cmk: str | None  # None: the product default key
    bucket_key: bool
    context: dict[str, str] | None  # the client's x-amz-server-side-encryption-context
    customer: sse_c.CustomerKey | None = None  # SSE-C: the key that binds the data key


class ObjectEncryption:
    def __init__(self, keys: ObjectKeys, *, allow_sse_c_over_http: bool = False,
                 serve_plaintext: bool = False) -> None:
        self.keys = keys
        # As AWS: customer keys only over TLS, unless a test rig on loopback says otherwise.
        self.allow_sse_c_over_http = allow_sse_c_over_http
        # An object with no envelope was not written through the gateway, or an attacker with
        # write access to the backend stripped its envelope: serving it would hand out bytes
        # nobody authenticated (ciphertext as if it were the object, or planted content). Only
        # an operator migrating a bucket of plaintext objects turns this on.
        self.serve_plaintext = serve_plaintext
        # Told of every object whose metadata failed authentication (proxy.py: the reader drops
        # what it cached of it, so the object reads again once its metadata is put right).
        self.on_damaged: Callable[[Stored], None] | None = None

    def encryption(self, req: S3Request, info: BucketInfo) -> Encryption:
        """How a new object is encrypted: request headers, else the bucket's default.

        Bucket keys: the request's bucket-key header, else the bucket's BucketKeyEnabled (AWS
        applies it to requests that name their own key too).
        """
        sse = req.headers.get(SSE)
        key = req.headers.get(SSE_KEY)
        customer = self.customer_key(req)
        if customer is not None:
            if any(h in req.headers for h in SSE_HEADERS):
                raise sse_c.incompatible()
            return Encryption(sse_c.SSE, None, False, None, customer)
        bk_header = req.headers.get(SSE_BUCKET_KEY)
        if bk_header is not None and bk_header.lower() not in ("true", "false"):
            raise invalid_argument(f"{SSE_BUCKET_KEY} must be true or false")
        bucket_key = (bk_header.lower() == "true" if bk_header is not None
                      else bool(info.encryption and info.encryption.bucket_key))
        context = _user_context(req)
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
            if self.on_damaged is not None:
                self.on_damaged(stored)
            raise damaged(str(e)) from None
        return data_key

    def sse_headers(self, auth: Authenticated, meta: ObjectMeta,
                    customer: sse_c.CustomerKey | None = None) -> dict[str, str]:
        """The SSE headers of an answer about an object with metadata `meta`."""
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


def refuse_sse_on_read(req: S3Request) -> None:
    """GET and HEAD take no SSE-KMS/SSE-S3 header (S3 refuses them too)."""
    for h in SSE_HEADERS:
        if h in req.headers:
            raise S3Error("InvalidArgument", f"The {h} header is not supported for this operation.", 400)
