"""Guide 3.2.2: bring your own key (BYOK), with the guide's openssl commands as written.

  1. createKey origin=EXTERNAL             an AES_256 CMK without material (PendingImport)
  2. getParametersForImport                a 2048-bit RSA public key (base64 DER) and an import
                                           token, for RSAES_OAEP_SHA_1 (the guide's example)
  3. the guide's openssl commands          make 32 random bytes of material and wrap them
  4. importKeyMaterial                     the key becomes Enabled
  5. encrypt / decrypt with it; keep KeyMaterial.bin safe: only it can be imported again

    python examples/guide_byok_import.py WORKDIR
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)

# Section 3.2.2, step 3, as the guide prints them (the RSAES_OAEP_SHA_1 example).
GUIDE_COMMANDS = [
    "openssl rand -out KeyMaterial.bin 32",
    "openssl enc -d -base64 -A -in PublicKey_base64.txt -out PublicKey.bin",
    "openssl rsautl -encrypt -in KeyMaterial.bin -oaep -inkey PublicKey.bin -keyform DER -pubin "
    "-out EncryptedKeyMaterial.bin",
    "openssl enc -e -base64 -A -in EncryptedKeyMaterial.bin -out EncryptedKeyMaterial_base64.txt",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    p.add_argument("workdir", type=Path, help="where the openssl files go")
    a = p.parse_args()
    url, work = a.kms_url, a.workdir
    work.mkdir(parents=True, exist_ok=True)

    key = kms(url, "createKey", keySpec="AES_256", origin="EXTERNAL", description="guide: BYOK")
    assert key["keyState"] == "PendingImport"
    params = kms(url, "getParametersForImport", cmkUuid=key["cmkUuid"],
                 wrappingAlgorithm="RSAES_OAEP_SHA_1", wrappingKeySpec="RSA_2048")
    (work / "PublicKey_base64.txt").write_text(params["publicKey"])
    for command in GUIDE_COMMANDS:
        done = subprocess.run(command, shell=True, cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{command}: {done.stderr}")
    imported = kms(url, "importKeyMaterial", cmkUuid=key["cmkUuid"],
                   encryptedKeyMaterial=(work / "EncryptedKeyMaterial_base64.txt").read_text(),
                   importToken=params["importToken"])
    assert imported["keyState"] == "Enabled"
    enc = kms(url, "encrypt", cmkUuid=key["cmkUuid"], plaintext=base64.b64encode(b"byok").decode())
    dec = kms(url, "decrypt", ciphertextBlob=enc["ciphertextBlob"])
    assert base64.b64decode(dec["plaintext"]) == b"byok"
    print(json.dumps({"cmkUuid": key["cmkUuid"], "keyState": imported["keyState"],
                      "tokenValidTo": params["parametersValidTo"]}))


if __name__ == "__main__":
    main()
