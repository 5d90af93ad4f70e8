"""`ssegw kms ...` commands for asymmetric keys: versions, public keys, sign/verify and
public-key encryption.

Merged into `kms_core.cli.KMS_COMMANDS`; same conventions (one JSON object on stdout). Every
command names the key and the version, as the guide requires for asymmetric keys. Binary
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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kms_core import wire
from kms_core.errors import InvalidParameter
from kms_core.types import Caller

if TYPE_CHECKING:
    from kms_core.embedded import Kms

Command = Callable[["Kms", Caller, argparse.Namespace], Any]


def _input(a: argparse.Namespace, text_attr: str, b64_attr: str | None = None) -> bytes:
    """The operation's input: --TEXT (UTF-8), --BASE64, or --in FILE / '-'."""
    text = getattr(a, text_attr, None) if text_attr else None
    if text is not None:
        return str(text).encode()
    encoded = getattr(a, b64_attr, None) if b64_attr else None
    if encoded is not None:
        return wire.unb64(encoded, b64_attr or "input")
    if a.infile is None:
        options = " or ".join(f"--{x.replace('_', '-')}" for x in (text_attr, b64_attr) if x)
        raise InvalidParameter(f"give {options} or --in FILE")
    return sys.stdin.buffer.read() if a.infile == "-" else Path(a.infile).read_bytes()


def _write(a: argparse.Namespace, data: bytes) -> bool:
    if a.out:
        Path(a.out).write_bytes(data)
        return True
    return False


def _create_key_version(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    return wire.key_version_info(k.service.create_key_version(c, a.key))


def _list_key_versions(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    page = k.service.list_key_versions(c, a.key, limit=a.limit, marker=a.marker)
    return {
        "keyVersions": [wire.key_version_info(v) for v in page.items],
        "nextMarker": page.next_marker,
        "truncated": page.truncated,
    }


def _describe_key_version(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    return wire.key_version_info(k.service.describe_key_version(c, a.key, a.version))


def _get_public_key(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    r = k.service.get_public_key(c, a.key, a.version)
    _write(a, r.public_key_pem.encode())
    return wire.public_key_result(r)


def _sign(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    r = k.service.asymmetric_sign(
        c,
        a.key,
        a.version,
        _input(a, "message", "message_base64"),
        algorithm=a.algorithm,
        message_type=a.message_type,
    )
    out = wire.sign_result(r)
    if _write(a, r.signature):
        out.pop("signature")
    return out


def _verify(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    if a.signature is not None:
        signature = wire.unb64(a.signature, "signature")
    elif a.signature_file is not None:
        signature = Path(a.signature_file).read_bytes()
    else:
        raise InvalidParameter("give --signature BASE64 or --signature-file FILE")
    r = k.service.asymmetric_verify(
        c,
        a.key,
        a.version,
        _input(a, "message", "message_base64"),
        signature,
        algorithm=a.algorithm,
        message_type=a.message_type,
    )
    return wire.verify_result(r)


def _asymmetric_encrypt(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    r = k.service.asymmetric_encrypt(
        c, a.key, a.version, _input(a, "plaintext"), algorithm=a.algorithm
    )
    out = wire.asymmetric_encrypt_result(r)
    if _write(a, r.ciphertext):
        out.pop("ciphertextBlob")
    return out


def _asymmetric_decrypt(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    r = k.service.asymmetric_decrypt(
        c, a.key, a.version, _input(a, "", "blob"), algorithm=a.algorithm
    )
    out = wire.asymmetric_decrypt_result(r)
    if _write(a, r.plaintext):
        out.pop("plaintext")
    return out


ASYMMETRIC_COMMANDS: dict[str, tuple[str, Command]] = {
    "create-key-version": (
        "create a new key pair version of an asymmetric key",
        _create_key_version,
    ),
    "list-key-versions": ("list the versions of a key", _list_key_versions),
    "describe-key-version": ("describe one version of a key", _describe_key_version),
    "get-public-key": ("print (or --out) the PEM public key of a version", _get_public_key),
    "sign": ("sign a message or digest with a version's private key", _sign),
    "verify": ("verify a signature with a version's public key", _verify),
    "asymmetric-encrypt": ("encrypt with a version's public key", _asymmetric_encrypt),
    "asymmetric-decrypt": ("decrypt with a version's private key", _asymmetric_decrypt),
}


def asymmetric_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("key", help="key id or alias")
    if name in ("create-key-version", "list-key-versions"):
        if name == "list-key-versions":
            p.add_argument("--limit", type=int, default=100)
            p.add_argument("--marker")
        return
    p.add_argument("version", help="key version id")
    if name == "describe-key-version":
        return
    p.add_argument("--out", help="write the raw result bytes to FILE")
    if name == "get-public-key":
        return
    p.add_argument(
        "--algorithm",
        help="RSASSA_PSS_SHA_256 | RSASSA_PKCS1_V1_5_SHA_256 | SM2DSA "
        "| RSAES_OAEP_SHA_256 | RSAES_OAEP_SHA_1 | SM2PKE",
    )
    p.add_argument("--in", dest="infile", help="read the input bytes from FILE ('-': stdin)")
    if name in ("sign", "verify"):
        p.add_argument("--message", help="message text")
        p.add_argument("--message-base64", help="message (or digest) as base64")
        p.add_argument(
            "--message-type",
            default="RAW",
            help="RAW (hashed here) or DIGEST (SHA-256, or SM3(Z||M) for SM2)",
        )
        if name == "verify":
            p.add_argument("--signature", help="base64 signature")
            p.add_argument("--signature-file", help="file with the raw (DER for SM2) signature")
    elif name == "asymmetric-encrypt":
        p.add_argument("--plaintext", help="text to encrypt")
    else:
        p.add_argument("--blob", help="base64 ciphertext")
