"""Who sent an S3 request: SigV4 in the Authorization header or a presigned query string.

Returns the caller and how its body is to be read (plain with a declared SHA-256, unsigned,
or aws-chunked with chunk signatures or checksum trailers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from gateway.s3.aws_chunked import SIGNED, UNSIGNED_TRAILER, ChunkSigning
from gateway.s3.errors import S3Error
from kms_core.client import Caller
from kms_core.sigv4 import (
    UNSIGNED_PAYLOAD,
    ErrorKind,
    SigV4Error,
    UnknownAccessKey,
    amz_and_content_headers,
    amz_headers,
    verify_header,
    verify_presigned,
)

_S3_CODES = {
    ErrorKind.MISSING: ("AccessDenied", "Anonymous requests are not allowed; sign the request"),
    ErrorKind.MALFORMED: ("AuthorizationHeaderMalformed", None),
    ErrorKind.UNKNOWN_KEY: ("InvalidAccessKeyId", None),
    ErrorKind.EXPIRED: ("RequestTimeTooSkewed", None),
    ErrorKind.MISMATCH: ("SignatureDoesNotMatch", None),
    ErrorKind.UNSIGNED: ("AccessDenied", "There were headers present in the request which were not signed"),
}


@dataclass(frozen=True)
class Authenticated:
    caller: Caller
    secret: str = field(repr=False)  # the account's SigV4 secret: never in a log line
    payload: str  # a hex SHA-256, UNSIGNED-PAYLOAD, or one of the STREAMING-* forms
    chunk_signing: ChunkSigning | None


def authenticate(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    credentials: Callable[[str], tuple[str, str]],
) -> Authenticated:
    """`credentials(access_key_id)` gives (account id, secret) or raises UnknownAccessKey."""
    secrets: dict[str, tuple[str, str]] = {}

    def secret_for(akid: str) -> str:
        secrets[akid] = credentials(akid)
        return secrets[akid][1]

    try:
        if "authorization" in headers:
            payload = headers.get("x-amz-content-sha256")
            if not payload:
                raise S3Error("InvalidRequest", "Missing required header for this request: "
                              "x-amz-content-sha256", 400)
            signed = verify_header(method=method, raw_path=raw_path, raw_query=raw_query,
                                   headers=headers, payload_hash=payload, secret_for=secret_for,
                                   service="s3", double_encode_path=False,
                                   must_sign=amz_and_content_headers)
        elif "X-Amz-Signature=" in raw_query:
            query = dict(parse_qsl(raw_query, keep_blank_values=True))
            # A presigned URL travels: whoever holds it may add headers, so every x-amz-* header
            # sent must be one the signer listed (AWS's rule); a signed x-amz-content-sha256
            # then binds the body as it does for a signed request.
            signed = verify_presigned(method=method, raw_path=raw_path, raw_query=raw_query,
                                      query=query, headers=headers, secret_for=secret_for,
                                      service="s3", must_sign=amz_headers)
            payload = headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
        else:
            raise SigV4Error(ErrorKind.MISSING, "anonymous request")
    except UnknownAccessKey:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
                      403) from None
    except SigV4Error as e:
        code, message = _S3_CODES[e.kind]
        error = S3Error(code, message or e.message, 403)
        if e.headers:
            error.details["HeadersNotSigned"] = ", ".join(e.headers)
        raise error from None
    account_id, secret = secrets[signed.access_key_id]
    chunk_signing = None
    if payload == SIGNED:
        chunk_signing = ChunkSigning(signed.signing_key, signed.amz_date, signed.scope, signed.signature)
    elif payload.startswith("STREAMING-") and payload != UNSIGNED_TRAILER:
        raise S3Error("NotImplemented", f"x-amz-content-sha256 {payload} is not supported", 501)
    elif not payload.startswith("STREAMING-") and payload != UNSIGNED_PAYLOAD and (
        len(payload) != 64 or any(c not in "0123456789abcdef" for c in payload.lower())
    ):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256 or UNSIGNED-PAYLOAD")
    return Authenticated(Caller(account_id, signed.region, signed.access_key_id), secret,
                         payload, chunk_signing)


def as_unknown(fn: Callable[[str], tuple[str, str]]) -> Callable[[str], tuple[str, str]]:
    """Adapt a lookup that raises anything for unknown ids to raise UnknownAccessKey."""

    def lookup(akid: str) -> tuple[str, str]:
        try:
            return fn(akid)
        except UnknownAccessKey:
            raise
        except Exception:  # noqa: BLE001 - any lookup failure means "not a key we know"
            raise UnknownAccessKey(akid) from None

    return lookup
