"""Command-line options shared by `ssegw serve` and the operator commands: the HSM, the root key.

The HSM PIN is never a command-line value (command lines are visible to every local user): it
comes from `--pkcs11-pin-file` or the `SSEGW_PKCS11_PIN` environment variable.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kms_core.errors import KmsError
from kms_core.keystore.hsm import HsmConfig
from kms_core.keystore.softhsm import find_softhsm_module
from kms_core.rootkey import ROOT_KEY_MODES

PIN_ENV = "SSEGW_PKCS11_PIN"


class OptionError(KmsError):
    code = "InvalidParameter"
    http_status = 400


def add_node_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("HSM and root key (the same on every node of a cluster)")
    g.add_argument("--pkcs11-module",
                   help="PKCS#11 library of the cluster's HSM (default: $SSEGW_PKCS11_MODULE, "
                        "else SoftHSM2's)")
    g.add_argument("--pkcs11-token", default=os.environ.get("SSEGW_PKCS11_TOKEN"),
                   help="label of the HSM token every node uses (default: the embedded SoftHSM2 "
                        "token under --data-dir)")
    g.add_argument("--pkcs11-pin-file", type=Path, default=os.environ.get("SSEGW_PKCS11_PIN_FILE"),
                   help=f"file holding the token's user PIN (or set {PIN_ENV})")
    g.add_argument("--root-key", choices=ROOT_KEY_MODES,
                   default=os.environ.get("SSEGW_ROOT_KEY", "file"),
                   help="file: the software root key in <data-dir>/root.key (default); hsm: sealed "
                        "by the HSM and kept in the database, so nodes need no key file")


def hsm_from_args(args: argparse.Namespace) -> HsmConfig | None:
    """The cluster's HSM, or None for the embedded SoftHSM2 token of the data directory."""
    token = getattr(args, "pkcs11_token", None)
    if not token:
        for given in ("pkcs11_module", "pkcs11_pin_file"):
            if getattr(args, given, None):
                raise OptionError(f"--{given.replace('_', '-')} needs --pkcs11-token")
        return None
    module = args.pkcs11_module or find_softhsm_module()
    if args.pkcs11_pin_file:
        try:
            pin = Path(args.pkcs11_pin_file).read_text().strip()
        except OSError as exc:
            raise OptionError(f"cannot read --pkcs11-pin-file: {exc.strerror}") from None
    else:
        pin = os.environ.get(PIN_ENV, "")
    if not pin:
        raise OptionError(f"--pkcs11-token needs the PIN in --pkcs11-pin-file or {PIN_ENV}")
    return HsmConfig(module=module, token_label=token, pin=pin)
