"""Captured KMS requests replayed with headers their signer never saw, and hostile JSON bodies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.kms_server import KmsServer, Tenant

AWS_JSON = "application/x-amz-json-1.1"


def signed(server: KmsServer, t: Tenant, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    req = AWSRequest(method="POST", url=server.url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(t.access_key_id, t.secret_access_key), "kms", server.region).add_auth(req)
    return dict(req.headers.items())


def test_x_amz_target_must_be_signed(kms_server: KmsServer) -> None:
    alice = kms_server.tenant("alice")
    kms: Any = kms_server.boto(alice)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    body = json.dumps({"KeyId": key}).encode()
    # Signed without X-Amz-Target (signed headers host;x-amz-date), then sent as DisableKey.
    sig = signed(kms_server, alice, body, {"Content-Type": AWS_JSON})
    r = httpx.post(kms_server.url + "/", content=body,
                   headers={**sig, "X-Amz-Target": "TrentService.DisableKey"})
    assert r.status_code == 403
    assert r.json()["__type"] == "IncompleteSignatureException"
    assert "x-amz-target" in r.json()["message"]
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    # Signed as DescribeKey, re-sent as DisableKey: the signature no longer matches.
    sig = signed(kms_server, alice, body, {"Content-Type": AWS_JSON,
                                            "X-Amz-Target": "TrentService.DescribeKey"})
    r = httpx.post(kms_server.url + "/", content=body,
                   headers={**sig, "X-Amz-Target": "TrentService.DisableKey"})
    assert r.status_code in (400, 403) and r.json()["__type"] == "InvalidSignatureException"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    # Signed as sent: works.
    sig = signed(kms_server, alice, body, {"Content-Type": AWS_JSON,
                                            "X-Amz-Target": "TrentService.DescribeKey"})
    r = httpx.post(kms_server.url + "/", content=body, headers=sig)
    assert r.status_code == 200 and r.json()["KeyMetadata"]["KeyId"] == key


def test_other_unsigned_headers_are_refused(kms_server: KmsServer) -> None:
    alice = kms_server.tenant("alice")
    body = b"{}"
    headers = {"Content-Type": AWS_JSON, "X-Amz-Target": "TrentService.ListKeys"}
    sig = signed(kms_server, alice, body, headers)
    for extra in ({"X-Amz-Security-Token": "x"}, {"X-Amz-Content-Sha256": "0" * 64}):
        r = httpx.post(kms_server.url + "/", content=body, headers={**sig, **extra})
        assert r.status_code in (400, 403), extra
        assert r.json()["__type"] in ("IncompleteSignatureException", "InvalidSignatureException")
    sig = signed(kms_server, alice, body, {"X-Amz-Target": "TrentService.ListKeys"})
    r = httpx.post(kms_server.url + "/", content=body, headers={**sig, "Content-Type": "text/plain"})
    assert r.status_code == 403 and r.json()["__type"] == "IncompleteSignatureException"


def test_deeply_nested_json_is_a_client_error(kms_server: KmsServer) -> None:
    alice = kms_server.tenant("alice")
    for body in (b"[" * 50_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
                 json.dumps({"KeyId": "x", "EncryptionContext": {"a": [[[[[[[[[1]]]]]]]]]}}).encode()):
        headers = {"Content-Type": AWS_JSON, "X-Amz-Target": "TrentService.DescribeKey"}
        r = httpx.post(kms_server.url + "/", content=body, headers=signed(kms_server, alice, body, headers))
        assert r.status_code == 400, r.text
        assert r.json()["__type"] != "KMSInternalException"


def test_invented_paging_markers_are_errors(kms_server: KmsServer) -> None:
    from botocore.exceptions import ClientError

    kms: Any = kms_server.boto(kms_server.tenant("alice"))
    for _ in range(3):
        kms.create_alias(AliasName=f"alias/a{_}", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    page = kms.list_keys(Limit=1)
    assert page["Truncated"] and len(kms.list_keys(Marker=page["NextMarker"])["Keys"]) == 2
    aliases = kms.list_aliases(Limit=1)
    assert aliases["Truncated"] and kms.list_aliases(Marker=aliases["NextMarker"])["Aliases"]
    call: Callable[[], object]
    for call in (lambda: kms.list_keys(Marker="garbage"), lambda: kms.list_aliases(Marker="garbage")):
        try:
            call()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidMarkerException"
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        else:
            raise AssertionError("an invented marker answered a page")
