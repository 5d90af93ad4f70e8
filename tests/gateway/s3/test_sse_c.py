"""SSE-C through the proxy with boto3's SSECustomer* parameters, moto as the backend.

What is checked beyond "it round-trips": a wrong key gets 403 and no bytes, a missing key 400,
a bad key MD5 400, plain HTTP is refused unless allowed, and the customer key (raw, base64, hex)
and its MD5 appear in no log line, no backend metadata and no stored byte.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateway.s3.conftest import S3Stack, bucket_name


def ssec(key: bytes) -> dict[str, Any]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def copy_ssec(key: bytes) -> dict[str, Any]:
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def md5_b64(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def error(e: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    r = e.value.response
    return int(r["ResponseMetadata"]["HTTPStatusCode"]), str(r["Error"]["Code"])


def secrets_of(key: bytes) -> list[bytes]:
    """Every form of a customer key that must never be stored or logged."""
    b64 = base64.b64encode(key)
    return [key, b64, key.hex().encode(), key.hex().upper().encode(), md5_b64(key).encode(),
            hashlib.md5(key).hexdigest().encode()]


def assert_not_stored(s3: S3Stack, bucket: str, key: str, *customer_keys: bytes) -> None:
    """Read the backend object straight from moto: metadata, headers and bytes hold no key."""
    r = s3.backend.get_object(Bucket=bucket, Key=key)
    body = r["Body"].read()
    headers = repr(sorted(r["ResponseMetadata"]["HTTPHeaders"].items())).encode()
    meta = repr(sorted(r["Metadata"].items())).encode()
    assert meta, "the backend object has envelope metadata"
    for k in customer_keys:
        for s in secrets_of(k):
            assert s not in body and s not in headers and s not in meta


# The test's own boto3 client logs the requests it sends (with the key) at DEBUG: not the proxy's.
_CLIENT_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in _CLIENT_LOGGERS:
            return
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture
def logs() -> Iterator[_Capture]:
    """Every log line of the proxy (root and uvicorn's own loggers, at DEBUG), the test's client's aside."""
    cap = _Capture()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "ssegw")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(cap)
        lg.setLevel(logging.DEBUG)
    yield cap
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(cap)
        lg.setLevel(level)


def assert_not_logged(logs: _Capture, *customer_keys: bytes) -> None:
    text = "\n".join(logs.lines)
    for k in customer_keys:
        for s in secrets_of(k):
            if s is not k:
                assert s.decode() not in text
        assert repr(k) not in text


@pytest.fixture
def stack(s3: S3Stack) -> tuple[S3Stack, Any, str]:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    return s3, c, b


def test_put_get_head_range(stack: tuple[S3Stack, Any, str], logs: _Capture) -> None:
    s3, c, b = stack
    key = os.urandom(32)
    data = os.urandom(200_000)
    put = c.put_object(Bucket=b, Key="o", Body=data, **ssec(key))
    assert put["SSECustomerAlgorithm"] == "AES256" and put["SSECustomerKeyMD5"] == md5_b64(key)
    assert "ServerSideEncryption" not in put
    got = c.get_object(Bucket=b, Key="o", **ssec(key))
    assert got["Body"].read() == data
    assert got["SSECustomerKeyMD5"] == md5_b64(key) and got["ETag"] == put["ETag"]
    head = c.head_object(Bucket=b, Key="o", **ssec(key))
    assert head["ContentLength"] == len(data) and head["SSECustomerAlgorithm"] == "AES256"
    part = c.get_object(Bucket=b, Key="o", Range="bytes=70000-140009", **ssec(key))
    assert part["Body"].read() == data[70000:140010] and part["ContentRange"] == f"bytes 70000-140009/{len(data)}"
    one = c.get_object(Bucket=b, Key="o", PartNumber=1, **ssec(key))
    assert one["Body"].read() == data
    # Listings need no key and show plaintext sizes.
    listed = c.list_objects_v2(Bucket=b)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("o", len(data), put["ETag"])]
    # An empty object, too.
    c.put_object(Bucket=b, Key="empty", Body=b"", **ssec(key))
    assert c.get_object(Bucket=b, Key="empty", **ssec(key))["Body"].read() == b""
    assert_not_stored(s3, b, "o", key)
    assert_not_logged(logs, key)


