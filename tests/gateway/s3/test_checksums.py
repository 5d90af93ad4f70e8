"""S3's additional checksums: the pure module (gateway/s3/checksums.py) against independent
references, and the proxy against moto and against what S3 documents.

S3's rules checked here (Checking object integrity, PutObject, CreateMultipartUpload,
UploadPart, CompleteMultipartUpload in the S3 API reference):

- a PUT's checksum (header or aws-chunked trailer) is verified (400 BadDigest otherwise, and
  nothing is stored), answered, kept, and given back by HEAD and GET of the whole object with
  `x-amz-checksum-mode: ENABLED`, never without it and never for a range; its type is
  FULL_OBJECT;
- a multipart upload declares its algorithm and type; every part's checksum is answered
  (computed when the part carries none), Complete needs each part's checksum and checks it,
  and the object's checksum is the checksum of the parts' checksums with `-<parts>`
  (COMPOSITE) or the CRC of the whole object (FULL_OBJECT).

The proxy keeps the checksum sealed under the object's data key, in the MAC'd metadata or
manifest: an attacker with backend access cannot move one onto another object.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import FlexibleChecksumError
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.s3 import checksums
from gateway.s3.checksums import COMPOSITE, FULL_OBJECT, ObjectChecksum, Running
from gateway.s3.package_cipher import NONCE, Algorithm, ObjectCorrupt
from tests.gateway.s3.checksum_refs import ALL, PLAIN_PYTHON, REFERENCE, XXH, b64, composite_of, shown, value_of
from tests.gateway.s3.conftest import (
    MiB,
    S3Stack,
    Side,
    bucket_name,
    make_sides,
    outcome,
    signed_request,
)

# The checksums S3 had before 2025 (moto knows them too).
CLASSIC = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
CRCS = ("CRC32", "CRC32C", "CRC64NVME")


def _needs_reference(algorithm: str) -> None:
    if algorithm.startswith("XXHASH") and XXH is None:
        pytest.skip("no libxxhash to check xxHash against")



# ====================================================================== the module, pure


@pytest.mark.parametrize("algorithm", ALL)
@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=5))
def test_running_matches_an_independent_reference_in_any_pieces(algorithm: str, data: bytes,
                                                                 cuts: list[int]) -> None:
    _needs_reference(algorithm)
    running = Running(algorithm)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        running.update(data[start:end])
    assert running.digest() == REFERENCE[algorithm](data)
    if algorithm in PLAIN_PYTHON:
        assert running.digest() == PLAIN_PYTHON[algorithm](data)
    assert running.value() == value_of(algorithm, data)
    assert checksums.decode_value(algorithm, running.value()) == REFERENCE[algorithm](data)


def test_crc_check_values() -> None:
    """The CRC catalogue's check values (CRC of b"123456789"): CRC-32/ISO-HDLC, CRC-32/ISCSI
    (CRC32C) and CRC-64/NVME, so a wrong polynomial or byte order shows."""
    for algorithm, check in (("CRC32", 0xCBF43926), ("CRC32C", 0xE3069283), ("CRC64NVME", 0xAE8B14860A799888)):
        running = Running(algorithm)
        running.update(b"1234")
        running.update(b"56789")
        assert int.from_bytes(running.digest(), "big") == check, algorithm
        if algorithm in PLAIN_PYTHON:
            assert int.from_bytes(PLAIN_PYTHON[algorithm](b"123456789"), "big") == check, algorithm
    # An empty body's checksums, as S3 shows them for a zero-byte object.
    assert Running("CRC32").value() == "AAAAAA=="
    assert Running("SHA256").value() == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_decode_value_refuses_what_is_no_value_of_the_algorithm() -> None:
    assert checksums.decode_value("CRC32", "AAAAAA==") == bytes(4)
    for algorithm, text in (("CRC32", "AAAA"), ("CRC32", "AAAAAAAAAAA="), ("CRC64NVME", "AAAAAA=="),
                            ("SHA256", "not base64!"), ("SHA1", b64(bytes(32)))):
        assert checksums.decode_value(algorithm, text) is None, (algorithm, text)


@pytest.mark.parametrize("algorithm", CRCS)
@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.binary(max_size=2000), min_size=1, max_size=6))
def test_full_object_is_the_crc_of_the_concatenated_parts(algorithm: str, parts: list[bytes]) -> None:
    crc = PLAIN_PYTHON.get(algorithm, REFERENCE[algorithm])
    out = checksums.full_object(algorithm, [(crc(p), len(p)) for p in parts])
    assert out.digest == crc(b"".join(parts))
    assert out.type == FULL_OBJECT and out.value() == value_of(algorithm, b"".join(parts))  # no "-<n>"
    assert out.headers() == {f"x-amz-checksum-{algorithm.lower()}": out.value(), "x-amz-checksum-type": FULL_OBJECT}


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
@settings(max_examples=20, deadline=None)
@given(parts=st.lists(st.binary(max_size=2000), min_size=1, max_size=6))
def test_composite_is_the_checksum_of_the_parts_checksums(algorithm: str, parts: list[bytes]) -> None:
    out = checksums.composite(algorithm, [REFERENCE[algorithm](p) for p in parts])
    assert out.value() == composite_of(algorithm, parts)
    assert out.value().endswith(f"-{len(parts)}") and out.type == COMPOSITE and out.parts == len(parts)
    assert out.headers() == {f"x-amz-checksum-{algorithm.lower()}": out.value(), "x-amz-checksum-type": COMPOSITE}
    assert out.xml() == (f"<Checksum{algorithm}>{out.value()}</Checksum{algorithm}>"
                         f"<ChecksumType>{COMPOSITE}</ChecksumType>")


@pytest.mark.parametrize(("algorithm", "kind", "declared"), [
    (None, None, None),
    ("CRC32", None, ("CRC32", COMPOSITE)),
    ("CRC32C", None, ("CRC32C", COMPOSITE)),
    ("SHA1", None, ("SHA1", COMPOSITE)),
    ("SHA256", None, ("SHA256", COMPOSITE)),
    ("CRC64NVME", None, ("CRC64NVME", FULL_OBJECT)),  # CRC64NVME is always a full-object checksum
    ("CRC32", "FULL_OBJECT", ("CRC32", FULL_OBJECT)),
    ("CRC32C", "FULL_OBJECT", ("CRC32C", FULL_OBJECT)),
    ("CRC64NVME", "FULL_OBJECT", ("CRC64NVME", FULL_OBJECT)),
    ("CRC32", "COMPOSITE", ("CRC32", COMPOSITE)),
    ("SHA256", "COMPOSITE", ("SHA256", COMPOSITE)),
])
def test_declared_upload_accepts_what_s3_accepts(algorithm: str | None, kind: str | None,
                                                 declared: tuple[str, str] | None) -> None:
    assert checksums.declared_upload(algorithm, kind) == declared


@pytest.mark.parametrize(("algorithm", "kind"), [
    ("SHA256", "FULL_OBJECT"),  # a hash of parts cannot be combined into the whole object's
    ("SHA1", "FULL_OBJECT"),
    ("CRC64NVME", "COMPOSITE"),
    (None, "COMPOSITE"),  # a type needs an algorithm
    (None, "FULL_OBJECT"),
    ("CRC16", None),
    ("CRC32", "PARTIAL"),
])
def test_declared_upload_refuses_what_s3_refuses(algorithm: str | None, kind: str | None) -> None:
    with pytest.raises(ValueError):
        checksums.declared_upload(algorithm, kind)


SAMPLES = [ObjectChecksum(a, REFERENCE[a](b"sample")) for a in ALL if not a.startswith("XXHASH") or XXH]
SAMPLES += [checksums.composite("SHA256", [bytes(32)] * 2), checksums.composite("CRC32", [bytes(4)] * 10000),
            checksums.full_object("CRC64NVME", [(bytes(8), 5 * MiB)])]


@pytest.mark.parametrize("cipher", list(Algorithm))
@pytest.mark.parametrize("checksum", SAMPLES, ids=lambda c: f"{c.algorithm}-{c.type}-{c.parts}")
def test_seal_round_trips_and_binds_to_the_data_key(cipher: Algorithm, checksum: ObjectChecksum) -> None:
    data_key = os.urandom(cipher.key_len)
    sealed = checksums.seal(checksum, data_key, cipher)
    assert checksums.open_sealed(sealed, data_key, cipher) == checksum
    assert len(sealed) <= checksums.SEALED_MAX
    # Not readable from the backend: neither the digest nor its base64 is in the sealed text.
    raw = base64.b64decode(sealed)
    assert checksum.digest not in raw and b64(checksum.digest) not in sealed

    with pytest.raises(ObjectCorrupt):  # another object's data key
        checksums.open_sealed(sealed, os.urandom(cipher.key_len), cipher)
    other = Algorithm.SM4_GCM if cipher is Algorithm.AES_256_GCM else Algorithm.AES_256_GCM
    with pytest.raises(ObjectCorrupt):  # relabelled as the other cipher
        checksums.open_sealed(sealed, os.urandom(other.key_len), other)
    for i in range(len(raw)):  # any flipped byte: nonce, ciphertext or tag
        for bit in (0x01, 0x80):
            flipped = raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1:]
            with pytest.raises(ObjectCorrupt):
                checksums.open_sealed(b64(flipped), data_key, cipher)
    for broken in (b64(raw[:-1]), b64(raw[:NONCE + 3]), "", sealed[:-2], sealed + "A", "!" + sealed[1:]):
        with pytest.raises(ObjectCorrupt):
            checksums.open_sealed(broken, data_key, cipher)

    again = checksums.seal(checksum, data_key, cipher)  # a fresh nonce each time
    assert again != sealed and base64.b64decode(again)[:NONCE] != raw[:NONCE]
    assert checksums.open_sealed(again, data_key, cipher) == checksum


# ====================================================================== against moto, and S3


@pytest.fixture
def quiet_sides(s3: S3Stack, moto_url: str) -> list[Side]:
    """As `sides` (the proxy as a fresh tenant, moto straight), but the clients send
    x-amz-checksum-mode only when told to: boto3 otherwise sets ChecksumMode=ENABLED on every
    GetObject itself (response_checksum_validation), and "without it" could not be tested."""
    return make_sides(s3, moto_url, response_checksum_validation="when_required")


def _run(sides: list[Side], scenario: Callable[[Any, str], Any]) -> dict[str, Any]:
    return {side.name: scenario(side.client, side.bucket) for side in sides}


@pytest.mark.parametrize("algorithm", CLASSIC)
def test_put_object_answers_keeps_and_gives_back_its_checksum(quiet_sides: list[Side], algorithm: str) -> None:
    """boto3 sends the checksum to the proxy (HTTPS) in an aws-chunked trailer, to moto
    (HTTP) in a header; both answer it, and HEAD and GET give it back only when asked
    (ChecksumMode), only for the whole object."""
    body = os.urandom(3000)
    field = "Checksum" + algorithm

    def scenario(c: Any, b: str) -> list[Any]:
        put = c.put_object(Bucket=b, Key="k", Body=body, ChecksumAlgorithm=algorithm)
        head = c.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
        got = c.get_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
        data = got["Body"].read()
        bare_head = c.head_object(Bucket=b, Key="k")
        bare_get = c.get_object(Bucket=b, Key="k")
        bare_get["Body"].read()
        ranged = c.get_object(Bucket=b, Key="k", ChecksumMode="ENABLED", Range="bytes=10-99")
        part = ranged["Body"].read()
        return [shown(put), shown(head), shown(got), data == body, shown(bare_head), shown(bare_get),
                shown(ranged), part == body[10:100],
                {"put": put.get("ChecksumType"), "head": head.get("ChecksumType")}]

    seen = _run(quiet_sides, scenario)
    want = {field: value_of(algorithm, body)}
    assert seen["proxy"][:8] == seen["moto"][:8]
    assert seen["proxy"][:8] == [want, want, want, True, {}, {}, {}, True]
    # S3 answers the type too: "For PutObject uploads, the checksum type is always FULL_OBJECT"
    # (moto answers none).
    assert seen["proxy"][8] == {"put": FULL_OBJECT, "head": FULL_OBJECT}


@pytest.mark.parametrize("algorithm", ["SHA512", "MD5", "XXHASH64", "XXHASH3", "XXHASH128"])
def test_put_object_keeps_the_checksums_s3_added_in_2025(s3: S3Stack, algorithm: str) -> None:
    """Not differential (moto does not know them), and as plain headers (botocore computes no
    MD5 checksum): the value is the independent reference's; a wrong one is BadDigest."""
    _needs_reference(algorithm)
    t = s3.tenant()
    c, b = s3.client(t), bucket_name()
    c.create_bucket(Bucket=b)
    body, header = os.urandom(3000), f"x-amz-checksum-{algorithm.lower()}"
    want = value_of(algorithm, body)
    r = signed_request(s3, t, "PUT", f"/{b}/bad", headers={header: value_of(algorithm, b"other")}, body=body)
    assert r.status == 400 and b"<Code>BadDigest</Code>" in r.data
    r = signed_request(s3, t, "PUT", f"/{b}/k", headers={header: want}, body=body)
    assert r.status == 200 and r.headers.get(header) == want
    for method in ("HEAD", "GET"):
        r = signed_request(s3, t, method, f"/{b}/k", headers={"x-amz-checksum-mode": "ENABLED"})
        assert r.status == 200 and r.headers.get(header) == want, method
        assert r.headers.get("x-amz-checksum-type") == FULL_OBJECT
    assert signed_request(s3, t, "GET", f"/{b}/k").data == body
    assert header not in signed_request(s3, t, "GET", f"/{b}/k").headers


