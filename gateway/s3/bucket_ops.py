"""Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation
and the bucket's default encryption (also set from the console, console_products.py).

Which buckets a caller owns and each bucket's settings are kept by `buckets.py`; this module
is what each S3 call does with them.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from gateway.s3 import xml_bodies
from gateway.s3.acl import check_acl_headers
from gateway.s3.auth import Authenticated
from gateway.s3.backend import S3_NS, Backend, backend_error
from gateway.s3.bodies import buffered_body
from gateway.s3.buckets import BucketEncryption, BucketInfo, Buckets
from gateway.s3.encryption import ObjectEncryption
from gateway.s3.errors import S3Error
from gateway.s3.messages import Reply, S3Request, xml_doc
from gateway.s3.names import check_bucket_name


class BucketOps:
    def __init__(self, backend: Backend, buckets: Buckets, sse: ObjectEncryption, state_bucket: str) -> None:
        self.backend = backend
        self.buckets = buckets
        self.sse = sse
        self.state_bucket = state_bucket  # upload state (upload_state.py): no tenant may have it

    async def owned_buckets(self, auth: Authenticated) -> list[tuple[str, str, BucketInfo]]:
        """(name, creation date, info) of every backend bucket the caller owns."""
        r = await self.backend.send("GET")
        if r.status_code != 200:
            await backend_error(r)
        root = ET.fromstring(r.content)
        names = [(b.findtext(f"{{{S3_NS}}}Name") or "", b.findtext(f"{{{S3_NS}}}CreationDate") or "")
                 for b in root.iter(f"{{{S3_NS}}}Bucket")]
        owned = await self.buckets.owned_among([n for n, _ in names], auth)
        mine = [(n, d) for n, d in names if n in owned]
        infos = await asyncio.gather(*(self.buckets.info(n) for n, _ in mine), return_exceptions=True)
        return [(n, d, info) for (n, d), info in zip(mine, infos, strict=True)
                if isinstance(info, BucketInfo)]

    async def list_buckets(self, req: S3Request) -> Reply:
        owned = await self.owned_buckets(req.auth)
        items = "".join(f"<Bucket><Name>{escape(n)}</Name><CreationDate>{d}</CreationDate></Bucket>"
                        for n, d, _ in owned)
        account = req.auth.caller.account_id
        owner = f"<Owner><ID>{account}</ID><DisplayName>{account}</DisplayName></Owner>"
        return Reply(200, {"content-type": "application/xml"},
                     xml_doc(f'<ListAllMyBucketsResult xmlns="{S3_NS}">{owner}<Buckets>{items}</Buckets>'
                             "</ListAllMyBucketsResult>"))

    async def create_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        if req.bucket == self.state_bucket:
            raise S3Error("BucketAlreadyExists", "The requested bucket name is not available.", 409, f"/{req.bucket}")
        check_bucket_name(req.bucket)
        check_acl_headers(req.headers, req.auth.caller.account_id)
        # A LocationConstraint is the client's region, not the backend's: checked, not forwarded.
        xml_bodies.create_bucket(await buffered_body(req, xml_bodies.SMALL_LIMIT))
        await self.buckets.create(req.bucket, req.auth)
        return Reply(200, {"location": f"/{req.bucket}"})

    async def head_bucket(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        return Reply(200, {"x-amz-bucket-region": req.auth.caller.region})

    async def bucket_location(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        return Reply(200, {"content-type": "application/xml"},
                     xml_doc(f'<LocationConstraint xmlns="{S3_NS}">{escape(req.auth.caller.region)}'
                             "</LocationConstraint>"))

    async def delete_bucket(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        r = await self.backend.send("DELETE", req.bucket)
        self.buckets.forget(req.bucket)
        if r.status_code != 204:
            await backend_error(r)
        await self.buckets.release(req.bucket, req.auth)
        return Reply(204)

    # ------------------------------------------------------------------ default encryption

    async def put_bucket_encryption(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.buckets.owned(req)
        rule = xml_bodies.bucket_encryption(await buffered_body(req, xml_bodies.SMALL_LIMIT))
        await self.set_bucket_encryption(req.auth, req.bucket, rule)
        return Reply(200)

    async def set_bucket_encryption(self, auth: Authenticated, bucket: str,
                                    rule: xml_bodies.EncryptionRule) -> None:
        """A bucket's default encryption, checked and written: PutBucketEncryption and the
        console's product-encryption page both come here."""
        await self.buckets.check(bucket, auth)
        if rule.kms_key:
            await self.sse.keys.spec(auth, rule.kms_key)  # the key must exist and be the caller's
        await self.buckets.write(bucket, auth.caller.account_id,
                                 BucketEncryption(rule.sse, rule.kms_key, rule.bucket_key))

    async def remove_bucket_encryption(self, auth: Authenticated, bucket: str) -> None:
        await self.buckets.check(bucket, auth)
        await self.buckets.write(bucket, auth.caller.account_id, None)

    async def get_bucket_encryption(self, req: S3Request) -> Reply:
        info = await self.buckets.owned(req)
        enc = info.encryption or BucketEncryption("AES256")
        key = f"<KMSMasterKeyID>{escape(enc.kms_key)}</KMSMasterKeyID>" if enc.kms_key else ""
        return Reply(200, {"content-type": "application/xml"}, xml_doc(
            f'<ServerSideEncryptionConfiguration xmlns="{S3_NS}"><Rule>'
            f"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>{enc.sse}</SSEAlgorithm>{key}"
            "</ApplyServerSideEncryptionByDefault>"
            f"<BucketKeyEnabled>{'true' if enc.bucket_key else 'false'}</BucketKeyEnabled>"
            "</Rule></ServerSideEncryptionConfiguration>"))

    async def delete_bucket_encryption(self, req: S3Request) -> Reply:
        assert req.bucket is not None
        await self.remove_bucket_encryption(req.auth, req.bucket)
        return Reply(204)