def test_wrong_missing_and_mismatched_keys(stack: tuple[S3Stack, Any, str], logs: _Capture) -> None:
    s3, c, b = stack
    key, other = os.urandom(32), os.urandom(32)
    c.put_object(Bucket=b, Key="o", Body=b"secret data", **ssec(key))
    # Wrong key: 403, never bytes.
    for extra in ({}, {"Range": "bytes=0-3"}):
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=b, Key="o", **extra, **ssec(other))
        assert error(e) == (403, "AccessDenied")
        assert "secret" not in str(e.value.response)
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=b, Key="o", **ssec(other))
    assert error(e)[0] == 403
    # Missing key on an SSE-C object: 400 InvalidRequest.
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="o")
    assert error(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=b, Key="o")
    assert error(e)[0] == 400
    # A key MD5 that is not the key's: 400 InvalidArgument, on writes and reads.
    bad = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key).decode(),
           "SSECustomerKeyMD5": md5_b64(other)}
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="o", **bad)
    assert error(e) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="p", Body=b"x", **bad)
    assert error(e) == (400, "InvalidArgument")
    # Only AES256, and not together with another kind of server-side encryption.
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="p", Body=b"x", SSECustomerAlgorithm="aws:kms", SSECustomerKey=key)
    assert error(e)[0] == 400
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=b, Key="p", Body=b"x", ServerSideEncryption="AES256", **ssec(key))
    assert error(e) == (400, "InvalidArgument")
    # A key for an object that is not SSE-C.
    c.put_object(Bucket=b, Key="kms", Body=b"y")
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="kms", **ssec(key))
    assert error(e) == (400, "InvalidRequest")
    # Nothing was written by the refused requests; the object still reads with its key.
    assert "p" not in [o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]]
    assert c.get_object(Bucket=b, Key="o", **ssec(key))["Body"].read() == b"secret data"
    assert_not_logged(logs, key, other)


def test_plain_http_is_refused_unless_allowed(s3: S3Stack, logs: _Capture) -> None:
    t = s3.tenant()
    plain, tls = s3.client(t, https=False), s3.client(t)
    b = bucket_name()
    tls.create_bucket(Bucket=b)
    key = os.urandom(32)
    with pytest.raises(ClientError) as e:
        plain.put_object(Bucket=b, Key="o", Body=b"data", **ssec(key))
    assert error(e) == (400, "InvalidRequest")
    assert "secure connection" in e.value.response["Error"]["Message"]
    tls.put_object(Bucket=b, Key="o", Body=b"data", **ssec(key))
    with pytest.raises(ClientError) as e:
        plain.get_object(Bucket=b, Key="o", **ssec(key))
    assert error(e) == (400, "InvalidRequest")
    s3.proxy.allow_sse_c_over_http = True  # what `ssegw serve --allow-sse-c-over-http` sets
    plain.put_object(Bucket=b, Key="p", Body=b"over http", **ssec(key))
    assert plain.get_object(Bucket=b, Key="p", **ssec(key))["Body"].read() == b"over http"
    assert tls.get_object(Bucket=b, Key="o", **ssec(key))["Body"].read() == b"data"
    assert_not_logged(logs, key)


def test_serve_flag_reaches_the_proxy() -> None:
    import argparse

    from gateway.serve import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args([]).allow_sse_c_over_http is False
    assert p.parse_args(["--allow-sse-c-over-http"]).allow_sse_c_over_http is True


MiB = 1024 * 1024