@pytest.mark.parametrize("algorithm", CLASSIC)
def test_a_wrong_checksum_is_refused_and_nothing_is_stored(s3: S3Stack, algorithm: str) -> None:
    """S3 refuses a body whose checksum does not match with 400 BadDigest and keeps nothing,
    neither a new object nor a changed old one. Proxy only: moto stores the object anyway."""
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body, field = b"the body as sent", "Checksum" + algorithm
    wrong = value_of(algorithm, b"another body")
    status, code, _ = outcome(c.put_object, Bucket=b, Key="new", Body=body, **{field: wrong})
    assert (status, code) == (400, "BadDigest")
    assert outcome(c.head_object, Bucket=b, Key="new")[0] == 404
    c.put_object(Bucket=b, Key="old", Body=b"before")
    status, code, _ = outcome(c.put_object, Bucket=b, Key="old", Body=body, **{field: wrong})
    assert (status, code) == (400, "BadDigest")
    assert c.get_object(Bucket=b, Key="old")["Body"].read() == b"before"
    # The same request with the right value is taken (so it was the value that was refused),
    # also as a plain header over HTTP, outside boto3.
    assert shown(c.put_object(Bucket=b, Key="new", Body=body, **{field: value_of(algorithm, body)})) == {
        field: value_of(algorithm, body)}
    header = f"x-amz-checksum-{algorithm.lower()}"
    r = signed_request(s3, t, "PUT", f"/{b}/raw", headers={header: wrong}, body=body)
    assert r.status == 400 and b"<Code>BadDigest</Code>" in r.data
    assert outcome(c.head_object, Bucket=b, Key="raw")[0] == 404
    r = signed_request(s3, t, "PUT", f"/{b}/raw", headers={header: value_of(algorithm, body)}, body=body)
    assert r.status == 200 and r.headers[header] == value_of(algorithm, body)
    assert shown(c.head_object(Bucket=b, Key="raw", ChecksumMode="ENABLED")) == {field: value_of(algorithm, body)}


