"""boto3's `kms` client against the running server: AWS shapes and AWS error codes."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.request
from collections.abc import Callable
from typing import Any

import botocore.auth
import botocore.crt.auth
import pytest
from botocore.exceptions import ClientError

from tests.kms_server import KmsServer


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return int(exc.value.response["ResponseMetadata"]["HTTPStatusCode"])


def test_symmetric_operations(kms_server: KmsServer) -> None:
    kms: Any = kms_server.boto(kms_server.tenant("alice"))
    meta = kms.create_key(Description="first")["KeyMetadata"]
    key = meta["KeyId"]
    assert meta["KeyState"] == "Enabled" and meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["Arn"].endswith(f":key/{key}") and meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    hsm = kms.create_key(Origin="AWS_CLOUDHSM")["KeyMetadata"]
    # boto3 drops fields outside its model, so ask the server side which level the key got.
    owner = kms_server.kms.service.describe_key
    from kms_core.types import Caller
    assert owner(Caller(meta["AWSAccountId"], "cn-east-1"), hsm["KeyId"]).protection == "HSM"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "first"
    kms.update_key_description(KeyId=key, Description="renamed")
    assert kms.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["Description"] == "renamed"
    listed = kms.list_keys(Limit=1)
    assert listed["Truncated"] is True and len(listed["Keys"]) == 1
    rest = kms.list_keys(Marker=listed["NextMarker"])
    assert {k["KeyId"] for k in listed["Keys"] + rest["Keys"]} == {key, hsm["KeyId"]}

    kms.create_alias(AliasName="alias/app", TargetKeyId=key)
    aliases = kms.list_aliases()["Aliases"]
    assert [(a["AliasName"], a["TargetKeyId"]) for a in aliases] == [("alias/app", key)]
    assert kms.list_aliases(KeyId=key)["Aliases"][0]["AliasName"] == "alias/app"

    enc = kms.encrypt(KeyId="alias/app", Plaintext=b"hello", EncryptionContext={"a": "b"})
    assert enc["KeyId"] == meta["Arn"]
    dec = kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert dec["Plaintext"] == b"hello" and dec["KeyId"] == meta["Arn"]
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_128")
    assert len(dk["Plaintext"]) == 16
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    nk = kms.generate_data_key_without_plaintext(KeyId=key, NumberOfBytes=64)
    assert "Plaintext" not in nk
    re = kms.re_encrypt(CiphertextBlob=enc["CiphertextBlob"], SourceEncryptionContext={"a": "b"},
                        DestinationKeyId=hsm["KeyId"])
    assert re["SourceKeyId"] == meta["Arn"] and re["KeyId"] == hsm["Arn"]
    assert kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == b"hello"
    assert len(kms.generate_random(NumberOfBytes=48)["Plaintext"]) == 48

    kms.update_alias(AliasName="alias/app", TargetKeyId=hsm["KeyId"])
    assert kms.encrypt(KeyId="alias/app", Plaintext=b"x")["KeyId"] == hsm["Arn"]
    kms.delete_alias(AliasName="alias/app")
    assert kms.list_aliases()["Aliases"] == []

    kms.disable_key(KeyId=key)
    with pytest.raises(ClientError) as e:
        kms.decrypt(CiphertextBlob=enc["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert code(e) == "DisabledException"
    kms.enable_key(KeyId=key)
    sched = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert sched["KeyState"] == "PendingDeletion" and sched["PendingWindowInDays"] == 7
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "KMSInvalidStateException"
    assert kms.cancel_key_deletion(KeyId=key)["KeyId"] == meta["Arn"]
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_errors_change_nothing(kms_server: KmsServer) -> None:
    kms: Any = kms_server.boto(kms_server.tenant("bob"))
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: kms.describe_key(KeyId="alias/missing"), "NotFoundException"),
        (lambda: kms.decrypt(CiphertextBlob=b"\x07" * 80), "InvalidCiphertextException"),
        (lambda: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=3), "ValidationException"),
        (lambda: kms.create_alias(AliasName="alias/alias_oss", TargetKeyId=key), "UnsupportedOperationException"),
        (lambda: kms.cancel_key_deletion(KeyId=key), "KMSInvalidStateException"),
    ]
    for call, expected in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == expected
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    unchecked: Any = kms_server.boto(kms_server.tenant("carol"), parameter_validation=False)
    k2 = unchecked.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as e:
        unchecked.encrypt(KeyId=k2, Plaintext=b"x" * 6145)
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        unchecked.generate_data_key(KeyId=k2, NumberOfBytes="32")
    assert code(e) == "ValidationException"


def test_tenants_never_see_each_other(kms_server: KmsServer) -> None:
    a: Any = kms_server.boto(kms_server.tenant("tenant-a"))
    b: Any = kms_server.boto(kms_server.tenant("tenant-b"))
    key = a.create_key()["KeyMetadata"]["KeyId"]
    a.create_alias(AliasName="alias/secret", TargetKeyId=key)
    blob = a.encrypt(KeyId=key, Plaintext=b"a's data")["CiphertextBlob"]
    call: Callable[[], object]
    for call in (
        lambda: b.describe_key(KeyId=key),
        lambda: b.describe_key(KeyId="alias/secret"),
        lambda: b.decrypt(CiphertextBlob=blob),
        lambda: b.disable_key(KeyId=key),
        lambda: b.encrypt(KeyId=key, Plaintext=b"x"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "NotFoundException"
    assert b.list_keys()["Keys"] == [] and b.list_aliases()["Aliases"] == []
    assert a.describe_key(KeyId=key)["KeyMetadata"]["Enabled"] is True


def test_signature_failures_are_403_and_say_which(kms_server: KmsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    t = kms_server.tenant("sig")
    kms: Any = kms_server.boto(t)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    wrong: Any = kms_server.boto(type(t)(t.account_id, t.access_key_id, "wrong-secret"))
    with pytest.raises(ClientError) as e:
        wrong.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "InvalidSignatureException" and status(e) == 403
    assert "signature does not match" in str(e.value)
    unknown: Any = kms_server.boto(type(t)(t.account_id, "SSEGNOSUCHKEY0000000", "x"))
    with pytest.raises(ClientError) as e:
        unknown.list_keys()
    assert code(e) == "UnrecognizedClientException" and status(e) == 403
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: stale)
    # With awscrt installed (a dependency: CRC32C and CRC64NVME), botocore signs with the CRT
    # signer, which reads the clock through its own import of the same function.
    monkeypatch.setattr(botocore.crt.auth, "get_current_datetime", lambda *a, **k: stale)
    with pytest.raises(ClientError) as e:
        kms.encrypt(KeyId=key, Plaintext=b"x")
    assert code(e) == "InvalidSignatureException" and status(e) == 403
    assert "15 minutes" in str(e.value)


def _raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_unsigned_and_unknown_targets(kms_server: KmsServer) -> None:
    status_code, body = _raw(kms_server.url + "/", b"{}", {
        "X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"})
    assert status_code == 403 and body["__type"] == "MissingAuthenticationTokenException"
    status_code, body = _raw(kms_server.url + "/", b"{}", {"X-Amz-Target": "DynamoDB_20120810.ListTables"})
    assert status_code == 400 and body["__type"] == "UnknownOperationException"


def test_the_routes_beside_the_aws_endpoint_answer_as_before(kms_server: KmsServer) -> None:
    """POST / skips Starlette's router (kms_core.http.app._AwsFront); every other request
    still goes through it."""
    for method, path, want in (("GET", "/", 405), ("GET", "/health", 200), ("POST", "/nope", 404),
                               ("PUT", "/", 405)):
        req = urllib.request.Request(kms_server.url + path, method=method,
                                     data=b"" if method != "GET" else None)
        try:
            with urllib.request.urlopen(req) as r:
                got = r.status
        except urllib.error.HTTPError as e:
            got = e.code
        assert got == want, (method, path)
    too_big = b"{" + b" " * (64 * 1024) + b"}"  # the front's route keeps its own body limit
    status_code, body = _raw(kms_server.url + "/", too_big, {"X-Amz-Target": "TrentService.ListKeys"})
    assert status_code == 400 and body["__type"] == "SerializationException"


def test_a_body_streamed_without_a_length_keeps_the_limit_and_the_format(kms_server: KmsServer) -> None:
    """The AWS route reads the body from the ASGI messages itself: a chunked body past 64 KiB
    is refused in the protocol's format, and one under it is read whole (here: unsigned)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(kms_server.url)
    for pieces, want_status, want_type in (
        ([b"{", b" " * (40 * 1024), b" " * (40 * 1024), b"}"], 400, "SerializationException"),
        ([b"{", b" " * 1024, b"}"], 403, "MissingAuthenticationTokenException"),
    ):
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        try:
            conn.request("POST", "/", body=iter(pieces), encode_chunked=True,
                         headers={"X-Amz-Target": "TrentService.ListKeys",
                                  "Content-Type": "application/x-amz-json-1.1"})
            r = conn.getresponse()
            assert (r.status, json.loads(r.read())["__type"]) == (want_status, want_type)
        finally:
            conn.close()


