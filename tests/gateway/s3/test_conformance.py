"""S3 as others test it: the same boto3 calls through the proxy and straight to moto, same answers.

Conditional requests, multipart completion checks, ACLs within our tenancy, and S3 XML errors.
"""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.gateway.s3.conftest import S3Stack, Side, bucket_name, error_of, outcome, signed_request, upload

MiB = 1024 * 1024
PAST = datetime(2000, 1, 1, tzinfo=UTC)


def _run(sides: list[Side], scenario: Any) -> dict[str, list[Any]]:
    return {side.name: scenario(side.client, side.bucket) for side in sides}


def test_conditional_reads_and_writes(sides: list[Side]) -> None:
    def scenario(c: Any, b: str) -> list[Any]:
        etag = c.put_object(Bucket=b, Key="k", Body=b"hello")["ETag"]
        future = datetime.now(UTC) + timedelta(days=1)
        obs: list[Any] = []
        for fn in (c.get_object, c.head_object):
            for cond in ({"IfMatch": etag}, {"IfMatch": '"0000"'}, {"IfNoneMatch": etag}, {"IfNoneMatch": '"0000"'},
                         {"IfModifiedSince": future}, {"IfModifiedSince": PAST}, {"IfUnmodifiedSince": PAST},
                         {"IfUnmodifiedSince": future},
                         # S3's precedence: If-Match wins over If-Unmodified-Since, a matching
                         # If-None-Match with a true If-Modified-Since is still 304.
                         {"IfMatch": etag, "IfUnmodifiedSince": PAST},
                         {"IfNoneMatch": etag, "IfModifiedSince": PAST},
                         {"IfNoneMatch": '"0000"', "IfModifiedSince": future}):
                status, code, _ = outcome(fn, Bucket=b, Key="k", **cond)
                obs.append((fn.__name__, sorted(cond), status, code))
        obs.append(outcome(c.put_object, Bucket=b, Key="k", Body=b"again", IfNoneMatch="*")[:2])
        obs.append(outcome(c.put_object, Bucket=b, Key="new", Body=b"n", IfNoneMatch="*")[:2])
        obs.append(outcome(c.put_object, Bucket=b, Key="k", Body=b"x", IfMatch='"0000"')[:2])
        obs.append(outcome(c.put_object, Bucket=b, Key="absent", Body=b"x", IfMatch=etag)[:2])
        obs.append(outcome(c.put_object, Bucket=b, Key="k", Body=b"changed", IfMatch=etag)[:2])
        obs.append(c.get_object(Bucket=b, Key="k")["Body"].read())
        return obs

    seen = _run(sides, scenario)
    # Where moto departs from S3: it checks If-Unmodified-Since before If-Match, and
    # If-Modified-Since even when If-None-Match is given. S3 documents "If-Match true and
    # If-Unmodified-Since false: 200 OK", and (RFC 7232 3.3) If-Modified-Since is ignored when
    # If-None-Match is present; the proxy follows S3.
    documented = {(fn, cond): (200, None) for fn in ("get_object", "head_object")
                  for cond in (("IfMatch", "IfUnmodifiedSince"), ("IfModifiedSince", "IfNoneMatch"))}
    where_moto_departs = {8, 10, 19, 21}  # those requests, in the order sent (11 per method)
    for i, (ours, moto) in enumerate(zip(seen["proxy"], seen["moto"], strict=True)):
        if i in where_moto_departs:
            assert documented[(ours[0], tuple(ours[1]))] == ours[2:], ours
        else:
            assert ours == moto, (i, ours, moto)
    assert ("get_object", ["IfMatch"], 412, "PreconditionFailed") in seen["proxy"]


def test_a_failed_if_match_on_get_has_the_xml_body(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="k", Body=b"hello")
    r = signed_request(s3, t, "GET", f"/{b}/k", headers={"if-match": '"0000"'})
    err = error_of(r)
    assert r.status == 412 and err["Code"] == "PreconditionFailed"
    assert err["Resource"] == f"/{b}/k" and err["RequestId"] == r.headers["x-amz-request-id"]


