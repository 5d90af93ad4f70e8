"""Guide 4.1: encrypt a small secret (a certificate, a password; at most 6 KB) online with a CMK.

The steps of the guide, over the REST API of a running `ssegw serve`:
  1. createKey            make a user master key (CMK)
  2. encrypt              the certificate in, a ciphertext blob out; store the blob, not the cert
  3. decrypt              at start-up, the blob back to the certificate (no key id needed)

Run it with the credentials `ssegw serve` prints:
    export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_DEFAULT_REGION=cn-east-1
    python examples/guide_4_1_online_encryption.py --kms-url http://127.0.0.1:9100 cert.pem
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path

from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    p.add_argument("--key", help="an existing key id or alias (default: create one)")
    p.add_argument("certificate", type=Path, help="the secret to protect (at most 6144 bytes)")
    args = p.parse_args()

    # 1. A CMK (the console's 创建密钥 does the same): AES_256, Encrypt/Decrypt, Software.
    key = args.key or kms(args.kms_url, "createKey", keySpec="AES_256", keyUsage="Encrypt/Decrypt",
                          protectionLevel="Software", description="guide 4.1: certificates")["cmkUuid"]

    # 2. Encrypt: plaintext goes base64-encoded; the reply names the key and its primary version.
    secret = args.certificate.read_bytes()
    enc = kms(args.kms_url, "encrypt", cmkUuid=key, plaintext=base64.b64encode(secret).decode())
    sealed = args.certificate.with_suffix(args.certificate.suffix + ".kms")
    sealed.write_text(enc["ciphertextBlob"])  # 3. deploy this file, not the certificate
    print(f"encrypted with {enc['cmkUuid']} version {enc['keyVersionId']} -> {sealed}")

    # 4. At start-up: decrypt needs only the blob, which names its key and version.
    dec = kms(args.kms_url, "decrypt", ciphertextBlob=sealed.read_text())
    assert base64.b64decode(dec["plaintext"]) == secret
    print(f"decrypted {len(secret)} bytes with {dec['cmkUuid']} version {dec['keyVersionId']}")
    print(json.dumps({"cmkUuid": enc["cmkUuid"], "ciphertextFile": str(sealed)}))


if __name__ == "__main__":
    main()
