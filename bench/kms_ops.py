"""In-process KMS throughput beside the raw primitive it is built on, in the same run.

    .venv/bin/python bench/kms_ops.py [--seconds 3] [--rounds 3] [--json PATH]

Software level: generateDataKey and decrypt per second against a reused AESGCM sealing 32 bytes.
HSM level: the same calls against SoftHSM2's AES-GCM through python-pkcs11 (the HSM key never
leaves the token, so the HSM rate is the ceiling). The goal's peer calls the token object, as
python-pkcs11 finds it; SoftHSM2 re-reads that object's files on every call, which the KMS avoids
by using a session copy of the key (kms_core.keystore.hsm_token). So a second, informational row
compares with python-pkcs11 on such a copy: what the KMS itself adds. One thread: the figures are
per core.
Rounds alternate A B B A, and within a round ours and the raw primitive run in alternating
slices of 200 calls, so both see the same machine. Goals: Software >= 20,000 generateDataKey/s
(issue 2); HSM generateDataKey >= 0.85x the raw SoftHSM2 rate (issue 20).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import Results, add_json_argument

# Ours and the peer run in alternating slices of this many calls (A B B A within the round):
# on this shared machine the rate of either swings by a third between seconds, so measuring
# them seconds apart put that swing into the ratio. Interleaved, both see the same machine.
SLICE = 200


def paired_rates(ours: Callable[[], object], peer: Callable[[], object],
                 seconds: float) -> tuple[float, float]:
    """(ours, peer) calls per second over `seconds` of interleaved slices."""
    for _ in range(200):  # warm caches (key snapshot, AEAD objects, HSM session)
        ours()
        peer()
    spent = [0.0, 0.0]
    calls = 0
    fns = (ours, peer)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for which in ((0, 1) if calls % (2 * SLICE) == 0 else (1, 0)):
            fn = fns[which]
            start = time.perf_counter()
            for _ in range(SLICE):
                fn()
            spent[which] += time.perf_counter() - start
        calls += SLICE
    return calls / spent[0], calls / spent[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    add_json_argument(ap)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ssegw-bench-"))
    try:
        os.environ.pop("SOFTHSM2_CONF", None)  # use the data dir's own embedded token
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from pkcs11 import Attribute, Mechanism
        from pkcs11.mechanisms import GCMParams

        from kms_core.embedded import KmsConfig, open_kms
        from kms_core.keystore.hsm import HsmKeyStore
        from kms_core.specs import Protection
        from kms_core.types import Caller

        kms = open_kms(KmsConfig(data_dir=tmp))
        info, creds = kms.accounts.create_account("bench")
        caller = Caller(info.account_id, "cn-east-1", creds.access_key_id)
        svc = kms.service
        pairs: list[tuple[str, Callable[[], object], str, Callable[[], object], float | None]] = []

        aes = AESGCM(os.urandom(32))
        dk, aad = os.urandom(32), os.urandom(34)
        sealed_soft = aes.encrypt(b"\0" * 12, dk, aad)
        soft = svc.create_key(caller, protection="SOFTWARE").key_id
        blob = svc.generate_data_key(caller, soft).ciphertext_blob
        pairs.append(("Software generateDataKey", lambda: svc.generate_data_key(caller, soft),
                      "AESGCM seal 32 B", lambda: aes.encrypt(os.urandom(12), dk, aad), None))
        pairs.append(("Software decrypt", lambda: svc.decrypt(caller, blob),
                      "AESGCM open 32 B", lambda: aes.decrypt(b"\0" * 12, sealed_soft, aad), None))

        hsm_key = svc.create_key(caller, protection="HSM")
        store = svc.keystore(Protection.HSM)
        assert isinstance(store, HsmKeyStore)
        p11key = store.hsm.secret_key(f"ssegw-key-{hsm_key.primary_version_id}")
        sealed_dk = p11key.encrypt(dk, mechanism=Mechanism.AES_GCM,
                                   mechanism_param=GCMParams(b"\0" * 12, aad, 128))
        hk = hsm_key.key_id
        hblob = svc.generate_data_key(caller, hk).ciphertext_blob
        # Goal (issue 20): generateDataKey under an HSM key >= 0.85x the raw SoftHSM2 AES-GCM it wraps.
        pairs.append(("HSM generateDataKey", lambda: svc.generate_data_key(caller, hk),
                      "SoftHSM2 AES-GCM 32 B",
                      lambda: p11key.encrypt(dk, mechanism=Mechanism.AES_GCM,
                                             mechanism_param=GCMParams(os.urandom(12), aad, 128)), 0.85))
        # Informational: the same call on a session-object copy, as the KMS makes it (no goal).
        p11copy = p11key.copy({Attribute.TOKEN: False, Attribute.LABEL: "bench-session-copy"})
        pairs.append(("HSM generateDataKey (b)", lambda: svc.generate_data_key(caller, hk),
                      "same, key as a session copy",
                      lambda: p11copy.encrypt(dk, mechanism=Mechanism.AES_GCM,
                                              mechanism_param=GCMParams(os.urandom(12), aad, 128)), None))
        pairs.append(("HSM decrypt", lambda: svc.decrypt(caller, hblob),
                      "SoftHSM2 AES-GCM open 32 B",
                      lambda: p11key.decrypt(sealed_dk, mechanism=Mechanism.AES_GCM,
                                             mechanism_param=GCMParams(b"\0" * 12, aad, 128)), None))

        results = Results("kms_ops", [f"{args.seconds:g} s per pair, interleaved in slices of {SLICE} "
                                       "calls, in-process, one thread"])
        for name, _, peer, _, goal in pairs:
            results.metric(name, "ops/s", peer, goal)
        for rnd in range(args.rounds):
            for name, ours_fn, _, peer_fn, _ in pairs:
                if rnd % 2 == 0:  # A B B A, and within the round in slices (paired_rates)
                    o, t = paired_rates(ours_fn, peer_fn, args.seconds)
                else:
                    t, o = paired_rates(peer_fn, ours_fn, args.seconds)
                results.add(name, o, t)
        results.write(args.json)

        print(f"{'operation':28} {'ops/s':>10}   {'raw primitive':26} {'ops/s':>10}  ratio   (median of "
              f"{args.rounds} rounds; every round: ours/peer)")
        for m in results.metrics.values():
            ours, theirs = statistics.median(m.ours), statistics.median(m.theirs)
            rounds = "  ".join(f"{o:,.0f}/{t:,.0f}" for o, t in zip(m.ours, m.theirs, strict=True))
            print(f"{m.name:28} {ours:10,.0f}   {m.peer:26} {theirs:10,.0f}  {m.ratio() or 0:5.2f}x   {rounds}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