def test_multipart_with_the_key_on_every_part(stack: tuple[S3Stack, Any, str], logs: _Capture) -> None:
    s3, c, b = stack
    key, other = os.urandom(32), os.urandom(32)
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(70_000)]
    up = c.create_multipart_upload(Bucket=b, Key="mp", **ssec(key))
    assert up["SSECustomerKeyMD5"] == md5_b64(key)
    uid = up["UploadId"]
    # A part without the key, or with another one, is refused and stores nothing.
    with pytest.raises(ClientError) as e:
        c.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=parts[0])
    assert error(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:  # S3's answer here: a part reads nothing, so no 403
        c.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=parts[0], **ssec(other))
    assert error(e) == (400, "InvalidRequest")
    assert "did not match the ones used originally" in e.value.response["Error"]["Message"]
    assert "Parts" not in c.list_parts(Bucket=b, Key="mp", UploadId=uid)
    etags = []
    for n, data in enumerate(parts, 1):
        r = c.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=n, Body=data, **ssec(key))
        assert r["SSECustomerKeyMD5"] == md5_b64(key)
        etags.append(r["ETag"])
    listed = c.list_parts(Bucket=b, Key="mp", UploadId=uid)["Parts"]
    assert [p["Size"] for p in listed] == [len(p) for p in parts]
    done_parts = {"Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, 1)]}
    # Complete with another key is refused; with the upload's key (or none) it completes.
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid, MultipartUpload=done_parts, **ssec(other))
    assert error(e) == (400, "InvalidRequest")
    done = c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid, MultipartUpload=done_parts, **ssec(key))
    # boto3 models no SSE-C fields on this answer: read the headers.
    assert done["ResponseMetadata"]["HTTPHeaders"]["x-amz-server-side-encryption-customer-key-md5"] == md5_b64(key)
    whole = b"".join(parts)
    assert c.get_object(Bucket=b, Key="mp", **ssec(key))["Body"].read() == whole
    assert c.head_object(Bucket=b, Key="mp", **ssec(key))["ContentLength"] == len(whole)
    start = 5 * MiB - 100
    r = c.get_object(Bucket=b, Key="mp", Range=f"bytes={start}-{start + 199}", **ssec(key))
    assert r["Body"].read() == whole[start:start + 200]
    assert c.get_object(Bucket=b, Key="mp", PartNumber=3, **ssec(key))["Body"].read() == parts[2]
    assert [o["Size"] for o in c.list_objects_v2(Bucket=b)["Contents"]] == [len(whole)]
    for bad in ({}, ssec(other)):
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=b, Key="mp", Range="bytes=0-9", **bad)
        assert error(e)[0] == (403 if bad else 400)
    # Without a key, Complete is refused (S3 asks for it only for some uploads; this proxy seals
    # the object's layout with the data key, format v3), and nothing is completed.
    up2 = c.create_multipart_upload(Bucket=b, Key="mp2", **ssec(key))["UploadId"]
    t = c.upload_part(Bucket=b, Key="mp2", UploadId=up2, PartNumber=1, Body=b"tail", **ssec(key))["ETag"]
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=b, Key="mp2", UploadId=up2,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t}]})
    assert error(e)[:2] == (400, "InvalidRequest")
    c.complete_multipart_upload(Bucket=b, Key="mp2", UploadId=up2,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t}]}, **ssec(key))
    assert c.get_object(Bucket=b, Key="mp2", **ssec(key))["Body"].read() == b"tail"
    assert_not_stored(s3, b, "mp", key, other)
    assert_not_logged(logs, key, other)


def test_boto3_transfer_manager(stack: tuple[S3Stack, Any, str], tmp_path: Any) -> None:
    from boto3.s3.transfer import TransferConfig

    s3, c, b = stack
    key = os.urandom(32)
    data = os.urandom(11 * MiB + 5)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    src = tmp_path / "in"
    src.write_bytes(data)
    c.upload_file(str(src), b, "big", ExtraArgs=ssec(key), Config=cfg)
    c.download_file(b, "big", str(tmp_path / "out"), ExtraArgs=ssec(key), Config=cfg)
    assert (tmp_path / "out").read_bytes() == data
    assert_not_stored(s3, b, "big", key)


def _kinds(s3: S3Stack, t: Any) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """name -> (PUT args, GET args, CopySource args) of each kind of encryption."""
    s3.kms.service.create_key(t.caller, alias="ssec-test")
    k1, k2 = os.urandom(32), os.urandom(32)
    return {
        "sse-s3": ({"ServerSideEncryption": "AES256"}, {}, {}),
        "sse-kms": ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/ssec-test"}, {}, {}),
        "sse-c-1": (ssec(k1), ssec(k1), copy_ssec(k1)),
        "sse-c-2": (ssec(k2), ssec(k2), copy_ssec(k2)),
    }


