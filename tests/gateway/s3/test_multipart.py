"""Multipart uploads through the proxy with boto3: parts, layouts, ranges, partNumber, listing."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.s3.multipart import decode_token
from tests.gateway.s3.conftest import MiB, S3Stack, bucket_name, proxy_in_front_of, upload

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS

def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_odd_part_sizes_round_trip_and_list(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    parts = [os.urandom(5 * MiB + 7), os.urandom(5 * MiB + 7), os.urandom(5 * MiB + 7), os.urandom(12345)]
    data = b"".join(parts)
    done = upload(c, b, "mp", parts, Metadata={"who": "me"}, ContentType="video/mp4")
    assert done["ETag"].endswith('-4"') and done["ServerSideEncryption"] == "AES256"
    got = c.get_object(Bucket=b, Key="mp")
    assert got["ContentLength"] == len(data) and got["Body"].read() == data
    assert got["Metadata"] == {"who": "me"} and got["ContentType"] == "video/mp4"
    head = c.head_object(Bucket=b, Key="mp")
    assert head["ContentLength"] == len(data) and head["ETag"] == done["ETag"]
    listed = c.list_objects_v2(Bucket=b)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("mp", len(data))]
    stored = s3.backend.get_object(Bucket=b, Key="mp")["Body"].read()
    assert parts[0][:4096] not in stored and len(stored) > len(data)
    for n, part in enumerate(parts, 1):
        p = c.get_object(Bucket=b, Key="mp", PartNumber=n)
        assert p["PartsCount"] == 4 and p["Body"].read() == part
        h = c.head_object(Bucket=b, Key="mp", PartNumber=n)
        assert h["ContentLength"] == len(part) and h["PartsCount"] == 4
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="mp", PartNumber=5)
    assert code(e) == "InvalidPartNumber"
    boundary = 5 * MiB + 7
    for start, end in [(0, 0), (boundary - 10, boundary + 10), (boundary - 1, boundary),
                       (3 * boundary - 5, len(data) - 1), (100, 3 * boundary + 100), (len(data) - 1, len(data) - 1)]:
        r = c.get_object(Bucket=b, Key="mp", Range=f"bytes={start}-{end}")["Body"].read()
        assert r == data[start:end + 1], (start, end)


def test_single_part_objects_answer_part_one(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_object(Bucket=b, Key="small", Body=b"hello")
    p = c.get_object(Bucket=b, Key="small", PartNumber=1)
    assert p["Body"].read() == b"hello" and p["PartsCount"] == 1
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key="small", PartNumber=2)
    assert code(e) == "InvalidPartNumber"
    upload(c, b, "one", [b"just one part"])
    assert c.get_object(Bucket=b, Key="one")["Body"].read() == b"just one part"
    assert c.head_object(Bucket=b, Key="one")["ContentLength"] == 13



@pytest.fixture
def odd(s3: S3Stack) -> tuple[Any, str, bytes]:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    # Parts of different sizes: readers cannot guess the layout and ask for every part.
    parts = [os.urandom(5 * MiB + 3), os.urandom(6 * MiB + 65536 + 1), os.urandom(5 * MiB), os.urandom(70000)]
    upload(c, b, "odd", parts)
    return c, b, b"".join(parts)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_ranges_across_odd_parts(odd: tuple[Any, str, bytes], data: st.DataObject) -> None:
    c, b, body = odd
    start = data.draw(st.integers(0, len(body) - 1))
    end = data.draw(st.integers(start, min(len(body) + 10, start + 3 * MiB)))
    got = c.get_object(Bucket=b, Key="odd", Range=f"bytes={start}-{end}")["Body"].read()
    assert got == body[start:end + 1]


def test_odd_layout_is_discovered_by_a_fresh_proxy(odd: tuple[Any, str, bytes], s3: S3Stack) -> None:
    c, b, body = odd
    s3.proxy.reader._layouts.clear()  # as another proxy node would start: no cached layout
    s3.proxy.listing.forget_all()
    assert c.head_object(Bucket=b, Key="odd")["ContentLength"] == len(body)
    assert c.list_objects_v2(Bucket=b)["Contents"][0]["Size"] == len(body)
    assert c.get_object(Bucket=b, Key="odd", PartNumber=2)["Body"].read() == body[5 * MiB + 3:11 * MiB + 65539 + 1]
    assert hashlib.sha256(c.get_object(Bucket=b, Key="odd")["Body"].read()).digest() == hashlib.sha256(body).digest()


def test_completion_rules(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)

    def parts_of(sizes: list[int], numbers: list[int] | None = None) -> tuple[str, list[dict[str, Any]]]:
        up = c.create_multipart_upload(Bucket=b, Key="k")["UploadId"]
        done = []
        for n, size in zip(numbers or range(1, len(sizes) + 1), sizes, strict=True):
            r = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=n, Body=b"z" * size)
            done.append({"PartNumber": n, "ETag": r["ETag"]})
        return up, done

    for sizes, numbers, expected in [
        ([MiB, MiB], None, "EntityTooSmall"),
        ([5 * MiB, 100], [1, 3], "InvalidPart"),  # a gap
    ]:
        up, done = parts_of(sizes, numbers)
        with pytest.raises(ClientError) as e:
            c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done})
        assert code(e) == expected, sizes
        c.abort_multipart_upload(Bucket=b, Key="k", UploadId=up)
    up, done = parts_of([5 * MiB, 10])
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done[::-1]})
    assert code(e) == "InvalidPartOrder"
    assert "Contents" not in c.list_objects_v2(Bucket=b)
    # Middle parts that differ while part 1, the last part and the total look uniform: v2
    # refused them (readers guessed layouts); v3 records the layout, so they complete.
    sizes = [6 * MiB, 6 * MiB + 65536, 6 * MiB - 65536, 10]
    up, done = parts_of(sizes)
    c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done})
    assert c.get_object(Bucket=b, Key="k", Range=f"bytes={6 * MiB - 5}-{12 * MiB + 70000}")["Body"].read() \
        == b"z" * (6 * MiB + 70006)
    assert c.head_object(Bucket=b, Key="k", PartNumber=3)["ContentLength"] == 6 * MiB - 65536


def test_list_abort_and_upload_ids(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="dir/file")["UploadId"]
    c.upload_part(Bucket=b, Key="dir/file", UploadId=up, PartNumber=1, Body=b"a" * (5 * MiB + 1))
    c.upload_part(Bucket=b, Key="dir/file", UploadId=up, PartNumber=2, Body=b"bb")
    listed = c.list_parts(Bucket=b, Key="dir/file", UploadId=up)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MiB + 1), (2, 2)]
    assert listed["UploadId"] == up
    uploads = c.list_multipart_uploads(Bucket=b)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("dir/file", up)]  # listed ids go on uploading
    bare = s3.backend.list_multipart_uploads(Bucket=b)["Uploads"][0]["UploadId"]  # the backend's own
    assert c.list_parts(Bucket=b, Key="dir/file", UploadId=bare)["Parts"][1]["Size"] == 2
    c.upload_part(Bucket=b, Key="dir/file", UploadId=bare, PartNumber=3, Body=b"x")  # found in the state
    tampered = up[:-6] + ("AAAAAA" if not up.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(ClientError) as e:
        c.upload_part(Bucket=b, Key="dir/file", UploadId=tampered, PartNumber=3, Body=b"x")
    assert code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:  # an upload id is bound to its key
        c.upload_part(Bucket=b, Key="other", UploadId=up, PartNumber=3, Body=b"x")
    assert code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        c.upload_part(Bucket=b, Key="dir/file", UploadId=up, PartNumber=3, Body=b"x",
                      ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert code(e) == "BadDigest"
    assert len(c.list_parts(Bucket=b, Key="dir/file", UploadId=up)["Parts"]) == 3
    other: Any = s3.client(s3.tenant())
    with pytest.raises(ClientError) as e:
        other.upload_part(Bucket=b, Key="dir/file", UploadId=up, PartNumber=3, Body=b"x")
    assert code(e) == "AccessDenied"
    c.abort_multipart_upload(Bucket=b, Key="dir/file", UploadId=bare)
    assert "Uploads" not in c.list_multipart_uploads(Bucket=b)


def test_upload_part_copy_and_sm4(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    source = os.urandom(7 * MiB + 11)
    c.put_object(Bucket=b, Key="src", Body=source)
    sm4 = s3.kms.service.create_key(t.caller, spec="SM4").key_id
    up = c.create_multipart_upload(Bucket=b, Key="dst", ServerSideEncryption="aws:kms", SSEKMSKeyId=sm4)
    p1 = c.upload_part_copy(Bucket=b, Key="dst", UploadId=up["UploadId"], PartNumber=1,
                            CopySource={"Bucket": b, "Key": "src"}, CopySourceRange=f"bytes=0-{5 * MiB}")
    p2 = c.upload_part(Bucket=b, Key="dst", UploadId=up["UploadId"], PartNumber=2, Body=b"tail")
    # SSE-KMS: the copied part's ETag is the sealed part's, not a plaintext MD5.
    listed = c.list_parts(Bucket=b, Key="dst", UploadId=up["UploadId"])["Parts"]
    assert [p1["CopyPartResult"]["ETag"], p2["ETag"]] == [p["ETag"] for p in listed]
    assert p1["CopyPartResult"]["ETag"] != f'"{hashlib.md5(source[:5 * MiB + 1]).hexdigest()}"'
    c.complete_multipart_upload(Bucket=b, Key="dst", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    got = c.get_object(Bucket=b, Key="dst")
    assert got["Body"].read() == source[:5 * MiB + 1] + b"tail"
    assert got["SSEKMSKeyId"].endswith(sm4)
    assert s3.backend.head_object(Bucket=b, Key="dst")["Metadata"]["ssegw-alg"] == "SM4GCM"


def test_sealed_parts_go_with_their_crc32_and_clients_see_only_their_own_checksums(s3: S3Stack) -> None:
    # The backend upload declares CRC32 and each sealed part goes with the CRC32 of its sealed
    # bytes (the backend checks it on arrival); Complete repeats them from the proxy's records
    # (SeaweedFS's ListParts lists none). None of it reaches the client: its listings show the
    # checksum it declared (CRC32C here) or none, with its plaintext's values.
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    declared = c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32C")
    plain = c.create_multipart_upload(Bucket=b, Key="plain")
    parts = [os.urandom(5 * MiB), os.urandom(77)]
    for n, data in enumerate(parts, 1):
        c.upload_part(Bucket=b, Key="k", UploadId=declared["UploadId"], PartNumber=n, Body=data,
                      ChecksumAlgorithm="CRC32C")
        c.upload_part(Bucket=b, Key="plain", UploadId=plain["UploadId"], PartNumber=n, Body=data)
    at_backend = {u["Key"]: u for u in s3.backend.list_multipart_uploads(Bucket=b)["Uploads"]}
    # One record per part (salt, checksums and the SSE-S3 MD5 together): one small PUT each.
    records = {kind: s3.backend.list_objects_v2(Bucket=s3.proxy.state_bucket, Prefix=f"{kind}/{b}/").get("Contents", [])
               for kind in ("salts", "parts")}
    assert len(records["salts"]) == 4 and records["parts"] == [], records
    if s3.store.name == "moto":  # SeaweedFS (4.48) lists no algorithm
        assert {u.get("ChecksumAlgorithm") for u in at_backend.values()} == {"CRC32"}
    listed = {u["Key"]: u for u in c.list_multipart_uploads(Bucket=b)["Uploads"]}
    assert listed["k"]["UploadId"] == declared["UploadId"] and listed["k"]["ChecksumAlgorithm"] == "CRC32C"
    assert not any(k.startswith("Checksum") for k in listed["plain"])
    for key, up in (("k", declared), ("plain", plain)):
        mine = c.list_parts(Bucket=b, Key=key, UploadId=up["UploadId"])
        assert [p["Size"] for p in mine["Parts"]] == [len(p) for p in parts]
        assert not any(k.startswith("ChecksumCRC32") and not k.startswith("ChecksumCRC32C")
                       for p in mine["Parts"] for k in p)
        assert all(("ChecksumCRC32C" in p) == (key == "k") for p in mine["Parts"])
        done = [{k: v for k, v in p.items() if k in ("PartNumber", "ETag", "ChecksumCRC32C")}
                for p in mine["Parts"]]
        c.complete_multipart_upload(Bucket=b, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": done})
        assert c.get_object(Bucket=b, Key=key)["Body"].read() == b"".join(parts)
        head = c.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
        assert "ChecksumCRC32" not in head and ("ChecksumCRC32C" in head) == (key == "k")
        if s3.store.name == "moto":  # the stored object's checksum: CRC32 (of the sealed parts)
            stored = s3.backend.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
            assert "ChecksumCRC32" in stored and "ChecksumCRC64NVME" not in stored
    # Listings carry no per-object metadata, so no checksum algorithm (moto lists the backend's).
    if s3.store.name == "moto":
        assert all(o.get("ChecksumAlgorithm") == ["CRC32"] for o in s3.backend.list_objects_v2(Bucket=b)["Contents"])
    entries = (c.list_objects_v2(Bucket=b)["Contents"] + c.list_objects(Bucket=b)["Contents"]
               + c.list_object_versions(Bucket=b)["Versions"])
    assert len(entries) == 6 and not any(k.startswith("Checksum") for e in entries for k in e), entries


def test_while_upgrading_uploads_are_made_and_recorded_as_the_previous_release_did(
        s3: S3Stack, tls_cert: tuple[Path, Path]) -> None:
    # SSEGW_UPGRADING, set while nodes of the previous release still serve: an upload's
    # UploadId has no 13th field (that release refuses it), its backend upload declares no
    # algorithm (that release sends plain parts), and each part's records are that release's
    # (the MD5 apart, the salt record as it wrote it). The new release completes it as well,
    # also with a part taken after the setting was dropped.
    with proxy_in_front_of(s3.store, s3.kms, tls_cert, upgrading=True) as upgrading:
        t = s3.tenant()
        c, during = s3.client(t), upgrading.client(t)
        b = bucket_name()
        c.create_bucket(Bucket=b)
        parts = [os.urandom(5 * MiB + 1), os.urandom(99)]
        up = during.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32")
        assert decode_token(up["UploadId"]).backend_checksum is None
        first = during.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=1, Body=parts[0],
                                   ChecksumAlgorithm="CRC32")
        records = {kind: [o["Key"].rsplit("/", 1)[1] for o in s3.backend.list_objects_v2(
            Bucket=s3.proxy.state_bucket, Prefix=f"{kind}/{b}/").get("Contents", [])] for kind in ("salts", "parts")}
        assert records["parts"] == [hashlib.md5(parts[0]).hexdigest()]
        assert len(records["salts"]) == 1 and re.fullmatch(r"[0-9a-f]{32}~CRC32~[^~]+", records["salts"][0])
        second = c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=2, Body=parts[1],
                               ChecksumAlgorithm="CRC32")
        done = [{"PartNumber": n, "ETag": p["ETag"], "ChecksumCRC32": p["ChecksumCRC32"]}
                for n, p in ((1, first), (2, second))]
        c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up["UploadId"], MultipartUpload={"Parts": done})
        assert during.get_object(Bucket=b, Key="k")["Body"].read() == b"".join(parts)
        assert c.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")["ChecksumCRC32"].endswith("-2")


# moto (5.x) reads aws-chunked bodies without checking their trailer; SeaweedFS, like S3, checks it.
@pytest.mark.only_store("seaweedfs")
def test_a_part_damaged_on_its_way_to_the_backend_is_refused_then_sent_again(
        s3: S3Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # One byte of a sealed part changed after its CRC32 was computed (what a bad NIC or a
    # meddling middlebox does on the way to the backend): the backend refuses the part, the
    # client gets a 400 and no part is recorded or listed; sent again, the part completes the
    # upload and reads back.
    damaged: list[int] = []

    async def damaging(body: Any, errors: list[BaseException]) -> Any:
        async for chunk in recording(body, errors):
            if not damaged and len(chunk) > 4096:
                damaged.append(len(chunk))
                flipped = bytearray(chunk)
                flipped[4000] ^= 0x01
                chunk = bytes(flipped)
            yield chunk

    import gateway.s3.backend as backend_module
    recording = backend_module._recording
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="k")
    data = os.urandom(5 * MiB + 9)
    monkeypatch.setattr(backend_module, "_recording", damaging)
    with pytest.raises(ClientError) as e:
        c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=1, Body=data)
    monkeypatch.undo()
    assert damaged, "nothing was damaged"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert c.list_parts(Bucket=b, Key="k", UploadId=up["UploadId"]).get("Parts", []) == []
    part = c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=1, Body=data)
    c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up["UploadId"],
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == data


def test_part_etags_follow_the_upload_s_encryption(s3: S3Stack) -> None:
    # SSE-S3 parts get the plaintext MD5 (upload() checks it; s3cmd does too). SSE-KMS parts
    # get an opaque ETag, as in S3: the sealed part's, the one ListParts shows. A wrong
    # Content-MD5 is refused either way, and the upload still completes and reads back.
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="k", ServerSideEncryption="aws:kms")
    data = os.urandom(5 * MiB + 3)
    r = c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=1, Body=data)
    assert r["ServerSideEncryption"] == "aws:kms"
    assert r["ETag"] != f'"{hashlib.md5(data).hexdigest()}"'
    assert [p["ETag"] for p in c.list_parts(Bucket=b, Key="k", UploadId=up["UploadId"])["Parts"]] == [r["ETag"]]
    wrong = base64.b64encode(hashlib.md5(b"not the body").digest()).decode()
    with pytest.raises(ClientError) as e:
        c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=2, Body=b"tail", ContentMD5=wrong)
    assert code(e) == "BadDigest"
    right = base64.b64encode(hashlib.md5(b"tail").digest()).decode()
    r2 = c.upload_part(Bucket=b, Key="k", UploadId=up["UploadId"], PartNumber=2, Body=b"tail", ContentMD5=right)
    c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up["UploadId"], MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r["ETag"]}, {"PartNumber": 2, "ETag": r2["ETag"]}]})
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == data + b"tail"
