"""Object format v3 against an attacker with storage access (boto3 straight to the backend).

A part number sent again is sealed under fresh nonce material; every object's layout (part
count, sizes, order, which upload of each part) and every metadata field the proxy relies on
is authenticated, so rebuilding, cutting, extending or relabelling an object in the backend
makes reads fail, for whole objects, every range and every partNumber.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateway.s3.conftest import S3Stack, bucket_name, stored_upload_part

MiB = 1024 * 1024
HEADER = 16


def pattern(seed: int, n: int) -> bytes:
    return bytes((i * seed + seed) % 251 for i in range(n))


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def test_a_part_number_sent_three_times_shares_no_nonce(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up = c.create_multipart_upload(Bucket=b, Key="k", ServerSideEncryption="aws:kms")["UploadId"]
    plains = [pattern(seed, 70_000) for seed in (3, 5, 7)]
    sealed = []
    for p in plains:
        etag = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=p)["ETag"]
        sealed.append(stored_upload_part(b, 1))
    headers = [s[:HEADER] for s in sealed]
    assert len(set(headers)) == 3  # fresh nonce material in each part's own header
    for i in range(3):
        for j in range(i + 1, 3):
            # Same key and nonce would make the XOR of ciphertexts the XOR of plaintexts,
            # wherever the packages start (any header length).
            for start in range(0, 65):
                ci, cj = sealed[i][start:start + 4096], sealed[j][start:start + 4096]
                assert xor(ci, cj) != xor(plains[i][:4096], plains[j][:4096]), start
                # No 16-byte keystream block repeats at the same place either.
                ks_i, ks_j = xor(ci, plains[i]), xor(cj, plains[j])
                assert all(ks_i[o:o + 16] != ks_j[o:o + 16] for o in range(0, 4096, 16)), start
    c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == plains[2]


def _fails(c: Any, b: str, key: str, size: int, parts: int | None) -> None:
    """Every read of the object fails: whole, ranges in each part, each partNumber, HEAD."""
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=b, Key=key)["Body"].read()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500, (key, e.value.response)
    for start in sorted({0, 1, size // 2, max(0, size - 1), 5 * MiB - 3, 5 * MiB + 7, 10 * MiB + 1}):
        if start >= size:
            continue
        with pytest.raises(ClientError):
            c.get_object(Bucket=b, Key=key, Range=f"bytes={start}-{min(size - 1, start + 100)}")["Body"].read()
    for n in range(1, (parts or 1) + 1):
        with pytest.raises(ClientError, match="."):
            got = c.get_object(Bucket=b, Key=key, PartNumber=n)["Body"].read()
            raise AssertionError(f"{key}: part {n} read {len(got)} bytes")
    with pytest.raises(ClientError):
        c.head_object(Bucket=b, Key=key)


def _rebuild(backend: Any, b: str, src: str, dst: str, pieces: list[tuple[int, int] | bytes],
             metadata: dict[str, str] | None = None) -> None:
    """Assemble `dst` in the backend from ranges of `src` (and raw bytes), with src's metadata
    and tags (a format v4 object's manifest is a tag: the attacker keeps it)."""
    head = backend.head_object(Bucket=b, Key=src)
    tags = backend.get_object_tagging(Bucket=b, Key=src)["TagSet"]
    up = backend.create_multipart_upload(Bucket=b, Key=dst, Metadata=metadata or head["Metadata"])["UploadId"]
    parts = []
    for n, piece in enumerate(pieces, 1):
        if isinstance(piece, bytes):
            r = backend.upload_part(Bucket=b, Key=dst, UploadId=up, PartNumber=n, Body=piece)
            etag = r["ETag"]
        else:
            r = backend.upload_part_copy(Bucket=b, Key=dst, UploadId=up, PartNumber=n,
                                         CopySource={"Bucket": b, "Key": src},
                                         CopySourceRange=f"bytes={piece[0]}-{piece[1] - 1}")
            etag = r["CopyPartResult"]["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    backend.complete_multipart_upload(Bucket=b, Key=dst, UploadId=up, MultipartUpload={"Parts": parts})
    if tags:
        backend.put_object_tagging(Bucket=b, Key=dst, Tagging={"TagSet": tags})


def _three_parts(s3: S3Stack) -> tuple[Any, str, list[bytes], list[tuple[int, int]], bytes]:
    """A 3-part object (5 MiB, 5 MiB, 100 KB), the plaintexts, the sealed parts' ranges, and a
    stale sealed part 2 (an earlier upload of part 2, kept by the attacker)."""
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    plains = [pattern(11, 5 * MiB), pattern(13, 5 * MiB), pattern(17, 100_000)]
    up = c.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    c.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=2, Body=pattern(19, 5 * MiB))
    stale = stored_upload_part(b, 2)
    etags = [c.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(plains, 1)]
    c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert c.get_object(Bucket=b, Key="mp")["Body"].read() == b"".join(plains)
    sizes = [s3.backend.head_object(Bucket=b, Key="mp", PartNumber=n)["ContentLength"] for n in (1, 2, 3)]
    offsets = [sum(sizes[:i]) for i in range(3)]
    return c, b, plains, [(o, o + s) for o, s in zip(offsets, sizes, strict=True)], stale


def test_rebuilt_multipart_objects_fail_every_read(s3: S3Stack) -> None:
    c, b, plains, r, stale = _three_parts(s3)
    p1, p2, p3 = r
    last = s3.backend.get_object(Bucket=b, Key="mp", Range=f"bytes={p3[0]}-{p3[1] - 1}")["Body"].read()
    cases: dict[str, list[tuple[int, int] | bytes]] = {
        "truncated": [p1, p2],
        "dropped": [p1, p3],
        "duplicated": [p1, p2, p2, p3],
        "reordered": [p2, p1, p3],
        "extended": [p1, p2, last + last],  # the last part twice over
        "stale-part": [p1, stale, p3],
        "last-package-cut": [p1, p2, (p3[0], p3[1] - 16)],
        "package-appended": [p1, p2, last + last[HEADER:HEADER + 65552]],
    }
    for case, pieces in cases.items():
        # In place: a valid object under the name first (copied through the proxy: the same
        # data key, so the stale part is one of its own), then rebuilt from its own pieces.
        c.copy_object(Bucket=b, Key=case, CopySource={"Bucket": b, "Key": "mp"})
        _rebuild(s3.backend, b, case, case, pieces)
        _fails(c, b, case, sum(len(p) for p in plains), 3)


def test_objects_moved_under_another_name_fail(s3: S3Stack) -> None:
    """Bytes and metadata of a bucket-key object moved onto another object's name (the KMS
    context binds per-object keys to their name; bucket-key objects rely on the MAC)."""
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    for key in ("a", "b"):
        c.put_object(Bucket=b, Key=key, Body=key.encode() * 1000, BucketKeyEnabled=True,
                     ServerSideEncryption="aws:kms")
    s3.backend.copy_object(Bucket=b, Key="b", CopySource={"Bucket": b, "Key": "a"})
    _fails(c, b, "b", 1000, None)


FIELDS = ["ssegw", "ssegw-alg", "ssegw-iv", "ssegw-kms-key", "ssegw-sse", "ssegw-size", "ssegw-md5",
          "ssegw-ctx", "ssegw-mp", "ssegw-layout", "ssegw-parts", "ssegw-mac"]


def _edited(meta: dict[str, str], name: str, drop: bool) -> dict[str, str]:
    out = dict(meta)
    if drop:
        out.pop(name, None)
        return out
    value = out.get(name, "")
    if name == "ssegw":
        out[name] = "2"
    elif name == "ssegw-alg":
        out[name] = "SM4GCM"
    elif name == "ssegw-sse":
        out[name] = "aws:kms" if value == "AES256" else "AES256"
    elif name == "ssegw-size":
        out[name] = str(int(value or 0) + 65536)
    elif name == "ssegw-md5":
        out[name] = "0" * 32
    elif name == "ssegw-mp":
        out[name] = "1" if value != "1" else "0"
    elif name == "ssegw-layout":
        out[name] = value.replace("*1", "*2", 1)
    elif name == "ssegw-ctx":
        out[name] = "eyJhIjogImIifQ=="  # {"a": "b"}
    else:
        out[name] = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB") if value else "eA=="
    return out


def test_every_metadata_field_is_authenticated(s3: S3Stack) -> None:
    c, b, plains, r, _ = _three_parts(s3)
    c.put_object(Bucket=b, Key="single", Body=pattern(23, 200_000))
    for drop, src in ((False, "single"), (True, "single"), (False, "mp"), (True, "mp")):
        meta = s3.backend.head_object(Bucket=b, Key=src)["Metadata"]
        for name in FIELDS:
            if drop and (name not in meta or name == "ssegw"):
                # Without `ssegw` it is no longer an encrypted object: the proxy serves objects
                # put into the backend without it as they are (README), here the ciphertext.
                continue
            if not drop and name in ("ssegw-md5", "ssegw-layout", "ssegw-parts") and name not in meta:
                continue
            # In place, as an attacker would: the object keeps its name, only the field differs.
            key = f"{src}-{name}-{'drop' if drop else 'edit'}"
            c.copy_object(Bucket=b, Key=key, CopySource={"Bucket": b, "Key": src})  # a valid object there
            edited = _edited(s3.backend.head_object(Bucket=b, Key=key)["Metadata"], name, drop)
            if src == "mp":
                _rebuild(s3.backend, b, key, key, list(r), edited)
            else:
                s3.backend.copy_object(Bucket=b, Key=key, CopySource={"Bucket": b, "Key": key},
                                       MetadataDirective="REPLACE", Metadata=edited)
            with pytest.raises(ClientError, match=".") as e:
                got = c.get_object(Bucket=b, Key=key)["Body"].read()
                raise AssertionError(f"{key} read {len(got)} bytes")
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 400, (src, name)
            with pytest.raises(ClientError, match="."):
                c.head_object(Bucket=b, Key=key)
                raise AssertionError(f"{key}: HEAD answered")


def test_single_objects_cut_or_extended_at_package_boundaries_fail(s3: S3Stack) -> None:
    c: Any = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = pattern(29, 3 * 65536)
    cuts: list[tuple[str, Callable[[bytes], bytes]]] = [
        ("cut", lambda s: s[:2 * 65552]), ("longer", lambda s: s + s[:65552]),
        ("cut-size", lambda s: s[:2 * 65552]), ("longer-size", lambda s: s + s[:65552])]
    for name, cut in cuts:
        c.put_object(Bucket=b, Key=name, Body=body)  # in place: the object's own name and key
        raw = s3.backend.get_object(Bucket=b, Key=name)
        sealed, meta = cut(raw["Body"].read()), raw["Metadata"]
        if name.endswith("-size"):  # and the recorded size to match
            meta["ssegw-size"] = str(len(sealed) - len(sealed) // 65552 * 16)
        s3.backend.put_object(Bucket=b, Key=name, Body=sealed, Metadata=meta)
        _fails(c, b, name, len(body), None)


def _edit_manifest(value: str, field: int) -> str:
    fields = value.split(" ")
    f = fields[field]
    if field == 0:  # the size
        fields[0] = str(int(f) + 65536)
    elif field == 1:  # the layout: one part more, or one bigger
        fields[1] = f.replace(":1", ":2", 1) if ":1" in f else f.replace(":", "0:", 1)
    else:  # the parts digest, the MAC
        fields[field] = f[:-4] + ("AAAA" if not f.endswith("AAAA") else "BBBB")
    return " ".join(fields)


def test_every_manifest_field_is_authenticated(s3: S3Stack) -> None:
    """Format v4: a multipart object's size and layout are its `ssegw-manifest` tag. Edited,
    dropped, or taken from another upload of the same key, every read fails."""
    c, b, plains, r, _ = _three_parts(s3)
    tags = s3.backend.get_object_tagging(Bucket=b, Key="mp")["TagSet"]
    manifest = next(t["Value"] for t in tags if t["Key"] == "ssegw-manifest")
    assert s3.backend.head_object(Bucket=b, Key="mp")["Metadata"]["ssegw"] == "4"
    size = sum(len(p) for p in plains)
    cases: dict[str, str | None] = {f"field-{i}": _edit_manifest(manifest, i) for i in range(4)}
    cases["dropped"] = None
    cases["garbage"] = "x"
    for case, value in cases.items():
        c.copy_object(Bucket=b, Key=case, CopySource={"Bucket": b, "Key": "mp"})  # a valid object there
        assert c.get_object(Bucket=b, Key=case)["Body"].read() == b"".join(plains)
        new = [t for t in tags if t["Key"] != "ssegw-manifest"]
        if value is not None:
            new.append({"Key": "ssegw-manifest", "Value": value})
        if new:
            s3.backend.put_object_tagging(Bucket=b, Key=case, Tagging={"TagSet": new})
        else:
            s3.backend.delete_object_tagging(Bucket=b, Key=case)
        # A fresh proxy node (nothing cached): the manifest is read from the tag.
        s3.proxy.reader._manifests.clear()
        _fails(c, b, case, size, 3)
    # Another upload's manifest (its own key, parts of the same sizes): bound to its upload.
    up = c.create_multipart_upload(Bucket=b, Key="other")["UploadId"]
    etags = [c.upload_part(Bucket=b, Key="other", UploadId=up, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(plains, 1)]
    c.complete_multipart_upload(Bucket=b, Key="other", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    c.copy_object(Bucket=b, Key="swapped", CopySource={"Bucket": b, "Key": "mp"})
    other = s3.backend.get_object_tagging(Bucket=b, Key="other")["TagSet"]
    s3.backend.put_object_tagging(Bucket=b, Key="swapped", Tagging={"TagSet": other})
    s3.proxy.reader._manifests.clear()
    _fails(c, b, "swapped", size, 3)