@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
def test_copy_in_every_direction(s3: S3Stack, multipart: bool, logs: _Capture) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    kinds = _kinds(s3, t)
    data = {}
    for name, (put, _, _) in kinds.items():
        if multipart:
            body = os.urandom(5 * MiB) + os.urandom(1000)
            uid = c.create_multipart_upload(Bucket=b, Key=name, **put)["UploadId"]
            get_args = kinds[name][1]
            etags = [c.upload_part(Bucket=b, Key=name, UploadId=uid, PartNumber=n, Body=piece, **get_args)["ETag"]
                     for n, piece in enumerate((body[:5 * MiB], body[5 * MiB:]), 1)]
            c.complete_multipart_upload(Bucket=b, Key=name, UploadId=uid, MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]}, **get_args)
        else:
            body = os.urandom(100_000)
            c.put_object(Bucket=b, Key=name, Body=body, **put)
        data[name] = body
    for src, (_, _, copy_src) in kinds.items():
        for dst, (put, get, _) in kinds.items():
            if src == dst:
                continue
            target = f"{src}-to-{dst}"
            r = c.copy_object(Bucket=b, Key=target, CopySource={"Bucket": b, "Key": src}, **copy_src, **put)
            if "SSECustomerAlgorithm" in put:
                assert r["SSECustomerKeyMD5"] == md5_b64(put["SSECustomerKey"]) and "ServerSideEncryption" not in r
            else:
                assert r["ServerSideEncryption"] == put["ServerSideEncryption"] and "SSECustomerKeyMD5" not in r
            assert c.get_object(Bucket=b, Key=target, **get)["Body"].read() == data[src], target
            if dst.startswith("sse-c"):
                # To SSE-C the data key is rewrapped and the backend copies the ciphertext as is.
                stored = [s3.backend.get_object(Bucket=b, Key=k)["Body"].read() for k in (src, target)]
                assert stored[0] == stored[1], target
            head = c.head_object(Bucket=b, Key=target, **get)
            assert head["ContentLength"] == len(data[src])
            if get:  # an SSE-C destination: no other key opens it, and no key at all is refused
                with pytest.raises(ClientError) as e:
                    c.get_object(Bucket=b, Key=target)
                assert error(e) == (400, "InvalidRequest")
                wrong = kinds["sse-c-2" if dst == "sse-c-1" else "sse-c-1"][1]
                with pytest.raises(ClientError) as e:
                    c.get_object(Bucket=b, Key=target, **wrong)
                assert error(e) == (403, "AccessDenied")
            else:
                assert "SSECustomerAlgorithm" not in head
    # An SSE-C source needs its own key: none, or the other one, copies nothing.
    for bad in ({}, copy_ssec(kinds["sse-c-2"][1]["SSECustomerKey"])):
        with pytest.raises(ClientError) as e:
            c.copy_object(Bucket=b, Key="nope", CopySource={"Bucket": b, "Key": "sse-c-1"}, **bad)
        assert error(e)[0] == (403 if bad else 400)
    # A copy-source key for a source that is not SSE-C.
    with pytest.raises(ClientError) as e:
        c.copy_object(Bucket=b, Key="nope", CopySource={"Bucket": b, "Key": "sse-s3"},
                      **copy_ssec(kinds["sse-c-1"][1]["SSECustomerKey"]))
    assert error(e) == (400, "InvalidRequest")
    assert "nope" not in [o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]]
    keys = [kinds[k][1]["SSECustomerKey"] for k in ("sse-c-1", "sse-c-2")]
    for o in c.list_objects_v2(Bucket=b)["Contents"]:
        assert_not_stored(s3, b, o["Key"], *keys)
    assert_not_logged(logs, *keys)