def test_a_checksum_value_of_the_wrong_size_is_refused(s3: S3Stack) -> None:
    """S3: 400 InvalidRequest "Value for x-amz-checksum-crc32 header is invalid."."""
    t = s3.tenant()
    c = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    for header, value in (("x-amz-checksum-crc32", "AAAA"), ("x-amz-checksum-sha256", "AAAAAA=="),
                          ("x-amz-checksum-crc64nvme", "not base64")):
        r = signed_request(s3, t, "PUT", f"/{b}/k", headers={header: value}, body=b"body")
        assert r.status == 400 and b"<Code>InvalidRequest</Code>" in r.data, (header, r.data)
    assert outcome(c.head_object, Bucket=b, Key="k")[0] == 404


def test_a_streamed_put_verifies_and_answers_its_trailer_checksum(s3: S3Stack) -> None:
    """An object above the proxy's buffering limit (16 MiB) streams to the backend, its
    checksum in the aws-chunked trailer at the very end: the proxy verifies it (a wrong
    trailer fails the body: test_aws_chunked.py), answers it, and keeps it (in the object's tag:
    the metadata went out before the trailer arrived; test_checksum_tag.py has the rest)."""
    c = s3.client(s3.tenant())
    b = bucket_name()
    c.create_bucket(Bucket=b)
    body = os.urandom(16 * MiB + 1)
    want = {"ChecksumSHA256": value_of("SHA256", body)}
    assert shown(c.put_object(Bucket=b, Key="big", Body=body, ChecksumAlgorithm="SHA256")) == want
    assert shown(c.head_object(Bucket=b, Key="big", ChecksumMode="ENABLED")) == want
    assert c.get_object(Bucket=b, Key="big")["Body"].read() == body


