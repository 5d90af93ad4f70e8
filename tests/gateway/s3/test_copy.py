"""CopyObject through the proxy: re-keying re-seals the key and the backend copies ciphertext."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.s3 import copy as copy_module
from kms_core.blob import decode_blob
from tests.gateway.s3.conftest import MiB, S3Stack, bucket_name, upload

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def raw(s3: S3Stack, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    r = s3.backend.get_object(Bucket=bucket, Key=key)
    return r["Body"].read(), r["Metadata"]


def sealed_key_id(meta: dict[str, str]) -> str:
    return decode_blob(base64.b64decode(meta["ssegw-key"])).header.key_id


def test_copy_rekeys_without_reencrypting(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b1, b2 = bucket_name(), bucket_name()
    c.create_bucket(Bucket=b1)
    c.create_bucket(Bucket=b2)
    data = os.urandom(200_000)
    put = c.put_object(Bucket=b1, Key="a", Body=data, Metadata={"k": "v"}, ContentType="text/x-a")
    src_bytes, src_meta = raw(s3, b1, "a")

    # Same bucket, another name, metadata kept: the ciphertext is the backend's copy.
    r = c.copy_object(Bucket=b1, Key="b", CopySource={"Bucket": b1, "Key": "a"})
    assert r["CopyObjectResult"]["ETag"] == put["ETag"]
    got = c.get_object(Bucket=b1, Key="b")
    assert got["Body"].read() == data and got["Metadata"] == {"k": "v"} and got["ContentType"] == "text/x-a"
    b_bytes, b_meta = raw(s3, b1, "b")
    assert b_bytes == src_bytes and b_meta["ssegw-key"] != src_meta["ssegw-key"]

    # Another bucket, metadata replaced, under a key of the user's: re-keyed, still no re-encryption.
    mine = s3.kms.service.create_key(t.caller, alias="archive").key_id
    r = c.copy_object(Bucket=b2, Key="c", CopySource={"Bucket": b1, "Key": "a"}, MetadataDirective="REPLACE",
                      Metadata={"n": "w"}, ContentType="text/x-c", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/archive")
    assert r["SSEKMSKeyId"].endswith(mine)
    got = c.get_object(Bucket=b2, Key="c")
    assert got["Body"].read() == data and got["Metadata"] == {"n": "w"} and got["SSEKMSKeyId"].endswith(mine)
    c_bytes, c_meta = raw(s3, b2, "c")
    assert c_bytes == src_bytes and sealed_key_id(c_meta) == mine
    # The copy's key is bound to its own name: moved back under the source's name it fails.
    s3.backend.put_object(Bucket=b1, Key="a", Body=c_bytes, Metadata=c_meta)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b1, Key="a")
    assert code(e) == "KMS.InvalidCiphertextException"

    # To an SM4 key: the packages must change algorithm, so this one copy re-encrypts.
    sm4 = s3.kms.service.create_key(t.caller, spec="SM4").key_id
    c.copy_object(Bucket=b2, Key="d", CopySource={"Bucket": b1, "Key": "b"}, ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=sm4)
    d_bytes, d_meta = raw(s3, b2, "d")
    assert d_meta["ssegw-alg"] == "SM4GCM" and d_bytes != src_bytes
    assert c.get_object(Bucket=b2, Key="d", Range="bytes=70000-70010")["Body"].read() == data[70000:70011]


def test_copy_rules(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    put = c.put_object(Bucket=b, Key="x", Body=b"xyz")
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=b, Key="x", CopySource={"Bucket": b, "Key": "x"})
    assert code(e) == "InvalidRequest"
    key = s3.kms.service.create_key(t.caller).key_id
    r = c.copy_object(Bucket=b, Key="x", CopySource={"Bucket": b, "Key": "x"}, ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=key)
    assert r["SSEKMSKeyId"].endswith(key) and c.get_object(Bucket=b, Key="x")["Body"].read() == b"xyz"
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=b, Key="y", CopySource={"Bucket": b, "Key": "x"}, CopySourceIfMatch='"nope"')
    assert code(e) == "PreconditionFailed"
    c.copy_object(Bucket=b, Key="y", CopySource={"Bucket": b, "Key": "x"}, CopySourceIfMatch=put["ETag"])
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=b, Key="z", CopySource={"Bucket": b, "Key": "missing"})
    assert code(e) == "NoSuchKey"
    other: Any = s3.client(s3.tenant())
    ob = bucket_name()
    other.create_bucket(Bucket=ob)
    with pytest.raises(ClientError) as e:  # reading another tenant's object by copying it
        other.copy_object(Bucket=ob, Key="stolen", CopySource={"Bucket": b, "Key": "x"})
    assert code(e) == "AccessDenied"
    # A plaintext object put into the backend directly is encrypted by its copy, by an operator
    # migrating a bucket (ssegw serve --serve-plaintext-objects).
    s3.proxy.serve_plaintext = True
    s3.backend.put_object(Bucket=b, Key="legacy", Body=b"old plaintext")
    c.copy_object(Bucket=b, Key="legacy", CopySource={"Bucket": b, "Key": "legacy"}, ServerSideEncryption="AES256")
    body, meta = raw(s3, b, "legacy")
    assert b"old plaintext" not in body and meta["ssegw"] == "3"
    assert c.get_object(Bucket=b, Key="legacy")["Body"].read() == b"old plaintext"


def test_copy_keeps_multipart_layouts(s3: S3Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB + 1), os.urandom(6 * MiB), os.urandom(5)]
    data = b"".join(parts)
    upload(c, b, "mp", parts)
    c.copy_object(Bucket=b, Key="mp2", CopySource={"Bucket": b, "Key": "mp"})
    s3.proxy.reader._layouts.clear()
    assert raw(s3, b, "mp2")[0] == raw(s3, b, "mp")[0]
    assert c.head_object(Bucket=b, Key="mp2")["ContentLength"] == len(data)
    assert c.get_object(Bucket=b, Key="mp2", PartNumber=2)["Body"].read() == parts[1]
    assert hashlib.md5(c.get_object(Bucket=b, Key="mp2")["Body"].read()).digest() == hashlib.md5(data).digest()
    # A single-stream object too big for one backend CopyObject is copied in pieces.
    monkeypatch.setattr(copy_module, "COPY_LIMIT", 8 * MiB)
    monkeypatch.setattr(copy_module, "COPY_PIECE", 5 * MiB)
    big = os.urandom(12 * MiB + 5)
    c.put_object(Bucket=b, Key="big", Body=big)
    c.copy_object(Bucket=b, Key="big2", CopySource={"Bucket": b, "Key": "big"})
    assert s3.backend.head_object(Bucket=b, Key="big2")["ETag"].endswith('-3"')
    assert c.get_object(Bucket=b, Key="big2")["Body"].read() == big
    assert c.get_object(Bucket=b, Key="big2", Range="bytes=5242870-5242890")["Body"].read() == big[5242870:5242891]