def test_change_of_key_in_place_and_rewrap(stack: tuple[S3Stack, Any, str]) -> None:
    from gateway.s3.rewrap import rewrap

    s3, c, b = stack
    k1, k2 = os.urandom(32), os.urandom(32)
    c.put_object(Bucket=b, Key="o", Body=b"rotate me", **ssec(k1))
    before = s3.backend.get_object(Bucket=b, Key="o")
    # A change of customer key rewraps the data key; the ciphertext is the backend's copy.
    c.copy_object(Bucket=b, Key="o", CopySource={"Bucket": b, "Key": "o"}, **copy_ssec(k1), **ssec(k2))
    after = s3.backend.get_object(Bucket=b, Key="o")
    assert after["Body"].read() == before["Body"].read()
    assert after["Metadata"]["ssegw-ssec"] != before["Metadata"]["ssegw-ssec"]
    assert c.get_object(Bucket=b, Key="o", **ssec(k2))["Body"].read() == b"rotate me"
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="o", **ssec(k1))
    assert error(e) == (403, "AccessDenied")
    # `ssegw s3 rewrap` leaves SSE-C objects alone (no CMK seals them) and says so.
    c.put_object(Bucket=b, Key="plain-kms", Body=b"x")
    with open(os.devnull, "w") as devnull:
        summary = rewrap(c, b, progress_out=devnull)
    assert summary.counts["customer-key"] == 1 and summary.counts["failed"] == 0, summary
    assert c.get_object(Bucket=b, Key="o", **ssec(k2))["Body"].read() == b"rotate me"


def test_upload_part_copy_between_kinds(stack: tuple[S3Stack, Any, str]) -> None:
    s3, c, b = stack
    k1, k2 = os.urandom(32), os.urandom(32)
    src = os.urandom(5 * MiB + 100)
    c.put_object(Bucket=b, Key="src", Body=src, **ssec(k1))
    c.put_object(Bucket=b, Key="kms", Body=b"kms tail")
    uid = c.create_multipart_upload(Bucket=b, Key="dst", **ssec(k2))["UploadId"]
    with pytest.raises(ClientError) as e:  # the source's key is missing
        c.upload_part_copy(Bucket=b, Key="dst", UploadId=uid, PartNumber=1,
                           CopySource={"Bucket": b, "Key": "src"}, **ssec(k2))
    assert error(e) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as e:  # the destination upload's key is missing
        c.upload_part_copy(Bucket=b, Key="dst", UploadId=uid, PartNumber=1,
                           CopySource={"Bucket": b, "Key": "src"}, **copy_ssec(k1))
    assert error(e) == (400, "InvalidRequest")
    p1 = c.upload_part_copy(Bucket=b, Key="dst", UploadId=uid, PartNumber=1, CopySource={"Bucket": b, "Key": "src"},
                            CopySourceRange=f"bytes=0-{5 * MiB - 1}", **copy_ssec(k1), **ssec(k2))
    assert p1["SSECustomerKeyMD5"] == md5_b64(k2)
    p2 = c.upload_part_copy(Bucket=b, Key="dst", UploadId=uid, PartNumber=2, CopySource={"Bucket": b, "Key": "kms"},
                            **ssec(k2))
    c.complete_multipart_upload(Bucket=b, Key="dst", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]}, **ssec(k2))
    assert c.get_object(Bucket=b, Key="dst", **ssec(k2))["Body"].read() == src[:5 * MiB] + b"kms tail"
    # And from an SSE-C source into an SSE-KMS upload.
    uid = c.create_multipart_upload(Bucket=b, Key="dst2", ServerSideEncryption="aws:kms")["UploadId"]
    p = c.upload_part_copy(Bucket=b, Key="dst2", UploadId=uid, PartNumber=1, CopySource={"Bucket": b, "Key": "src"},
                           **copy_ssec(k1))
    c.complete_multipart_upload(Bucket=b, Key="dst2", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p["CopyPartResult"]["ETag"]}]})
    assert c.get_object(Bucket=b, Key="dst2")["Body"].read() == src
    assert_not_stored(s3, b, "dst", k1, k2)


def test_ssegw_serve_with_allow_sse_c_over_http(moto_url: str, tmp_path: Any) -> None:
    """The flag as a user gives it: a real `ssegw serve` on plain HTTP takes SSE-C."""
    import boto3

    from tests.serving import start, stop

    served = start(tmp_path / "var", "--backend-url", moto_url, "--backend-access-key", "k",
                   "--backend-secret-key", "s", "--allow-sse-c-over-http", backend=None)
    try:
        creds = served.credentials
        c = boto3.client("s3", endpoint_url=served.s3_url, region_name=creds["AWS_DEFAULT_REGION"],
                         aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        b = bucket_name()
        c.create_bucket(Bucket=b)
        key = os.urandom(32)
        c.put_object(Bucket=b, Key="o", Body=b"over plain http", **ssec(key))
        assert c.get_object(Bucket=b, Key="o", **ssec(key))["Body"].read() == b"over plain http"
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=b, Key="o")
        assert error(e) == (400, "InvalidRequest")
    finally:
        stop(served, timeout=30)


