"""SSE-C, pure: header parsing as S3 answers it, the key record, the binding's frozen vectors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.s3 import sse_c
from gateway.s3.envelope import ObjectMeta
from gateway.s3.errors import S3Error

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "ssec_v1.json").read_text())["vectors"]
H = sse_c.HEADER
CH = sse_c.COPY_HEADER


def headers_for(key: bytes, prefix: str = H, md5: str | None = None, alg: str = "AES256") -> dict[str, str]:
    return {prefix + "algorithm": alg, prefix + "key": base64.b64encode(key).decode(),
            prefix + "key-md5": md5 or base64.b64encode(hashlib.md5(key).digest()).decode()}


def customer(key: bytes) -> sse_c.CustomerKey:
    c = sse_c.parse(headers_for(key), secure=True, allow_http=False)
    assert c is not None
    return c


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_frozen_vectors(v: dict[str, Any]) -> None:
    raw = base64.b64decode(v["customer_key_b64"])
    c = customer(raw)
    assert c.key_md5 == v["customer_key_md5"]
    wrapped, record = sse_c.bind(c, bytes.fromhex(v["data_key"]), v["bucket"], v["key"],
                                 salt=bytes.fromhex(v["salt"]), nonce=bytes.fromhex(v["nonce"]))
    assert record.encode() == v["record"] and wrapped.hex() == v["wrapped"]
    assert sse_c.unbind(c, bytes.fromhex(v["wrapped"]), v["record"], v["bucket"], v["key"]).hex() == v["data_key"]
    meta = ObjectMeta.decode(v["metadata"])
    assert meta is not None and meta.customer == v["record"] and meta.sealed_key.hex() == v["wrapped"]
    assert meta.encode() == v["metadata"]
    # The documented construction, recomputed with the primitives alone.
    salt = bytes.fromhex(v["salt"])
    rec = base64.b64decode(v["record"])
    assert rec[0] == 1 and rec[1:17] == salt
    assert rec[17:] == hmac.new(raw, b"ssegw/sse-c/v1/check" + salt, hashlib.sha256).digest()
    kek = HKDF(hashes.SHA256(), 32, salt, b"ssegw/sse-c/v1/kek").derive(raw)
    w = bytes.fromhex(v["wrapped"])
    aad = b"ssegw/sse-c/v1" + f"arn:aws:s3:::{v['bucket']}/{v['key']}".encode()
    assert AESGCM(kek).decrypt(w[:12], w[12:], aad).hex() == v["data_key"]
    # Nothing stored names the customer key or its MD5.
    stored = json.dumps(v["metadata"])
    for secret in (v["customer_key_b64"], raw.hex(), v["customer_key_md5"]):
        assert secret not in stored


def test_wrong_key_is_403_and_tampering_is_500() -> None:
    a, b = customer(os.urandom(32)), customer(os.urandom(32))
    dk = os.urandom(32)
    wrapped, record = sse_c.bind(a, dk, "bkt", "k")
    assert sse_c.unbind(a, wrapped, record.encode(), "bkt", "k") == dk
    with pytest.raises(S3Error) as e:
        sse_c.unbind(b, wrapped, record.encode(), "bkt", "k")
    assert (e.value.code, e.value.status) == ("AccessDenied", 403)
    with pytest.raises(S3Error) as e:
        sse_c.unbind(None, wrapped, record.encode(), "bkt", "k")
    assert (e.value.code, e.value.status) == ("InvalidRequest", 400)
    # The right key, but the binding moved to another object or altered: never a key.
    for bucket, key, w in (("bkt", "other", wrapped), ("bkt2", "k", wrapped),
                           ("bkt", "k", wrapped[:-1] + bytes([wrapped[-1] ^ 1]))):
        with pytest.raises(S3Error) as e:
            sse_c.unbind(a, w, record.encode(), bucket, key)
        assert e.value.status == 500
    # Every binding draws a fresh salt: the same key's records differ between objects.
    assert sse_c.bind(a, dk, "bkt", "k")[1] != record


@pytest.mark.parametrize("change, code", [
    (lambda h: h.pop(H + "algorithm"), "InvalidArgument"),
    (lambda h: h.update({H + "algorithm": "aws:kms"}), "InvalidEncryptionAlgorithmError"),
    (lambda h: h.pop(H + "key"), "InvalidArgument"),
    (lambda h: h.pop(H + "key-md5"), "InvalidArgument"),
    (lambda h: h.update({H + "key-md5": base64.b64encode(b"x" * 16).decode()}), "InvalidArgument"),
    (lambda h: h.update({H + "key": base64.b64encode(b"short").decode()}), "InvalidArgument"),
    (lambda h: h.update({H + "key": "not base64!"}), "InvalidArgument"),
])
def test_bad_headers_get_s3s_answers(change: object, code: str) -> None:
    h = headers_for(os.urandom(32))
    change(h)  # type: ignore[operator]
    with pytest.raises(S3Error) as e:
        sse_c.parse(h, secure=True, allow_http=False)
    assert (e.value.code, e.value.status) == (code, 400)
    assert h.get(H + "key", "") not in e.value.message or not h.get(H + "key")


def test_plain_http_is_refused_unless_allowed() -> None:
    h = headers_for(os.urandom(32))
    with pytest.raises(S3Error) as e:
        sse_c.parse(h, secure=False, allow_http=False)
    assert e.value.code == "InvalidRequest" and "secure connection" in e.value.message
    assert sse_c.parse(h, secure=False, allow_http=True) is not None
    assert sse_c.parse({}, secure=False, allow_http=False) is None


def test_copy_source_headers_are_separate() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    h = {**headers_for(k1), **headers_for(k2, CH)}
    dst = sse_c.parse(h, secure=True, allow_http=False)
    src = sse_c.parse(h, copy_source=True, secure=True, allow_http=False)
    assert dst is not None and src is not None and (dst.key, src.key) == (k1, k2)


def test_key_never_in_repr() -> None:
    k = os.urandom(32)
    c = customer(k)
    text = repr(c) + str(c)
    assert k.hex() not in text and base64.b64encode(k).decode() not in text and repr(k) not in text


def test_record_decoding_refuses_other_versions() -> None:
    good = sse_c.bind(customer(os.urandom(32)), os.urandom(32), "b", "k")[1].encode()
    raw = base64.b64decode(good)
    for bad in (base64.b64encode(b"\x02" + raw[1:]).decode(), base64.b64encode(raw[:-1]).decode(), "%%%"):
        with pytest.raises(ValueError):
            sse_c.KeyRecord.decode(bad)


def test_request_repr_leaves_headers_out() -> None:
    from typing import cast

    from gateway.s3.auth import Authenticated
    from gateway.s3.messages import S3Request

    async def body() -> Any:
        yield b""

    k = os.urandom(32)
    req = S3Request("GET", "b", "k", {}, headers_for(k), cast(Authenticated, None), body(), "id")
    assert base64.b64encode(k).decode() not in repr(req)
