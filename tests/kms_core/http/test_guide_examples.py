"""The guide's REST examples, sent as its reader would send them and read as the guide reads them.

The guide (section 4.1) shows encrypt and decrypt: a JSON body with `cmkUuid` and base64
`plaintext`, then `ciphertextBlob`; the reply is read at `returnObj.result`. A reader who copies
those examples uses a plain HTTP client (here urllib3, signed with SigV4) and nothing of ours.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3
import pytest
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from kms_core.http import rest
from kms_core.types import Caller
from tests.kms_server import KmsServer, Tenant


def post(server: KmsServer, t: Tenant, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = f"{server.url}/v1/kms/{op}"
    data = json.dumps(body).encode()
    req = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(t.access_key_id, t.secret_access_key), "kms", server.region).add_auth(req)
    resp = urllib3.request("POST", url, body=data, headers=dict(req.headers.items()))
    return resp.status, json.loads(resp.data)


def ok(server: KmsServer, t: Tenant, op: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = post(server, t, op, body)
    assert status == 200, reply
    assert reply["statusCode"] == 800
    ret = reply["returnObj"]
    assert (ret["code"], ret["statusCode"], ret["success"]) == (200, 200, 1)
    result: dict[str, Any] = ret["result"]
    return result


def test_guide_4_1_encrypt_then_decrypt(kms_server: KmsServer) -> None:
    t = kms_server.tenant("guide-4-1")
    key = ok(kms_server, t, "createKey", {"keySpec": "AES_256", "alias": "cert-key"})
    certificate = b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    # Request: cmkUuid (an alias works too) and plaintext, base64.
    status, reply = post(kms_server, t, "encrypt", {
        "cmkUuid": "cert-key", "plaintext": base64.b64encode(certificate).decode()})
    assert status == 200
    assert reply["statusCode"] == 800
    assert set(reply["returnObj"]) == {"code", "result", "statusCode", "success"}
    enc = reply["returnObj"]["result"]
    assert set(enc) == {"ciphertextBlob", "cmkUuid", "keyVersionId"}
    # "If the request named the CMK by alias, the reply returns the CMK's identifier."
    assert enc["cmkUuid"] == key["cmkUuid"]
    assert enc["keyVersionId"] == key["primaryKeyVersionId"]  # the primary version
    # Decrypt: only ciphertextBlob, no key.
    status, reply = post(kms_server, t, "decrypt", {"ciphertextBlob": enc["ciphertextBlob"]})
    assert status == 200
    assert reply == {
        "statusCode": 800,
        "returnObj": {
            "code": 200,
            "result": {"cmkUuid": key["cmkUuid"], "keyVersionId": key["primaryKeyVersionId"],
                       "plaintext": base64.b64encode(certificate).decode()},
            "statusCode": 200,
            "success": 1,
        },
        "requestId": reply["requestId"],
    }
    assert base64.b64decode(reply["returnObj"]["result"]["plaintext"]) == certificate


def test_guide_4_2_data_key_for_envelope_encryption(kms_server: KmsServer) -> None:
    t = kms_server.tenant("guide-4-2")
    key = ok(kms_server, t, "createKey", {})["cmkUuid"]
    dk = ok(kms_server, t, "generateDataKey", {"cmkUuid": key})
    assert len(base64.b64decode(dk["plaintext"])) == 32
    back = ok(kms_server, t, "decrypt", {"ciphertextBlob": dk["ciphertextBlob"]})
    assert back["plaintext"] == dk["plaintext"] and back["cmkUuid"] == key


def test_failure_is_the_same_envelope_with_statusCode_900(kms_server: KmsServer) -> None:
    t = kms_server.tenant("guide-errors")
    status, reply = post(kms_server, t, "decrypt",
                         {"ciphertextBlob": base64.b64encode(os.urandom(90)).decode()})
    assert status == 400
    assert reply["statusCode"] == 900
    ret = reply["returnObj"]
    assert (ret["code"], ret["statusCode"], ret["success"]) == (400, 400, 0)
    assert ret["errorCode"] == reply["errorCode"] == "InvalidCiphertext"
    assert ret["message"] == reply["message"] and reply["message"]
    status, reply = post(kms_server, t, "describeKey", {"cmkUuid": "alias/none"})
    assert (status, reply["statusCode"], reply["returnObj"]["code"]) == (404, 900, 404)
    assert reply["returnObj"]["errorCode"] == "NotFound"


def test_every_operation_answers_in_the_envelope(kms_server: KmsServer) -> None:
    """Each REST operation, called with an empty body, succeeds or fails in the guide's shape."""
    t = kms_server.tenant("guide-every-op")
    for op in sorted(rest.OPERATIONS):
        status, reply = post(kms_server, t, op, {})
        ret = reply["returnObj"]
        if reply["statusCode"] == 800:
            assert status == 200 and ret["success"] == 1 and isinstance(ret["result"], dict), op
        else:
            assert reply["statusCode"] == 900, op
            assert status == ret["code"] == ret["statusCode"] and status in (400, 404, 409), op
            assert ret["success"] == 0 and ret["errorCode"] and ret["message"], op


