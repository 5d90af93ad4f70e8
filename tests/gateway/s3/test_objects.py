"""Objects through the proxy with boto3: round trips, ranges, what the backend really holds."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.s3.conftest import S3Stack, bucket_name

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS

SIZES = [0, 1, 65535, 65536, 65537, 5 * 1024 * 1024 + 3]


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


@pytest.mark.parametrize("https", [True, False], ids=["https-aws-chunked", "http-sha256"])
def test_round_trips(s3: S3Stack, https: bool) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=https)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    for size in SIZES:
        data = os.urandom(size)
        put = c.put_object(Bucket=b, Key=f"obj-{size}", Body=data)
        assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        assert put["ServerSideEncryption"] == "AES256"
        got = c.get_object(Bucket=b, Key=f"obj-{size}")
        assert got["Body"].read() == data
        assert got["ContentLength"] == size and got["ETag"] == put["ETag"]
        head = c.head_object(Bucket=b, Key=f"obj-{size}")
        assert head["ContentLength"] == size and head["ServerSideEncryption"] == "AES256"
    listed = {o["Key"]: o for o in c.list_objects_v2(Bucket=b)["Contents"]}
    assert {k: o["Size"] for k, o in listed.items()} == {f"obj-{s}": s for s in SIZES}
    v1 = {o["Key"]: o["Size"] for o in c.list_objects(Bucket=b)["Contents"]}
    assert v1 == {f"obj-{s}": s for s in SIZES}


def test_backend_holds_no_plaintext(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    secret = b"PLAINTEXT-MARKER-" * 4000
    c.put_object(Bucket=b, Key="doc", Body=secret, Metadata={"owner": "alice"})
    raw = s3.backend.get_object(Bucket=b, Key="doc")
    stored = raw["Body"].read()
    assert b"PLAINTEXT-MARKER" not in stored
    assert len(stored) == len(secret) + 16 * 2  # two 64 KiB packages, one tag each
    assert raw["Metadata"]["ssegw"] == "3" and raw["Metadata"]["owner"] == "alice"
    assert hashlib.md5(secret).hexdigest() == raw["Metadata"]["ssegw-md5"]


RANGE_SIZE = 3 * 65536 + 100


@pytest.fixture
def ranged(s3: S3Stack) -> tuple[Any, str, bytes]:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    data = os.urandom(RANGE_SIZE)
    c.put_object(Bucket=b, Key="r", Body=data)
    return c, b, data


def test_every_range_form(ranged: tuple[Any, str, bytes]) -> None:
    c, b, data = ranged
    n = len(data)
    cases = {
        "bytes=0-0": data[0:1], "bytes=10-20": data[10:21], "bytes=65530-65545": data[65530:65546],
        "bytes=65536-": data[65536:], f"bytes={n - 1}-": data[n - 1:], "bytes=-1": data[-1:],
        "bytes=-70000": data[-70000:], f"bytes=0-{n + 500}": data, f"bytes=-{n + 5}": data,
        "bytes=131072-196607": data[131072:196608],
    }
    for header, expected in cases.items():
        got = c.get_object(Bucket=b, Key="r", Range=header)
        assert got["Body"].read() == expected, header
        assert got["ContentLength"] == len(expected)
        assert got["ContentRange"].endswith(f"/{n}")
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="r", Range=f"bytes={n}-")
    assert code(e) == "InvalidRange"
    assert c.get_object(Bucket=b, Key="r", Range="bytes=5-2")["Body"].read() == data  # ignored


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_ranges_match_slicing(ranged: tuple[Any, str, bytes], data: st.DataObject) -> None:
    c, b, body = ranged
    start = data.draw(st.integers(0, RANGE_SIZE - 1))
    end = data.draw(st.integers(start, RANGE_SIZE + 10))
    got = c.get_object(Bucket=b, Key="r", Range=f"bytes={start}-{end}")["Body"].read()
    assert got == body[start:end + 1]


def test_metadata_and_conditionals(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    put = c.put_object(Bucket=b, Key="m.txt", Body=b"hello", ContentType="text/plain",
                       Metadata={"project": "apollo"}, CacheControl="max-age=60",
                       ContentDisposition="attachment; filename=m.txt")
    got = c.get_object(Bucket=b, Key="m.txt")
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"project": "apollo"}
    assert got["CacheControl"] == "max-age=60" and got["ContentDisposition"].startswith("attachment")
    etag = put["ETag"]
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="m.txt", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="m.txt", IfMatch='"0123"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert c.get_object(Bucket=b, Key="m.txt", IfMatch=etag)["Body"].read() == b"hello"
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=b, Key="m.txt", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="x", Body=b"x", Metadata={"ssegw-key": "forged"})
    assert code(e) == "InvalidArgument"


def test_delete_and_list(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    for i in range(5):
        c.put_object(Bucket=b, Key=f"dir/{i}", Body=b"x" * i)
    c.delete_object(Bucket=b, Key="dir/0")
    out = c.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "dir/1"}, {"Key": "dir/2"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["dir/1", "dir/2"]
    page = c.list_objects_v2(Bucket=b, Prefix="dir/", MaxKeys=1)
    assert page["IsTruncated"] and page["Contents"][0]["Key"] == "dir/3"
    assert page["Contents"][0]["Size"] == 3
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="dir/0")
    assert code(e) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        c.delete_bucket(Bucket=b)
    assert code(e) == "BucketNotEmpty"
    c.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "dir/3"}, {"Key": "dir/4"}]})
    c.delete_bucket(Bucket=b)
    with pytest.raises(ClientError) as e:
        c.head_bucket(Bucket=b)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_plaintext_objects_in_the_backend_are_served_as_they_are_when_migrating(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    s3.backend.put_object(Bucket=b, Key="legacy.txt", Body=b"written before the proxy")
    s3.proxy.serve_plaintext = True  # ssegw serve --serve-plaintext-objects (refused otherwise)
    got = c.get_object(Bucket=b, Key="legacy.txt")
    assert got["Body"].read() == b"written before the proxy" and "ServerSideEncryption" not in got
    assert c.get_object(Bucket=b, Key="legacy.txt", Range="bytes=8-13")["Body"].read() == b"before"
    assert c.list_objects_v2(Bucket=b)["Contents"][0]["Size"] == 24