# ---------------------------------------------------------------------- multipart


def _parts() -> list[bytes]:
    return [os.urandom(5 * MiB), os.urandom(1000)]  # every part but the last is >= 5 MiB


def _multipart(parts: list[bytes], algorithm: str, kind: str | None) -> Callable[[Any, str], dict[str, Any]]:
    """A scenario: an upload declaring `algorithm` (and `kind`), its parts sent with their
    checksums and repeated in Complete, then HEAD and GET with ChecksumMode."""
    field = "Checksum" + algorithm

    def scenario(c: Any, b: str) -> dict[str, Any]:
        up = c.create_multipart_upload(Bucket=b, Key="mp", ChecksumAlgorithm=algorithm,
                                       **({"ChecksumType": kind} if kind else {}))
        done, answered = [], []
        for n, data in enumerate(parts, 1):
            r = c.upload_part(Bucket=b, Key="mp", UploadId=up["UploadId"], PartNumber=n, Body=data,
                              ChecksumAlgorithm=algorithm)
            answered.append(shown(r))
            done.append({"PartNumber": n, "ETag": r["ETag"], field: r[field]})
        complete = c.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up["UploadId"],
                                               MultipartUpload={"Parts": done})
        head = c.head_object(Bucket=b, Key="mp", ChecksumMode="ENABLED")
        got = c.get_object(Bucket=b, Key="mp", ChecksumMode="ENABLED")
        try:
            read: Any = got["Body"].read() == b"".join(parts)
        except FlexibleChecksumError:
            read = "the body does not match the checksum shown"
        return {"create": (up.get("ChecksumAlgorithm"), up.get("ChecksumType")), "parts": answered,
                "complete": (shown(complete), complete.get("ChecksumType")),
                "head": (shown(head), head.get("ChecksumType")), "get": (shown(got), got.get("ChecksumType"), read)}

    return scenario


