"""Asymmetric keys from the terminal: `ssegw kms` files go straight to openssl and back."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from tests.kms_core.conftest import Cli


def test_sm2_signing_from_the_terminal(cli: Cli, tmp_path: Path) -> None:
    key = cli.json(
        "kms", "create-key", "--spec", "Ctyun_SM2", "--usage", "Sign/Verify", "--alias", "signer"
    )
    # The guide's names in and out (Ctyun_SM2, Sign/Verify, Hsm).
    assert (key["keySpec"], key["keyUsage"], key["protectionLevel"], key["primaryKeyVersionId"]) == (
        "Ctyun_SM2",
        "Sign/Verify",
        "Hsm",
        None,
    )
    created = cli.json("kms", "create-key-version", "signer")
    versions = cli.json("kms", "list-key-versions", "signer")["keyVersions"]
    assert [v["keyVersionId"] for v in versions][-1] == created["keyVersionId"]
    version = created["keyVersionId"]
    assert cli.json("kms", "describe-key-version", "signer", version)["primary"] is False
    pub, msg, sig = tmp_path / "pub.pem", tmp_path / "msg", tmp_path / "sig.der"
    info = cli.json("kms", "get-public-key", "signer", version, "--out", str(pub))
    assert info["signingAlgorithms"] == ["SM2DSA"] and pub.read_text() == info["publicKey"]
    msg.write_bytes(b"signed on the command line")
    signed = cli.json("kms", "sign", "signer", version, "--in", str(msg), "--out", str(sig))
    assert "signature" not in signed and signed["algorithm"] == "SM2DSA"
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(pub),
            "-rawin",
            "-in",
            str(msg),
            "-digest",
            "sm3",
            "-sigfile",
            str(sig),
            "-pkeyopt",
            "distid:1234567812345678",
        ],
        check=True,
        capture_output=True,
    )
    ok = cli.json(
        "kms", "verify", "signer", version, "--in", str(msg), "--signature-file", str(sig)
    )
    assert ok["signatureValid"] is True
    bad = cli.json(
        "kms",
        "verify",
        "signer",
        version,
        "--message",
        "other",
        "--signature",
        base64.b64encode(sig.read_bytes()).decode(),
    )
    assert bad["signatureValid"] is False


def test_rsa_encryption_from_the_terminal(cli: Cli, tmp_path: Path) -> None:
    key = cli.json(
        "kms",
        "create-key",
        "--spec",
        "RSA_2048",
        "--usage",
        "ENCRYPT_DECRYPT",
        "--protection",
        "SOFTWARE",
    )["cmkUuid"]
    version = cli.json("kms", "list-key-versions", key)["keyVersions"][0]["keyVersionId"]
    pub, ct = tmp_path / "pub.pem", tmp_path / "ct.bin"
    cli.json("kms", "get-public-key", key, version, "--out", str(pub))
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            str(pub),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-out",
            str(ct),
        ],
        input=b"from openssl",
        check=True,
        capture_output=True,
    )
    out = cli.json("kms", "asymmetric-decrypt", key, version, "--in", str(ct))
    assert base64.b64decode(out["plaintext"]) == b"from openssl"
    enc = cli.json(
        "kms",
        "asymmetric-encrypt",
        key,
        version,
        "--plaintext",
        "round trip",
        "--algorithm",
        "RSAES_OAEP_SHA_1",
    )
    dec = cli.json(
        "kms",
        "asymmetric-decrypt",
        key,
        version,
        "--blob",
        enc["ciphertextBlob"],
        "--algorithm",
        "RSAES_OAEP_SHA_1",
    )
    assert base64.b64decode(dec["plaintext"]) == b"round trip"
    refused = cli.run(
        "kms", "asymmetric-decrypt", key, version, "--blob", enc["ciphertextBlob"], ok=False
    )
    assert (
        refused.returncode == 1 and json.loads(refused.stderr)["errorCode"] == "InvalidCiphertext"
    )
