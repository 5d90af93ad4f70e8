"""S3's default checksum (since 2025): an object stored without a checksum of the client's gets
a CRC64NVME of its whole plaintext (FULL_OBJECT), computed by S3 (here, by the proxy: the
backend only sees ciphertext), answered and given back like one the client sent. A multipart
upload that declared no algorithm gets each part's CRC64NVME computed and the object's combined
from them at completion; the client sends none of them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateway.s3.checksum_refs import assert_kept, shown, value_of
from tests.gateway.s3.conftest import MiB, S3Stack, bucket_name, signed_request

BIG = 16 * MiB + 1  # above the proxy's buffering limit: the body streams


def _client_and_bucket(s3: S3Stack) -> tuple[Any, str]:
    # request_checksum_calculation="when_required": botocore then sends no checksum of its own
    c = s3.client(s3.tenant(), request_checksum_calculation="when_required")
    b = bucket_name()
    c.create_bucket(Bucket=b)
    return c, b


@pytest.mark.every_store
@pytest.mark.parametrize("size", [1000, BIG], ids=["buffered", "streamed"])
def test_a_put_without_a_checksum_gets_s3s_default_crc64nvme(s3: S3Stack, size: int) -> None:
    t = s3.tenant()
    c = s3.client(t, request_checksum_calculation="when_required")
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = os.urandom(size)
    want = {"ChecksumCRC64NVME": value_of("CRC64NVME", body)}
    put = c.put_object(Bucket=b, Key="k", Body=body)
    assert (shown(put), put.get("ChecksumType")) == (want, "FULL_OBJECT")
    assert_kept(c, b, "k", want, body)
    # Plain SigV4 with only Content-MD5, as older clients send: the same.
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = signed_request(s3, t, "PUT", f"/{b}/md5", headers={"content-md5": md5}, body=body)
    assert r.status == 200 and r.headers["x-amz-checksum-crc64nvme"] == want["ChecksumCRC64NVME"]
    assert_kept(c, b, "md5", want, body)


@pytest.mark.every_store
def test_an_upload_that_declared_no_checksum_gets_a_full_object_crc64nvme(s3: S3Stack) -> None:
    c, b = _client_and_bucket(s3)
    source = os.urandom(3000)
    c.put_object(Bucket=b, Key="source", Body=source)
    parts = [os.urandom(5 * MiB + 7), source[1000:2000]]
    up = c.create_multipart_upload(Bucket=b, Key="mp")
    assert "ChecksumAlgorithm" not in up
    first = c.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=parts[0])
    assert shown(first) == {"ChecksumCRC64NVME": value_of("CRC64NVME", parts[0])}
    second = c.upload_part_copy(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=2,
                                CopySource={"Bucket": b, "Key": "source"}, CopySourceRange="bytes=1000-1999")
    done = c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]}]})
    whole = b"".join(parts)
    want = {"ChecksumCRC64NVME": value_of("CRC64NVME", whole)}
    assert (shown(done), done.get("ChecksumType")) == (want, "FULL_OBJECT")
    assert_kept(c, b, "mp", want, whole)


def test_parts_sent_with_a_checksum_of_their_own_leave_the_object_none_of_the_default(s3: S3Stack) -> None:
    # An upload that declared nothing, its parts sent with CRC32s the client chose: the parts'
    # checksums are answered, the object gets no CRC64NVME made up from CRC32s.
    c, b = _client_and_bucket(s3)
    data = os.urandom(1000)
    up = c.create_multipart_upload(Bucket=b, Key="mp")
    part = c.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=data,
                         ChecksumCRC32=value_of("CRC32", data))
    assert shown(part) == {"ChecksumCRC32": value_of("CRC32", data)}
    done = c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": part["ETag"]}]})
    assert shown(done) == {} and shown(c.head_object(Bucket=b, Key="mp", ChecksumMode="ENABLED")) == {}


def test_complete_checks_a_whole_object_crc64nvme_the_client_sends(s3: S3Stack) -> None:
    # A client that computed the whole object's CRC64NVME itself may send it with Complete:
    # checked against the default (BadDigest, and the upload stays), as a declared one is.
    c, b = _client_and_bucket(s3)
    data = os.urandom(2000)
    up = c.create_multipart_upload(Bucket=b, Key="mp")
    part = c.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=data)
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    wrong = value_of("CRC64NVME", data[::-1])
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload=parts,
                                    ChecksumCRC64NVME=wrong)
    assert e.value.response["Error"]["Code"] == "BadDigest"
    done = c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"], MultipartUpload=parts,
                                       ChecksumCRC64NVME=value_of("CRC64NVME", data))
    assert shown(done) == {"ChecksumCRC64NVME": value_of("CRC64NVME", data)}
