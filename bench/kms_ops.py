"""In-process KMS throughput beside the raw primitive it is built on, in the same run.

    .venv/bin/python bench/kms_ops.py [--seconds 3]

Software level: generateDataKey and decrypt per second against a reused AESGCM sealing 32 bytes.
HSM level: the same calls against SoftHSM2's AES-GCM through python-pkcs11 (the HSM key never
leaves the token, so the HSM rate is the ceiling). One thread: the figures are per core.
Goals (issue 2): Software >= 20,000 generateDataKey/s; HSM >= 0.7x the raw SoftHSM2 rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rate(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(200):  # warm caches (key snapshot, AEAD objects, HSM session)
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(500):
            fn()
        n += 500
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ssegw-bench-"))
    try:
        os.environ.pop("SOFTHSM2_CONF", None)  # use the data dir's own embedded token
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from pkcs11 import Mechanism
        from pkcs11.mechanisms import GCMParams

        from kms_core.embedded import KmsConfig, open_kms
        from kms_core.keystore.hsm import HsmKeyStore
        from kms_core.specs import Protection
        from kms_core.types import Caller

        kms = open_kms(KmsConfig(data_dir=tmp))
        info, creds = kms.accounts.create_account("bench")
        caller = Caller(info.account_id, "cn-east-1", creds.access_key_id)
        svc = kms.service
        rows: list[tuple[str, float, str, float]] = []

        aes = AESGCM(os.urandom(32))
        dk, aad = os.urandom(32), os.urandom(34)
        raw_soft = rate(lambda: aes.encrypt(os.urandom(12), dk, aad), args.seconds)
        sealed_soft = aes.encrypt(b"\0" * 12, dk, aad)
        raw_soft_dec = rate(lambda: aes.decrypt(b"\0" * 12, sealed_soft, aad), args.seconds)
        soft = svc.create_key(caller, protection="SOFTWARE").key_id
        blob = svc.generate_data_key(caller, soft).ciphertext_blob
        rows.append(("Software generateDataKey", rate(lambda: svc.generate_data_key(caller, soft), args.seconds),
                     "AESGCM seal 32 B", raw_soft))
        rows.append(("Software decrypt", rate(lambda: svc.decrypt(caller, blob), args.seconds),
                     "AESGCM open 32 B", raw_soft_dec))

        hsm_key = svc.create_key(caller, protection="HSM")
        store = svc.keystore(Protection.HSM)
        assert isinstance(store, HsmKeyStore)
        p11key = store.hsm.secret_key(f"ssegw-key-{hsm_key.primary_version_id}")
        raw_hsm = rate(lambda: p11key.encrypt(dk, mechanism=Mechanism.AES_GCM,
                                              mechanism_param=GCMParams(os.urandom(12), aad, 128)),
                       args.seconds)
        sealed_dk = p11key.encrypt(dk, mechanism=Mechanism.AES_GCM,
                                   mechanism_param=GCMParams(b"\0" * 12, aad, 128))
        raw_hsm_dec = rate(lambda: p11key.decrypt(sealed_dk, mechanism=Mechanism.AES_GCM,
                                                  mechanism_param=GCMParams(b"\0" * 12, aad, 128)),
                           args.seconds)
        hk = hsm_key.key_id
        hblob = svc.generate_data_key(caller, hk).ciphertext_blob
        rows.append(("HSM generateDataKey", rate(lambda: svc.generate_data_key(caller, hk), args.seconds),
                     "SoftHSM2 AES-GCM 32 B", raw_hsm))
        rows.append(("HSM decrypt", rate(lambda: svc.decrypt(caller, hblob), args.seconds),
                     "SoftHSM2 AES-GCM open 32 B", raw_hsm_dec))

        print(f"{'operation':28} {'ops/s':>10}   {'raw primitive':26} {'ops/s':>10}  ratio")
        for name, ours, peer, theirs in rows:
            print(f"{name:28} {ours:10,.0f}   {peer:26} {theirs:10,.0f}  {ours / theirs:5.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
