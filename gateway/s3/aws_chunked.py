"""Decoding of `aws-chunked` request bodies, with chunk signatures and checksum trailers.

Two forms arrive from real clients:

- `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: `hex-size;chunk-signature=<sig>\\r\\n<data>\\r\\n`
  repeated, ending with a 0-size chunk. Each signature chains from the previous one, starting
  at the request's own signature:
  ``HMAC(signing key, "AWS4-HMAC-SHA256-PAYLOAD\\n" date "\\n" scope "\\n" previous "\\n"
  SHA256("") "\\n" SHA256(data))``.
- `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (boto3 over HTTPS): `hex-size\\r\\n<data>\\r\\n`, then
  `0\\r\\n`, trailer lines such as `x-amz-checksum-crc32:<base64>\\r\\n`, and an empty line.

`decode()` yields the payload as verified chunks and raises `ChunkedError` on any framing,
signature, length or checksum failure; callers must not commit what they wrote until the
generator has finished without error.

`encode_crc32()` is the other direction, for the proxy's own uploads to its backend: the
payload as a single chunk (its length is known up front, so the framed length is too) with an
`x-amz-checksum-crc32` trailer, computed while the payload streams out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gateway.s3 import checksums
from gateway.s3.checksums import BodyChecksum, Running
from gateway.s3.digests import Digests
from gateway.s3.errors import S3Error
from kms_core.sigv4 import EMPTY_SHA256

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MAX_CHUNK = 16 * 1024 * 1024
MAX_LINE = 4096


# The HTTP status of a body error follows from its S3 code; everything else is a bad request.
_STATUS = {"SignatureDoesNotMatch": 403, "NotImplemented": 501}


class ChunkedError(S3Error):
    """A request body that failed its framing, signatures, length or checksum."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, _STATUS.get(code, 400))


@dataclass
class ChunkSigning:
    signing_key: bytes = field(repr=False)
    amz_date: str
    scope: str
    seed_signature: str


class _Reader:
    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            self._buf += await self._stream.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        return True

    async def line(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self._buf[:i])
                del self._buf[: i + 2]
                return out
            if len(self._buf) > MAX_LINE:
                raise ChunkedError("IncompleteBody", "an aws-chunked header line is too long")
            if not await self._fill():
                raise ChunkedError("IncompleteBody", "the aws-chunked body ended early")

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                raise ChunkedError("IncompleteBody", "the aws-chunked body ended early")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def at_end(self) -> bool:
        while not self._buf:
            if not await self._fill():
                return True
        return False


async def decode(
    stream: AsyncIterator[bytes],
    *,
    mode: str,
    decoded_length: int | None,
    signing: ChunkSigning | None = None,
    trailer: str | None = None,
    received: BodyChecksum | None = None,
) -> AsyncIterator[bytes]:
    """Yield the decoded payload of an aws-chunked body (see the module docstring).

    `received` (from `trailer_checksum`) gets the verified checksum once the body ended
    cleanly; it may also ask for an algorithm the body carries no trailer of (computed)."""
    if mode == SIGNED and signing is None:
        raise ChunkedError("AccessDenied", "signed chunks need the request's signing key")
    if received is None:
        received = trailer_checksum(trailer)
    checksum = received.running()
    digests = Digests(checksum)
    reader = _Reader(stream)
    previous = signing.seed_signature if signing else ""
    total = 0
    while True:
        size, ext, data = await _chunk(reader)
        if mode == SIGNED:
            assert signing is not None
            previous = _signed_chunk(signing, previous, ext, data, total)
        if size == 0:
            break
        if await reader.exactly(2) != b"\r\n":
            raise ChunkedError("IncompleteBody", "an aws-chunked chunk is not terminated by CRLF")
        total += size
        if decoded_length is not None and total > decoded_length:
            raise ChunkedError("IncompleteBody", "the body is longer than x-amz-decoded-content-length")
        await digests.feed(data)
        yield data
    trailers = await _trailers(reader)
    if decoded_length is not None and total != decoded_length:
        raise ChunkedError("IncompleteBody",
                           f"the body has {total} bytes, x-amz-decoded-content-length says {decoded_length}")
    await digests.finish()
    if checksum is not None:
        if trailer:
            _check_trailer(checksum, trailer, trailers)
        elif received.sent is not None and not hmac.compare_digest(checksum.digest(), received.sent):
            raise ChunkedError("BadDigest", f"the {checksums.header(checksum.algorithm)} header does not "
                               "match the body")
        received.digest = checksum.digest()


