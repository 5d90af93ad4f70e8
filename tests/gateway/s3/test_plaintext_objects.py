"""Objects without the gateway's envelope are not served unless an operator says so.

An attacker with write access to the backend can strip an object's `ssegw` metadata (the
ciphertext would then be served as if it were the object) or plant an object of their own; both
must make reads fail, never succeed with bytes nobody authenticated. Operators migrating a
bucket of plaintext objects turn serving them on (`ssegw serve --serve-plaintext-objects`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateway.s3.conftest import S3Stack, bucket_name


def _status(e: pytest.ExceptionInfo[ClientError]) -> int:
    return int(e.value.response["ResponseMetadata"]["HTTPStatusCode"])


def _strip_envelope(s3: S3Stack, bucket: str, key: str) -> bytes:
    """As an attacker with backend access: the same stored bytes, without any metadata."""
    s3.backend.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                           MetadataDirective="REPLACE", Metadata={})
    stored = s3.backend.get_object(Bucket=bucket, Key=key)
    assert not any(k.startswith("ssegw") for k in stored["Metadata"])
    return bytes(stored["Body"].read())


def _refused_everywhere(c: Any, bucket: str, key: str, unwanted: bytes) -> None:
    call: Callable[[], object]
    for call in (lambda: c.get_object(Bucket=bucket, Key=key)["Body"].read(),
                 lambda: c.get_object(Bucket=bucket, Key=key, Range="bytes=0-9")["Body"].read(),
                 lambda: c.head_object(Bucket=bucket, Key=key),
                 lambda: c.copy_object(Bucket=bucket, Key=key + ".copy",
                                       CopySource={"Bucket": bucket, "Key": key})):
        with pytest.raises(ClientError) as e:
            got = call()
            assert unwanted not in (got if isinstance(got, bytes) else repr(got).encode())
        assert _status(e) == 500
        if e.value.response["Error"].get("Code") not in (None, "500"):  # HEAD answers have no body
            assert e.value.response["Error"]["Code"] == "InternalError"
            assert "no encryption envelope" in e.value.response["Error"]["Message"]


def test_an_object_whose_envelope_was_stripped_is_not_served(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    data = os.urandom(100_000)
    c.put_object(Bucket=b, Key="secret", Body=data)
    ciphertext = _strip_envelope(s3, b, "secret")
    assert data not in ciphertext
    _refused_everywhere(c, b, "secret", ciphertext[:64])


def test_an_object_planted_in_the_backend_is_not_served(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="config.json", Body=b'{"admin": false}')
    s3.backend.put_object(Bucket=b, Key="config.json", Body=b'{"admin": true}')
    _refused_everywhere(c, b, "config.json", b'{"admin": true}')


def test_an_operator_migrating_plaintext_objects_serves_them(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    s3.backend.put_object(Bucket=b, Key="legacy", Body=b"written before the gateway")
    s3.proxy.serve_plaintext = True
    assert c.get_object(Bucket=b, Key="legacy")["Body"].read() == b"written before the gateway"
    assert c.head_object(Bucket=b, Key="legacy")["ContentLength"] == 26
    c.copy_object(Bucket=b, Key="legacy", CopySource={"Bucket": b, "Key": "legacy"},
                  ServerSideEncryption="AES256")  # encrypts it in place
    s3.proxy.serve_plaintext = False
    assert c.get_object(Bucket=b, Key="legacy")["Body"].read() == b"written before the gateway"


def test_an_empty_folder_object_is_served_without_an_envelope(s3: S3Stack) -> None:
    """As s3fs's mkdir makes them, and as SeaweedFS keeps them (a directory, metadata dropped)."""
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    s3.backend.put_object(Bucket=b, Key="folder/", Body=b"")
    assert c.head_object(Bucket=b, Key="folder/")["ContentLength"] == 0
    assert c.get_object(Bucket=b, Key="folder/")["Body"].read() == b""
    s3.backend.put_object(Bucket=b, Key="not-a-folder/", Body=b"planted")
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="not-a-folder/")["Body"].read()
    assert _status(e) == 500
