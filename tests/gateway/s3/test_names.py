"""S3's rules for bucket names, key lengths and user metadata; every error an S3 XML document."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from gateway.s3.names import bucket_name_problem
from tests.gateway.s3.conftest import S3Stack, bucket_name, signed


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


@pytest.mark.parametrize("name", ["BadBucket", "bad_bucket", "192.168.1.1", "a..b-bucket", "-bucket",
                                  "bucket-", "ab", "x" * 64, "xn--bucket", "my-bucket-s3alias",
                                  "a.-b-bucket"])
def test_invalid_bucket_names_are_refused(s3: S3Stack, name: str) -> None:
    c: Any = s3.client(s3.tenant(), https=False)
    with pytest.raises(ClientError) as e:
        c.create_bucket(Bucket=name)
    assert code(e) == "InvalidBucketName"
    assert name not in [b["Name"] for b in s3.backend.list_buckets()["Buckets"]]


def test_valid_bucket_names() -> None:
    for name in ("abc", "my.bucket.name", "a-b-c", "0bucket9", "x" * 63):
        assert bucket_name_problem(name) is None, name


def test_key_and_metadata_limits(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant(), https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="k" * 1024, Body=b"ok")
    c.put_object(Bucket=b, Key="é" * 512, Body=b"ok")  # 1,024 bytes of UTF-8
    for key in ("k" * 1025, "é" * 513):
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=b, Key=key, Body=b"x")
        assert code(e) == "KeyTooLongError"
    c.put_object(Bucket=b, Key="meta-ok", Body=b"x", Metadata={"a": "v" * 2000})
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="meta", Body=b"x", Metadata={"a": "v" * 4000})
    assert code(e) == "MetadataTooLarge"
    with pytest.raises(ClientError) as e:
        c.create_multipart_upload(Bucket=b, Key="meta", Metadata={"a": "v" * 4000})
    assert code(e) == "MetadataTooLarge"
    keys = [o["Key"] for o in s3.backend.list_objects_v2(Bucket=b)["Contents"]]
    assert sorted(keys) == sorted(["k" * 1024, "é" * 512, "meta-ok"])


def test_odd_keys_and_methods_get_s3_xml_errors(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="line\nbreak")  # sent as %0A
    assert code(e) == "NoSuchKey" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    url = f"{s3.http_url}/{b}/k"
    r = httpx.request("PATCH", url, headers=signed(t, "PATCH", url))
    assert r.status_code == 405 and r.headers["content-type"] == "application/xml"
    assert ET.fromstring(r.content).findtext("Code") == "MethodNotAllowed"