def test_response_header_overrides_on_get_and_head(sides: list[Side]) -> None:
    """S3's response-* parameters (presigned download links name the file and its type with
    them) replace the stored headers in a GET or HEAD answer, ranged or not."""
    overrides = {"ResponseContentType": "application/x-download", "ResponseContentLanguage": "de",
                 "ResponseContentDisposition": 'attachment; filename="report 2026.pdf"',
                 "ResponseCacheControl": "no-store", "ResponseContentEncoding": "identity",
                 "ResponseExpires": datetime(2094, 12, 1, 16, tzinfo=UTC)}
    shown = ("ContentType", "ContentLanguage", "ContentDisposition", "CacheControl",
             "ContentEncoding", "Expires", "ContentLength")

    def scenario(c: Any, b: str) -> list[Any]:
        c.put_object(Bucket=b, Key="k", Body=b"0123456789", ContentType="text/plain",
                     CacheControl="max-age=60", ContentDisposition="inline")
        obs = []
        for extra in ({}, {"Range": "bytes=2-5"}):
            r = c.get_object(Bucket=b, Key="k", **overrides, **extra)
            obs += [{k: r.get(k) for k in shown}, r["Body"].read()]
        r = c.get_object(Bucket=b, Key="k")  # and nothing stored changed
        obs.append({k: r.get(k) for k in shown})
        return obs

    seen = _run(sides, scenario)
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][0]["ContentDisposition"] == 'attachment; filename="report 2026.pdf"'
    assert seen["proxy"][-1]["ContentType"] == "text/plain"
    # HeadObject takes the same parameters in S3's API reference (moto ignores them there).
    proxy = next(side for side in sides if side.name == "proxy")
    r = proxy.client.head_object(Bucket=proxy.bucket, Key="k", **overrides)
    assert {k: r.get(k) for k in shown} == seen["proxy"][0]


def test_a_response_header_override_cannot_split_the_answer(s3: S3Stack) -> None:
    """A response-* value with CR/LF (or outside ISO-8859-1) would write a header line of its
    own, or fail the answer half-sent: refused as S3 refuses it, before any byte is read."""
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="k", Body=b"hello")
    for value in ("a%0D%0ASet-Cookie:%20x=1", "a%0Ab", "%E4%B8%AD"):
        r = signed_request(s3, t, "GET", f"/{b}/k", query=f"response-content-type={value}")
        assert r.status == 400 and error_of(r)["Code"] == "InvalidArgument", (value, r.data)
        assert "set-cookie" not in r.headers
    r = signed_request(s3, t, "GET", f"/{b}/k", query="response-content-type=caf%C3%A9%2Fx")
    assert r.status == 200 and r.headers["content-type"] == "café/x" and r.data == b"hello"


def _tag_set(tags: dict[str, str]) -> dict[str, Any]:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