def trailer_checksum(trailer: str | None) -> BodyChecksum:
    """The checksum an x-amz-trailer header announces (no algorithm: no trailer)."""
    if not trailer:
        return BodyChecksum()
    name = trailer.strip().lower()
    algorithm = checksums.algorithm_of(name.removeprefix("x-amz-checksum-"))
    if not name.startswith("x-amz-checksum-") or algorithm is None:
        raise ChunkedError("InvalidRequest", f"unsupported trailer {trailer!r}")
    return BodyChecksum(algorithm)


async def _chunk(reader: _Reader) -> tuple[int, str, bytes]:
    """(size, header extensions, data) of the next chunk; its CRLF is left unread."""
    header = (await reader.line()).decode("latin-1")
    size_text, _, ext = header.partition(";")
    try:
        size = int(size_text, 16)
    except ValueError:
        raise ChunkedError("IncompleteBody", f"bad aws-chunked size line {header[:40]!r}") from None
    if size > MAX_CHUNK:
        raise ChunkedError("InvalidRequest", "aws-chunked chunk larger than 16 MiB")
    return size, ext, await reader.exactly(size) if size else b""


def _signed_chunk(signing: ChunkSigning, previous: str, ext: str, data: bytes, offset: int) -> str:
    """Checks a chunk's signature (chained from the `previous` one); returns it for the next."""
    if not ext.startswith("chunk-signature="):
        raise ChunkedError("SignatureDoesNotMatch", "a chunk has no chunk-signature")
    to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", signing.amz_date, signing.scope, previous,
                         EMPTY_SHA256, hashlib.sha256(data).hexdigest()])
    expected = hmac.new(signing.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    given = ext[len("chunk-signature="):].strip()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise ChunkedError("SignatureDoesNotMatch", f"the signature of chunk at byte {offset} does not match")
    return expected


def _check_trailer(checksum: Running, trailer: str, trailers: dict[str, str]) -> None:
    sent = trailers.get(trailer.strip().lower())
    if sent is None:
        raise ChunkedError("InvalidRequest", f"the {trailer} trailer is missing")
    if not hmac.compare_digest(sent.encode(), checksum.value().encode()):
        raise ChunkedError("BadDigest", f"the {trailer} trailer does not match the body")


async def _trailers(reader: _Reader) -> dict[str, str]:
    """The trailer lines after the final chunk, up to the empty line that ends the body."""
    trailers: dict[str, str] = {}
    while True:
        line = (await reader.line()).decode("latin-1")
        if not line:
            break
        k, sep, v = line.partition(":")
        if not sep:
            raise ChunkedError("IncompleteBody", f"bad trailer line {line[:40]!r}")
        trailers[k.strip().lower()] = v.strip()
    if not await reader.at_end():
        raise ChunkedError("IncompleteBody", "bytes after the end of the aws-chunked body")
    return trailers


TRAILER_CRC32 = "x-amz-checksum-crc32"
_CRC32_B64 = 8  # base64 of 4 bytes


def _frame_head(length: int) -> bytes:
    return f"{length:x}\r\n".encode() if length else b""


def encoded_length(length: int) -> int:
    """Bytes on the wire of `encode_crc32` over a payload of `length` bytes."""
    body = len(_frame_head(length)) + length + 2 if length else 0
    return body + len(b"0\r\n") + len(TRAILER_CRC32) + 1 + _CRC32_B64 + len(b"\r\n\r\n")


def encoded_headers(length: int) -> dict[str, str]:
    """What a request carrying `encode_crc32(..., length)` declares (x-amz-content-sha256 aside)."""
    return {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(length),
            "x-amz-trailer": TRAILER_CRC32, "content-length": str(encoded_length(length))}


async def encode_crc32(stream: AsyncIterator[bytes | memoryview], length: int,
                       crc: Running | None = None) -> AsyncIterator[bytes | memoryview]:
    """`stream`, exactly `length` bytes, as one aws-chunked chunk and a CRC32 trailer (computed
    into `crc` when given, for the caller to read once the stream has ended)."""
    crc = crc or Running("CRC32")  # fast enough to run inline (~20 us per MiB): no digest thread
    assert crc.algorithm == "CRC32"
    seen = 0
    if length:
        yield _frame_head(length)
    async for piece in stream:
        seen += len(piece)
        if seen > length:
            raise ChunkedError("IncompleteBody", "the payload is longer than declared")
        crc.update(piece)
        yield piece
    if seen != length:
        raise ChunkedError("IncompleteBody", "the payload is shorter than declared")
    yield (b"\r\n" if length else b"") + f"0\r\n{TRAILER_CRC32}:{crc.value()}\r\n\r\n".encode()