@pytest.mark.every_store
@pytest.mark.parametrize("algorithm", ["SHA256", "CRC32"])
def test_a_composite_multipart_checksum(sides: list[Side], algorithm: str) -> None:
    """COMPOSITE (the default for all but CRC64NVME): each part's checksum is answered as
    moto answers it, and the object's is the checksum of the parts' checksums, `-2`."""
    parts, field = _parts(), "Checksum" + algorithm
    seen = _run(sides, _multipart(parts, algorithm, None))
    ours, moto = seen["proxy"], seen["moto"]
    assert ours["create"][0] == moto["create"][0] == algorithm
    assert ours["parts"] == moto["parts"] == [{field: value_of(algorithm, p)} for p in parts]
    want = composite_of(algorithm, parts)
    # S3 answers the type at Create and the checksum at Complete (moto answers neither), and
    # HEAD and GET show the composite with its `-<parts>` (moto drops it: the rest must agree).
    assert ours["create"][1] == COMPOSITE
    assert ours["complete"] == ({field: want}, COMPOSITE)
    assert ours["head"] == ({field: want}, COMPOSITE)
    assert moto["head"][0] == {field: want.split("-")[0]}
    assert ours["get"] == ({field: want}, COMPOSITE, True)


@pytest.mark.every_store
@pytest.mark.parametrize("algorithm", CRCS)
def test_a_full_object_multipart_checksum(sides: list[Side], algorithm: str) -> None:
    """FULL_OBJECT: the object's checksum is the CRC of all its bytes (zlib/awscrt over the
    whole plaintext here), and GET's body checks out against it (boto3 verifies the body
    when the value has no `-<parts>`). Complete given that CRC: the next test."""
    parts, field = _parts(), "Checksum" + algorithm
    whole = value_of(algorithm, b"".join(parts))
    seen = _run(sides, _multipart(parts, algorithm, FULL_OBJECT))
    ours, moto = seen["proxy"], seen["moto"]
    assert ours["create"] == moto["create"] == (algorithm, FULL_OBJECT)
    assert ours["parts"] == moto["parts"] == [{field: value_of(algorithm, p)} for p in parts]
    if algorithm != "CRC32C":  # moto 5.2 combines CRC32C parts into something else than the CRC
        assert (ours["head"], ours["get"]) == (moto["head"], moto["get"])
    assert ours["head"] == ({field: whole}, FULL_OBJECT)
    assert ours["get"] == ({field: whole}, FULL_OBJECT, True)
    assert ours["complete"] == ({field: whole}, FULL_OBJECT)  # moto answers none