def test_frozen_account_is_refused_everything(kms_server: KmsServer) -> None:
    t = kms_server.tenant("arrears")
    kms: Any = kms_server.boto(t)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    kms_server.kms.accounts.set_frozen(t.account_id, True)
    call: Callable[[], object]
    for call in (lambda: kms.decrypt(CiphertextBlob=blob), lambda: kms.list_keys(),
                 lambda: kms.create_key(), lambda: kms.disable_key(KeyId=key)):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException" and "frozen" in str(e.value)
    kms_server.kms.accounts.set_frozen(t.account_id, False)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_plaintext_never_in_error_or_audit(kms_server: KmsServer) -> None:
    t = kms_server.tenant("audited")
    kms: Any = kms_server.boto(t)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    secret = b"TOP-SECRET-PLAINTEXT"
    blob = kms.encrypt(KeyId=key, Plaintext=secret)["CiphertextBlob"]
    dk = kms.generate_data_key(KeyId=key, NumberOfBytes=32)
    kms.decrypt(CiphertextBlob=blob)
    events = kms_server.kms.audit.query(t.account_id, key_id=key)
    assert [e.operation for e in events] == ["createKey", "encrypt", "generateDataKey", "decrypt"]
    assert all(e.result == "Success" and e.principal == t.access_key_id for e in events)
    dump = repr(events)
    for secret_bytes in (secret, dk["Plaintext"], blob):
        assert base64.b64encode(secret_bytes).decode() not in dump and secret_bytes.hex() not in dump
    assert secret.decode() not in dump
