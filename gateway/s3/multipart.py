"""Multipart objects, pure: part layouts, plaintext ranges across parts, upload tokens.

A multipart object is N independent package streams (envelope.py), p in every package's AAD.
Format v3 and v4 parts start with their salt (the *header*) and the object's layout is sealed at
completion into its metadata (v3) or its manifest tag (v4) (envelope.py, uploads.py): readers
take it from there. What follows is
how v2 objects (parts sealed with `part_nonce(base, p)`, layout nowhere) are still read.
The backend keeps the parts back to back
and remembers nothing we can put in metadata after the upload started, so the plaintext size
and the place of a byte follow from the parts' sealed sizes (the *layout*). Readers learn it
from the backend: HEAD with partNumber=1 gives part 1's size and the part count, HEAD with
partNumber=N the last part's; when the parts in between must then all be as big as part 1
(`Layout.guess`), that is the layout, else every part is asked for. Completion refuses the
rare layouts for which that guess would be wrong (`ambiguous`), so the guess is exact for
every object this proxy completed; AEAD still fails on any wrong guess (never garbage).

The UploadId we hand out is a token: the backend's upload id plus what UploadPart needs to
seal (sealed data key, nonce, algorithm) and a MAC under a key derived from the data key, so
the proxy keeps no upload state and a client cannot choose nonces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.s3.envelope import (
    FORMAT_VERSION_2,
    FORMAT_VERSION_3,
    FORMAT_VERSION_4,
    PACKAGE,
    PIECE,
    SEALED_PACKAGE,
    TAG,
    Algorithm,
    Buffer,
    ObjectCorrupt,
    Opener,
    PackageCipher,
    Pieces,
    package_count,
    plain_size,
    span,
)

MIN_PART = 5 * 1024 * 1024  # plaintext; every part but the last
TOKEN_PREFIX = "ssegw1_"
_MAC = 16
# The checksum a backend upload is created with (UploadToken.backend_checksum): CRC32, the one
# every S3 implementation that takes checksums knows, computed at ~7 GB/s.
BACKEND_CHECKSUM = "CRC32"


class LayoutAmbiguous(Exception):
    """Parts whose sizes a reader would guess wrong: refused at completion."""


@dataclass(frozen=True)
class Layout:
    """Sealed sizes of the parts of a stored object, in order.

    `first` is the number of the first part: 0 for a single-PUT object (one stream, "part 0"),
    1 for a multipart object (parts 1..N).
    """

    sealed: tuple[int, ...]
    first: int = 1
    header: int = 0  # bytes each part's sealed stream starts with (v3 parts: their salt)
    plain: tuple[int, ...] = field(init=False, repr=False)
    plain_offsets: tuple[int, ...] = field(init=False, repr=False)
    sealed_offsets: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.sealed:
            raise ObjectCorrupt("an object has at least one part")
        if any(s < self.header for s in self.sealed):
            raise ObjectCorrupt("a part is shorter than its header")
        plain = tuple(plain_size(s - self.header) for s in self.sealed)  # ObjectCorrupt for impossible sizes
        po, so, p, s = [], [], 0, 0
        for ps, ss in zip(plain, self.sealed, strict=True):
            po.append(p)
            so.append(s)
            p += ps
            s += ss
        object.__setattr__(self, "plain", plain)
        object.__setattr__(self, "plain_offsets", tuple(po))
        object.__setattr__(self, "sealed_offsets", tuple(so))

    @property
    def size(self) -> int:
        return sum(self.plain)

    @property
    def sealed_total(self) -> int:
        return sum(self.sealed)

    @property
    def count(self) -> int:
        return len(self.sealed)

    def part_range(self, number: int) -> tuple[int, int]:
        """Plaintext [start, end) of part `number` (1-based, as S3's partNumber)."""
        i = number - 1
        return self.plain_offsets[i], self.plain_offsets[i] + self.plain[i]

    @staticmethod
    def guess(total: int, count: int, first: int, last: int | None) -> Layout | None:
        """The layout when parts 2..N-1 must be as big as part 1; None when they cannot be."""
        try:
            if count == 1:
                return Layout((total,)) if first == total else None
            if count == 2:
                return Layout((first, total - first)) if 0 < total - first else None
            if last is None or total != (count - 1) * first + last or not 0 < last:
                return None
            return Layout((first,) * (count - 1) + (last,))
        except ObjectCorrupt:
            return None


def ambiguous(sealed: tuple[int, ...]) -> bool:
    """True when `Layout.guess` from part 1, part N and the total would give another layout."""
    n = len(sealed)
    if n < 3:
        return False
    first, last = sealed[0], sealed[-1]
    return sum(sealed) == (n - 1) * first + last and any(s != first for s in sealed[1:-1])


@dataclass(frozen=True)
class Segment:
    """The packages of one part that a plaintext range needs."""

    part: int  # part number (0 for a single-PUT object)
    first: int  # first package, within the part
    total: int  # packages in the part
    sealed_len: int  # bytes of the sealed stream this segment covers
    skip: int  # plaintext bytes to drop from the segment's first package
    length: int  # plaintext bytes wanted from the segment
    final: bool  # the segment ends with the part's final package
    header: int = 0  # the segment starts with its part's header (v3), this long, checked and dropped


def plan(layout: Layout, start: int, end: int) -> tuple[int, int, list[Segment]]:
    """(sealed start, sealed end, segments) for plaintext bytes [start, end); 0 <= start <= end.

    Segments of consecutive parts lie back to back in the sealed stream, so one backend range
    request covers them all. An empty range (or an empty object) reads one final package: it
    is authenticated, so an empty body is as trustworthy as any other.
    """
    h = layout.header
    if start == end:
        if layout.size == 0:
            # An empty object: read and authenticate its one empty final package.
            return h, layout.sealed[0], [Segment(layout.first, 0, 1, layout.sealed[0] - h, 0, 0, True)]
        raise ValueError("empty range of a non-empty object")
    if not 0 <= start < end <= layout.size:
        raise ValueError("range outside the object")
    segs: list[Segment] = []
    sealed_start = sealed_end = -1
    for i, (off, size) in enumerate(zip(layout.plain_offsets, layout.plain, strict=True)):
        lo, hi = max(start, off), min(end, off + size)
        if lo >= hi:
            continue
        sp = span(lo - off, hi - off, size)
        total = package_count(size)
        base = layout.sealed_offsets[i] + h
        # A segment after the first starts at its part's beginning, header included (the
        # bytes lie back to back); the first one skips its header.
        header = h if sealed_start >= 0 else 0
        if sealed_start < 0:
            sealed_start = base + sp.sealed_start
        sealed_end = base + sp.sealed_end
        segs.append(Segment(layout.first + i, sp.first, total, header + sp.sealed_end - sp.sealed_start,
                            sp.skip, sp.length, sp.last == total - 1, header))
    return sealed_start, sealed_end, segs


class SegmentOpener:
    """Streaming decryption of a planned range: sealed bytes in, pieces of wanted plaintext out.

    Each segment gets its own Opener (its part's cipher), all opening into one Pieces; the
    plaintext is trimmed to the range there, so no further layer touches the bytes.
    """

    def __init__(self, segments: list[Segment], cipher_for: Callable[[int], PackageCipher],
                 header_for: Callable[[int], bytes] | None = None, piece: int = PIECE) -> None:
        self._segments = segments
        self._cipher_for = cipher_for
        self._header_for = header_for
        # Every package a segment covers is opened whole before it is trimmed.
        self._out = Pieces(piece, sum(_opened_bytes(seg) for seg in segments))
        self._index = -1
        self._opener: Opener | None = None
        self._left_sealed = 0
        self._skip = 0
        self._left = 0
        self._header = b""  # the header bytes still expected at the front of the segment
        self._next()

    def _next(self) -> None:
        self._index += 1
        if self._index < len(self._segments):
            seg = self._segments[self._index]
            self._opener = Opener(self._cipher_for(seg.part), seg.first, seg.total, self._out)
            self._left_sealed, self._skip, self._left = seg.sealed_len, seg.skip, seg.length
            if seg.header:
                if self._header_for is None:
                    raise ValueError("a segment with a part header needs header_for")
                self._header = self._header_for(seg.part)
                if len(self._header) != seg.header:
                    raise ObjectCorrupt("a part header has the wrong length")
        else:
            self._opener = None

    def _trim(self, plain: memoryview) -> None:
        """Keeps of `plain` (the newest bytes of the pieces) only what the range wants."""
        n = len(plain)
        if self._skip:
            cut = min(self._skip, n)
            self._skip -= cut
            if cut:
                plain[:n - cut] = plain[cut:]
                self._out.unclaim(cut)
                n -= cut
        if n > self._left:
            self._out.unclaim(n - self._left)
            n = self._left
        self._left -= n

    def _close_segment(self) -> None:
        assert self._opener is not None
        seg = self._segments[self._index]
        tail = self._opener.finish(seg.final)
        if tail is not None:
            self._trim(tail)
        if self._left:
            raise ObjectCorrupt("a part is shorter than its recorded size")
        self._next()

    def feed(self, data: Buffer) -> list[memoryview]:
        """Opens what `data` completes; the pieces of plaintext that are full."""
        view = memoryview(data)
        while view:
            if self._opener is None:
                raise ObjectCorrupt("the object is longer than its recorded size")
            take = view[:self._left_sealed]
            view = view[len(take):]
            self._left_sealed -= len(take)
            if self._header:
                # The part's header as stored must be the one the object's metadata binds.
                n = min(len(self._header), len(take))
                if not hmac.compare_digest(bytes(take[:n]), self._header[:n]):
                    raise ObjectCorrupt(f"part {self._segments[self._index].part} is not the part "
                                        "the object was completed with")
                self._header, take = self._header[n:], take[n:]
            for plain in self._opener.feed(take):
                self._trim(plain)
            if self._left_sealed == 0:
                self._close_segment()
        return self._out.take()

    def finish(self) -> list[memoryview]:
        """Every piece not yet taken, once the whole range was read."""
        if self._opener is not None:
            raise ObjectCorrupt("the object ends before its recorded size")
        return self._out.take(everything=True)


def _opened_bytes(seg: Segment) -> int:
    """Plaintext bytes of the packages `seg` covers (what its opener writes before trimming):
    its sealed bytes less a tag for each package (whole ones, the last perhaps short)."""
    sealed = seg.sealed_len - seg.header
    return max(0, sealed - max(1, -(-sealed // SEALED_PACKAGE)) * TAG)


# ---------------------------------------------------------------------- upload tokens


@dataclass(frozen=True)
class UploadToken:
    """What an UploadId carries: the backend upload and the sealing parameters of its parts."""

    backend_id: str
    bucket: str
    key: str
    algorithm: Algorithm
    base_nonce: bytes
    sealed_key: bytes = field(repr=False)
    kms_key_id: str
    sse: str
    context: dict[str, str] | None = None
    bucket_key_salt: bytes | None = None
    customer: str | None = None  # SSE-C uploads: the key record (sse_c.py); sealed_key is customer-wrapped
    format: str = FORMAT_VERSION_4  # the upload's object format: v4 (token version 3), v3 (2) or v2 (1)
    checksum: tuple[str, str] | None = None  # (algorithm, type) the upload declared (checksums.py)
    # The algorithm the backend upload was created with ("CRC32"), whose checksum of each sealed
    # part goes with the part and again in Complete; None: the backend upload declared none.
    backend_checksum: str | None = None

    def _body(self) -> bytes:
        fields = [self.backend_id.encode(), self.bucket.encode(), self.key.encode(),
                  self.algorithm.value.encode(), self.base_nonce, self.sealed_key,
                  self.kms_key_id.encode(), self.sse.encode(),
                  json.dumps(self.context, sort_keys=True).encode() if self.context else b"",
                  self.bucket_key_salt or b""]
        # An 11th, 12th and 13th field only where used: older tokens stay valid.
        if self.customer is not None or self.checksum is not None or self.backend_checksum is not None:
            fields.append((self.customer or "").encode())
        if self.checksum is not None or self.backend_checksum is not None:
            fields.append(" ".join(self.checksum).encode() if self.checksum is not None else b"")
        if self.backend_checksum is not None:
            fields.append(self.backend_checksum.encode())
        version = {FORMAT_VERSION_4: b"\x03", FORMAT_VERSION_3: b"\x02"}.get(self.format, b"\x01")
        return version + b"".join(struct.pack(">H", len(f)) + f for f in fields)

    def encode(self, data_key: bytes) -> str:
        body = self._body()
        mac = hmac.new(_mac_key(data_key), body, hashlib.sha256).digest()[:_MAC]
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def verify(self, token: str, data_key: bytes) -> bool:
        raw = _raw(token)
        want = hmac.new(_mac_key(data_key), raw[:-_MAC], hashlib.sha256).digest()[:_MAC]
        return len(raw) > _MAC and hmac.compare_digest(want, raw[-_MAC:])


def _mac_key(data_key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, b"ssegw/upload-token/v1").derive(data_key)


def _raw(token: str) -> bytes:
    b64 = token[len(TOKEN_PREFIX):]
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))


def is_token(upload_id: str) -> bool:
    return upload_id.startswith(TOKEN_PREFIX)


def decode_token(token: str) -> UploadToken:
    """Parse an UploadId we issued (ValueError if it is not one); the MAC is checked by
    `UploadToken.verify` once the data key is known."""
    if not is_token(token):
        raise ValueError("not an upload token")
    try:
        raw = _raw(token)
    except (ValueError, TypeError):
        raise ValueError("malformed upload token") from None
    if len(raw) < 1 + _MAC or raw[0] not in (1, 2, 3):
        raise ValueError("unknown upload token version")
    body, pos, fields = raw[:-_MAC], 1, []
    while pos < len(body):
        if pos + 2 > len(body):
            raise ValueError("malformed upload token")
        (n,) = struct.unpack_from(">H", body, pos)
        fields.append(body[pos + 2:pos + 2 + n])
        pos += 2 + n
    if pos != len(body) or len(fields) not in (10, 11, 12, 13):
        raise ValueError("malformed upload token")
    try:
        declared = fields[11].decode().split(" ") if len(fields) >= 12 and fields[11] else None
        backend_checksum = fields[12].decode() if len(fields) == 13 else None
        if backend_checksum is not None and backend_checksum != BACKEND_CHECKSUM:
            raise ValueError("malformed upload token")
        if declared is not None and len(declared) != 2:
            raise ValueError("malformed upload token")
        return UploadToken(
            backend_id=fields[0].decode(), bucket=fields[1].decode(), key=fields[2].decode(),
            algorithm=Algorithm(fields[3].decode()), base_nonce=fields[4], sealed_key=fields[5],
            kms_key_id=fields[6].decode(), sse=fields[7].decode(),
            context=json.loads(fields[8]) if fields[8] else None,
            bucket_key_salt=fields[9] or None,
            customer=(fields[10].decode() or None) if len(fields) >= 11 else None,
            format={3: FORMAT_VERSION_4, 2: FORMAT_VERSION_3}.get(raw[0], FORMAT_VERSION_2),
            checksum=(declared[0], declared[1]) if declared is not None else None,
            backend_checksum=backend_checksum,
        )
    except (UnicodeDecodeError, ValueError):
        raise ValueError("malformed upload token") from None


def backend_upload_id(upload_id: str) -> str:
    """The backend's upload id for an UploadId we issued, or the id itself (from a listing)."""
    if not is_token(upload_id):
        return upload_id
    return decode_token(upload_id).backend_id


__all__ = ["BACKEND_CHECKSUM", "Layout", "LayoutAmbiguous", "MIN_PART", "PACKAGE", "Segment", "SegmentOpener",
           "UploadToken", "ambiguous", "backend_upload_id", "decode_token", "is_token", "plan"]
