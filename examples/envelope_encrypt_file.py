"""Envelope encryption of a local file with the embedded KMS.

The KMS makes a data key (generateDataKey): its plaintext encrypts the file locally with
AES-256-GCM and is then forgotten; the sealed copy is stored at the front of the output file.
Decryption asks the KMS to unseal that copy (decrypt needs only the blob).

    python examples/envelope_encrypt_file.py --data-dir ./var --account demo encrypt in.txt out.enc
    python examples/envelope_encrypt_file.py --data-dir ./var --account demo decrypt out.enc back.txt

Output layout: 4-byte big-endian length of the sealed data key, the sealed key, a 12-byte nonce,
then the AES-GCM ciphertext of the file. The file name is the encryption context, so an
encrypted file renamed to pose as another one does not decrypt.
"""

from __future__ import annotations

import argparse
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_core.embedded import KmsConfig, open_kms
from kms_core.types import Caller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("./var"))
    ap.add_argument("--account", required=True, help="account name")
    ap.add_argument("--key", default="alias_oss", help="key id or alias (default: the oss default key)")
    ap.add_argument("mode", choices=["encrypt", "decrypt"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()

    kms = open_kms(KmsConfig(data_dir=args.data_dir))
    caller = Caller(kms.accounts.by_name(args.account).account_id, kms.config.region)
    context = {"file": args.dst.name if args.mode == "encrypt" else args.src.name}

    if args.mode == "encrypt":
        key = args.key
        if key == "alias_oss":
            key = kms.service.default_key(caller, "oss").id  # created on first use
        dk = kms.service.generate_data_key(caller, key, 32, context)
        assert dk.plaintext is not None
        nonce = os.urandom(12)
        body = AESGCM(dk.plaintext).encrypt(nonce, args.src.read_bytes(), None)
        blob = dk.ciphertext_blob
        args.dst.write_bytes(struct.pack(">I", len(blob)) + blob + nonce + body)
        print(f"encrypted {args.src} -> {args.dst} under key {dk.key_id}")
    else:
        data = args.src.read_bytes()
        (n,) = struct.unpack(">I", data[:4])
        blob, nonce, body = data[4 : 4 + n], data[4 + n : 16 + n], data[16 + n :]
        plain_key = kms.service.decrypt(caller, blob, context).plaintext
        args.dst.write_bytes(AESGCM(plain_key).decrypt(nonce, body, None))
        print(f"decrypted {args.src} -> {args.dst}")


if __name__ == "__main__":
    main()
