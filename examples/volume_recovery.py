"""Recover an encrypted volume with standard tools: no lock-in to the gateway.

A volume made by `ssegw volume create` is a plain LUKS1 image. Its passphrase is sealed by
the KMS inside the image; this example asks the KMS to unseal it (an audited decrypt, through
the same product client interface the NBD server uses) and hands it to qemu-img, which
decrypts the whole volume to a raw file without any ssegw code in the data path.

    python examples/volume_recovery.py --data-dir ./var --account demo vol.img vol.raw

The passphrase reaches qemu-img through a 0600 file, never on a command line (where every
user on the machine could read it from the process list).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from adapters.block.volume import unseal_passphrase, volume_info
from kms_core.client.inprocess import InProcessKmsClient
from kms_core.embedded import KmsConfig, open_kms
from kms_core.types import Caller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("./var"))
    ap.add_argument("--account", required=True, help="account name")
    ap.add_argument("image", type=Path)
    ap.add_argument("out", type=Path, help="raw plaintext output")
    args = ap.parse_args()

    info = volume_info(args.image)  # what the image says about itself; no KMS call
    print(f"{args.image}: LUKS1 {info.cipher}, {info.size} bytes, sealed by key {info.key_id}")
    kms = open_kms(KmsConfig(data_dir=args.data_dir))
    try:
        caller = Caller(kms.accounts.by_name(args.account).account_id, kms.config.region)
        passphrase = unseal_passphrase(args.image, InProcessKmsClient(kms.service, caller))
    finally:
        kms.close()  # writes the audit event of the unseal

    with tempfile.NamedTemporaryFile(prefix="luks-pass-") as secret:
        os.chmod(secret.name, 0o600)
        secret.write(passphrase)
        secret.flush()
        subprocess.run(
            ["qemu-img", "convert", "-O", "raw", "--object", f"secret,id=s0,file={secret.name}",
             "--image-opts", f"driver=luks,key-secret=s0,file.filename={args.image}",
             str(args.out)],
            check=True,
        )
    print(f"decrypted {args.image} -> {args.out} with qemu-img")


if __name__ == "__main__":
    main()
