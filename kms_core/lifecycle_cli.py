"""`ssegw kms ...` commands for rotation policies and imported key material (BYOK).

The import commands fit the guide's openssl steps (3.2.2): `get-import-parameters
--public-key-out PublicKey_base64.txt` writes the public key exactly as the guide's `openssl enc
-d -base64 -A -in PublicKey_base64.txt` expects, and `import-key-material --in
EncryptedKeyMaterial_base64.txt` takes the file its last step writes (raw bytes work too).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kms_core import wire
from kms_core.cli_commands import Command, _fields, b64, b64_or_raw, both, key_arg, page_args
from kms_core.errors import InvalidParameter


def _token(a: argparse.Namespace) -> str:
    if a.import_token is not None:
        return b64(wire.unb64(a.import_token.strip(), "import token"))
    if a.token_file is not None:
        return b64(b64_or_raw(Path(a.token_file).read_bytes()))
    raise InvalidParameter("give --import-token BASE64 or --token-file FILE")


def _material(a: argparse.Namespace) -> str:
    if a.encrypted_material is not None:
        return b64(wire.unb64(a.encrypted_material.strip(), "encrypted key material"))
    if a.infile is not None:
        return b64(b64_or_raw(Path(a.infile).read_bytes()))
    raise InvalidParameter("give --encrypted-material BASE64 or --in FILE")


def _when(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"--expires must be an ISO 8601 time, got {text!r}") from None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def _import_files(a: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    if a.public_key_out:
        Path(a.public_key_out).write_text(out["publicKey"])
    if a.token_out:
        Path(a.token_out).write_text(out["importToken"])
    return out


def _import_parameter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--algorithm", default="RSAES_OAEP_SHA_256",
                   help="RSAES_PKCS1_V1_5 | RSAES_OAEP_SHA_1 | RSAES_OAEP_SHA_256")
    p.add_argument("--wrapping-key-spec", default="RSA_2048")
    p.add_argument("--public-key-out", metavar="FILE",
                   help="also write the base64 public key here (PublicKey_base64.txt)")
    p.add_argument("--token-out", metavar="FILE", help="also write the base64 import token here")


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="infile", metavar="FILE", help="encrypted material, base64 text or raw bytes")
    p.add_argument("--encrypted-material", metavar="BASE64")
    p.add_argument("--import-token", metavar="BASE64")
    p.add_argument("--token-file", metavar="FILE")
    p.add_argument("--expires", metavar="ISO8601", help="when the material expires (default: never)")


LIFECYCLE_COMMANDS: dict[str, Command] = {
    "set-rotation": Command(
        "set or change a key's automatic rotation (every 7-730 days)", "enableKeyRotation",
        lambda a: {"cmkUuid": a.key, "rotationPeriodInDays": a.days},
        both(key_arg, lambda p: p.add_argument("--days", type=int, required=True,
                                               help="rotation period in days, 7-730 (presets 30, 90, 180)"))),
    "cancel-rotation": Command("cancel a key's automatic rotation", "disableKeyRotation",
                               lambda a: {"cmkUuid": a.key}, key_arg),
    "rotate-key": Command("rotate a key now (a new primary version)", "rotateKeyOnDemand",
                          lambda a: {"cmkUuid": a.key}, key_arg),
    "get-rotation-status": Command("show a key's rotation policy and next rotation time",
                                   "getKeyRotationStatus", lambda a: {"cmkUuid": a.key}, key_arg),
    "list-rotations": Command("list a key's rotations", "listKeyRotations",
                              lambda a: _fields(cmkUuid=a.key, limit=a.limit, marker=a.marker),
                              both(key_arg, page_args)),
    "get-import-parameters": Command(
        "wrapping public key and import token for BYOK (valid 24 hours)", "getParametersForImport",
        lambda a: {"cmkUuid": a.key, "wrappingAlgorithm": a.algorithm,
                   "wrappingKeySpec": a.wrapping_key_spec},
        both(key_arg, _import_parameter_args), _import_files),
    "import-key-material": Command(
        "import wrapped 256-bit key material into an EXTERNAL key", "importKeyMaterial",
        lambda a: _fields(cmkUuid=a.key, encryptedKeyMaterial=_material(a), importToken=_token(a),
                          keyMaterialValidTo=_when(a.expires)),
        both(key_arg, _import_args)),
    "delete-key-material": Command("delete imported key material (the key waits for re-import)",
                                   "deleteImportedKeyMaterial", lambda a: {"cmkUuid": a.key}, key_arg),
}