def test_object_tagging(sides: list[Side]) -> None:
    """Put/Get/DeleteObjectTagging as S3 does them, and S3's checks of a tag set."""
    def scenario(c: Any, b: str) -> list[Any]:
        c.put_object(Bucket=b, Key="k", Body=b"x", Tagging="a=1")
        obs: list[Any] = [c.get_object_tagging(Bucket=b, Key="k")["TagSet"],
                          c.head_object(Bucket=b, Key="k").get("TagCount")]
        tags = {"project": "blue", "owner": "ops team", "empty": "", "é": "ü / +=@-_.:"}
        obs.append(outcome(c.put_object_tagging, Bucket=b, Key="k", Tagging=_tag_set(tags))[:2])
        obs.append(c.get_object_tagging(Bucket=b, Key="k")["TagSet"])
        obs.append(c.get_object(Bucket=b, Key="k").get("TagCount"))
        for bad in ({f"k{i}": "v" for i in range(11)}, {"aws:x": "v"}, {"k" * 129: "v"}, {"k": "v" * 257},
                    {"k": "what?"}, {"k<": "v"}):
            obs.append(outcome(c.put_object_tagging, Bucket=b, Key="k", Tagging=_tag_set(bad))[:2])
        obs.append(c.get_object_tagging(Bucket=b, Key="k")["TagSet"])  # unchanged by the refusals
        obs.append(outcome(c.delete_object_tagging, Bucket=b, Key="k")[:2])
        obs.append(c.get_object_tagging(Bucket=b, Key="k")["TagSet"])
        obs.append(outcome(c.get_object_tagging, Bucket=b, Key="missing")[:2])
        obs.append(outcome(c.put_object_tagging, Bucket=b, Key="missing", Tagging=_tag_set({"a": "b"}))[:2])
        return obs

    seen = _run(sides, scenario)
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][0] == [{"Key": "a", "Value": "1"}] and seen["proxy"][3][1]["Value"] == "ops team"


@pytest.mark.every_store
def test_object_tagging_keeps_the_gateways_manifest_tag(s3: S3Stack) -> None:
    """A v4 multipart object's manifest is its `ssegw-manifest` tag: tagging never shows it,
    replaces it or removes it, and its key is refused; the object still reads after each."""
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB), os.urandom(MiB)]
    up, done = _upload(c, b, "mp", parts)
    c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    manifest = {x["Key"]: x["Value"] for x in s3.backend.get_object_tagging(Bucket=b, Key="mp")["TagSet"]}
    assert list(manifest) == ["ssegw-manifest"]
    assert c.get_object_tagging(Bucket=b, Key="mp")["TagSet"] == []

    nine = {f"k{i}": str(i) for i in range(9)}
    c.put_object_tagging(Bucket=b, Key="mp", Tagging=_tag_set(nine))
    assert c.get_object_tagging(Bucket=b, Key="mp")["TagSet"] == _tag_set(nine)["TagSet"]
    assert c.head_object(Bucket=b, Key="mp")["TagCount"] == 9
    for bad, error in (({**nine, "k9": "9"}, "BadRequest"), ({"ssegw-manifest": "forged"}, "InvalidTag")):
        status, code, _ = outcome(c.put_object_tagging, Bucket=b, Key="mp", Tagging=_tag_set(bad))
        assert (status, code) == (400, error), bad
    status, code, _ = outcome(c.put_object, Bucket=b, Key="single", Body=b"x", Tagging="ssegw-manifest=forged")
    assert (status, code) == (400, "InvalidTag")
    c.delete_object_tagging(Bucket=b, Key="mp")
    assert c.get_object_tagging(Bucket=b, Key="mp")["TagSet"] == []
    backend = {x["Key"]: x["Value"] for x in s3.backend.get_object_tagging(Bucket=b, Key="mp")["TagSet"]}
    assert backend == manifest
    assert c.get_object(Bucket=b, Key="mp")["Body"].read() == b"".join(parts)


def test_listings_name_the_caller_not_the_backend_account(s3: S3Stack) -> None:
    """ListParts, ListMultipartUploads, ListObjects (v1, and v2 with FetchOwner) and
    ListObjectVersions show the caller's account as Owner and Initiator; the backend's account
    (its canonical ID and display name) never reaches a client."""
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="k")["UploadId"]
    c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"x")
    backend_upload = s3.backend.list_multipart_uploads(Bucket=b)["Uploads"][0]
    backend_ids = {backend_upload["Owner"]["ID"], backend_upload["Initiator"]["ID"],
                   backend_upload["Initiator"].get("DisplayName")} - {None}
    parts = c.list_parts(Bucket=b, Key="k", UploadId=up)
    uploads = c.list_multipart_uploads(Bucket=b)["Uploads"]
    for answer in (parts, uploads[0]):
        assert answer["Initiator"]["ID"] == answer["Owner"]["ID"] == t.account_id
        assert not backend_ids & {str(v) for who in ("Owner", "Initiator") for v in answer[who].values()}
    c.abort_multipart_upload(Bucket=b, Key="k", UploadId=up)
    # Object listings too: ListObjects shows owners by default, ListObjectsV2 with FetchOwner.
    c.put_object(Bucket=b, Key="k", Body=b"x")
    for listed in (c.list_objects(Bucket=b)["Contents"][0],
                   c.list_objects_v2(Bucket=b, FetchOwner=True)["Contents"][0],
                   c.list_object_versions(Bucket=b)["Versions"][0]):
        assert set(listed["Owner"].values()) == {t.account_id}, listed


