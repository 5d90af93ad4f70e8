"""Bucket keys: one KMS call per bucket and cache lifetime, per-object keys derived by HKDF."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.s3.objkeys import ObjectKeys
from tests.gateway.s3.conftest import MiB, S3Stack, bucket_name, upload

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def metered(s3: S3Stack, account_id: str) -> int:
    return sum(s3.kms.meter.usage(account_id).values())


def test_bucket_keys_cut_kms_calls(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    on, off = bucket_name(), bucket_name()
    for b in (on, off):
        c.create_bucket(Bucket=b)
    c.put_bucket_encryption(Bucket=on, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]})
    assert c.get_bucket_encryption(Bucket=on)["ServerSideEncryptionConfiguration"]["Rules"][0]["BucketKeyEnabled"]
    c.put_object(Bucket=on, Key="warm", Body=b"w")  # the default key's first use
    c.put_object(Bucket=off, Key="warm", Body=b"w")
    before = metered(s3, t.account_id)
    for i in range(60):
        r = c.put_object(Bucket=on, Key=f"o{i}", Body=b"small %d" % i)
        assert r["BucketKeyEnabled"] is True
    with_bk = metered(s3, t.account_id) - before
    before = metered(s3, t.account_id)
    for i in range(60):
        c.put_object(Bucket=off, Key=f"o{i}", Body=b"small %d" % i)
    without = metered(s3, t.account_id) - before
    assert with_bk <= 1 and without == 60, (with_bk, without)
    # Every object has its own salt, hence its own key; all share the sealed bucket key.
    metas = [s3.backend.head_object(Bucket=on, Key=f"o{i}")["Metadata"] for i in range(3)]
    assert len({m["ssegw-bk"] for m in metas}) == 3 and len({m["ssegw-key"] for m in metas}) == 1
    assert all(m["ssegw"] == "3" for m in metas)
    # Reads open the bucket key once, not once per object.
    s3.proxy.keys = ObjectKeys(s3.proxy.keys.kms_for)
    before = metered(s3, t.account_id)
    for i in range(60):
        got = c.get_object(Bucket=on, Key=f"o{i}")
        assert got["Body"].read() == b"small %d" % i and got["BucketKeyEnabled"] is True
    assert metered(s3, t.account_id) - before <= 1
    # The request header wins over the bucket's setting, both ways.
    r = c.put_object(Bucket=off, Key="bk", Body=b"x", BucketKeyEnabled=True)
    assert r["BucketKeyEnabled"] is True and "ssegw-bk" in s3.backend.head_object(Bucket=off, Key="bk")["Metadata"]
    c.put_object(Bucket=on, Key="nobk", Body=b"x", BucketKeyEnabled=False)
    assert "ssegw-bk" not in s3.backend.head_object(Bucket=on, Key="nobk")["Metadata"]
    # Bucket-key multipart uploads and copies to another bucket.
    parts = [b"p" * (5 * MiB), b"q" * 10]
    upload(c, on, "mp", parts)
    assert c.get_object(Bucket=on, Key="mp")["Body"].read() == b"".join(parts)
    c.copy_object(Bucket=off, Key="copied", CopySource={"Bucket": on, "Key": "mp"})
    assert c.get_object(Bucket=off, Key="copied", Range="bytes=5242878-5242881")["Body"].read() == b"ppqq"
    bk = base64.b64decode(s3.backend.head_object(Bucket=off, Key="copied")["Metadata"]["ssegw-key"])
    assert bk != base64.b64decode(s3.backend.head_object(Bucket=on, Key="mp")["Metadata"]["ssegw-key"])


def test_disabling_the_cmk_takes_effect_within_the_cache_lifetime(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    key = s3.kms.service.create_key(t.caller).key_id
    c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
        "BucketKeyEnabled": True}]})
    clock = Clock()
    s3.proxy.keys = ObjectKeys(s3.proxy.keys.kms_for, 60.0, clock=clock)
    c.put_object(Bucket=b, Key="before", Body=b"1")
    s3.kms.service.disable_key(t.caller, key)
    clock.now += 30  # within the lifetime: the cached bucket key still serves
    c.put_object(Bucket=b, Key="during", Body=b"2")
    assert c.get_object(Bucket=b, Key="before")["Body"].read() == b"1"
    clock.now += 31  # past it: the KMS is asked again and refuses
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="after", Body=b"3")
    assert code(e) == "KMS.DisabledException"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="during")
    assert code(e) == "KMS.DisabledException"
    s3.kms.service.enable_key(t.caller, key)
    assert c.get_object(Bucket=b, Key="during")["Body"].read() == b"2"
