"""Request bodies: decoded (plain or aws-chunked) and checked before anyone acts on them.

A body is checked against everything the request declares about it: its length, its signed
SHA-256 or chunk signatures, a checksum header or trailer, and Content-MD5. Streamed bodies
raise at their end when a check fails, so whoever writes them on must not commit before the
stream has ended cleanly (streaming.sealed_stream seals the final package only then).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import AsyncIterator

from gateway.s3 import aws_chunked, xml_bodies
from gateway.s3.digests import Digests
from gateway.s3.errors import S3Error
from gateway.s3.messages import S3Request


def body_stream(req: S3Request) -> tuple[AsyncIterator[bytes], int]:
    """The decoded request body and its plaintext length (411 if unknown)."""
    h = req.headers
    payload = req.auth.payload
    if payload.startswith("STREAMING-"):
        length = h.get("x-amz-decoded-content-length")
        if length is None or not length.isdigit():
            raise S3Error("MissingContentLength", "aws-chunked uploads need x-amz-decoded-content-length", 411)
        stream = aws_chunked.decode(req.body, mode=payload, decoded_length=int(length),
                                    signing=req.auth.chunk_signing, trailer=h.get("x-amz-trailer"))
        return stream, int(length)
    length = h.get("content-length")
    if length is None or not length.isdigit():
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
    return verified(req, int(length)), int(length)


async def buffered_body(req: S3Request, limit: int) -> bytes:
    """A small body read whole, refused before reading when it declares more than `limit`
    bytes, and checked like any other body (signed SHA-256 or chunk signatures, checksum,
    Content-MD5) before anyone acts on it."""
    h = req.headers
    streaming = req.auth.payload.startswith("STREAMING-")
    declared = h.get("x-amz-decoded-content-length") if streaming else h.get("content-length")
    if declared is None and "transfer-encoding" not in h and not streaming:
        stream: AsyncIterator[bytes] = verified(req, 0)  # no body at all
    else:
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise xml_bodies.too_large(limit)
        stream, _ = body_stream(req)
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


async def verified(req: S3Request, length: int) -> AsyncIterator[bytes]:
    """The plain body, checked against its declared SHA-256, length and checksum header."""
    payload = req.auth.payload
    digest = hashlib.sha256() if payload != "UNSIGNED-PAYLOAD" else None
    checksum = _checksum_header(req)
    digests = Digests(digest, checksum[1] if checksum is not None else None)
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
    if checksum is not None and not hmac.compare_digest(checksum[1].value(), req.headers[checksum[0]]):
        raise S3Error("BadDigest", f"The {checksum[0]} you specified did not match the calculated checksum.")


def _checksum_header(req: S3Request) -> tuple[str, aws_chunked.Checksum] | None:
    """(header, running checksum) of the x-amz-checksum-<algorithm> header the request sends."""
    checksum = None
    for name in req.headers:
        if name.startswith("x-amz-checksum-") and name not in ("x-amz-checksum-type", "x-amz-checksum-algorithm"):
            checksum = (name, aws_chunked.Checksum(name[len("x-amz-checksum-"):]))
    return checksum


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