def test_the_guides_names_in_and_out(kms_server: KmsServer) -> None:
    t = kms_server.tenant("guide-names")
    sm4 = ok(kms_server, t, "createKey", {"keySpec": "Ctyun_SM4", "keyUsage": "Encrypt/Decrypt",
                                          "protectionLevel": "Hsm"})
    assert (sm4["keySpec"], sm4["keyUsage"], sm4["protectionLevel"]) == (
        "Ctyun_SM4", "Encrypt/Decrypt", "Hsm")
    aes = ok(kms_server, t, "createKey", {"keySpec": "AES_256", "protectionLevel": "Software"})
    assert (aes["keySpec"], aes["protectionLevel"]) == ("AES_256", "Software")
    rsa = ok(kms_server, t, "createKey", {"keySpec": "RSA_2048", "keyUsage": "Sign/Verify"})
    assert (rsa["keySpec"], rsa["keyUsage"]) == ("RSA_2048", "Sign/Verify")
    sm2 = ok(kms_server, t, "createKey", {"keySpec": "Ctyun_SM2", "keyUsage": "Sign/Verify"})
    assert (sm2["keySpec"], sm2["protectionLevel"]) == ("Ctyun_SM2", "Hsm")
    v = ok(kms_server, t, "listKeyVersions", {"cmkUuid": sm2["cmkUuid"]})["keyVersions"][0]
    assert (v["keySpec"], v["keyUsage"]) == ("Ctyun_SM2", "Sign/Verify")
    pub = ok(kms_server, t, "getPublicKey", {"cmkUuid": sm2["cmkUuid"], "keyVersionId": v["keyVersionId"]})
    assert pub["keySpec"] == "Ctyun_SM2"
    # The names accepted before stay accepted as input.
    old = ok(kms_server, t, "createKey", {"keySpec": "SM4", "keyUsage": "ENCRYPT_DECRYPT",
                                          "protectionLevel": "HSM"})
    assert old["keySpec"] == "Ctyun_SM4"
    listed = {k["cmkUuid"]: k["keySpec"] for k in ok(kms_server, t, "listKeys", {})["keys"]}
    assert listed[sm4["cmkUuid"]] == "Ctyun_SM4"
    # Creator is the user id (the account), not the access key that made the call.
    assert sm4["creator"] == t.account_id


def test_default_keys_by_the_guides_alias_spelling(kms_server: KmsServer) -> None:
    t = kms_server.tenant("guide-alias")
    for product in ("ecs", "oss", "sfs"):
        made = ok(kms_server, t, "generateDataKey", {"product": product})
        for spelling in (f"alias_{product}", f"alias/{product}", f"alias/alias_{product}"):
            assert ok(kms_server, t, "describeKey", {"cmkUuid": spelling})["cmkUuid"] == made["cmkUuid"]
        ok(kms_server, t, "encrypt", {"cmkUuid": f"alias/{product}", "plaintext": "aGk="})
    # alias/ecs names the default key, so it cannot be taken by a user key.
    key = ok(kms_server, t, "createKey", {})["cmkUuid"]
    status, reply = post(kms_server, t, "createAlias", {"alias": "alias/ecs", "cmkUuid": key})
    assert (status, reply["errorCode"]) == (400, "UnsupportedOperation")


