"""How soon a key disabled through one node is refused by another (#18: goal 0.5 s).

Two `ssegw serve` nodes over one PostgreSQL database (a private cluster started here, as the
tests do, unless --db-url names one) and one SoftHSM2 token, with the default key-state cache
(2 s). Each round: a new key is used on node B (so B has it cached), disabled through node A,
and B is called in a tight loop until it refuses; the figure is the time from A's reply to
B's first refusal. Without the change channel that time is up to the cache lifetime.

    PYTHONPATH=. python bench/cluster_propagation.py [--rounds 30] [--db-url URL]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.stack import BACKEND_KEY, ROOT, free_port

PEER = "the same two nodes' key-state cache lifetime without the change channel (2 s)"


def _node(argv: list[str], data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    kms_port, s3_port = free_port(), free_port()
    proc = subprocess.Popen([*argv, "--data-dir", str(data_dir), "--kms-port", str(kms_port),
                             "--s3-port", str(s3_port)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    creds: dict[str, str] = {}
    for line in proc.stdout:
        if "export AWS_" in line:
            k, v = line.strip().removeprefix("export ").split("=", 1)
            creds[k] = v
        if "aws kms list-keys" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, f"http://127.0.0.1:{kms_port}", creds
    raise SystemExit("a node did not start")


def _client(url: str, creds: dict[str, str]) -> object:
    return boto3.client("kms", endpoint_url=url, region_name="cn-east-1",
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 1}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--db-url", help="PostgreSQL URL (default: a private cluster started here)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ssegw-bench-cluster-"))
    pg = None
    db_url = args.db_url
    if db_url is None:
        sys.path.insert(0, str(ROOT))
        from tests.postgres import PostgresCluster

        pg = PostgresCluster()
        pg.start()
        db_url = pg.url(pg.create_database())
    (work / "tokens").mkdir()
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    from kms_core.keystore.softhsm import init_token

    token, pin = "bench-cluster", secrets.token_hex(8)
    init_token(conf, token, pin)
    (work / "pin").write_text(pin)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           "SOFTHSM2_CONF": str(conf), "PYTHONPATH": str(ROOT)}
    moto_port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", "from moto.server import ThreadedMotoServer as S;"
                             f"import time; S(port={moto_port}).start(); time.sleep(1e6)"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--db-url", db_url, "--pkcs11-token", token,
            "--pkcs11-pin-file", str(work / "pin"), "--root-key", "hsm",
            "--backend-url", f"http://127.0.0.1:{moto_port}", "--backend-access-key", BACKEND_KEY[0],
            "--backend-secret-key", BACKEND_KEY[1], "--scheduler-interval", "3600"]
    procs = []
    try:
        pa, url_a, creds = _node(argv, work / "a", env)
        procs.append(pa)
        pb, url_b, _ = _node(argv, work / "b", env)
        procs.append(pb)
        a, b = _client(url_a, creds), _client(url_b, creds)
        delays, calls = [], []
        for _ in range(args.rounds):
            key = a.create_key()["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
            b.encrypt(KeyId=key, Plaintext=b"x")  # type: ignore[attr-defined]
            a.disable_key(KeyId=key)  # type: ignore[attr-defined]
            t0, n = time.perf_counter(), 0
            while True:
                n += 1
                try:
                    b.encrypt(KeyId=key, Plaintext=b"x")  # type: ignore[attr-defined]
                except ClientError:
                    break
            delays.append(time.perf_counter() - t0)
            calls.append(n - 1)
        delays.sort()
        print(f"cluster_propagation: {args.rounds} rounds, 2 nodes, PostgreSQL LISTEN/NOTIFY; peer: {PEER}")
        print(f"  disable on A -> refused on B: median {statistics.median(delays) * 1000:.1f} ms, "
              f"p90 {delays[int(len(delays) * 0.9) - 1] * 1000:.1f} ms, max {delays[-1] * 1000:.1f} ms; "
              f"calls B still served after A's reply: max {max(calls)}, total {sum(calls)}")
        print(f"  goal: every round under 500 ms: {'met' if delays[-1] < 0.5 else 'NOT met'}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        moto.kill()
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
