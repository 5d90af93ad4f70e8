"""The REST dialect with a small signed client: shapes, statusCode 800/900, bad input."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kms_core.client.http import HttpKmsClient
from kms_core.errors import InvalidParameter, KmsError
from tests.kms_server import KmsServer, Tenant


def signed_post(server: KmsServer, t: Tenant, op: str, body: bytes) -> tuple[int, dict[str, Any]]:
    url = f"{server.url}/v1/kms/{op}"
    req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(t.access_key_id, t.secret_access_key), "kms", server.region).add_auth(req)
    resp = urllib3.request("POST", url, body=body, headers=dict(req.headers.items()))
    return resp.status, json.loads(resp.data)


def client(server: KmsServer, t: Tenant) -> HttpKmsClient:
    return HttpKmsClient(server.url, t.access_key_id, t.secret_access_key, server.region)


def test_guide_shapes(kms_server: KmsServer) -> None:
    t = kms_server.tenant("rest")
    c = client(kms_server, t)
    key = c.call("createKey", {"keySpec": "AES_256", "protectionLevel": "HSM", "alias": "rest-key"})
    assert key["keyState"] == "Enabled" and key["protectionLevel"] == "Hsm"
    enc = c.call("encrypt", {"cmkUuid": "rest-key", "plaintext": base64.b64encode(b"guide").decode()})
    assert set(enc) == {"ciphertextBlob", "cmkUuid", "keyVersionId"}
    assert enc["cmkUuid"] == key["cmkUuid"] and enc["keyVersionId"] == key["primaryKeyVersionId"]
    dec = c.call("decrypt", {"ciphertextBlob": enc["ciphertextBlob"]})
    assert base64.b64decode(dec["plaintext"]) == b"guide"
    status, raw = signed_post(kms_server, t, "describeKey", json.dumps({"cmkUuid": "rest-key"}).encode())
    assert status == 200 and raw["statusCode"] == 800 and raw["returnObj"]["result"]["aliases"] == ["rest-key"]
    assert [a["alias"] for a in c.call("listAliasByUuid", {"cmkUuid": key["cmkUuid"]})["aliases"]] == ["rest-key"]
    assert c.call("listAlias", {})["aliases"][0]["cmkUuid"] == key["cmkUuid"]
    dk = c.call("generateDataKey", {"product": "oss"})
    assert c.call("describeKey", {"cmkUuid": "alias_oss"})["defaultProduct"] == "oss"
    assert dk["cmkUuid"] != key["cmkUuid"]


@pytest.mark.parametrize(
    ("op", "body", "status", "error"),
    [
        ("encrypt", b"{not json", 400, "MalformedRequest"),
        ("encrypt", b"[1, 2]", 400, "MalformedRequest"),
        ("noSuchOperation", b"{}", 400, "UnknownOperation"),
        ("encrypt", b'{"plaintext": "aGk="}', 400, "InvalidParameter"),
        ("encrypt", b'{"cmkUuid": 5, "plaintext": "aGk="}', 400, "InvalidParameter"),
        ("encrypt", b'{"cmkUuid": "alias/k", "plaintext": "not base64!"}', 400, "InvalidParameter"),
        ("scheduleKeyDeletion", b'{"cmkUuid": "alias/k", "pendingWindowInDays": "7"}', 400, "InvalidParameter"),
        ("encrypt", json.dumps({"cmkUuid": "alias/k",
                                "plaintext": base64.b64encode(b"x" * 6145).decode()}).encode(),
         400, "InvalidParameter"),
        ("describeKey", b'{"cmkUuid": "alias/nope"}', 404, "NotFound"),
        ("encrypt", b'{"cmkUuid": "alias/k", "plaintext": "aGk=", "encryptionContext": {"a": 1}}',
         400, "InvalidParameter"),
        ("encrypt", b"{" + b" " * 70000 + b"}", 400, "MalformedRequest"),
    ],
)
def test_bad_input_gets_the_right_error_and_changes_nothing(
    kms_server: KmsServer, op: str, body: bytes, status: int, error: str
) -> None:
    t = kms_server.tenant("bad-input")
    c = client(kms_server, t)
    c.call("createKey", {"alias": "k"})
    before = c.call("listKeys", {})
    got_status, reply = signed_post(kms_server, t, op, body)
    assert (got_status, reply["statusCode"], reply["errorCode"]) == (status, 900, error)
    assert reply["message"]
    assert c.call("listKeys", {}) == before


def test_client_raises_the_service_error_classes(kms_server: KmsServer) -> None:
    c = client(kms_server, kms_server.tenant("errs"))
    with pytest.raises(InvalidParameter):
        c.call("generateDataKey", {"product": "oss", "numberOfBytes": 5000})
    with pytest.raises(KmsError) as e:
        c.call("nope", {})
    assert e.value.code == "UnknownOperation"


def test_metering_counts_cryptographic_calls_only(kms_server: KmsServer) -> None:
    t = kms_server.tenant("metered")
    c = client(kms_server, t)
    key = c.call("createKey", {})["cmkUuid"]
    c.call("describeKey", {"cmkUuid": key})
    blob = c.call("encrypt", {"cmkUuid": key, "plaintext": "aGk="})["ciphertextBlob"]
    for _ in range(3):
        c.call("decrypt", {"ciphertextBlob": blob})
    c.call("generateDataKey", {"cmkUuid": key})
    with pytest.raises(KmsError):
        c.call("decrypt", {"ciphertextBlob": base64.b64encode(b"\x07" * 80).decode()})
    usage = c.call("getUsage", {})
    assert usage["usage"] == {"decrypt": 3, "encrypt": 1, "generateDataKey": 1}
    assert usage["total"] == 5 and usage["accountId"] == t.account_id
    kms_server.kms.meter.flush()
    assert c.call("getUsage", {})["usage"] == usage["usage"]
    assert c.call("getUsage", {"month": "2000-01"})["usage"] == {}
    events = c.call("listAuditEvents", {"cmkUuid": key})["events"]
    assert [e["operation"] for e in events] == ["createKey", "describeKey", "encrypt", "decrypt",
                                                "decrypt", "decrypt", "generateDataKey"]
    assert len({e["requestId"] for e in events}) == len(events)


def test_asymmetric_and_lifecycle_operations(kms_server: KmsServer, tmp_path: object) -> None:
    import subprocess
    from pathlib import Path

    c = client(kms_server, kms_server.tenant("rest-asym"))
    key = c.call("createKey", {"keySpec": "SM2", "keyUsage": "SIGN_VERIFY"})["cmkUuid"]
    v1 = c.call("listKeyVersions", {"cmkUuid": key})["keyVersions"][0]["keyVersionId"]
    v2 = c.call("createKeyVersion", {"cmkUuid": key})["keyVersionId"]
    msg = base64.b64encode(b"signed over REST").decode()
    sig = c.call("asymmetricSign", {"cmkUuid": key, "keyVersionId": v2, "message": msg})["signature"]
    ok = c.call("asymmetricVerify", {"cmkUuid": key, "keyVersionId": v2, "message": msg, "signature": sig})
    assert ok["signatureValid"] is True
    assert c.call("asymmetricVerify", {"cmkUuid": key, "keyVersionId": v1, "message": msg,
                                       "signature": sig})["signatureValid"] is False
    pem = c.call("getPublicKey", {"cmkUuid": key, "keyVersionId": v2})["publicKey"]
    d = Path(str(tmp_path))
    (d / "pub.pem").write_text(pem)
    (d / "msg").write_bytes(b"signed over REST")
    (d / "sig").write_bytes(base64.b64decode(sig))
    out = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(d / "pub.pem"),
                          "-in", str(d / "msg"), "-sigfile", str(d / "sig"), "-rawin", "-digest", "sm3",
                          "-pkeyopt", "distid:1234567812345678"], capture_output=True, text=True)
    assert "Signature Verified Successfully" in out.stdout, out.stderr
    sym = c.call("createKey", {})["cmkUuid"]
    assert c.call("enableKeyRotation", {"cmkUuid": sym, "rotationPeriodInDays": 30})["rotationPeriodInDays"] == 30
    assert c.call("rotateKeyOnDemand", {"cmkUuid": sym})["rotationType"] == "ON_DEMAND"
    assert len(c.call("listKeyRotations", {"cmkUuid": sym})["rotations"]) == 1
    ext = c.call("createKey", {"origin": "EXTERNAL"})["cmkUuid"]
    params = c.call("getParametersForImport", {"cmkUuid": ext, "wrappingAlgorithm": "RSAES_PKCS1_V1_5"})
    assert params["publicKey"] and params["importToken"]
