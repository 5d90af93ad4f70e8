"""Listings against an attacker who edits backend metadata (boto3 straight to the store).

ListObjects(V2) and ListObjectVersions show what HEAD shows once the metadata's (and a v4
manifest's) MAC holds; for an object whose metadata was changed they show nothing taken from
it: the plaintext size follows from the stored length, the ETag is the backend's in
multipart form, never the edited size or MD5.
"""

from __future__ import annotations

import os
from typing import Any

from tests.gateway.s3.conftest import S3Stack, bucket_name

MiB = 1024 * 1024


def _listed(c: Any, b: str) -> dict[str, tuple[int, str]]:
    return {o["Key"]: (o["Size"], o["ETag"]) for o in c.list_objects_v2(Bucket=b).get("Contents", [])}


def _versions(c: Any, b: str) -> dict[str, tuple[int, str]]:
    return {o["Key"]: (o["Size"], o["ETag"]) for o in c.list_object_versions(Bucket=b).get("Versions", [])}


def test_listings_show_what_head_vouches_for_and_nothing_edited(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    small = os.urandom(70_000)
    c.put_object(Bucket=b, Key="single", Body=small)
    up = c.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    plains = [os.urandom(5 * MiB), os.urandom(1234)]
    etags = [c.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(plains, 1)]
    c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    honest = {k: (c.head_object(Bucket=b, Key=k)["ContentLength"], c.head_object(Bucket=b, Key=k)["ETag"])
              for k in ("single", "mp")}
    assert honest["single"][0] == len(small) and honest["mp"][0] == sum(map(len, plains))
    assert _listed(c, b) == honest and _versions(c, b) == honest

    # The attacker rewrites the single object's size and MD5 (a size that fits the stored length
    # is the only one the proxy would not refuse outright), and the multipart object's manifest.
    for key in ("single-edited", "mp-edited"):
        c.copy_object(Bucket=b, Key=key, CopySource={"Bucket": b, "Key": key.removesuffix("-edited")})
    meta = s3.backend.head_object(Bucket=b, Key="single-edited")["Metadata"]
    meta["ssegw-md5"] = "0" * 32
    s3.backend.copy_object(Bucket=b, Key="single-edited", CopySource={"Bucket": b, "Key": "single-edited"},
                           MetadataDirective="REPLACE", Metadata=meta)
    tags = s3.backend.get_object_tagging(Bucket=b, Key="mp-edited")["TagSet"]
    for t in tags:
        if t["Key"] == "ssegw-manifest":
            size, *rest = t["Value"].split(" ")
            t["Value"] = " ".join([str(int(size) + 65536), *rest])
    s3.backend.put_object_tagging(Bucket=b, Key="mp-edited", Tagging={"TagSet": tags})
    s3.proxy.listing.forget_all()
    s3.proxy.reader._manifests.clear()
    listed, versions = _listed(c, b), _versions(c, b)
    stored = {k: s3.backend.head_object(Bucket=b, Key=k) for k in ("single-edited", "mp-edited")}
    for key, head in stored.items():
        size, etag = listed[key]
        assert etag != f'"{"0" * 32}"' and "-" in etag, (key, etag)  # never an MD5 from the metadata
        assert etag.strip('"').split("-")[0] == head["ETag"].strip('"').split("-")[0]  # the backend's
        assert size < head["ContentLength"] and size != honest[key.removesuffix("-edited")][0] + 65536
        assert versions[key] == listed[key]
    assert listed["single-edited"][0] == len(small)  # a single stream's size is its length's
    assert {k: listed[k] for k in honest} == honest  # the others are untouched


def test_the_manifest_tag_is_not_the_client_s(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    for key, tagging in (("tagged", "team=a&env=b"), ("untagged", None)):
        extra = {"Tagging": tagging} if tagging else {}
        up = c.create_multipart_upload(Bucket=b, Key=key, **extra)["UploadId"]
        e = c.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=b"x" * 1000)["ETag"]
        c.complete_multipart_upload(Bucket=b, Key=key, UploadId=up,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
        got = c.get_object(Bucket=b, Key=key)
        assert got["Body"].read() == b"x" * 1000
        assert got.get("TagCount", 0) == (2 if tagging else 0)
        stored = {t["Key"]: t["Value"] for t in s3.backend.get_object_tagging(Bucket=b, Key=key)["TagSet"]}
        assert "ssegw-manifest" in stored and (not tagging or (stored["team"], stored["env"]) == ("a", "b"))
    too_many = "&".join(f"k{i}=v" for i in range(10))
    try:
        c.create_multipart_upload(Bucket=b, Key="ten", Tagging=too_many)
        raise AssertionError("ten tags accepted on a multipart upload")
    except c.exceptions.ClientError as err:
        assert err.response["Error"]["Code"] == "InvalidTag"
    assert "Uploads" not in c.list_multipart_uploads(Bucket=b)
