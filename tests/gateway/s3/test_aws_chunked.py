"""aws-chunked decoding: AWS's published chunk-signature example, and every way to break it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from awscrt import checksums as awscrt_checksums

from gateway.s3.aws_chunked import (
    SIGNED,
    TRAILER_CRC32,
    UNSIGNED_TRAILER,
    ChunkedError,
    ChunkSigning,
    decode,
    encode_crc32,
    encoded_headers,
    encoded_length,
    trailer_checksum,
)
from kms_core.sigv4 import signing_key
from tests.gateway.s3.chunked_bodies import sign_chunks, signed_body

# AWS S3 API reference, "Signature calculations ... Transferring payload in multiple chunks":
# 66,560 bytes of 'a' in chunks of 65,536 and 1,024 bytes.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_DATE = "20130524T000000Z"
AWS_SCOPE = "20130524/us-east-1/s3/aws4_request"
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNK_SIGS = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]


def aws_signing() -> ChunkSigning:
    return ChunkSigning(signing_key(AWS_SECRET, "20130524", "us-east-1", "s3"), AWS_DATE, AWS_SCOPE, AWS_SEED)


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


def run(body: bytes, piece: int = 1000, **kw: object) -> bytes:
    async def go() -> bytes:
        return b"".join([c async for c in decode(_pieces(body, piece), **kw)])  # type: ignore[arg-type]

    return asyncio.run(go())


def test_aws_published_example() -> None:
    chunks = [b"a" * 65536, b"a" * 1024]
    assert sign_chunks(chunks, aws_signing()) == AWS_CHUNK_SIGS
    body = signed_body(chunks, AWS_CHUNK_SIGS)
    assert len(body) == 66824  # the example's Content-Length
    assert run(body, mode=SIGNED, decoded_length=66560, signing=aws_signing()) == b"a" * 66560


@pytest.mark.parametrize("piece", [1, 7, 65536, 10**6])
def test_any_network_split(piece: int) -> None:
    chunks = [b"x" * 100, b"y" * 3000, b"z"]
    body = signed_body(chunks, sign_chunks(chunks, aws_signing()))
    assert run(body, piece, mode=SIGNED, decoded_length=3101, signing=aws_signing()) == b"".join(chunks)


def test_signed_failures() -> None:
    chunks = [b"a" * 65536, b"a" * 1024]
    good = signed_body(chunks, AWS_CHUNK_SIGS)
    cases = {
        "tampered data": good.replace(b"a" * 10, b"b" + b"a" * 9, 1),
        "swapped chunks": signed_body(chunks[::-1], AWS_CHUNK_SIGS),
        "dropped final chunk": good[: good.rfind(b"0;chunk")],
        "unsigned chunk": good.replace(f";chunk-signature={AWS_CHUNK_SIGS[0]}".encode(), b"", 1),
        "garbage size": b"zz;chunk-signature=00\r\n",
        "trailing bytes": good + b"extra",
    }
    for name, body in cases.items():
        with pytest.raises(ChunkedError):
            run(body, mode=SIGNED, decoded_length=66560, signing=aws_signing())
            pytest.fail(name)
    with pytest.raises(ChunkedError):
        run(good, mode=SIGNED, decoded_length=66559, signing=aws_signing())


def unsigned_trailer_body(data: bytes, checksum: str) -> bytes:
    return (f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n"
            + f"x-amz-checksum-crc32:{checksum}\r\n\r\n".encode())


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_unsigned_trailer() -> None:
    data = b"hello trailer" * 1000
    body = unsigned_trailer_body(data, crc32(data))
    kw: dict[str, Any] = dict(mode=UNSIGNED_TRAILER, decoded_length=len(data), trailer="x-amz-checksum-crc32")
    assert run(body, 333, **kw) == data
    with pytest.raises(ChunkedError) as e:
        run(unsigned_trailer_body(data, crc32(b"other")), **kw)
    assert e.value.code == "BadDigest"
    with pytest.raises(ChunkedError):
        run(body.replace(b"x-amz-checksum-crc32", b"x-amz-checksum-other"), **kw)
    with pytest.raises(ChunkedError) as e:  # announced, never sent
        run(body, mode=UNSIGNED_TRAILER, decoded_length=len(data), trailer="x-amz-checksum-crc64nvme")
    assert e.value.code == "InvalidRequest"
    with pytest.raises(ChunkedError) as e:
        run(body, mode=UNSIGNED_TRAILER, decoded_length=len(data), trailer="x-amz-checksum-md5")
    assert e.value.code == "InvalidRequest"


@pytest.mark.parametrize(("algorithm", "reference"), [
    ("crc32c", lambda d: awscrt_checksums.crc32c(d).to_bytes(4, "big")),
    ("crc64nvme", lambda d: awscrt_checksums.crc64nvme(d).to_bytes(8, "big")),
    ("sha1", lambda d: hashlib.sha1(d).digest()),
    ("sha256", lambda d: hashlib.sha256(d).digest()),
])
def test_every_checksum_algorithm_s3_has_is_verified_and_kept(algorithm: str, reference: Any) -> None:
    data = os.urandom(200_000)
    value = base64.b64encode(reference(data)).decode()
    trailer = f"x-amz-checksum-{algorithm}"

    def body(v: str) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + f"\r\n0\r\n{trailer}:{v}\r\n\r\n".encode()

    received = trailer_checksum(trailer)
    assert run(body(value), 4096, mode=UNSIGNED_TRAILER, decoded_length=len(data), trailer=trailer,
               received=received) == data
    assert received.result() is not None and received.result().value() == value  # type: ignore[union-attr]
    wrong = base64.b64encode(reference(data[1:])).decode()
    with pytest.raises(ChunkedError) as e:
        run(body(wrong), mode=UNSIGNED_TRAILER, decoded_length=len(data), trailer=trailer)
    assert e.value.code == "BadDigest"


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 300_001])
def test_encode_crc32_is_what_decode_reads_and_as_long_as_declared(size: int) -> None:
    data = bytes(i % 251 for i in range(size))

    async def encoded() -> bytes:
        return b"".join([c async for c in encode_crc32(_pieces(data, 7777) if data else _pieces(b"", 1), size)])

    body = asyncio.run(encoded())
    assert len(body) == encoded_length(size) == int(encoded_headers(size)["content-length"])
    assert body.endswith(f"x-amz-checksum-crc32:{base64.b64encode(zlib.crc32(data).to_bytes(4, 'big')).decode()}"
                         "\r\n\r\n".encode())
    assert run(body, 4096, mode=UNSIGNED_TRAILER, decoded_length=size, trailer=TRAILER_CRC32) == data


def test_encode_crc32_refuses_a_payload_of_another_length() -> None:
    async def encoded(data: bytes, declared: int) -> bytes:
        return b"".join([c async for c in encode_crc32(_pieces(data, 10), declared)])

    for data, declared in ((b"x" * 100, 99), (b"x" * 100, 101)):
        with pytest.raises(ChunkedError):
            asyncio.run(encoded(data, declared))
