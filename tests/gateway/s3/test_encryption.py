"""Which key encrypts what, and how failures look: SSE headers, bucket defaults, KMS refusals."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kms_core.blob import decode_blob
from tests.gateway.s3.conftest import S3Stack, bucket_name

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def stored_key_id(s3: S3Stack, bucket: str, key: str) -> str:
    meta = s3.backend.head_object(Bucket=bucket, Key=key)["Metadata"]
    return decode_blob(base64.b64decode(meta["ssegw-key"])).header.key_id


def test_sse_kms_with_a_key_the_default_key_and_aes256(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    mine = s3.kms.service.create_key(t.caller, alias="photos").key_id
    r = c.put_object(Bucket=b, Key="a", Body=b"a", ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/photos")
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"].endswith(f":key/{mine}")
    assert stored_key_id(s3, b, "a") == mine
    got = c.get_object(Bucket=b, Key="a")
    assert got["SSEKMSKeyId"].endswith(mine) and got["Body"].read() == b"a"
    default = s3.kms.service.default_key(t.caller, "oss").id
    c.put_object(Bucket=b, Key="b", Body=b"b", ServerSideEncryption="aws:kms")
    c.put_object(Bucket=b, Key="c", Body=b"c", ServerSideEncryption="AES256")
    c.put_object(Bucket=b, Key="d", Body=b"d")
    assert {stored_key_id(s3, b, k) for k in "bcd"} == {default}
    assert c.head_object(Bucket=b, Key="c")["ServerSideEncryption"] == "AES256"


def test_bucket_default_encryption(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    assert c.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    key = s3.kms.service.create_key(t.caller, spec="SM4").key_id
    c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}}]})
    rule = c.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    r = c.put_object(Bucket=b, Key="sm4", Body=b"x" * 100_000)
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"].endswith(key)
    assert s3.backend.head_object(Bucket=b, Key="sm4")["Metadata"]["ssegw-alg"] == "SM4GCM"
    assert c.get_object(Bucket=b, Key="sm4", Range="bytes=65530-65600")["Body"].read() == b"x" * 71
    with pytest.raises(ClientError) as e:
        c.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                   "KMSMasterKeyID": "alias/does-not-exist"}}]})
    assert code(e) == "KMS.NotFoundException"
    c.delete_bucket_encryption(Bucket=b)
    c.put_object(Bucket=b, Key="after", Body=b"y")
    assert stored_key_id(s3, b, "after") == s3.kms.service.default_key(t.caller, "oss").id


def test_encryption_context_is_honoured(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    ctx = base64.b64encode(json.dumps({"department": "finance"}).encode()).decode()
    r = c.put_object(Bucket=b, Key="ctx", Body=b"ledger", ServerSideEncryption="aws:kms",
                     SSEKMSEncryptionContext=ctx)
    assert json.loads(base64.b64decode(r["SSEKMSEncryptionContext"])) == {"department": "finance"}
    got = c.get_object(Bucket=b, Key="ctx")
    assert got["Body"].read() == b"ledger"
    header = got["ResponseMetadata"]["HTTPHeaders"]["x-amz-server-side-encryption-context"]
    assert json.loads(base64.b64decode(header)) == {"department": "finance"}
    # The data key is bound to the context: strip it from the stored metadata and reads fail.
    raw = s3.backend.get_object(Bucket=b, Key="ctx")
    meta = raw["Metadata"]
    del meta["ssegw-ctx"]
    s3.backend.put_object(Bucket=b, Key="ctx", Body=raw["Body"].read(), Metadata=meta)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="ctx")
    assert code(e) == "KMS.InvalidCiphertextException"


def test_disabled_deleted_and_foreign_keys(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    key = s3.kms.service.create_key(t.caller).key_id
    c.put_object(Bucket=b, Key="k", Body=b"data", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    s3.kms.service.disable_key(t.caller, key)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="k")
    assert code(e) == "KMS.DisabledException"
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="k2", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key)
    assert code(e) == "KMS.DisabledException"
    s3.kms.service.enable_key(t.caller, key)
    s3.kms.service.schedule_key_deletion(t.caller, key, 7)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="k")
    assert code(e) == "KMS.KMSInvalidStateException"
    other = s3.tenant()
    foreign = s3.kms.service.create_key(other.caller).key_id
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="f", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=foreign)
    assert code(e) == "KMS.NotFoundException"
    assert "k2" not in [o["Key"] for o in s3.backend.list_objects_v2(Bucket=b).get("Contents", [])]


def test_sse_headers_on_reads_are_refused(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="o", Body=b"o")

    def add_sse(request: Any, **_: Any) -> None:
        request.headers["x-amz-server-side-encryption"] = "aws:kms"

    c.meta.events.register("before-sign.s3.GetObject", add_sse)
    c.meta.events.register("before-sign.s3.HeadObject", add_sse)
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="o")
    assert code(e) == "InvalidArgument"
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=b, Key="o")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="p", Body=b"p", ServerSideEncryption="AES256", SSEKMSKeyId="alias/x")
    assert code(e) == "InvalidArgument"