def _client_and_bucket(s3: S3Stack, **config: Any) -> tuple[Any, str]:
    c = s3.client(s3.tenant(), **config)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    return c, b


@pytest.mark.every_store
def test_complete_checks_the_parts_checksums(s3: S3Stack) -> None:
    """One part (the last may be small): Complete names each part with the checksum
    UploadPart gave it, or fails as S3 fails; a part of another algorithm is refused."""
    c, b = _client_and_bucket(s3)
    up = c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    body = b"the only part"
    r = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=body, ChecksumAlgorithm="CRC32")
    assert r["ChecksumCRC32"] == value_of("CRC32", body)

    def complete(part: dict[str, Any], **kw: Any) -> tuple[int, str | None, dict[str, Any]]:
        return outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                       MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["ETag"], **part}]}, **kw)

    assert complete({"ChecksumCRC32": "AAAAAA=="})[:2] == (400, "InvalidPart")
    assert complete({"ChecksumCRC32": value_of("CRC32", b"another part")})[:2] == (400, "InvalidPart")
    # "The upload was created using a crc32 checksum. The complete request must include the
    # checksum for each part. It was missing for part 1 in the request."
    assert complete({})[:2] == (400, "InvalidRequest")
    # "Checksum Type mismatch occurred, expected checksum Type: crc32, actual checksum Type: sha1"
    status, code, _ = outcome(c.upload_part, Bucket=b, Key="k", UploadId=up, PartNumber=2, Body=b"x",
                              ChecksumAlgorithm="SHA1")
    assert (status, code) == (400, "InvalidRequest")
    assert [p["PartNumber"] for p in c.list_parts(Bucket=b, Key="k", UploadId=up)["Parts"]] == [1]
    status, code, done = complete({"ChecksumCRC32": r["ChecksumCRC32"]})
    assert (status, code) == (200, None) and done["ChecksumCRC32"] == composite_of("CRC32", [body])
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == body


def _full_object_upload(s3: S3Stack, body: bytes) -> tuple[Any, str, str, dict[str, Any]]:
    """A FULL_OBJECT CRC32 upload of one part: (client, bucket, upload id, Complete's parts)."""
    c, b = _client_and_bucket(s3)
    up = c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32",
                                   ChecksumType=FULL_OBJECT)["UploadId"]
    r = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=body, ChecksumAlgorithm="CRC32")
    return c, b, up, {"Parts": [{"PartNumber": 1, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]}]}


@pytest.mark.every_store
def test_complete_checks_the_whole_objects_checksum(s3: S3Stack) -> None:
    """The whole object's CRC sent to Complete of a FULL_OBJECT upload (in the
    x-amz-checksum-crc32 header, as boto3 sends ChecksumCRC32) is the object's, not the XML
    body's: a wrong one is BadDigest and leaves the upload to complete, the right one is taken."""
    body = b"a full-object upload"
    c, b, up, parts = _full_object_upload(s3, body)
    status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up, MultipartUpload=parts,
                              ChecksumCRC32=value_of("CRC32", b"not the object"), ChecksumType=FULL_OBJECT)
    assert (status, code) == (400, "BadDigest")
    assert outcome(c.head_object, Bucket=b, Key="k")[0] == 404
    status, code, done = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up,
                                 MultipartUpload=parts, ChecksumCRC32=value_of("CRC32", body),
                                 ChecksumType=FULL_OBJECT)
    assert (status, code) == (200, None), done.get("Error")
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (value_of("CRC32", body), FULL_OBJECT)
    assert c.get_object(Bucket=b, Key="k", ChecksumMode="ENABLED")["Body"].read() == body


@pytest.mark.every_store
def test_complete_checks_the_checksum_type(s3: S3Stack) -> None:
    """CompleteMultipartUpload's x-amz-checksum-type must be the one the upload was created
    with: "If the checksum type doesn't match the checksum type that was specified for the
    object during the CreateMultipartUpload request, it'll result in a BadDigest error." (S3
    API reference)."""
    c, b, up, parts = _full_object_upload(s3, b"a full-object upload")
    status, code, _ = outcome(c.complete_multipart_upload, Bucket=b, Key="k", UploadId=up, MultipartUpload=parts,
                              ChecksumType=COMPOSITE)
    assert (status, code) == (400, "BadDigest")
    assert outcome(c.head_object, Bucket=b, Key="k")[0] == 404
    done = c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload=parts, ChecksumType=FULL_OBJECT)
    assert done["ChecksumType"] == FULL_OBJECT


