"""The checksum of a streamed object that is known only at its end (an aws-chunked trailer, as
the AWS SDKs send every PutObject over HTTPS, S3's default CRC64NVME, or one a copy computes),
kept in the object's `ssegw-manifest` tag once the backend stored it (envelope.py,
CHECKSUM_IN_TAG).

S3 keeps a PutObject's checksum whatever its size and wherever it came: HEAD and GET with
`x-amz-checksum-mode: ENABLED` and GetObjectAttributes give it back (FULL_OBJECT), and the
client's tags are its own (the gateway's tag is never shown, counted or replaced).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateway.s3.checksum_refs import assert_kept, composite_of, shown, value_of
from tests.gateway.s3.conftest import MiB, S3Stack, bucket_name, proxy_in_front_of, upload

BIG = 16 * MiB + 1  # above the proxy's buffering limit: the body streams, its trailer comes last


def _tags(c: Any, b: str, key: str, **version: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in c.get_object_tagging(Bucket=b, Key=key, **version)["TagSet"]}


@pytest.mark.every_store
def test_a_streamed_puts_trailer_checksum_is_kept_and_its_tag_never_shown(s3: S3Stack) -> None:
    c = s3.client(s3.tenant())  # HTTPS: botocore sends the checksum in the aws-chunked trailer
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = os.urandom(BIG)
    want = {"ChecksumSHA256": value_of("SHA256", body)}
    assert shown(c.put_object(Bucket=b, Key="big", Body=body, ChecksumAlgorithm="SHA256",
                              Tagging="colour=blue&size=big")) == want
    assert_kept(c, b, "big", want, body)
    # In the backend: the metadata says where the checksum is, the tag holds it sealed.
    assert s3.backend.head_object(Bucket=b, Key="big")["Metadata"]["ssegw-cks"] == "tag"
    stored = _tags(s3.backend, b, "big")
    assert set(stored) == {"colour", "size", "ssegw-manifest"}
    assert want["ChecksumSHA256"] not in stored["ssegw-manifest"]
    # The client's tags are its own: shown, counted, replaced and removed without the gateway's.
    assert _tags(c, b, "big") == {"colour": "blue", "size": "big"}
    assert c.head_object(Bucket=b, Key="big")["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    nine = {f"k{i}": str(i) for i in range(9)}
    c.put_object_tagging(Bucket=b, Key="big", Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in nine.items()]})
    assert _tags(c, b, "big") == nine
    with pytest.raises(ClientError) as e:
        c.put_object_tagging(Bucket=b, Key="big", Tagging={"TagSet": [
            {"Key": f"k{i}", "Value": "v"} for i in range(10)]})
    assert e.value.response["Error"]["Code"] == "BadRequest"
    c.delete_object_tagging(Bucket=b, Key="big")
    assert _tags(c, b, "big") == {}
    assert "x-amz-tagging-count" not in c.head_object(Bucket=b, Key="big")["ResponseMetadata"]["HTTPHeaders"]
    assert_kept(c, b, "big", want, body)


def test_with_ten_tags_of_the_clients_the_checksum_is_answered_notassert_kept(s3: S3Stack) -> None:
    # S3's ten tags leave none for the gateway's: the object and its tags are stored as asked.
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = os.urandom(BIG)
    ten = "&".join(f"k{i}={i}" for i in range(10))
    assert shown(c.put_object(Bucket=b, Key="k", Body=body, ChecksumAlgorithm="CRC32", Tagging=ten)) == {
        "ChecksumCRC32": value_of("CRC32", body)}
    assert shown(c.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")) == {}
    assert len(_tags(c, b, "k")) == 10 and c.get_object(Bucket=b, Key="k")["Body"].read() == body


@pytest.mark.every_store
def test_each_version_keeps_its_own_checksum(s3: S3Stack) -> None:
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    bodies = [os.urandom(BIG), os.urandom(BIG)]
    versions = [c.put_object(Bucket=b, Key="k", Body=body, ChecksumAlgorithm="CRC32C")["VersionId"]
                for body in bodies]
    for version, body in zip(versions, bodies, strict=True):
        assert_kept(c, b, "k", {"ChecksumCRC32C": value_of("CRC32C", body)}, body, VersionId=version)


def test_copies_keep_the_checksum(s3: S3Stack) -> None:
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = os.urandom(BIG)
    want = {"ChecksumSHA1": value_of("SHA1", body)}
    c.put_object(Bucket=b, Key="src", Body=body, ChecksumAlgorithm="SHA1", Tagging="a=1")
    # A backend copy (re-keyed, same bytes) does not get the source's tag: its metadata keeps
    # the checksum sealed; its tags are the source's (the tagging directive's default).
    assert shown(c.copy_object(Bucket=b, Key="copy", CopySource={"Bucket": b, "Key": "src"})["CopyObjectResult"]) \
        == want
    assert s3.backend.head_object(Bucket=b, Key="copy")["Metadata"]["ssegw-cks"] not in ("tag", "")
    assert _tags(s3.backend, b, "copy") == {"a": "1"}
    assert_kept(c, b, "copy", want, body)
    # A copy that re-encrypts (to an SM4 key) seals the checksum it was given.
    sm4 = s3.kms.service.create_key(t.caller, spec="SM4").key_id
    c.copy_object(Bucket=b, Key="sm4", CopySource={"Bucket": b, "Key": "src"}, ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=sm4)
    assert_kept(c, b, "sm4", want, body)


def test_a_copy_that_computes_the_checksum_keeps_it(s3: S3Stack) -> None:
    # A COMPOSITE multipart checksum (of parts a copy does not have) becomes the copy's
    # FULL_OBJECT checksum of that algorithm, computed as the copy streams: known at its end.
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB) for _ in range(3)] + [os.urandom(2 * MiB)]
    upload(c, b, "mp", parts, ChecksumAlgorithm="SHA256")
    assert shown(c.head_object(Bucket=b, Key="mp", ChecksumMode="ENABLED")) == {
        "ChecksumSHA256": composite_of("SHA256", parts)}
    sm4 = s3.kms.service.create_key(t.caller, spec="SM4").key_id
    c.copy_object(Bucket=b, Key="flat", CopySource={"Bucket": b, "Key": "mp"}, ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=sm4)
    whole = b"".join(parts)
    assert_kept(c, b, "flat", {"ChecksumSHA256": value_of("SHA256", whole)}, whole)


@pytest.mark.every_store
def test_a_tag_from_elsewhere_or_none_hides_the_checksum_and_never_shows_another(s3: S3Stack) -> None:
    # Someone who can write the backend's tags (or a PUT of the same name racing this one's
    # tagging) can take the checksum away; another object's sealed checksum does not open
    # under this object's data key, so it is never shown, and the object still reads.
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    bodies = {key: os.urandom(BIG) for key in ("a", "b")}
    for key, body in bodies.items():
        c.put_object(Bucket=b, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    foreign = value_of("SHA256", bodies["a"])
    s3.backend.put_object_tagging(Bucket=b, Key="b", Tagging={
        "TagSet": s3.backend.get_object_tagging(Bucket=b, Key="a")["TagSet"]})
    head = c.head_object(Bucket=b, Key="b", ChecksumMode="ENABLED")
    assert shown(head) == {} and foreign not in str(head)
    assert c.get_object(Bucket=b, Key="b", ChecksumMode="ENABLED")["Body"].read() == bodies["b"]
    s3.backend.delete_object_tagging(Bucket=b, Key="b")
    assert shown(c.head_object(Bucket=b, Key="b", ChecksumMode="ENABLED")) == {}
    assert_kept(c, b, "a", {"ChecksumSHA256": foreign}, bodies["a"])  # untouched


def test_while_upgrading_the_checksum_is_answered_not_tagged(s3: S3Stack, tls_cert: tuple[Path, Path]) -> None:
    # The previous release reads `ssegw-cks: tag` as a damaged checksum: while it still
    # serves (SSEGW_UPGRADING), such a checksum is not kept, as that release did.
    with proxy_in_front_of(s3.store, s3.kms, tls_cert, upgrading=True) as upgrading:
        t = s3.tenant()
        during = upgrading.client(t)
        b = bucket_name()
        during.create_bucket(Bucket=b)
        body = os.urandom(BIG)
        assert shown(during.put_object(Bucket=b, Key="k", Body=body, ChecksumAlgorithm="CRC32")) == {
            "ChecksumCRC32": value_of("CRC32", body)}
        assert "ssegw-cks" not in s3.backend.head_object(Bucket=b, Key="k")["Metadata"]
        assert _tags(s3.backend, b, "k") == {}
        assert shown(s3.client(t).head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")) == {}
