"""AWS Signature Version 4 verification, pure: no HTTP framework, no I/O.

Shared by the KMS API and the S3 proxy. The caller hands over the request's method, raw path,
raw query string, headers and payload hash, plus a function that returns the secret of an
access key id; `verify_header` / `verify_presigned` return who signed and the signing key (the
S3 proxy needs it to check aws-chunked chunk signatures) or raise `SigV4Error` whose `kind` says
what was wrong, so each protocol can answer in its own error vocabulary.

Reference: AWS "Signature Version 4 signing process" (canonical request, string to sign,
derived signing key). Signatures are compared in constant time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_CRED_RE = re.compile(r"^([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request$")
_SPACES = re.compile(r"\s+")


class ErrorKind(str, Enum):
    MISSING = "missing"  # no signature at all
    MALFORMED = "malformed"  # a signature that cannot be parsed
    UNKNOWN_KEY = "unknown_key"  # the access key id is not ours
    EXPIRED = "expired"  # request date outside the allowed skew (or presign expired)
    MISMATCH = "mismatch"  # the signature does not match
    UNSIGNED = "unsigned"  # headers the request carries that its signature does not cover


class SigV4Error(Exception):
    def __init__(self, kind: ErrorKind, message: str, headers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.headers = headers  # UNSIGNED: the headers that were sent but not signed


# Which headers a request may carry only if its signature covers them (lowercase name -> bool).
MustSign = Callable[[str], bool]


def amz_headers(name: str) -> bool:
    """AWS's rule: every x-amz-* header present is part of what was signed."""
    return name.startswith("x-amz-")


def amz_and_content_headers(name: str) -> bool:
    """x-amz-* plus the headers that change what a body means (type) or how it is checked (MD5)."""
    return name.startswith("x-amz-") or name in ("content-type", "content-md5")


def check_signed(headers: Mapping[str, str], signed: list[str], must_sign: MustSign | None) -> None:
    """Refuse a request that carries a header `must_sign` names but the signature does not cover:
    a captured or presigned request must not be replayed with headers the signer never saw."""
    if must_sign is None:
        return
    covered = set(signed)
    unsigned = tuple(sorted(n for n in headers if n not in covered and must_sign(n)))
    if unsigned:
        raise SigV4Error(ErrorKind.UNSIGNED, "There were headers present in the request which were "
                         f"not signed: {', '.join(unsigned)}", unsigned)


@dataclass(frozen=True)
class SignedBy:
    access_key_id: str
    region: str
    service: str
    amz_date: str
    scope: str
    signature: str
    signing_key: bytes = field(repr=False)


class UnknownAccessKey(Exception):
    """Raised by the secret lookup for an access key id it does not know."""


SecretLookup = Callable[[str], str]


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    k = hmac.new(k, region.encode(), hashlib.sha256).digest()
    k = hmac.new(k, service.encode(), hashlib.sha256).digest()
    return hmac.new(k, b"aws4_request", hashlib.sha256).digest()


def _uri_encode(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def canonical_uri(raw_path: str, *, double_encode: bool) -> str:
    """S3 signs the path as sent; other services URI-encode the (already encoded) path again."""
    path = raw_path or "/"
    if double_encode:
        return _uri_encode(path, safe="/-_.~")
    # Normalise the client's encoding: decode, then encode each segment the way AWS does.
    return "/".join(_uri_encode(unquote(seg)) for seg in path.split("/"))


def canonical_query(raw_query: str, *, exclude: str | None = None) -> str:
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        k, _, v = part.partition("=")
        k, v = unquote(k.replace("+", "%20")), unquote(v.replace("+", "%20"))
        if k == exclude:
            continue
        pairs.append((_uri_encode(k), _uri_encode(v)))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str], signed: list[str]) -> str:
    lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            raise SigV4Error(ErrorKind.MALFORMED, f"signed header {name!r} is missing from the request")
        value = value.strip()
        if "  " in value or "\t" in value or "\n" in value:  # the regex only when it can matter
            value = _SPACES.sub(" ", value)
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _parse_date(amz_date: str) -> datetime:
    # Parsed by hand: strptime costs more than the rest of the signature check.
    if len(amz_date) != 16 or amz_date[8] != "T" or amz_date[15] != "Z" or not (
        amz_date[:8].isdigit() and amz_date[9:15].isdigit()
    ):
        raise SigV4Error(ErrorKind.MALFORMED, f"X-Amz-Date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
    try:
        return datetime(int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8]),
                        int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15]), tzinfo=UTC)
    except ValueError:
        raise SigV4Error(ErrorKind.MALFORMED, f"X-Amz-Date {amz_date!r} is not a valid time") from None


def _parse_credential(credential: str) -> tuple[str, str, str, str]:
    m = _CRED_RE.match(credential)
    if not m:
        raise SigV4Error(ErrorKind.MALFORMED,
                         "Credential must be <access key>/<date>/<region>/<service>/aws4_request")
    return m.group(1), m.group(2), m.group(3), m.group(4)


