"""Request bodies: decoded (plain or aws-chunked) and checked before anyone acts on them.

A body is checked against everything the request declares about it: its length, its signed
SHA-256 or chunk signatures, a checksum header or trailer, and Content-MD5. Streamed bodies
raise at their end when a check fails, so whoever writes them on must not commit before the
stream has ended cleanly (streaming.sealed_stream seals the final package only then).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import AsyncIterator

from gateway.s3 import aws_chunked, checksums, xml_bodies
from gateway.s3.checksums import BodyChecksum
from gateway.s3.digests import Digests
from gateway.s3.errors import S3Error
from gateway.s3.messages import S3Request

# Seconds a client may leave its body waiting before S3's RequestTimeout (S3 closes idle
# uploads after about 20 s too).
BODY_IDLE = 20.0


async def idle_limited(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`stream` (a request body as it arrives), ended with S3's RequestTimeout when nothing of it
    arrives for BODY_IDLE seconds: a client that stalls mid-upload would otherwise hold its
    buffered body's room, and for a streamed one a backend connection, for as long as it likes."""
    it = stream.__aiter__()
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE):
                chunk = await it.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise S3Error("RequestTimeout", "Your socket connection to the server was not read from or "
                          "written to within the timeout period. Idle connections will be closed.") from None
        yield chunk


def body_stream(req: S3Request, compute: str | None = None, *,
                checksum_header: bool = True) -> tuple[AsyncIterator[bytes], int, BodyChecksum]:
    """The decoded request body, its plaintext length (411 if unknown) and its checksum (known
    once the body was read whole). `compute`: an algorithm to compute when the body carries
    no checksum of its own; `checksum_header=False`: an x-amz-checksum-<alg> header is not
    the body's."""
    h = req.headers
    payload = req.auth.payload
    streaming = payload.startswith("STREAMING-")
    received = aws_chunked.trailer_checksum(h.get("x-amz-trailer")) if streaming else BodyChecksum()
    if received.algorithm is None and checksum_header:
        received = _header_checksum(req)
    if received.algorithm is None:
        received.algorithm = compute
    if streaming:
        length = h.get("x-amz-decoded-content-length")
        if length is None or not length.isdigit():
            raise S3Error("MissingContentLength", "aws-chunked uploads need x-amz-decoded-content-length", 411)
        stream = aws_chunked.decode(req.body, mode=payload, decoded_length=int(length),
                                    signing=req.auth.chunk_signing, trailer=h.get("x-amz-trailer"),
                                    received=received)
        return stream, int(length), received
    length = h.get("content-length")
    if length is None or not length.isdigit():
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
    return verified(req, int(length), received), int(length), received


async def buffered_body(req: S3Request, limit: int, *, checksum_header: bool = True) -> bytes:
    """A small body read whole, refused before reading when it declares more than `limit`
    bytes, and checked like any other body (signed SHA-256 or chunk signatures, checksum,
    Content-MD5) before anyone acts on it. `checksum_header=False`: an x-amz-checksum-<alg>
    header is not the body's (CompleteMultipartUpload's is the whole object's)."""
    h = req.headers
    streaming = req.auth.payload.startswith("STREAMING-")
    declared = h.get("x-amz-decoded-content-length") if streaming else h.get("content-length")
    if declared is None and "transfer-encoding" not in h and not streaming:
        stream: AsyncIterator[bytes] = verified(req, 0, None if checksum_header else BodyChecksum())  # no body
    else:
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise xml_bodies.too_large(limit)
        stream, _, _ = body_stream(req, checksum_header=checksum_header)
    expected_md5 = content_md5(req)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise xml_bodies.too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    check_md5(expected_md5, hashlib.md5(body) if expected_md5 is not None else None)
    return body


async def verified(req: S3Request, length: int, received: BodyChecksum | None = None) -> AsyncIterator[bytes]:
    """The plain body, checked against its declared SHA-256, length and checksum header
    (`received` gets the checksum once the body was read whole)."""
    payload = req.auth.payload
    digest = hashlib.sha256() if payload != "UNSIGNED-PAYLOAD" else None
    if received is None:
        received = _header_checksum(req)
    checksum = received.running()
    digests = Digests(digest, checksum)
    seen = 0
    async for chunk in req.body:
        if not chunk:
            continue
        seen += len(chunk)
        if seen > length:
            raise S3Error("IncompleteBody", "the body is longer than Content-Length")
        await digests.feed(chunk)
        yield chunk
    await digests.finish()
    if seen != length:
        raise S3Error("IncompleteBody",
                      "You did not provide the number of bytes specified by the Content-Length HTTP header")
    if digest is not None and not hmac.compare_digest(digest.hexdigest(), payload.lower()):
        raise S3Error("XAmzContentSHA256Mismatch",
                      "The provided 'x-amz-content-sha256' header does not match what was computed.")
    if checksum is not None:
        if received.sent is not None and not hmac.compare_digest(checksum.digest(), received.sent):
            raise S3Error("BadDigest", f"The {checksums.header(checksum.algorithm)} you specified did not "
                          "match the calculated checksum.")
        received.digest = checksum.digest()


_NOT_VALUES = ("x-amz-checksum-type", "x-amz-checksum-algorithm", "x-amz-checksum-mode")


def _header_checksum(req: S3Request) -> BodyChecksum:
    """The checksum an x-amz-checksum-<algorithm> header declares, with its value (a body
    carries one checksum at most, as in S3)."""
    names = [n for n in req.headers if n.startswith("x-amz-checksum-") and n not in _NOT_VALUES]
    if not names:
        return BodyChecksum()
    if len(names) > 1:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum "
                      "Types are not allowed.")
    algorithm = checksums.algorithm_of(names[0].removeprefix("x-amz-checksum-"))
    if algorithm is None:
        raise S3Error("InvalidRequest", f"The algorithm of {names[0]} is not one S3 has.")
    sent = checksums.decode_value(algorithm, req.headers[names[0]])
    if sent is None:
        raise S3Error("InvalidRequest", f"Value for {names[0]} header is invalid.")
    return BodyChecksum(algorithm, sent)


def content_md5(req: S3Request) -> bytes | None:
    """The body's declared MD5 (Content-MD5), checked by whoever reads the body."""
    value = req.headers.get("content-md5")
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 16:
        raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.")
    return raw


def check_md5(expected: bytes | None, md5: hashlib._Hash | None) -> None:
    if expected is not None and md5 is not None and not hmac.compare_digest(expected, md5.digest()):
        raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
