"""SigV4 verification against botocore's signer (the reference implementation)."""

from __future__ import annotations

import datetime as dt
import hashlib
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms_core.sigv4 import ErrorKind, SigV4Error, UnknownAccessKey, verify_header, verify_presigned

SECRETS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def lookup(akid: str) -> str:
    try:
        return SECRETS[akid]
    except KeyError:
        raise UnknownAccessKey(akid) from None


def sign(url: str, body: bytes = b"{}", service: str = "kms", secret: str | None = None,
         headers: dict[str, str] | None = None) -> AWSRequest:
    req = AWSRequest(method="POST", url=url, data=body, headers=headers or {"Content-Type": "application/json"})
    creds = Credentials("AKIDEXAMPLE", secret or SECRETS["AKIDEXAMPLE"])
    signer = S3SigV4Auth(creds, service, "cn-east-1") if service == "s3" else SigV4Auth(creds, service, "cn-east-1")
    signer.add_auth(req)
    return req


def check(req: AWSRequest, body: bytes = b"{}", **kw: object) -> object:
    parts = urlsplit(req.url)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers.setdefault("host", parts.netloc)
    return verify_header(method=req.method, raw_path=parts.path, raw_query=parts.query,
                         headers=headers, payload_hash=hashlib.sha256(body).hexdigest(),
                         secret_for=lookup, **kw)  # type: ignore[arg-type]


def test_accepts_botocore_signatures() -> None:
    signed = check(sign("http://127.0.0.1:9100/v1/kms/encrypt?b=2&a=1"), service="kms")
    assert signed.access_key_id == "AKIDEXAMPLE" and signed.region == "cn-east-1"  # type: ignore[attr-defined]


def test_s3_paths_with_special_characters() -> None:
    url = "http://127.0.0.1:9000/bucket/some%20dir/file%2Bname~x.txt?prefix=a%2Fb&list-type=2"
    req = sign(url, body=b"", service="s3", headers={"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    check(req, body=b"", service="s3", double_encode_path=False)


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        # Change the signature's last hex digit to a different one.
        (lambda h: h.__setitem__("authorization", h["authorization"][:-1]
                                 + ("1" if h["authorization"].endswith("0") else "0")), ErrorKind.MISMATCH),
        (lambda h: h.__setitem__("content-type", "text/plain"), ErrorKind.MISMATCH),
        (lambda h: h.pop("authorization"), ErrorKind.MISSING),
        (lambda h: h.__setitem__("authorization", "AWS4-HMAC-SHA256 Credential=x"), ErrorKind.MALFORMED),
        (lambda h: h.__setitem__("authorization", h["authorization"].replace("AKIDEXAMPLE", "AKIDOTHER")),
         ErrorKind.UNKNOWN_KEY),
    ],
)
def test_refusals_say_which(mutate: object, kind: ErrorKind) -> None:
    req = sign("http://127.0.0.1:9100/")
    parts = urlsplit(req.url)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = parts.netloc
    mutate(headers)  # type: ignore[operator]
    with pytest.raises(SigV4Error) as e:
        verify_header(method="POST", raw_path="/", raw_query="", headers=headers,
                      payload_hash=hashlib.sha256(b"{}").hexdigest(), secret_for=lookup)
    assert e.value.kind is kind


def test_changed_body_fails() -> None:
    with pytest.raises(SigV4Error) as e:
        check(sign("http://127.0.0.1:9100/"), body=b'{"x": 1}')
    assert e.value.kind is ErrorKind.MISMATCH


def test_dates_outside_fifteen_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime.now(dt.UTC)
    for skew in (dt.timedelta(minutes=-16), dt.timedelta(minutes=16)):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, s=skew, **k: now + s)
        req = sign("http://127.0.0.1:9100/")
        with pytest.raises(SigV4Error) as e:
            check(req)
        assert e.value.kind is ErrorKind.EXPIRED
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: now - dt.timedelta(minutes=14))
    check(sign("http://127.0.0.1:9100/"))


def test_presigned_urls() -> None:
    req = AWSRequest(method="GET", url="http://127.0.0.1:9000/bucket/key%20x.txt?versionId=3")
    S3SigV4QueryAuth(Credentials("AKIDEXAMPLE", SECRETS["AKIDEXAMPLE"]), "s3", "cn-east-1", expires=60).add_auth(req)
    parts = urlsplit(req.url)
    from urllib.parse import parse_qsl

    query = dict(parse_qsl(parts.query))
    kw = dict(method="GET", raw_path=parts.path, raw_query=parts.query, query=query,
              headers={"host": parts.netloc}, secret_for=lookup, service="s3")
    assert verify_presigned(**kw).access_key_id == "AKIDEXAMPLE"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    with pytest.raises(SigV4Error) as e:
        verify_presigned(**kw, now=later)
    assert e.value.kind is ErrorKind.EXPIRED
    with pytest.raises(SigV4Error) as e:
        verify_presigned(**{**kw, "method": "PUT"})
    assert e.value.kind is ErrorKind.MISMATCH


def test_our_signer_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    from kms_core.sigv4 import sign_headers

    when = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: when)
    url = "http://127.0.0.1:5000/bucket/dir/my%20file~%2B.txt?partNumber=2&uploadId=a%2Fb"
    payload = hashlib.sha256(b"data").hexdigest()
    req = AWSRequest(method="PUT", url=url, data=b"data",
                     headers={"x-amz-content-sha256": payload, "content-type": "text/plain"})
    S3SigV4Auth(Credentials("AKIDEXAMPLE", SECRETS["AKIDEXAMPLE"]), "s3", "us-east-1").add_auth(req)
    parts = urlsplit(url)
    ours = sign_headers(method="PUT", path=parts.path, raw_query=parts.query,
                        headers={"host": parts.netloc, "content-type": "text/plain"},
                        payload_hash=payload, access_key_id="AKIDEXAMPLE",
                        secret=SECRETS["AKIDEXAMPLE"], region="us-east-1", service="s3", now=when)
    assert ours["authorization"].split("Signature=")[1] == req.headers["Authorization"].split("Signature=")[1]
    # and our verifier accepts what our signer made
    headers = {"host": parts.netloc, "content-type": "text/plain", **ours}
    verify_header(method="PUT", raw_path=parts.path, raw_query=parts.query, headers=headers,
                  payload_hash=payload, secret_for=lookup, service="s3", double_encode_path=False,
                  now=when)