def test_tls_terminated_in_front_on_the_same_host(s3: S3Stack) -> None:
    """Behind a TLS-terminating proxy on loopback (HAProxy), its X-Forwarded-Proto counts: uvicorn
    trusts forwarded headers from 127.0.0.1 only (FORWARDED_ALLOW_IPS)."""
    t = s3.tenant()
    c = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)

    def forwarded(request: Any, **_: Any) -> None:
        request.headers["X-Forwarded-Proto"] = "https"

    c.meta.events.register("before-send.s3.*", forwarded)
    key = os.urandom(32)
    c.put_object(Bucket=b, Key="o", Body=b"via a local TLS terminator", **ssec(key))
    assert c.get_object(Bucket=b, Key="o", **ssec(key))["Body"].read() == b"via a local TLS terminator"


def test_tampered_binding_serves_no_byte(stack: tuple[S3Stack, Any, str]) -> None:
    """Storage access that moves or alters the binding gets errors with the right key, never data."""
    s3, c, b = stack
    key = os.urandom(32)
    c.put_object(Bucket=b, Key="a", Body=b"PLAINTEXT-A", **ssec(key))
    c.put_object(Bucket=b, Key="b", Body=b"PLAINTEXT-B", **ssec(key))
    meta_a = s3.backend.head_object(Bucket=b, Key="a")["Metadata"]
    meta_b = s3.backend.head_object(Bucket=b, Key="b")["Metadata"]

    def rewrite(meta: dict[str, str]) -> None:
        s3.backend.copy_object(Bucket=b, Key="b", CopySource={"Bucket": b, "Key": "b"},
                               Metadata=meta, MetadataDirective="REPLACE")

    moved = {**meta_b, "ssegw-key": meta_a["ssegw-key"], "ssegw-ssec": meta_a["ssegw-ssec"]}
    garbage = {**meta_b, "ssegw-ssec": base64.b64encode(b"\x01" + bytes(48)).decode()}
    dropped = {k: v for k, v in meta_b.items() if k != "ssegw-ssec"}
    for meta, status in ((moved, 500), (garbage, 403), (dropped, 500)):
        rewrite(meta)
        with pytest.raises(ClientError) as e:
            c.get_object(Bucket=b, Key="b", **ssec(key))
        assert error(e)[0] == status, meta
        assert b"PLAINTEXT" not in repr(e.value.response).encode()
    rewrite(meta_b)
    assert c.get_object(Bucket=b, Key="b", **ssec(key))["Body"].read() == b"PLAINTEXT-B"
    # Deleting needs no key, as on S3.
    c.delete_object(Bucket=b, Key="b")
    assert [o["Key"] for o in c.list_objects_v2(Bucket=b)["Contents"]] == ["a"]


def test_versions_keep_their_own_keys(stack: tuple[S3Stack, Any, str]) -> None:
    s3, c, b = stack
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    k1, k2 = os.urandom(32), os.urandom(32)
    v1 = c.put_object(Bucket=b, Key="o", Body=b"first", **ssec(k1))["VersionId"]
    v2 = c.put_object(Bucket=b, Key="o", Body=b"second", **ssec(k2))["VersionId"]
    assert c.get_object(Bucket=b, Key="o", VersionId=v1, **ssec(k1))["Body"].read() == b"first"
    assert c.get_object(Bucket=b, Key="o", **ssec(k2))["Body"].read() == b"second"
    assert c.head_object(Bucket=b, Key="o", VersionId=v1, **ssec(k1))["ContentLength"] == 5
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="o", VersionId=v1, **ssec(k2))
    assert error(e) == (403, "AccessDenied")
    # An older version as copy source, to SSE-KMS.
    c.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "o", "VersionId": v1}, **copy_ssec(k1),
                  ServerSideEncryption="aws:kms")
    assert c.get_object(Bucket=b, Key="copy")["Body"].read() == b"first"
    sizes = {(v["VersionId"], v["Size"]) for v in c.list_object_versions(Bucket=b, Prefix="o")["Versions"]}
    assert sizes == {(v1, 5), (v2, 6)}
