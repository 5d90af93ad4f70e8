"""`ssegw account` and `ssegw kms` as a user runs them: a new process per command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.kms_core.conftest import Cli


def test_key_lifecycle_from_the_terminal(cli: Cli) -> None:
    key = cli.json("kms", "create-key", "--alias", "app", "--protection", "HSM", "--description", "cli key")
    # The names accepted before the guide's (HSM) still work as input; output is the guide's.
    assert key["protectionLevel"] == "Hsm" and key["aliases"] == ["app"]
    assert (key["keySpec"], key["keyUsage"]) == ("AES_256", "Encrypt/Decrypt")
    assert key["creator"] == cli.account_id
    enc = cli.json("kms", "encrypt", "alias/app", "--plaintext", "hello", "--context", "k=v")
    assert enc["cmkUuid"] == key["cmkUuid"]
    dec = cli.json("kms", "decrypt", "--blob", enc["ciphertextBlob"], "--context", "k=v")
    assert dec["plaintext"] == "aGVsbG8="
    assert cli.json("kms", "disable-key", "app")["keyState"] == "Disabled"
    refused = cli.run("kms", "decrypt", "--blob", enc["ciphertextBlob"], "--context", "k=v", ok=False)
    assert refused.returncode == 1 and json.loads(refused.stderr)["errorCode"] == "Disabled"
    assert cli.json("kms", "enable-key", "app")["keyState"] == "Enabled"
    assert cli.json("kms", "schedule-deletion", "app", "--days", "7")["keyState"] == "PendingDeletion"
    assert cli.json("kms", "cancel-deletion", "app")["keyState"] == "Enabled"
    cli.json("kms", "create-alias", "second", key["cmkUuid"])
    assert {a["alias"] for a in cli.json("kms", "list-aliases")["aliases"]} == {"app", "second"}
    assert cli.json("kms", "delete-alias", "second")["deleted"] is True
    listed = cli.json("kms", "list-keys")
    assert [k["cmkUuid"] for k in listed["keys"]] == [key["cmkUuid"]]
    assert cli.json("kms", "describe-key", key["cmkUuid"])["description"] == "cli key"


def test_files_in_and_out(cli: Cli, tmp_path: Path) -> None:
    key = cli.json("kms", "create-key")["cmkUuid"]
    (tmp_path / "p.bin").write_bytes(bytes(range(256)) * 4)
    cli.json("kms", "encrypt", key, "--in", str(tmp_path / "p.bin"), "--out", str(tmp_path / "c.bin"))
    cli.json("kms", "decrypt", "--in", str(tmp_path / "c.bin"), "--out", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "p.bin").read_bytes()


def test_wrong_or_missing_credentials_are_refused(cli: Cli) -> None:
    cli.env["SSEGW_SECRET_ACCESS_KEY"] = "wrong"
    p = cli.run("kms", "list-keys", ok=False)
    assert p.returncode == 1 and json.loads(p.stderr)["errorCode"] == "AccessDenied"
    del cli.env["SSEGW_SECRET_ACCESS_KEY"]
    p = cli.run("kms", "list-keys", ok=False)
    assert json.loads(p.stderr)["errorCode"] == "AccessDenied"
    assert cli.json("kms", "list-keys", "--account", "alice")["keys"] == []


def test_bad_input_gets_a_clear_error(cli: Cli) -> None:
    p = cli.run("kms", "schedule-deletion", "nope", "--days", "7", ok=False)
    assert json.loads(p.stderr)["errorCode"] == "NotFound"
    key = cli.json("kms", "create-key")["cmkUuid"]
    p = cli.run("kms", "schedule-deletion", key, "--days", "3", ok=False)
    assert json.loads(p.stderr)["errorCode"] == "InvalidParameter"
    assert cli.json("kms", "describe-key", key)["keyState"] == "Enabled"
    p = cli.run("account", "create", "--name", "alice", ok=False)
    assert json.loads(p.stderr)["errorCode"] == "AlreadyExists"
