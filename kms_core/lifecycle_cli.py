"""`ssegw kms ...` commands for rotation policies and imported key material (BYOK).

Merged into `kms_core.cli.KMS_COMMANDS`; same conventions (one JSON object on stdout). The
import commands fit the guide's openssl steps (3.2.2): `get-import-parameters
--public-key-out PublicKey_base64.txt` writes the public key exactly as the guide's `openssl enc
-d -base64 -A -in PublicKey_base64.txt` expects, and `import-key-material --in
EncryptedKeyMaterial_base64.txt` takes the file its last step writes (raw bytes work too).
"""

from __future__ import annotations

import argparse
import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kms_core import wire
from kms_core.errors import InvalidParameter
from kms_core.types import Caller

if TYPE_CHECKING:
    from kms_core.embedded import Kms

Command = Callable[["Kms", Caller, argparse.Namespace], Any]


def _b64_or_raw(data: bytes) -> bytes:
    """A file written by `openssl enc -e -base64 -A` (or plain bytes): decoded bytes."""
    text = data.strip()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return data


def _read_token(a: argparse.Namespace) -> bytes:
    if a.import_token is not None:
        return wire.unb64(a.import_token.strip(), "import token")
    if a.token_file is not None:
        return _b64_or_raw(Path(a.token_file).read_bytes())
    raise InvalidParameter("give --import-token BASE64 or --token-file FILE")


def _read_material(a: argparse.Namespace) -> bytes:
    if a.encrypted_material is not None:
        return wire.unb64(a.encrypted_material.strip(), "encrypted key material")
    if a.infile is not None:
        return _b64_or_raw(Path(a.infile).read_bytes())
    raise InvalidParameter("give --encrypted-material BASE64 or --in FILE")


def _parse_when(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"--expires must be an ISO 8601 time, got {text!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _get_import_parameters(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    p = k.service.get_parameters_for_import(c, a.key, a.algorithm, a.wrapping_key_spec)
    out = wire.import_parameters(p)
    if a.public_key_out:
        Path(a.public_key_out).write_text(out["publicKey"])
    if a.token_out:
        Path(a.token_out).write_text(out["importToken"])
    return out


def _import_key_material(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    return wire.key_metadata(k.service.import_key_material(
        c, a.key, _read_material(a), _read_token(a), expires_at=_parse_when(a.expires)))


def _list_rotations(k: Kms, c: Caller, a: argparse.Namespace) -> Any:
    page = k.service.list_key_rotations(c, a.key, limit=a.limit, marker=a.marker)
    return {"rotations": [wire.rotation_info(r) for r in page.items],
            "nextMarker": page.next_marker, "truncated": page.truncated}


LIFECYCLE_COMMANDS: dict[str, tuple[str, Command]] = {
    "set-rotation": ("set or change a key's automatic rotation (every 7-730 days)",
                     lambda k, c, a: wire.rotation_status(
                         k.service.enable_key_rotation(c, a.key, a.days))),
    "cancel-rotation": ("cancel a key's automatic rotation", lambda k, c, a: wire.rotation_status(
        k.service.disable_key_rotation(c, a.key))),
    "rotate-key": ("rotate a key now (a new primary version)", lambda k, c, a: wire.rotation_info(
        k.service.rotate_key_on_demand(c, a.key))),
    "get-rotation-status": ("show a key's rotation policy and next rotation time",
                            lambda k, c, a: wire.rotation_status(
                                k.service.get_key_rotation_status(c, a.key))),
    "list-rotations": ("list a key's rotations", _list_rotations),
    "get-import-parameters": ("wrapping public key and import token for BYOK (valid 24 hours)",
                              _get_import_parameters),
    "import-key-material": ("import wrapped 256-bit key material into an EXTERNAL key",
                            _import_key_material),
    "delete-key-material": ("delete imported key material (the key waits for re-import)",
                            lambda k, c, a: wire.key_metadata(
                                k.service.delete_key_material(c, a.key))),
}


def lifecycle_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("key", help="key id or alias")
    if name == "set-rotation":
        p.add_argument("--days", type=int, required=True,
                       help="rotation period in days, 7-730 (presets 30, 90, 180)")
    elif name == "list-rotations":
        p.add_argument("--limit", type=int, default=100)
        p.add_argument("--marker")
    elif name == "get-import-parameters":
        p.add_argument("--algorithm", default="RSAES_OAEP_SHA_256",
                       help="RSAES_PKCS1_V1_5 | RSAES_OAEP_SHA_1 | RSAES_OAEP_SHA_256")
        p.add_argument("--wrapping-key-spec", default="RSA_2048")
        p.add_argument("--public-key-out", metavar="FILE",
                       help="also write the base64 public key here (PublicKey_base64.txt)")
        p.add_argument("--token-out", metavar="FILE",
                       help="also write the base64 import token here")
    elif name == "import-key-material":
        p.add_argument("--in", dest="infile", metavar="FILE",
                       help="encrypted material, base64 text or raw bytes")
        p.add_argument("--encrypted-material", metavar="BASE64")
        p.add_argument("--import-token", metavar="BASE64")
        p.add_argument("--token-file", metavar="FILE")
        p.add_argument("--expires", metavar="ISO8601",
                       help="when the material expires (default: never)")