@pytest.mark.every_store
def test_a_part_sent_without_a_checksum_gets_the_declared_one_computed(s3: S3Stack) -> None:
    """An upload that declared CRC32 answers every part's CRC32, computed by S3 (here the
    proxy) when the part carries none (AWS SDKs with request_checksum_calculation=when_required send none),
    and completes with it."""
    c, b = _client_and_bucket(s3, request_checksum_calculation="when_required")
    up = c.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = _parts()
    done = []
    for n, data in enumerate(parts, 1):
        r = c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=n, Body=data)
        assert r.get("ChecksumCRC32") == value_of("CRC32", data), n
        done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    # And over plain HTTP with a signed payload, outside boto3.
    t = s3.tenant()
    c2, b2 = s3.client(t), bucket_name()
    c2.create_bucket(Bucket=b2)
    up2 = c2.create_multipart_upload(Bucket=b2, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    raw = signed_request(s3, t, "PUT", f"/{b2}/k", query=f"partNumber=1&uploadId={quote(up2, safe='')}",
                         body=b"raw part")
    assert raw.status == 200 and raw.headers.get("x-amz-checksum-crc32") == value_of("CRC32", b"raw part")

    complete = c.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done})
    assert complete["ChecksumCRC32"] == composite_of("CRC32", parts)
    assert c.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")["ChecksumCRC32"] == composite_of("CRC32", parts)


@pytest.mark.every_store
@pytest.mark.parametrize("extra", ["default", "full-object"])
def test_upload_file_and_download_file_through_the_proxy(s3: S3Stack, tmp_path: Path, extra: str) -> None:
    """s3transfer's multipart upload as applications use it: CRC32 COMPOSITE by default; with
    the whole file's CRC32 given, a FULL_OBJECT upload checked at Complete."""
    c, b = _client_and_bucket(s3)
    parts = _parts()
    data = b"".join(parts)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    args = {"ChecksumCRC32": value_of("CRC32", data)} if extra == "full-object" else {}
    c.upload_file(str(src), b, "f", Config=config, ExtraArgs=args)
    head = c.head_object(Bucket=b, Key="f", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-2"')
    if extra == "full-object":
        assert (head["ChecksumCRC32"], head["ChecksumType"]) == (value_of("CRC32", data), FULL_OBJECT)
    else:
        assert (head["ChecksumCRC32"], head["ChecksumType"]) == (composite_of("CRC32", parts), COMPOSITE)
    c.download_file(b, "f", str(dst), Config=config)
    assert dst.read_bytes() == data


@pytest.mark.every_store
@pytest.mark.parametrize("declared", [{}, {"ChecksumAlgorithm": "CRC32"}])
def test_upload_part_to_an_aborted_upload_is_no_such_upload(s3: S3Stack, declared: dict[str, str]) -> None:
    c, b = _client_and_bucket(s3)
    up = c.create_multipart_upload(Bucket=b, Key="k", **declared)["UploadId"]
    c.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"first")
    c.abort_multipart_upload(Bucket=b, Key="k", UploadId=up)
    status, code, _ = outcome(c.upload_part, Bucket=b, Key="k", UploadId=up, PartNumber=2, Body=b"late")
    assert (status, code) == (404, "NoSuchUpload")
    assert outcome(c.head_object, Bucket=b, Key="k")[0] == 404


# ---------------------------------------------------------------------- an attacker at the backend


def _reads(c: Any, b: str, key: str) -> Iterator[tuple[int, str | None, dict[str, Any]]]:
    yield outcome(c.head_object, Bucket=b, Key=key, ChecksumMode="ENABLED")
    yield outcome(c.get_object, Bucket=b, Key=key, ChecksumMode="ENABLED")


def _refused(c: Any, b: str, key: str, foreign: str) -> None:
    """HEAD and GET with ChecksumMode fail as damaged objects fail (500 InternalError; a HEAD
    has no body to name the code), and never show `foreign`."""
    for status, code, answer in _reads(c, b, key):
        assert foreign not in str(answer), key
        assert status == 500 and code in ("InternalError", "500"), (key, status, code)