def test_copy_object_tagging_directive(sides: list[Side]) -> None:
    """CopyObject keeps the source's tags (COPY, the default) or takes the request's (REPLACE,
    none when it names none), whatever the metadata directive."""
    def scenario(c: Any, b: str) -> list[Any]:
        c.put_object(Bucket=b, Key="src", Body=b"data", Tagging="a=1&b=two%20words")
        c.put_object(Bucket=b, Key="plain", Body=b"data")
        copies: list[tuple[str, dict[str, Any]]] = [
            ("default", {}), ("meta-replace", {"MetadataDirective": "REPLACE", "Tagging": "ignored=1"}),
            ("replace", {"TaggingDirective": "REPLACE", "Tagging": "z=9"}),
            ("replace-none", {"TaggingDirective": "REPLACE"}),
            ("untagged", {"CopySource": {"Bucket": b, "Key": "plain"}})]
        obs: list[Any] = []
        for name, extra in copies:
            args = {"CopySource": {"Bucket": b, "Key": "src"}, **extra}
            c.copy_object(Bucket=b, Key=name, **args)
            obs.append((name, c.get_object_tagging(Bucket=b, Key=name)["TagSet"],
                        c.get_object(Bucket=b, Key=name)["Body"].read()))
        return obs

    seen = _run(sides, scenario)
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][0][1] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "two words"}]
    # As S3 answers an unknown metadata directive (moto takes any word here).
    proxy = next(side for side in sides if side.name == "proxy")
    status, code, _ = outcome(proxy.client.copy_object, Bucket=proxy.bucket, Key="bad",
                              CopySource={"Bucket": proxy.bucket, "Key": "src"}, TaggingDirective="MERGE")
    assert (status, code) == (400, "InvalidArgument")
    # A copy the proxy re-encrypts (out of SSE-C) keeps the source's tags too.
    key = os.urandom(32)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    c, b = proxy.client, proxy.bucket
    c.put_object(Bucket=b, Key="ssec", Body=b"secret", Tagging="k=v", **ssec)
    c.copy_object(Bucket=b, Key="out-of-ssec", CopySource={"Bucket": b, "Key": "ssec"},
                  CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key)
    assert c.get_object_tagging(Bucket=b, Key="out-of-ssec")["TagSet"] == [{"Key": "k", "Value": "v"}]
    assert c.get_object(Bucket=b, Key="out-of-ssec")["Body"].read() == b"secret"


@pytest.mark.every_store
def test_a_copy_of_a_multipart_object_keeps_its_manifest_under_either_directive(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB), os.urandom(MiB)]
    up = c.create_multipart_upload(Bucket=b, Key="mp", Tagging="x=1")["UploadId"]
    done = [{"PartNumber": n, "ETag": c.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=n, Body=p)["ETag"]}
            for n, p in enumerate(parts, 1)]
    c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={"Parts": done})
    for key, extra, want in (("c-copy", {}, [{"Key": "x", "Value": "1"}]),
                             ("c-replace", {"TaggingDirective": "REPLACE", "Tagging": "y=2"},
                              [{"Key": "y", "Value": "2"}]),
                             ("c-none", {"TaggingDirective": "REPLACE"}, [])):
        c.copy_object(Bucket=b, Key=key, CopySource={"Bucket": b, "Key": "mp"}, **extra)
        assert c.get_object_tagging(Bucket=b, Key=key)["TagSet"] == want, key
        assert c.get_object(Bucket=b, Key=key)["Body"].read() == b"".join(parts), key
    status, code, _ = outcome(c.copy_object, Bucket=b, Key="c-bad", CopySource={"Bucket": b, "Key": "mp"},
                              TaggingDirective="REPLACE", Tagging="ssegw-manifest=forged")
    assert (status, code) == (400, "InvalidTag")


