"""ACLs within our tenancy model: every bucket and object belongs to one account, no one else.

GetBucketAcl / GetObjectAcl answer the owner with FULL_CONTROL, which is the whole truth here.
Setting an ACL (PutBucketAcl, PutObjectAcl, `x-amz-acl` or `x-amz-grant-*` on a write) is
accepted when it says the same (`private`, `bucket-owner-full-control`, or grants to the owner
only); any grant to another principal or the public answers 501 NotImplemented saying so, so a
client that means to share never believes it did.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape

from gateway.s3 import xml_bodies
from gateway.s3.backend import S3_NS
from gateway.s3.bodies import buffered_body
from gateway.s3.buckets import Buckets
from gateway.s3.errors import S3Error, invalid_argument, no_such_key
from gateway.s3.messages import Reply, S3Request, version_of, xml_doc
from gateway.s3.reader import Reader

OWNER_ONLY = ("private", "bucket-owner-full-control")
CANNED = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
          "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write")
GRANT_HEADERS = ("x-amz-grant-full-control", "x-amz-grant-read", "x-amz-grant-read-acp",
                 "x-amz-grant-write", "x-amz-grant-write-acp")
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_GRANTEE = re.compile(r'^\s*(id|uri|emailAddress)\s*=\s*"?([^"]*)"?\s*$', re.IGNORECASE)


def _shared(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what}: this gateway keeps every bucket and object private to its "
                   "owner account; grants to other principals or the public are not supported", 501)


def check_acl_headers(headers: Mapping[str, str], owner: str) -> None:
    """x-amz-acl and x-amz-grant-* of a request: owner-only is fine, anything else is refused."""
    canned = headers.get("x-amz-acl")
    if canned is not None:
        value = canned.strip()
        if value not in CANNED:
            raise invalid_argument(f"x-amz-acl: unknown canned ACL {value!r}")
        if value not in OWNER_ONLY:
            raise _shared(f"the canned ACL {value}")
    for name in GRANT_HEADERS:
        grants = headers.get(name)
        if grants is None:
            continue
        if canned is not None:
            raise invalid_argument("Specifying both Canned ACLs and Header Grants is not allowed")
        for grantee in grants.split(","):
            m = _GRANTEE.match(grantee)
            if m is None:
                raise invalid_argument(f"{name}: malformed grantee {grantee.strip()!r}")
            if m.group(1).lower() != "id" or m.group(2) != owner:
                raise _shared(f"{name} to {grantee.strip()}")


def acl_xml(owner: str) -> bytes:
    who = f"<ID>{escape(owner)}</ID><DisplayName>{escape(owner)}</DisplayName>"
    return xml_doc(
        f'<AccessControlPolicy xmlns="{S3_NS}"><Owner>{who}</Owner><AccessControlList>'
        f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="CanonicalUser">{who}</Grantee>'
        "<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>")


def check_acl_body(body: bytes, owner: str) -> None:
    """An AccessControlPolicy that grants nothing but FULL_CONTROL to the owner, or 501."""
    for grant in xml_bodies.access_control_policy(body):
        if grant.grantee_type != "CanonicalUser" or grant.grantee != owner:
            raise _shared(f"a grant to {grant.grantee or 'an unnamed grantee'}")
        if grant.permission != "FULL_CONTROL":
            raise _shared(f"a {grant.permission} permission instead of FULL_CONTROL")


class Acl:
    def __init__(self, buckets: Buckets, reader: Reader) -> None:
        self.buckets = buckets
        self.reader = reader

    async def _set(self, req: S3Request) -> None:
        owner = req.auth.caller.account_id
        check_acl_headers(req.headers, owner)
        body = await buffered_body(req, xml_bodies.SMALL_LIMIT)
        if body.strip():
            if any(h in req.headers for h in ("x-amz-acl", *GRANT_HEADERS)):
                raise S3Error("UnexpectedContent", "This request does not support content when ACL headers "
                              "are given", 400)
            check_acl_body(body, owner)
        elif not any(h in req.headers for h in ("x-amz-acl", *GRANT_HEADERS)):
            raise S3Error("MissingSecurityHeader", "Your request was missing a required header: x-amz-acl "
                          "or an AccessControlPolicy body", 400)

    async def _object(self, req: S3Request) -> None:
        assert req.bucket is not None and req.key is not None
        await self.buckets.owned(req)
        if await self.reader.stat(req.bucket, req.key, version_id=version_of(req)) is None:
            raise no_such_key(req.bucket, req.key)

    async def get_bucket_acl(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        return Reply(200, {"content-type": "application/xml"}, acl_xml(req.auth.caller.account_id))

    async def put_bucket_acl(self, req: S3Request) -> Reply:
        await self.buckets.owned(req)
        await self._set(req)
        return Reply(200)

    async def get_object_acl(self, req: S3Request) -> Reply:
        await self._object(req)
        return Reply(200, {"content-type": "application/xml"}, acl_xml(req.auth.caller.account_id))

    async def put_object_acl(self, req: S3Request) -> Reply:
        await self._object(req)
        await self._set(req)
        return Reply(200)
