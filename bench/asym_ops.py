"""Asymmetric sign/verify throughput beside `openssl speed` for the same algorithm, same run.

    .venv/bin/python bench/asym_ops.py [--seconds 2] [--no-gmssl]

Rows (one thread, so the figures are per core):
- RSA-2048 Software: KmsService.asymmetric_sign / asymmetric_verify (PSS-SHA-256, 32-byte
  message), private key in memory through `cryptography`.
- RSA-2048 HSM: the same calls with the key pair inside SoftHSM2 (signing in the token).
- SM2 HSM: the same calls for an SM2 key (wrapped by the HSM root key, OpenSSL's SM2 through the
  system libcrypto, the KMS default), then each SM2 engine alone on e = SM3(Z || M):
  `openssl` (ctypes to libcrypto) and `gmssl` (pure Python; the cross-check).

Peers, measured in this run: `openssl speed -seconds S rsa2048` and `openssl speed -seconds S
sm2` (the openssl binary on the same libcrypto). Ratios are ours / openssl's.
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kms_core.sm2_engine import Sm2Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MESSAGE = b"m" * 32


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
        capture_output=True,
        text=True,
        check=True,
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


def engine_rows(
    engine: Sm2Engine, peer: tuple[float, float], seconds: float
) -> list[tuple[str, float, float]]:
    """One SM2 engine on e = SM3(Z || M), the digest computed per call as the service does."""
    from kms_core import sm2

    d, point = engine.generate()
    priv, pub = engine.load_private(d, point), engine.load_public(point)
    z = sm2.z_value(point)
    sig = priv.sign_digest(sm2.message_digest(z, MESSAGE))
    return [
        (
            f"SM2 engine {engine.name} sign",
            rate(lambda: priv.sign_digest(sm2.message_digest(z, MESSAGE)), seconds),
            peer[0],
        ),
        (
            f"SM2 engine {engine.name} verify",
            rate(lambda: pub.verify_digest(sm2.message_digest(z, MESSAGE), sig), seconds),
            peer[1],
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--no-gmssl", action="store_true", help="skip the slow gmssl rows")
    args = ap.parse_args()
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
        from kms_core.sm2_gmssl import GmsslSm2
        from kms_core.sm2_openssl import OpenSslSm2
        from kms_core.types import Caller

        kms = open_kms(KmsConfig(data_dir=tmp))
        info, creds = kms.accounts.create_account("bench")
        caller = Caller(info.account_id, "cn-east-1", creds.access_key_id)
        svc = kms.service

        rsa_peer = openssl_speed("rsa2048", args.seconds)
        sm2_peer = openssl_speed("sm2", args.seconds)
        rows: list[tuple[str, float, float]] = []

        def service_rows(label: str, spec: str, level: str, peer: tuple[float, float]) -> None:
            key = svc.create_key(caller, spec=spec, usage="SIGN_VERIFY", protection=level).key_id
            v = svc.list_key_versions(caller, key).items[0].version_id
            sig = svc.asymmetric_sign(caller, key, v, MESSAGE).signature
            assert svc.asymmetric_verify(caller, key, v, MESSAGE, sig).valid
            rows.append(
                (
                    f"{label} sign",
                    rate(lambda: svc.asymmetric_sign(caller, key, v, MESSAGE), args.seconds),
                    peer[0],
                )
            )
            rows.append(
                (
                    f"{label} verify",
                    rate(lambda: svc.asymmetric_verify(caller, key, v, MESSAGE, sig), args.seconds),
                    peer[1],
                )
            )

        service_rows("RSA-2048 PSS, Software (service)", "RSA_2048", "SOFTWARE", rsa_peer)
        # The primitive alone, to tell the service's overhead from the library's.
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        digest = hashlib.sha256(MESSAGE).digest()
        pss, pre = pss_sign_padding(), Prehashed(hashes.SHA256())
        rsa_sig = rsa_key.sign(digest, pss, pre)
        rows.append(
            (
                "RSA-2048 PSS, cryptography alone sign",
                rate(lambda: rsa_key.sign(digest, pss, pre), args.seconds),
                rsa_peer[0],
            )
        )
        rows.append(
            (
                "RSA-2048 PSS, cryptography alone verify",
                rate(lambda: rsa_key.public_key().verify(rsa_sig, digest, pss, pre), args.seconds),
                rsa_peer[1],
            )
        )
        service_rows("RSA-2048 PSS, HSM (service)", "RSA_2048", "HSM", rsa_peer)
        service_rows("SM2, HSM-wrapped (service)", "SM2", "HSM", sm2_peer)

        engines: list[Sm2Engine] = [OpenSslSm2()] + ([] if args.no_gmssl else [GmsslSm2()])
        for engine in engines:
            rows.extend(engine_rows(engine, sm2_peer, args.seconds))

        if not args.no_gmssl:
            # gmssl as given: its own pure-Python SM3 and Z value inside sign_with_sm3.
            d, point = GmsslSm2().generate()
            given = gm.CryptSM2(private_key=f"{d:064x}", public_key="", mode=1)
            given.public_key = point[1:].hex()
            k = f"{secrets.randbelow(sm2.N - 1) + 1:064x}"
            raw = given.sign_with_sm3(MESSAGE, k)
            rows.append(
                (
                    "SM2 gmssl sign_with_sm3 as given",
                    rate(lambda: given.sign_with_sm3(MESSAGE, k), args.seconds),
                    sm2_peer[0],
                )
            )
            rows.append(
                (
                    "SM2 gmssl verify_with_sm3 as given",
                    rate(lambda: given.verify_with_sm3(raw, MESSAGE), args.seconds),
                    sm2_peer[1],
                )
            )

        print(f"{'operation':<44} {'ours/s':>10} {'openssl/s':>10} {'ratio':>7}")
        for name, ours, peer in rows:
            print(f"{name:<44} {ours:>10.1f} {peer:>10.1f} {ours / peer:>7.3f}")
        kms.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