def _upload(c: Any, b: str, key: str, parts: list[bytes]) -> tuple[str, list[dict[str, Any]]]:
    up = c.create_multipart_upload(Bucket=b, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": c.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=n, Body=p)["ETag"]}
            for n, p in enumerate(parts, 1)]
    return up, done


def test_complete_checks_parts_and_answers_a_retry(sides: list[Side]) -> None:
    big, small = os.urandom(5 * MiB), os.urandom(1000)

    def scenario(c: Any, b: str) -> list[Any]:
        obs: list[Any] = []
        up, done = _upload(c, b, "k", [big, big, small])

        def complete(parts: list[dict[str, Any]], **kw: Any) -> tuple[int, str | None, dict[str, Any]]:
            return outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                           MultipartUpload={"Parts": parts}, **kw)

        obs.append(complete([done[0], {"PartNumber": 2, "ETag": '"deadbeef"'}, done[2]])[:2])
        obs.append(complete([done[0], {"PartNumber": 2, "ETag": '"' + "f" * 32 + '"'}, done[2]])[:2])
        obs.append(complete([done[0], {"PartNumber": 2, "ETag": done[2]["ETag"]}, done[2]])[:2])  # another's
        obs.append(complete([done[0], done[1], {"PartNumber": 4, "ETag": done[2]["ETag"]}])[:2])
        status, code, answer = complete(done)
        obs.append((status, code, answer.get("ETag", "").endswith('-3"')))
        obs.append(c.get_object(Bucket=b, Key="k")["Body"].read() == big + big + small)
        obs.append(outcome(c.list_parts, Bucket=b, Key="k", UploadId=up)[:2])
        # Too small a part (every part but the last must be at least 5 MiB).
        up2, done2 = _upload(c, b, "small", [small, small])
        obs.append(outcome(c.complete_multipart_upload, Bucket=b, Key="small", UploadId=up2,
                           MultipartUpload={"Parts": done2})[:2])
        return obs

    seen = _run(sides, scenario)
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][:3] == [(400, "InvalidPart")] * 3


def test_complete_refuses_parts_out_of_order_and_failed_conditions(s3: S3Stack) -> None:
    # Not differential: moto completes parts listed out of order, and ignores conditions on
    # CompleteMultipartUpload; S3 answers InvalidPartOrder and 412.
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up, done = _upload(c, b, "k", [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"])
    status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                              MultipartUpload={"Parts": [done[1], done[0], done[2]]})
    assert (status, code) == (400, "InvalidPartOrder")
    c.put_object(Bucket=b, Key="k", Body=b"there")
    status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                              MultipartUpload={"Parts": done}, IfNoneMatch="*")
    assert (status, code) == (412, "PreconditionFailed")
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == b"there"
    status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                              MultipartUpload={"Parts": done}, IfMatch='"0000"')
    assert (status, code) == (412, "PreconditionFailed")
    there = c.head_object(Bucket=b, Key="k")["ETag"]
    c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done}, IfMatch=there)
    assert c.head_object(Bucket=b, Key="k")["ContentLength"] == 10 * MiB + 4


