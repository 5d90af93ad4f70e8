"""Guide 4.3 (file storage): an encrypted file share with a chosen and with the default key.

`ssegw fs init` turns a backing directory (local or an NFS share) into an encrypted one whose
master key is sealed by the KMS: with --key under your CMK, without it under the `sfs`
product's default key (`alias_sfs`). `ssegw fs mount` shows the plaintext through FUSE; the
backing directory holds only ciphertext and encrypted names.

    export SSEGW_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID SSEGW_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
    python examples/guide_4_3_file_share.py WORKDIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from guide_rest import kms  # the guide's REST call (examples/guide_rest.py)


def ssegw(*args: str) -> list[str]:
    found = shutil.which("ssegw")
    return [found, *args] if found else [sys.executable, "-m", "gateway.cli", *args]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL", "http://127.0.0.1:9100"))
    p.add_argument("workdir", type=Path)
    a = p.parse_args()
    work = a.workdir
    env = {**os.environ, "SSEGW_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
           "SSEGW_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
           "SSEGW_REGION": os.environ.get("AWS_DEFAULT_REGION", "cn-east-1")}

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run(ssegw(*args, "--kms-url", a.kms_url), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"ssegw {' '.join(args)}: {done.stderr}")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    chosen_dir, default_dir, mnt = work / "share-mine", work / "share-default", work / "mnt"
    for d in (chosen_dir, default_dir, mnt):
        d.mkdir(parents=True, exist_ok=True)
    mine = kms(a.kms_url, "createKey", description="guide 4.3: file share")["cmkUuid"]
    assert run("fs", "init", str(chosen_dir), "--key", mine)["cmkUuid"] == mine
    default = run("fs", "init", str(default_dir))["cmkUuid"]
    assert default == kms(a.kms_url, "describeKey", cmkUuid="alias_sfs")["cmkUuid"]

    # Mount the share sealed by your key, write through it, unmount.
    run("fs", "mount", str(chosen_dir), str(mnt))
    try:
        (mnt / "contract.txt").write_text("signed contract, page 1\n" * 100)
        assert (mnt / "contract.txt").read_text().startswith("signed contract")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    stored = b"".join(f.read_bytes() for f in chosen_dir.rglob("*") if f.is_file())
    assert b"signed contract" not in stored and b"contract.txt" not in stored  # ciphertext at rest
    print(json.dumps({"chosenKey": mine, "chosenShare": str(chosen_dir), "defaultKey": default,
                      "defaultShare": str(default_dir)}))


if __name__ == "__main__":
    main()
