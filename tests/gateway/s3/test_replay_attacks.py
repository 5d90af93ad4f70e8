"""Captured and presigned requests replayed with headers or bodies their signer never saw.

Each test signs a request as a real client would (botocore's S3SigV4Auth / presign), then alters
it on the wire with raw HTTP, as an attacker holding the captured request or the URL would.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.gateway.s3.conftest import S3Stack, Tenant, bucket_name, presigned, signed


def error_code(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/xml", r.text
    return ET.fromstring(r.content).findtext("Code") or ""


@pytest.fixture
def alice(s3: S3Stack) -> tuple[Tenant, Any, str]:
    t = s3.tenant()
    c = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    return t, c, b


def test_presigned_put_cannot_carry_an_unsigned_copy_source(s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, c, b = alice
    c.put_object(Bucket=b, Key="db.sql", Body=b"private rows")
    url = presigned(t, "PUT", f"{s3.http_url}/{b}/drop.txt")
    assert httpx.put(url, content=b"allowed").status_code == 200  # the URL works as meant
    r = httpx.put(url, content=b"", headers={"x-amz-copy-source": f"/{b}/db.sql"})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"
    assert ET.fromstring(r.content).findtext("HeadersNotSigned") == "x-amz-copy-source"
    assert c.get_object(Bucket=b, Key="drop.txt")["Body"].read() == b"allowed"


@pytest.mark.parametrize("header,value", [
    ("x-amz-copy-source", "/{b}/db.sql"),
    ("x-amz-server-side-encryption-aws-kms-key-id", "alias/other"),
    ("x-amz-server-side-encryption", "aws:kms"),
    ("x-amz-meta-owner", "mallory"),
    ("x-amz-website-redirect-location", "https://evil.example/"),
    ("x-amz-tagging", "a=b"),
])
def test_unsigned_amz_headers_are_refused(s3: S3Stack, alice: tuple[Tenant, Any, str],
                                          header: str, value: str) -> None:
    t, c, b = alice
    c.put_object(Bucket=b, Key="db.sql", Body=b"private rows")
    url = f"{s3.http_url}/{b}/target"
    # A captured, header-signed PutObject: replaying it as is would work; with one more header not.
    sig = signed(t, "PUT", url, b"captured")
    r = httpx.put(url, content=b"captured", headers={**sig, header: value.format(b=b)})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"
    assert ET.fromstring(r.content).findtext("HeadersNotSigned") == header
    presigned_url = presigned(t, "PUT", url)
    r = httpx.put(presigned_url, content=b"captured", headers={header: value.format(b=b)})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"
    with pytest.raises(ClientError):
        c.head_object(Bucket=b, Key="target")


@pytest.mark.parametrize("header,value", [("content-type", "text/html"),
                                          ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")])
def test_unsigned_content_headers_are_refused_on_signed_requests(
        s3: S3Stack, alice: tuple[Tenant, Any, str], header: str, value: str) -> None:
    t, _, b = alice
    url = f"{s3.http_url}/{b}/k"
    sig = signed(t, "PUT", url, b"")
    r = httpx.put(url, content=b"", headers={**sig, header: value})
    assert r.status_code == 403 and error_code(r) == "AccessDenied"


def test_signed_headers_still_work(s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, c, b = alice
    url = f"{s3.http_url}/{b}/meta"
    extra = {"x-amz-meta-colour": "blue", "content-type": "text/plain"}
    r = httpx.put(url, content=b"x", headers=signed(t, "PUT", url, b"x", extra))
    assert r.status_code == 200, r.text
    head = c.head_object(Bucket=b, Key="meta")
    assert head["Metadata"] == {"colour": "blue"} and head["ContentType"] == "text/plain"
    # A presigned URL that lists a header carries it.
    purl = presigned(t, "PUT", f"{s3.http_url}/{b}/pmeta", {"x-amz-meta-colour": "red"})
    assert httpx.put(purl, content=b"y", headers={"x-amz-meta-colour": "red"}).status_code == 200
    assert c.head_object(Bucket=b, Key="pmeta")["Metadata"] == {"colour": "red"}


def test_presigned_url_signing_the_payload_hash_binds_the_content(
        s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, c, b = alice
    body = b"exactly this"
    digest = hashlib.sha256(body).hexdigest()
    url = presigned(t, "PUT", f"{s3.http_url}/{b}/bound", {"x-amz-content-sha256": digest})
    r = httpx.put(url, content=b"something else", headers={"x-amz-content-sha256": digest})
    assert r.status_code == 400 and error_code(r) == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError):
        c.head_object(Bucket=b, Key="bound")
    r = httpx.put(url, content=body, headers={"x-amz-content-sha256": digest})
    assert r.status_code == 200
    assert c.get_object(Bucket=b, Key="bound")["Body"].read() == body


def _delete_body(*keys: str) -> bytes:
    items = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return f"<Delete>{items}</Delete>".encode()


def _md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def test_captured_delete_objects_cannot_be_replayed_with_other_keys(
        s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, c, b = alice
    c.put_object(Bucket=b, Key="victim.txt", Body=b"keep me")
    url = f"{s3.http_url}/{b}?delete"
    captured = _delete_body("nonexistent")
    sig = signed(t, "POST", url, captured, {"content-md5": _md5(captured)})
    forged = _delete_body("victim.txt")
    r = httpx.post(url, content=forged, headers={**sig, "content-md5": _md5(forged)})
    assert r.status_code == 403 and error_code(r) == "SignatureDoesNotMatch"  # MD5 was signed
    sig = signed(t, "POST", url, captured)
    r = httpx.post(url, content=forged, headers=sig)
    assert r.status_code == 400 and error_code(r) == "XAmzContentSHA256Mismatch"
    assert c.get_object(Bucket=b, Key="victim.txt")["Body"].read() == b"keep me"
    r = httpx.post(url, content=forged, headers=signed(t, "POST", url, forged))  # signed: works
    assert r.status_code == 200 and b"<Deleted>" in r.content
    with pytest.raises(ClientError):
        c.head_object(Bucket=b, Key="victim.txt")


def test_buffered_bodies_are_checked_against_the_signed_hash(
        s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, c, b = alice
    enc_url = f"{s3.http_url}/{b}?encryption"

    def enc(sse: str) -> bytes:
        return (f"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
                f"<SSEAlgorithm>{sse}</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>"
                "</ServerSideEncryptionConfiguration>").encode()

    r = httpx.put(enc_url, content=enc("aws:kms"), headers=signed(t, "PUT", enc_url, enc("AES256")))
    assert r.status_code == 400 and error_code(r) == "XAmzContentSHA256Mismatch"
    assert c.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    # CreateBucket: signed with no body, sent with one.
    nb = bucket_name()
    url = f"{s3.http_url}/{nb}"
    loc = b"<CreateBucketConfiguration><LocationConstraint>cn-east-1</LocationConstraint></CreateBucketConfiguration>"
    r = httpx.put(url, content=loc, headers=signed(t, "PUT", url, b""))
    assert r.status_code == 400 and error_code(r) == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError):
        c.head_bucket(Bucket=nb)

    # CompleteMultipartUpload: the captured parts list cannot be swapped.
    up = c.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    etag = c.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=b"part one")["ETag"]
    url = f"{s3.http_url}/{b}/mp?uploadId={up}"
    good = (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part>"
            "</CompleteMultipartUpload>").encode()
    other = good.replace(b"<PartNumber>1<", b"<PartNumber>2<")
    r = httpx.post(url, content=other, headers=signed(t, "POST", url, good))
    assert r.status_code == 400 and error_code(r) == "XAmzContentSHA256Mismatch"
    r = httpx.post(url, content=good, headers=signed(t, "POST", url, good))
    assert r.status_code == 200, r.text
    assert c.get_object(Bucket=b, Key="mp")["Body"].read() == b"part one"


@pytest.mark.parametrize("body", [b"<Delete><Object>", b"", b"hello", b"<Delete></Delete>",
                                  b"<Delete><Object><Key></Key></Object></Delete>",
                                  b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "victim.txt">]>'
                                  b"<Delete><Object><Key>&x;</Key></Object></Delete>",
                                  b"<Delete><Object><Key>a</Key><Evil/></Object></Delete>",
                                  b"<Other><Object><Key>a</Key></Object></Other>",
                                  _delete_body(*(f"k{i}" for i in range(1001)))])
def test_malformed_delete_objects_is_malformed_xml(s3: S3Stack, alice: tuple[Tenant, Any, str],
                                                   body: bytes) -> None:
    t, c, b = alice
    c.put_object(Bucket=b, Key="victim.txt", Body=b"keep me")
    url = f"{s3.http_url}/{b}?delete"
    r = httpx.post(url, content=body, headers=signed(t, "POST", url, body))
    assert r.status_code == 400 and error_code(r) == "MalformedXML"
    assert c.get_object(Bucket=b, Key="victim.txt")["Body"].read() == b"keep me"


def test_oversized_xml_bodies_are_refused_before_reading(s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, _, b = alice
    for url, method in ((f"{s3.http_url}/{b}?encryption", "PUT"), (f"{s3.http_url}/{b}?delete", "POST")):
        body = b"<x>" + b" " * (4 * 1024 * 1024) + b"</x>"
        r = httpx.request(method, url, content=body, headers=signed(t, method, url, body))
        assert r.status_code == 400 and error_code(r) == "MaxMessageLengthExceeded"


def test_malformed_encryption_and_complete_bodies(s3: S3Stack, alice: tuple[Tenant, Any, str]) -> None:
    t, c, b = alice
    for body in (b"<ServerSideEncryptionConfiguration/>", b"nope",
                 b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
                 b"</ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>"):
        url = f"{s3.http_url}/{b}?encryption"
        r = httpx.put(url, content=body, headers=signed(t, "PUT", url, body))
        assert r.status_code == 400 and error_code(r) == "MalformedXML", body
    up = c.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    for body in (b"<CompleteMultipartUpload/>", b"<CompleteMultipartUpload><Part><PartNumber>x"
                 b"</PartNumber></Part></CompleteMultipartUpload>", b"<Part/>"):
        url = f"{s3.http_url}/{b}/mp?uploadId={up}"
        r = httpx.post(url, content=body, headers=signed(t, "POST", url, body))
        assert r.status_code == 400 and error_code(r) == "MalformedXML", body
    url = f"{s3.http_url}/{b}x"
    body = b"<NotAConfig/>"
    r = httpx.put(url, content=body, headers=signed(t, "PUT", url, body))
    assert r.status_code == 400 and error_code(r) == "MalformedXML"
