"""Guide 4.4: sign with a KMS key, verify anywhere with the public key (here: openssl).

The guide's steps, over the REST API of a running `ssegw serve`:
  1. createKey           an asymmetric CMK with usage Sign/Verify (RSA_2048 or Ctyun_SM2)
  2. getPublicKey        the public key (PEM) of a version, handed to whoever verifies
  3. asymmetricSign      the private key signs; it never leaves the KMS
  4. the receiver verifies the signature with the public key alone: openssl here (gmssl or any
     crypto library would do); asymmetricVerify does it in the KMS when needed

Asymmetric keys have no primary version: every call names the key and the version. A message
is signed as sent up to 4096 bytes; for larger files sign their digest (messageType DIGEST:
SHA-256 for RSA, SM3 over Z||M for SM2).

    python examples/guide_4_4_sign_verify.py message.txt [--spec Ctyun_SM2|RSA_2048]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)


def verify_with_openssl(spec: str, public_pem: str, message: bytes, signature: bytes) -> str:
    with tempfile.TemporaryDirectory() as d:
        pub, msg, sig = Path(d, "public.pem"), Path(d, "message"), Path(d, "signature")
        pub.write_text(public_pem)
        msg.write_bytes(message)
        sig.write_bytes(signature)
        if spec == "Ctyun_SM2":
            # SM2 with SM3 over Z||M, the default ID 1234567812345678 (GB/T 32918), DER signature.
            cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
                   "-digest", "sm3", "-pkeyopt", "distid:1234567812345678",
                   "-in", str(msg), "-sigfile", str(sig)]
        else:
            # RSA: RSASSA-PSS with SHA-256 (salt length = digest length), the default here.
            cmd = ["openssl", "dgst", "-sha256", "-verify", str(pub), "-sigopt", "rsa_padding_mode:pss",
                   "-sigopt", "rsa_pss_saltlen:32", "-signature", str(sig), str(msg)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"openssl refused the signature: {out.stdout}{out.stderr}")
        return out.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    p.add_argument("--spec", default="Ctyun_SM2", choices=["Ctyun_SM2", "RSA_2048"])
    p.add_argument("message", type=Path)
    a = p.parse_args()
    url = a.kms_url

    # 1. The signer's key: SM2 keys live in the HSM (Hsm), RSA keys at either level.
    key = kms(url, "createKey", keySpec=a.spec, keyUsage="Sign/Verify",
              description="guide 4.4: release signing")["cmkUuid"]
    version = kms(url, "listKeyVersions", cmkUuid=key)["keyVersions"][0]["keyVersionId"]

    # 2. The public key to hand out.
    public_pem = kms(url, "getPublicKey", cmkUuid=key, keyVersionId=version)["publicKey"]

    # 3. Sign (the message goes base64-encoded; the KMS hashes it: SM3 with Z for SM2).
    message = a.message.read_bytes()
    algorithm = "SM2DSA" if a.spec == "Ctyun_SM2" else "RSASSA_PSS_SHA_256"
    signed = kms(url, "asymmetricSign", cmkUuid=key, keyVersionId=version, algorithm=algorithm,
                 message=base64.b64encode(message).decode())
    signature = base64.b64decode(signed["signature"])

    # 4. The receiver: openssl with the public key only.
    verdict = verify_with_openssl(a.spec, public_pem, message, signature)
    # And the KMS agrees (asymmetricVerify), while a changed message fails.
    ok = kms(url, "asymmetricVerify", cmkUuid=key, keyVersionId=version, algorithm=algorithm,
             message=base64.b64encode(message).decode(), signature=signed["signature"])["signatureValid"]
    forged = kms(url, "asymmetricVerify", cmkUuid=key, keyVersionId=version, algorithm=algorithm,
                 message=base64.b64encode(message + b"!").decode(),
                 signature=signed["signature"])["signatureValid"]
    assert ok and not forged
    print(json.dumps({"cmkUuid": key, "keyVersionId": version, "keySpec": a.spec, "openssl": verdict,
                      "kmsVerify": ok, "forgedVerify": forged}))


if __name__ == "__main__":
    main()
