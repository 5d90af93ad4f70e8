"""aws-chunked request bodies with per-chunk signatures, as an SDK builds them (for the decoder's
tests and the proxy's security tests)."""

from __future__ import annotations

import hashlib
import hmac

from gateway.s3.aws_chunked import ChunkSigning
from kms_core.sigv4 import EMPTY_SHA256


def signed_body(chunks: list[bytes], sigs: list[str]) -> bytes:
    out = b""
    for data, sig in zip([*chunks, b""], sigs, strict=True):
        out += f"{len(data):x};chunk-signature={sig}\r\n".encode() + data + b"\r\n"
    return out


def sign_chunks(chunks: list[bytes], s: ChunkSigning) -> list[str]:
    sigs, prev = [], s.seed_signature
    for data in [*chunks, b""]:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", s.amz_date, s.scope, prev, EMPTY_SHA256,
                         hashlib.sha256(data).hexdigest()])
        prev = hmac.new(s.signing_key, sts.encode(), hashlib.sha256).hexdigest()
        sigs.append(prev)
    return sigs