def test_a_retried_complete_answers_success_with_the_same_etag(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    for sse in ({}, {"ServerSideEncryption": "aws:kms"}):
        up = c.create_multipart_upload(Bucket=b, Key="k", **sse)["UploadId"]
        parts = [os.urandom(5 * MiB), b"tail"]
        done = [{"PartNumber": n, "ETag": c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=n,
                                                        Body=p)["ETag"]} for n, p in enumerate(parts, 1)]
        if not sse:
            assert done[1]["ETag"] == f'"{hashlib.md5(b"tail").hexdigest()}"'  # SSE-S3: plaintext MD5
        first = c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done})
        again = c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done})
        assert again["ETag"] == first["ETag"] == c.head_object(Bucket=b, Key="k")["ETag"]
        # Another object at the key since: the upload is gone, as S3 says.
        c.put_object(Bucket=b, Key="k", Body=b"newer")
        status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                                  MultipartUpload={"Parts": done})
        assert (status, code) == (404, "NoSuchUpload")


def test_sse_kms_part_etags_are_checked_exactly(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="k", ServerSideEncryption="aws:kms")["UploadId"]
    e1 = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=os.urandom(5 * MiB))["ETag"]
    e2 = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=2, Body=b"x")["ETag"]
    stale = '"' + "f" * 32 + '"'
    status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": stale}]})
    assert (status, code) == (400, "InvalidPart")
    c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})


