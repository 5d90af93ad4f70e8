"""Guide 4.3 (cloud disks): encrypted volumes with a chosen and with the default key.

`ssegw volume create` makes a LUKS1 image whose random passphrase is sealed by the KMS: with
--key under your CMK, without it under the `ecs` product's default key (`alias_ecs`, the
guide's `alias/ecs`). `ssegw volume serve` exposes it over NBD; any NBD client (qemu, nbdcopy,
nbdfuse) reads and writes plaintext while the image holds only ciphertext.

Both commands reach the KMS over HTTP (--kms-url) with your access key:
    export SSEGW_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID SSEGW_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
    python examples/guide_4_3_volume.py WORKDIR
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
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SSEGW_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
           "SSEGW_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
           "SSEGW_REGION": os.environ.get("AWS_DEFAULT_REGION", "cn-east-1")}

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run(ssegw(*args, "--kms-url", a.kms_url), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"ssegw {' '.join(args)}: {done.stderr}")
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply

    # 1. A disk under a key you chose, and one under the default key.
    mine = kms(a.kms_url, "createKey", description="guide 4.3: disks")["cmkUuid"]
    chosen = run("volume", "create", str(work / "data.img"), "--size", "16M", "--key", mine)
    default = run("volume", "create", str(work / "boot.img"), "--size", "16M")
    assert chosen["cmkUuid"] == mine
    assert default["cmkUuid"] == kms(a.kms_url, "describeKey", cmkUuid="alias/ecs")["cmkUuid"]

    # 2. Serve the first over NBD and write through it.
    sock = work / "data.sock"
    server = subprocess.Popen(ssegw("volume", "serve", str(work / "data.img"), "--socket", str(sock),
                                    "--kms-url", a.kms_url), env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline()  # the NBD URI: ready
        data = os.urandom(1 << 20)
        (work / "in.bin").write_bytes(data)
        uri = f"nbd+unix:///?socket={sock}"
        subprocess.run(["nbdcopy", "--flush", str(work / "in.bin"), uri], check=True)
        subprocess.run(["nbdcopy", uri, str(work / "out.bin")], check=True)
    finally:
        server.terminate()
        server.wait(30)
    assert (work / "out.bin").read_bytes()[: len(data)] == data
    assert data[:4096] not in (work / "data.img").read_bytes()  # ciphertext at rest
    print(json.dumps({"chosenKey": mine, "chosenVolume": chosen["image"],
                      "defaultKey": default["cmkUuid"], "defaultVolume": default["image"]}))


if __name__ == "__main__":
    main()