@pytest.mark.parametrize("op", ["generateRandom", "getUsage", "listAuditEvents", "decrypt",
                                "listKeys", "listRegions"])
def test_a_frozen_account_is_refused_everything(kms_server: KmsServer, op: str) -> None:
    t = kms_server.tenant(f"frozen-{op}")
    key = ok(kms_server, t, "createKey", {})["cmkUuid"]
    blob = ok(kms_server, t, "encrypt", {"cmkUuid": key, "plaintext": "aGk="})["ciphertextBlob"]
    kms_server.kms.accounts.set_frozen(t.account_id, True)
    body = {"ciphertextBlob": blob} if op == "decrypt" else {}
    status, reply = post(kms_server, t, op, body)
    assert (status, reply["statusCode"], reply["errorCode"]) == (403, 900, "AccountFrozen")
    assert "所有对于 KMS 的访问均被限制" in reply["message"]
    kms_server.kms.accounts.set_frozen(t.account_id, False)
    assert post(kms_server, t, op, body)[1]["statusCode"] == 800


def test_the_aws_dialect_keeps_aws_names(kms_server: KmsServer) -> None:
    t = kms_server.tenant("guide-aws")
    kms = kms_server.boto(t)
    meta = kms.create_key(KeySpec="SM4", Origin="AWS_CLOUDHSM")["KeyMetadata"]  # type: ignore[attr-defined]
    assert meta["KeySpec"] == "SM4" and meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    kms_server.kms.accounts.set_frozen(t.account_id, True)
    with pytest.raises(Exception) as e:
        kms.generate_random(NumberOfBytes=8)  # type: ignore[attr-defined]
    assert "AccessDenied" in str(e.value)


def _signed_for(server: KmsServer, t: Tenant, region: str, op: str) -> tuple[int, dict[str, Any]]:
    url = f"{server.url}/v1/kms/{op}"
    req = AWSRequest(method="POST", url=url, data=b"{}", headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(t.access_key_id, t.secret_access_key), "kms", region).add_auth(req)
    resp = urllib3.request("POST", url, body=b"{}", headers=dict(req.headers.items()))
    return resp.status, json.loads(resp.data)


@pytest.mark.parametrize("region", ["xx-nowhere-9", "cn-xian-5", "us-west-2"])
def test_requests_signed_for_a_pool_not_served_are_refused(kms_server: KmsServer, region: str) -> None:
    t = kms_server.tenant(f"region-{region}")
    status, reply = _signed_for(kms_server, t, region, "createKey")
    assert (status, reply["statusCode"], reply["errorCode"]) == (400, 900, "InvalidRegion")
    assert "cn-east-1" in reply["message"]
    assert kms_server.kms.service.list_keys(Caller(t.account_id, region)).items == []
    kms = boto3.client(
        "kms", endpoint_url=kms_server.url, region_name=region, aws_access_key_id=t.access_key_id,
        aws_secret_access_key=t.secret_access_key, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        kms.create_key()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_list_regions_serves_the_guides_catalog(kms_server: KmsServer) -> None:
    t = kms_server.tenant("regions")
    got = ok(kms_server, t, "listRegions", {})
    assert len(got["regions"]) == 44
    by_id = {r["regionId"]: r for r in got["regions"]}
    assert by_id["cn-xian-5"]["name"] == "西安 5" and by_id["cn-east-1"]["name"] == "华东1"
    assert [r["regionId"] for r in got["regions"] if r["served"]] == ["cn-east-1"]
    assert got["servedRegions"] == ["cn-east-1"] and got["currentRegion"] == "cn-east-1"


def test_the_readme_lists_every_error_code() -> None:
    from pathlib import Path

    from kms_core import envelope

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    table = readme[readme.index("### Error codes"):]
    for code, cls in envelope.error_classes().items():
        if cls.__module__ == "kms_core.errors" or cls.__module__ == "kms_core.http.app":
            assert f"| `{code}` | {cls.http_status} | `{cls.aws_code}` |" in table, code