def test_acls_within_the_tenancy(s3: S3Stack, sides: list[Side]) -> None:
    def accepted(c: Any, b: str) -> list[Any]:
        c.put_object(Bucket=b, Key="k", Body=b"x")
        return [outcome(c.put_bucket_acl, Bucket=b, ACL="private")[:2],
                outcome(c.put_object_acl, Bucket=b, Key="k", ACL="bucket-owner-full-control")[:2],
                outcome(c.put_object, Bucket=b, Key="k2", Body=b"y", ACL="private")[:2],
                outcome(c.get_object_acl, Bucket=b, Key="nope")[:2],
                len(c.get_bucket_acl(Bucket=b)["Grants"]), len(c.get_object_acl(Bucket=b, Key="k")["Grants"])]

    seen = _run(sides, accepted)
    assert seen["proxy"] == seen["moto"]

    proxy = next(side for side in sides if side.name == "proxy")
    c, b = proxy.client, proxy.bucket
    acl = c.get_bucket_acl(Bucket=b)
    account = acl["Owner"]["ID"]
    assert acl["Grants"] == [{"Grantee": {"ID": account, "DisplayName": account, "Type": "CanonicalUser"},
                              "Permission": "FULL_CONTROL"}]
    assert c.get_object_acl(Bucket=b, Key="k")["Owner"]["ID"] == account
    public = {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
              "Permission": "READ"}
    other = {"Grantee": {"Type": "CanonicalUser", "ID": "someone-else"}, "Permission": "FULL_CONTROL"}
    refused = [
        outcome(c.put_bucket_acl, Bucket=b, ACL="public-read"),
        outcome(c.put_object, Bucket=b, Key="p", Body=b"x", ACL="public-read"),
        outcome(c.copy_object, Bucket=b, Key="p", CopySource={"Bucket": b, "Key": "k"}, ACL="public-read"),
        outcome(c.create_multipart_upload, Bucket=b, Key="p", ACL="authenticated-read"),
        outcome(c.put_object, Bucket=b, Key="p", Body=b"x",
                GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"'),
        outcome(c.put_object_acl, Bucket=b, Key="k",
                AccessControlPolicy={"Grants": [public], "Owner": {"ID": account}}),
        outcome(c.put_bucket_acl, Bucket=b, AccessControlPolicy={"Grants": [other], "Owner": {"ID": account}}),
        outcome(c.create_bucket, Bucket=bucket_name(), ACL="public-read-write"),
    ]
    for status, code, answer in refused:
        assert (status, code) == (501, "NotImplemented"), answer
        assert "private to its owner account" in answer["Error"]["Message"]
    assert outcome(c.head_object, Bucket=b, Key="p")[0] == 404  # nothing was written
    mine = {"Grantee": {"Type": "CanonicalUser", "ID": account}, "Permission": "FULL_CONTROL"}
    c.put_object_acl(Bucket=b, Key="k", AccessControlPolicy={"Grants": [mine], "Owner": {"ID": account}})
    c.put_object(Bucket=b, Key="g", Body=b"x", GrantFullControl=f'id="{account}"')


def test_errors_are_s3_xml_with_our_request_id_and_the_client_resource(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket=b, Key="k", Body=b"x")
    for method, path, query, code in (
            ("GET", f"/{b}/missing", "", "NoSuchKey"),
            ("GET", f"/{b}/k", "versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY", "NoSuchVersion"),
            ("PUT", f"/{b}", "versioning=", "MalformedXML"),
            ("GET", f"/{b}", "tagging=", "NotImplemented"),
            ("DELETE", f"/{b}", "", "BucketNotEmpty")):
        r = signed_request(s3, t, method, path, query)
        err = error_of(r)
        assert err["Code"] == code, (path, query, err)
        assert err["Resource"] == path and err["RequestId"] == r.headers["x-amz-request-id"], err


def test_listed_uploads_go_on_and_sse_s3_part_etags_are_checked(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    first = os.urandom(5 * MiB)
    up = c.create_multipart_upload(Bucket=b, Key="k")["UploadId"]
    e1 = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=os.urandom(5 * MiB))["ETag"]
    # Part 1 again: the first ETag (a plaintext MD5, as S3 gives SSE-S3 parts) no longer names it.
    e1_again = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=first)["ETag"]
    assert e1 != e1_again == f'"{hashlib.md5(first).hexdigest()}"'
    # Another client (or a restarted one) finds the upload by listing and goes on with it.
    other = s3.client(t)
    listed = other.list_multipart_uploads(Bucket=b)["Uploads"]
    assert [u["UploadId"] for u in listed] == [up]
    e2 = other.upload_part(Bucket=b, Key="k", UploadId=listed[0]["UploadId"], PartNumber=2, Body=b"end")["ETag"]
    status, code, _ = outcome(other.complete_multipart_upload, Bucket=b, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert (status, code) == (400, "InvalidPart")
    other.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1_again}, {"PartNumber": 2, "ETag": e2}]})
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == first + b"end"
    # The state the upload needed is gone with it, and no tenant sees or takes its bucket.
    state = s3.proxy.state_bucket
    assert not s3.backend.list_objects_v2(Bucket=state, Prefix=f"parts/{b}/").get("Contents")
    assert not s3.backend.list_objects_v2(Bucket=state, Prefix=f"uploads/{b}/").get("Contents")
    assert state not in [x["Name"] for x in c.list_buckets()["Buckets"]]
    assert outcome(c.create_bucket, Bucket=state)[:2] == (409, "BucketAlreadyExists")
    assert outcome(c.list_objects_v2, Bucket=state)[:2] == (403, "AccessDenied")


def test_get_object_attributes(sides: list[Side]) -> None:
    """GetObjectAttributes answers what moto answers for a single object (ETag without quotes,
    plaintext size, storage class, checksum), and refuses a request without attributes."""
    body = b"attributes" * 100

    def scenario(c: Any, b: str) -> list[Any]:
        c.put_object(Bucket=b, Key="k", Body=body, ChecksumAlgorithm="SHA256")
        r = c.get_object_attributes(Bucket=b, Key="k", ObjectAttributes=["ETag", "ObjectSize", "StorageClass",
                                                                          "Checksum"])
        missing = outcome(c.get_object_attributes, Bucket=b, Key="absent", ObjectAttributes=["ETag"])[:2]
        return [r["ETag"], r["ObjectSize"], r["StorageClass"], r["Checksum"].get("ChecksumSHA256"),
                "ObjectParts" in r, missing]

    seen = _run(sides, scenario)
    assert seen["proxy"] == seen["moto"]
    assert seen["proxy"][:4] == [hashlib.md5(body).hexdigest(), len(body), "STANDARD",
                                 base64.b64encode(hashlib.sha256(body).digest()).decode()]


