"""Guide 4.5: key rotation; data encrypted before a rotation stays readable.

A symmetric CMK has one primary version; encryption always uses it. Rotation (automatic every N
days, 7-730, or on demand) makes a new primary version and never deletes or disables the old
ones, so old ciphertexts decrypt as before: the blob names the version that made it.

  1. createKey with rotationPeriodInDays=30     automatic rotation every 30 days
  2. encrypt "old secret"                        under version 1
  3. rotateKeyOnDemand                           version 2 becomes primary (what the 30-day
                                                 schedule does by itself)
  4. encrypt "new secret"                        under version 2
  5. decrypt both; listKeyRotations shows the history

    python examples/guide_4_5_rotation.py
"""

from __future__ import annotations

import argparse
import base64
import json
import os

from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    url = p.parse_args().kms_url

    key = kms(url, "createKey", keySpec="AES_256", rotationPeriodInDays=30,
              description="guide 4.5: rotated every 30 days")
    status = kms(url, "getKeyRotationStatus", cmkUuid=key["cmkUuid"])
    print(f"rotation every {status['rotationPeriodInDays']} days, next {status['nextRotationDate']}")

    old = kms(url, "encrypt", cmkUuid=key["cmkUuid"], plaintext=base64.b64encode(b"old secret").decode())
    rotation = kms(url, "rotateKeyOnDemand", cmkUuid=key["cmkUuid"])
    new = kms(url, "encrypt", cmkUuid=key["cmkUuid"], plaintext=base64.b64encode(b"new secret").decode())
    assert old["keyVersionId"] != new["keyVersionId"] == rotation["keyVersionId"]

    # The old version still decrypts what it encrypted; nothing needs re-encrypting.
    for blob, expected in ((old, b"old secret"), (new, b"new secret")):
        dec = kms(url, "decrypt", ciphertextBlob=blob["ciphertextBlob"])
        assert base64.b64decode(dec["plaintext"]) == expected
        assert dec["keyVersionId"] == blob["keyVersionId"]
        print(f"decrypted {expected!r} with version {dec['keyVersionId']}")

    # Optionally move old data to the new primary version (reEncrypt): fewer bytes per version.
    moved = kms(url, "reEncrypt", ciphertextBlob=old["ciphertextBlob"], destinationCmkUuid=key["cmkUuid"])
    assert moved["keyVersionId"] == new["keyVersionId"]
    history = kms(url, "listKeyRotations", cmkUuid=key["cmkUuid"])["rotations"]
    print(json.dumps({"cmkUuid": key["cmkUuid"], "oldVersion": old["keyVersionId"],
                      "newVersion": new["keyVersionId"], "rotations": len(history)}))


if __name__ == "__main__":
    main()
