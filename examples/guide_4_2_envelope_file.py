"""Guide 4.2: envelope encryption of a large local file with a data key from the KMS.

Encrypt (the guide's steps):
  1. createKey                       a CMK (or pass --key)
  2. generateDataKey                 a data key in plaintext and sealed under the CMK
  3. encrypt the file locally with the plaintext data key (AES-256-GCM, 1 MiB chunks), then
     forget the plaintext key
  4. store the sealed data key beside the ciphertext (here: at the head of the output file)
Decrypt:
  1. read the sealed data key from the file
  2. decrypt                         the KMS returns the plaintext data key (no key id needed)
  3. decrypt the file locally, then forget the key

The file never travels to the KMS; only 32 bytes of key do.

    python examples/guide_4_2_envelope_file.py encrypt big.iso big.iso.enc
    python examples/guide_4_2_envelope_file.py decrypt big.iso.enc big.iso.back
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)

MAGIC = b"GUIDE42\x01"
CHUNK = 1 << 20




def _aad(index: int, final: bool) -> bytes:
    # The chunk's position and whether it is the last: reordered or truncated files fail.
    return struct.pack(">QB", index, final)


def encrypt(url: str, key: str | None, src: Path, dst: Path) -> None:
    key = key or kms(url, "createKey", description="guide 4.2: local files")["cmkUuid"]
    # The file name is the encryption context: the sealed key opens only for this name.
    context = {"file": dst.name}
    dk = kms(url, "generateDataKey", cmkUuid=key, numberOfBytes=32, encryptionContext=context)
    aes = AESGCM(base64.b64decode(dk["plaintext"]))
    del dk["plaintext"]  # only the sealed copy is kept
    sealed = base64.b64decode(dk["ciphertextBlob"])
    size, index = src.stat().st_size, 0
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.write(MAGIC + struct.pack(">H", len(sealed)) + sealed)
        done = 0
        while True:
            chunk = fin.read(CHUNK)
            done += len(chunk)
            final = done >= size
            nonce = os.urandom(12)  # fresh per chunk: a (key, nonce) pair is used once
            ct = aes.encrypt(nonce, chunk, _aad(index, final))
            fout.write(struct.pack(">I", len(ct)) + nonce + ct)
            index += 1
            if final:
                break
    print(json.dumps({"cmkUuid": dk["cmkUuid"], "keyVersionId": dk["keyVersionId"],
                      "chunks": index, "bytes": size}))


def decrypt(url: str, src: Path, dst: Path) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        if fin.read(len(MAGIC)) != MAGIC:
            sys.exit(f"{src} is not a guide 4.2 envelope file")
        (n,) = struct.unpack(">H", fin.read(2))
        sealed = fin.read(n)
        # The name the file was written under is the context it was sealed with.
        dk = kms(url, "decrypt", ciphertextBlob=base64.b64encode(sealed).decode(),
                 encryptionContext={"file": src.name})
        aes = AESGCM(base64.b64decode(dk["plaintext"]))
        index = 0
        while True:
            head = fin.read(4)
            if len(head) < 4:
                sys.exit("truncated file: the final chunk is missing")
            (length,) = struct.unpack(">I", head)
            nonce, ct = fin.read(12), fin.read(length)
            final = fin.peek(1) == b""  # nothing after this chunk: it must be the final one
            fout.write(aes.decrypt(nonce, ct, _aad(index, final)))
            index += 1
            if final:
                break
    print(json.dumps({"cmkUuid": dk["cmkUuid"], "keyVersionId": dk["keyVersionId"], "chunks": index}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    p.add_argument("--key", help="key id or alias for encrypt (default: create one)")
    p.add_argument("action", choices=["encrypt", "decrypt"])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    a = p.parse_args()
    if a.action == "encrypt":
        encrypt(a.kms_url, a.key, a.src, a.dst)
    else:
        decrypt(a.kms_url, a.src, a.dst)


if __name__ == "__main__":
    main()