def _check(
    *,
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
    credential: str,
    amz_date: str,
    signature: str,
    secret_for: SecretLookup,
    service: str | None,
    now: datetime,
    expires: timedelta | None,
    must_sign: MustSign | None = None,
) -> SignedBy:
    access_key_id, date, region, svc = _parse_credential(credential)
    if service is not None and svc != service:
        raise SigV4Error(ErrorKind.MALFORMED, f"credential scope names service {svc!r}, expected {service!r}")
    when = _parse_date(amz_date)
    if amz_date[:8] != date:
        raise SigV4Error(ErrorKind.MALFORMED, "the credential scope date does not match X-Amz-Date")
    if expires is None:
        if abs(now - when) > MAX_SKEW:
            raise SigV4Error(
                ErrorKind.EXPIRED,
                f"request date {amz_date} is more than 15 minutes from the server time "
                f"{now.strftime('%Y%m%dT%H%M%SZ')}",
            )
    else:
        if when - now > MAX_SKEW:
            raise SigV4Error(ErrorKind.EXPIRED, f"request date {amz_date} is in the future")
        if now > when + expires:
            raise SigV4Error(ErrorKind.EXPIRED, "the presigned request has expired")
    if "host" not in signed_headers:
        raise SigV4Error(ErrorKind.MALFORMED, "the Host header must be signed")
    check_signed(headers, signed_headers, must_sign)
    try:
        secret = secret_for(access_key_id)
    except UnknownAccessKey:
        raise SigV4Error(ErrorKind.UNKNOWN_KEY,
                         f"the access key id {access_key_id!r} does not exist") from None
    scope = f"{date}/{region}/{svc}/aws4_request"
    canonical = "\n".join([
        method, uri, query, canonical_headers(headers, signed_headers),
        ";".join(signed_headers), payload_hash,
    ])
    key = signing_key(secret, date, region, svc)
    expected = hmac.new(key, string_to_sign(amz_date, scope, canonical).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise SigV4Error(ErrorKind.MISMATCH,
                         "the request signature does not match the signature we calculated; "
                         "check the secret access key and the signing method")
    return SignedBy(access_key_id, region, svc, amz_date, scope, signature.lower(), key)


def parse_authorization(value: str) -> tuple[str, list[str], str]:
    """(credential, signed headers, signature) of an AWS4-HMAC-SHA256 Authorization header."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SigV4Error(ErrorKind.MALFORMED, f"unsupported authorization algorithm {algorithm!r}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            parts[k] = v
    try:
        return parts["Credential"], parts["SignedHeaders"].split(";"), parts["Signature"]
    except KeyError as e:
        raise SigV4Error(ErrorKind.MALFORMED, f"the Authorization header lacks {e.args[0]}") from None


def verify_header(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    payload_hash: str,
    secret_for: SecretLookup,
    service: str | None = None,
    double_encode_path: bool = True,
    now: datetime | None = None,
    must_sign: MustSign | None = None,
) -> SignedBy:
    """Verify a request signed in the Authorization header. `headers` keys are lowercase."""
    auth = headers.get("authorization")
    if not auth:
        raise SigV4Error(ErrorKind.MISSING, "the request is not signed (no Authorization header)")
    credential, signed, signature = parse_authorization(auth)
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise SigV4Error(ErrorKind.MALFORMED, "the X-Amz-Date header is missing")
    return _check(
        method=method, uri=canonical_uri(raw_path, double_encode=double_encode_path),
        query=canonical_query(raw_query), headers=headers, signed_headers=signed,
        payload_hash=payload_hash, credential=credential, amz_date=amz_date,
        signature=signature, secret_for=secret_for, service=service,
        now=now or datetime.now(UTC), expires=None, must_sign=must_sign,
    )


def verify_presigned(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    secret_for: SecretLookup,
    service: str | None = None,
    double_encode_path: bool = False,
    now: datetime | None = None,
    must_sign: MustSign | None = None,
) -> SignedBy:
    """Verify a presigned URL (X-Amz-Signature and friends in the query string)."""
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise SigV4Error(ErrorKind.MALFORMED, "X-Amz-Algorithm must be AWS4-HMAC-SHA256")
    try:
        credential = query["X-Amz-Credential"]
        amz_date = query["X-Amz-Date"]
        signed = query["X-Amz-SignedHeaders"].split(";")
        signature = query["X-Amz-Signature"]
        seconds = int(query["X-Amz-Expires"])
    except KeyError as e:
        raise SigV4Error(ErrorKind.MALFORMED, f"the presigned URL lacks {e.args[0]}") from None
    except ValueError:
        raise SigV4Error(ErrorKind.MALFORMED, "X-Amz-Expires must be a number of seconds") from None
    if not 1 <= seconds <= 604800:
        raise SigV4Error(ErrorKind.MALFORMED, "X-Amz-Expires must be 1-604800 seconds")
    return _check(
        method=method, uri=canonical_uri(raw_path, double_encode=double_encode_path),
        query=canonical_query(raw_query, exclude="X-Amz-Signature"), headers=headers,
        signed_headers=signed, payload_hash=headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD),
        credential=credential, amz_date=amz_date, signature=signature, secret_for=secret_for,
        service=service, now=now or datetime.now(UTC), expires=timedelta(seconds=seconds),
        must_sign=must_sign,
    )


def sign_headers(
    *,
    method: str,
    path: str,
    raw_query: str,
    headers: Mapping[str, str],
    payload_hash: str,
    access_key_id: str,
    secret: str,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """Headers that sign a request (x-amz-date, x-amz-content-sha256, authorization).

    `path` is sent and signed as given (already URI-encoded, S3 style); `headers` must include
    host. Used to re-sign the proxy's requests to its backend.
    """
    amz_date = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    all_headers = {k.lower(): v for k, v in headers.items()}
    all_headers["x-amz-date"] = amz_date
    all_headers["x-amz-content-sha256"] = payload_hash
    signed = sorted(all_headers)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    canonical = "\n".join([
        method, canonical_uri(path, double_encode=False), canonical_query(raw_query),
        canonical_headers(all_headers, signed), ";".join(signed), payload_hash,
    ])
    key = signing_key(secret, amz_date[:8], region, service)
    signature = hmac.new(key, string_to_sign(amz_date, scope, canonical).encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "authorization": f"{ALGORITHM} Credential={access_key_id}/{scope}, "
                         f"SignedHeaders={';'.join(signed)}, Signature={signature}",
    }