@pytest.mark.every_store
def test_get_object_attributes_of_a_multipart_object(s3: S3Stack) -> None:
    """A multipart object's parts as S3 lists them: their count and plaintext sizes, a page at
    a time (x-amz-max-parts, x-amz-part-number-marker), and its composite checksum without
    the `-<parts>` HEAD shows."""
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(10)]
    upload(c, b, "mp", parts, ChecksumAlgorithm="SHA256")
    composite = base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(p).digest() for p in parts)).digest()).decode()
    r = c.get_object_attributes(Bucket=b, Key="mp", ObjectAttributes=["ObjectParts", "ObjectSize", "Checksum"],
                                MaxParts=2)
    assert r["ObjectSize"] == sum(map(len, parts))
    assert r["Checksum"] == {"ChecksumSHA256": composite, "ChecksumType": "COMPOSITE"}
    assert c.head_object(Bucket=b, Key="mp", ChecksumMode="ENABLED")["ChecksumSHA256"] == f"{composite}-3"
    page = r["ObjectParts"]
    assert (page["TotalPartsCount"], page["IsTruncated"], page["NextPartNumberMarker"]) == (3, True, 2)
    assert [(p["PartNumber"], p["Size"]) for p in page["Parts"]] == [(1, 5 * MiB), (2, 5 * MiB)]
    rest = c.get_object_attributes(Bucket=b, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2,
                                   PartNumberMarker=2)["ObjectParts"]
    assert [(p["PartNumber"], p["Size"]) for p in rest["Parts"]] == [(3, 10)] and not rest["IsTruncated"]


def test_get_object_attributes_needs_attributes_s3_has(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="k", Body=b"x")
    r = signed_request(s3, t, "GET", f"/{b}/k", "attributes=")
    assert r.status == 400 and error_of(r)["Code"] == "InvalidRequest"
    r = signed_request(s3, t, "GET", f"/{b}/k", "attributes=", headers={"x-amz-object-attributes": "ETag,Colour"})
    assert r.status == 400 and error_of(r)["Code"] == "InvalidArgument"


@pytest.mark.every_store
def test_list_parts_shows_what_upload_part_answered(s3: S3Stack) -> None:
    """ListParts lists each part with the ETag and checksum UploadPart answered (S3's SSE-S3
    part ETag is the plaintext MD5; the backend's is the sealed part's), and the upload's
    algorithm and type."""
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="mp", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT",
                                   ServerSideEncryption="AES256")["UploadId"]
    answered = [c.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=n, Body=os.urandom(n * 1000),
                              ChecksumAlgorithm="CRC32") for n in (1, 2)]
    listed = c.list_parts(Bucket=b, Key="mp", UploadId=up)
    assert [(p["ETag"], p["ChecksumCRC32"]) for p in listed["Parts"]] == [
        (a["ETag"], a["ChecksumCRC32"]) for a in answered]
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ("CRC32", "FULL_OBJECT")
    c.abort_multipart_upload(Bucket=b, Key="mp", UploadId=up)


def test_a_reencrypted_copy_keeps_the_sources_checksum(s3: S3Stack) -> None:
    """A copy the proxy must re-encrypt (to SSE-C) keeps the source's checksum."""
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = os.urandom(3000)
    want = base64.b64encode(hashlib.sha256(body).digest()).decode()
    c.put_object(Bucket=b, Key="src", Body=body, ChecksumAlgorithm="SHA256")
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}
    r = c.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"}, **ssec)
    assert r["CopyObjectResult"]["ChecksumSHA256"] == want
    assert c.head_object(Bucket=b, Key="dst", ChecksumMode="ENABLED", **ssec)["ChecksumSHA256"] == want
    assert c.head_object(Bucket=b, Key="src", ChecksumMode="ENABLED")["ChecksumSHA256"] == want