@pytest.mark.every_store
def test_a_checksum_moved_onto_another_object_in_the_backend_is_never_shown(s3: S3Stack) -> None:
    """The sealed `ssegw-cks` of one object copied onto another (with or without a checksum
    of its own) or dropped, by someone who can write the backend's metadata."""
    t = s3.tenant()
    c, b = s3.client(t), bucket_name()
    c.create_bucket(Bucket=b)
    bodies = {"a": b"A" * 100, "b": b"B" * 100}
    for key, body in bodies.items():
        c.put_object(Bucket=b, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    assert signed_request(s3, t, "PUT", f"/{b}/none", body=b"no checksum").status == 200
    a_value, b_value = value_of("SHA256", bodies["a"]), value_of("SHA256", bodies["b"])
    assert c.head_object(Bucket=b, Key="b", ChecksumMode="ENABLED")["ChecksumSHA256"] == b_value
    moved = s3.backend.head_object(Bucket=b, Key="a")["Metadata"]["ssegw-cks"]
    assert a_value not in moved  # sealed, not in clear

    def rewrite(key: str, edit: Callable[[dict[str, str]], None]) -> None:
        meta = s3.backend.head_object(Bucket=b, Key=key)["Metadata"]
        edit(meta)
        s3.backend.copy_object(Bucket=b, Key=key, CopySource={"Bucket": b, "Key": key},
                               MetadataDirective="REPLACE", Metadata=meta)

    rewrite("b", lambda m: m.update({"ssegw-cks": moved}))
    _refused(c, b, "b", a_value)
    rewrite("none", lambda m: m.update({"ssegw-cks": moved}))
    _refused(c, b, "none", a_value)
    c.put_object(Bucket=b, Key="dropped", Body=bodies["b"], ChecksumAlgorithm="SHA256")
    rewrite("dropped", lambda m: m.__delitem__("ssegw-cks"))
    _refused(c, b, "dropped", a_value)
    assert c.get_object(Bucket=b, Key="a", ChecksumMode="ENABLED")["ChecksumSHA256"] == a_value  # untouched


@pytest.mark.every_store
def test_a_multipart_objects_manifest_with_a_changed_checksum_fails(s3: S3Stack) -> None:
    """A v4 multipart object keeps its sealed checksum in its manifest tag (`size layout digest
    checksum mac`): another object's checksum put there, or none, fails the manifest's MAC.
    The edited objects are not read before (the proxy keeps manifests it has read and that
    held); one that failed is not kept, so the object reads again once its tag is put right."""
    c, b = _client_and_bucket(s3)
    bodies = {key: key.encode() * 50 for key in ("m1", "m2", "m3")}
    for key, body in bodies.items():
        up = c.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
        r = c.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=1, Body=body, ChecksumAlgorithm="SHA256")
        c.complete_multipart_upload(Bucket=b, Key=key, UploadId=up, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]}]})
    m1_value = composite_of("SHA256", [bodies["m1"]])
    assert c.head_object(Bucket=b, Key="m1", ChecksumMode="ENABLED")["ChecksumSHA256"] == m1_value

    def manifest(key: str) -> list[str]:
        tags = {x["Key"]: x["Value"] for x in s3.backend.get_object_tagging(Bucket=b, Key=key)["TagSet"]}
        fields: list[str] = tags["ssegw-manifest"].split(" ")
        assert len(fields) == 5, fields  # the checksum is in it
        return fields

    def put_manifest(key: str, fields: list[str]) -> None:
        s3.backend.put_object_tagging(Bucket=b, Key=key, Tagging={"TagSet": [
            {"Key": "ssegw-manifest", "Value": " ".join(fields)}]})

    m1, m2, m3 = manifest("m1"), manifest("m2"), manifest("m3")
    assert m1_value.split("-")[0] not in " ".join(m1)  # sealed, not in clear
    put_manifest("m2", [*m2[:3], m1[3], m2[4]])  # m1's checksum
    _refused(c, b, "m2", m1_value)
    put_manifest("m3", [*m3[:3], m3[4]])  # none
    _refused(c, b, "m3", m1_value)
    put_manifest("m2", m2)  # put right
    assert c.get_object(Bucket=b, Key="m2")["Body"].read() == bodies["m2"]
    assert c.get_object(Bucket=b, Key="m1", ChecksumMode="ENABLED")["ChecksumSHA256"] == m1_value  # untouched
