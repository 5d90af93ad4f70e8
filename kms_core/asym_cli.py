"""`ssegw kms ...` commands for asymmetric keys: versions, public keys, sign/verify and
public-key encryption.

Every command names the key and the version, as the guide requires for asymmetric keys. Binary
inputs come from `--in FILE` ('-' for stdin) or a base64 option; `--out FILE` writes raw bytes
(a signature, a ciphertext, a plaintext, or the PEM public key), so the files go straight to
openssl, for example::

    ssegw kms get-public-key KEY VERSION --out pub.pem
    ssegw kms sign KEY VERSION --in msg.bin --algorithm SM2DSA --out sig.der
    openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in msg.bin -sigfile sig.der \\
        -digest sm3 -pkeyopt distid:1234567812345678
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kms_core import wire
from kms_core.cli_commands import (
    Command,
    _fields,
    b64,
    both,
    io_args,
    key_arg,
    page_args,
    read_input,
    write_out,
)
from kms_core.errors import InvalidParameter

ALGORITHMS = ("RSASSA_PSS_SHA_256 | RSASSA_PKCS1_V1_5_SHA_256 | SM2DSA | RSAES_OAEP_SHA_256 "
              "| RSAES_OAEP_SHA_1 | SM2PKE")


def _version(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", help="key version id")


def _algorithm(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algorithm", help=ALGORITHMS)


def _message(p: argparse.ArgumentParser) -> None:
    p.add_argument("--message-type", default="RAW",
                   help="RAW (hashed here) or DIGEST (SHA-256, or SM3(Z||M) for SM2)")


def _signature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signature", help="base64 signature")
    p.add_argument("--signature-file", help="file with the raw (DER for SM2) signature")


def _signature(a: argparse.Namespace) -> str:
    if a.signature is not None:
        return str(a.signature)
    if a.signature_file is not None:
        return b64(Path(a.signature_file).read_bytes())
    raise InvalidParameter("give --signature BASE64 or --signature-file FILE")


def _pem_out(a: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    if a.out:
        Path(a.out).write_text(out["publicKey"])
    return out


def _sign_body(a: argparse.Namespace) -> dict[str, Any]:
    return _fields(cmkUuid=a.key, keyVersionId=a.version, algorithm=a.algorithm,
                   message=b64(read_input(a, "message", "message_base64")), messageType=a.message_type)


ASYMMETRIC_COMMANDS: dict[str, Command] = {
    "create-key-version": Command(
        "create a new key pair version of an asymmetric key", "createKeyVersion",
        lambda a: {"cmkUuid": a.key}, key_arg),
    "list-key-versions": Command(
        "list the versions of a key", "listKeyVersions",
        lambda a: _fields(cmkUuid=a.key, limit=a.limit, marker=a.marker), both(key_arg, page_args)),
    "describe-key-version": Command(
        "describe one version of a key", "describeKeyVersion",
        lambda a: {"cmkUuid": a.key, "keyVersionId": a.version}, both(key_arg, _version)),
    "get-public-key": Command(
        "print (or --out) the PEM public key of a version", "getPublicKey",
        lambda a: {"cmkUuid": a.key, "keyVersionId": a.version},
        both(key_arg, _version, lambda p: p.add_argument("--out", help="write the PEM to FILE")),
        _pem_out),
    "sign": Command(
        "sign a message or digest with a version's private key", "asymmetricSign", _sign_body,
        both(key_arg, _version, _algorithm, _message, io_args("message", "message_base64")),
        write_out("signature")),
    "verify": Command(
        "verify a signature with a version's public key", "asymmetricVerify",
        lambda a: {**_sign_body(a), "signature": _signature(a)},
        both(key_arg, _version, _algorithm, _message, io_args("message", "message_base64"),
             _signature_args)),
    "asymmetric-encrypt": Command(
        "encrypt with a version's public key", "asymmetricEncrypt",
        lambda a: _fields(cmkUuid=a.key, keyVersionId=a.version, algorithm=a.algorithm,
                          plaintext=b64(read_input(a, "plaintext"))),
        both(key_arg, _version, _algorithm, io_args("plaintext")), write_out("ciphertextBlob")),
    "asymmetric-decrypt": Command(
        "decrypt with a version's private key", "asymmetricDecrypt",
        lambda a: _fields(cmkUuid=a.key, keyVersionId=a.version, algorithm=a.algorithm,
                          ciphertextBlob=b64(read_input(a, None, "blob"))),
        both(key_arg, _version, _algorithm, io_args(None, "blob")), write_out("plaintext")),
}

__all__ = ["ASYMMETRIC_COMMANDS", "wire"]
