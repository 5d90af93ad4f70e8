"""Asymmetric sign/verify throughput beside `openssl speed` for the same algorithm, same run.

    .venv/bin/python bench/asym_ops.py [--seconds 2] [--no-gmssl]

Rows (one thread, so the figures are per core):
- RSA-2048 Software: KmsService.asymmetric_sign / asymmetric_verify (PSS-SHA-256, 32-byte
  message), private key in memory through `cryptography`; and `cryptography` alone, to tell
  the service's overhead from the library's.
- RSA-2048 HSM: the same service calls with the key pair inside SoftHSM2 (signing in the token).
- SM2 HSM: the same service calls for an SM2 key (wrapped by the HSM root key, OpenSSL's SM2
  through the system libcrypto, the KMS default); then each SM2 engine alone on
  e = SM3(Z || M): `openssl` (ctypes to libcrypto) and `gmssl` (pure Python, the cross-check);
  then gmssl as given (`sign_with_sm3` / `verify_with_sm3`, its own pure-Python SM3).

Peer: `openssl speed -seconds S rsa2048` and `openssl speed -seconds S sm2`, run before and
after our rows and averaged (the machine is shared; both runs are printed). Ratio = ours/openssl.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MESSAGE = b"m" * 32
SIGN, VERIFY = 0, 1
Row = tuple[str, float, str, int]  # name, ours per second, peer algorithm, SIGN or VERIFY


def rate(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(5):  # warm caches: key snapshot, version, private key object, HSM session
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def openssl_speed(algorithm: str, seconds: float) -> tuple[float, float]:
    """(sign/s, verify/s) from `openssl speed` for rsa2048 or sm2."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(int(seconds)), algorithm],
        capture_output=True, text=True, check=True,
    ).stdout
    pattern = (
        r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)"
        if algorithm == "rsa2048"
        else r"SM2 \(CurveSM2\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)"
    )
    m = re.search(pattern, out, re.MULTILINE)
    if m is None:
        raise SystemExit(f"could not parse `openssl speed {algorithm}`:\n{out}")
    return float(m.group(1)), float(m.group(2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-gmssl", action="store_true", help="skip the slow gmssl rows")
    args = ap.parse_args()
    secs = args.seconds
    tmp = Path(tempfile.mkdtemp(prefix="ssegw-bench-asym-"))
    try:
        os.environ.pop("SOFTHSM2_CONF", None)  # use the data dir's own embedded token
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        from gmssl import sm2 as gm

        from kms_core import sm2
        from kms_core.asym_crypto import pss_sign_padding
        from kms_core.embedded import KmsConfig, open_kms
        from kms_core.sm2_engine import Sm2Engine
        from kms_core.sm2_gmssl import GmsslSm2
        from kms_core.sm2_openssl import OpenSslSm2
        from kms_core.types import Caller

        kms = open_kms(KmsConfig(data_dir=tmp))
        info, creds = kms.accounts.create_account("bench")
        caller = Caller(info.account_id, "cn-east-1", creds.access_key_id)
        svc = kms.service
        before = {a: openssl_speed(a, secs) for a in ("rsa2048", "sm2")}
        rows: list[Row] = []

        def service_rows(label: str, spec: str, level: str, peer: str) -> None:
            key = svc.create_key(caller, spec=spec, usage="SIGN_VERIFY", protection=level).key_id
            v = svc.list_key_versions(caller, key).items[0].version_id
            sig = svc.asymmetric_sign(caller, key, v, MESSAGE).signature
            assert svc.asymmetric_verify(caller, key, v, MESSAGE, sig).valid
            rows.append((f"{label} sign",
                         rate(lambda: svc.asymmetric_sign(caller, key, v, MESSAGE), secs),
                         peer, SIGN))
            rows.append((f"{label} verify",
                         rate(lambda: svc.asymmetric_verify(caller, key, v, MESSAGE, sig), secs),
                         peer, VERIFY))

        def engine_rows(engine: Sm2Engine) -> None:
            d, point = engine.generate()
            priv, pub = engine.load_private(d, point), engine.load_public(point)
            z = sm2.z_value(point)  # the digest is computed per call, as the service does
            sig = priv.sign_digest(sm2.message_digest(z, MESSAGE))
            rows.append((f"SM2 engine {engine.name} sign",
                         rate(lambda: priv.sign_digest(sm2.message_digest(z, MESSAGE)), secs),
                         "sm2", SIGN))
            rows.append((f"SM2 engine {engine.name} verify",
                         rate(lambda: pub.verify_digest(sm2.message_digest(z, MESSAGE), sig), secs),
                         "sm2", VERIFY))

        service_rows("RSA-2048 PSS, Software (service)", "RSA_2048", "SOFTWARE", "rsa2048")
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        digest = hashlib.sha256(MESSAGE).digest()
        pss, pre = pss_sign_padding(), Prehashed(hashes.SHA256())
        rsa_sig = rsa_key.sign(digest, pss, pre)
        rsa_pub = rsa_key.public_key()
        rows.append(("RSA-2048 PSS, cryptography alone sign",
                     rate(lambda: rsa_key.sign(digest, pss, pre), secs), "rsa2048", SIGN))
        rows.append(("RSA-2048 PSS, cryptography alone verify",
                     rate(lambda: rsa_pub.verify(rsa_sig, digest, pss, pre), secs),
                     "rsa2048", VERIFY))
        service_rows("RSA-2048 PSS, HSM (service)", "RSA_2048", "HSM", "rsa2048")
        service_rows("SM2, HSM-wrapped (service)", "SM2", "HSM", "sm2")
        engine_rows(OpenSslSm2())
        if not args.no_gmssl:
            engine_rows(GmsslSm2())
            d, point = GmsslSm2().generate()
            given = gm.CryptSM2(private_key=f"{d:064x}", public_key="", mode=1)
            given.public_key = point[1:].hex()
            k = f"{secrets.randbelow(sm2.N - 1) + 1:064x}"
            raw = given.sign_with_sm3(MESSAGE, k)
            rows.append(("SM2 gmssl sign_with_sm3 as given",
                         rate(lambda: given.sign_with_sm3(MESSAGE, k), secs), "sm2", SIGN))
            rows.append(("SM2 gmssl verify_with_sm3 as given",
                         rate(lambda: given.verify_with_sm3(raw, MESSAGE), secs), "sm2", VERIFY))
        after = {a: openssl_speed(a, secs) for a in ("rsa2048", "sm2")}
        kms.close()

        peers = {a: [(before[a][i] + after[a][i]) / 2 for i in (SIGN, VERIFY)] for a in before}
        for a in before:
            print(f"openssl speed -seconds {int(secs)} {a} (sign/s, verify/s): "
                  f"before {before[a]}, after {after[a]}")
        print(f"{'operation':<44} {'ours/s':>10} {'openssl/s':>10} {'ratio':>7}")
        for name, ours, peer, i in rows:
            p = peers[peer][i]
            print(f"{name:<44} {ours:>10.1f} {p:>10.1f} {ours / p:>7.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
