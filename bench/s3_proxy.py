"""S3 proxy throughput against the same backend used directly, in one run.

    .venv/bin/python bench/s3_proxy.py [--backend moto|seaweedfs] [--rounds 3] [--large-mib 64] [--small 200]

moto's S3 server or SeaweedFS (`--backend`) runs in its own process as the backend; `ssegw serve`
runs in another with it as `--backend-url`. The same boto3 client code PUTs and GETs 64 MiB and 4 KiB objects through
the proxy (A) and directly (B), rounds alternating A B B A, and the median ratio is printed; in each
round the large ones also go through HAProxy relaying to the same store with no encryption (C,
after A and B): what a native proxy costs here, for scale. Also: the
proxy's encryption path alone (the envelope sealer) against raw AES-GCM over the same bytes, the
proxy's CPU time per large operation (from /proc; less sensitive to a noisy machine than wall
time), and KMS calls per small PUT (from the KMS's own metering).
Goals (issue 6): large PUT and GET >= 0.8x direct; encryption path >= 0.5x raw AES-GCM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import add_json_argument, from_proxy_direct  # noqa: E402
from bench.stack import BACKENDS, free_port, passthrough  # noqa: E402,F401  (free_port: for other benches)
from bench.stack import start as start_stack  # noqa: E402
from gateway.s3.envelope import PACKAGE, Algorithm, PackageCipher, Sealer  # noqa: E402
from kms_core.client.http import HttpKmsClient  # noqa: E402


def client(url: str, key: str, secret: str, region: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name=region, aws_access_key_id=key,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}))


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def encryption_path(mib: int) -> tuple[float, float]:
    data = os.urandom(mib * 1024 * 1024)
    key, nonce = os.urandom(32), os.urandom(12)

    def ours() -> None:
        s = Sealer(PackageCipher(Algorithm.AES_256_GCM, key, nonce))
        for i in range(0, len(data), 1024 * 1024):
            for _ in s.feed(data[i:i + 1024 * 1024]):
                pass
        s.finish()

    aes = AESGCM(key)

    def raw() -> None:
        for i in range(0, len(data), PACKAGE):
            aes.encrypt(nonce, data[i:i + PACKAGE], b"")

    mb = len(data) / 1e6
    return mb / min(timed(ours) for _ in range(3)), mb / min(timed(raw) for _ in range(3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=BACKENDS, default="moto", help="the store, direct and behind the proxy")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=200, help="number of 4 KiB objects per round")
    ap.add_argument("--large-ops", type=int, default=4, help="large PUTs and GETs per round")
    add_json_argument(ap)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ssegw-s3-bench-"))
    stack = start_stack(tmp / "var", args.backend)
    try:
        creds = stack.credentials
        proxy = client(stack.proxy_url, creds["AWS_ACCESS_KEY_ID"],
                       creds["AWS_SECRET_ACCESS_KEY"], "cn-east-1")
        direct = client(stack.backend_url, *stack.backend_key, "us-east-1")
        relay_url, relay = passthrough(stack.backend_url, tmp)
        stack.procs.append(relay)  # stopped with the stack
        relayed = client(relay_url, *stack.backend_key, "us-east-1")
        for _ in range(100):
            try:
                proxy.create_bucket(Bucket="bench-proxy")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        direct.create_bucket(Bucket="bench-direct")
        direct.create_bucket(Bucket="bench-haproxy")
        big = tmp / "big.bin"
        big.write_bytes(os.urandom(args.large_mib * 1024 * 1024))
        small = os.urandom(4096)
        kms = HttpKmsClient(stack.kms_url, creds["AWS_ACCESS_KEY_ID"],
                            creds["AWS_SECRET_ACCESS_KEY"], "cn-east-1")
        results: dict[str, dict[str, list[float]]] = {}

        def record(op: str, who: str, value: float) -> None:
            results.setdefault(op, {}).setdefault(who, []).append(value)

        mb = args.large_mib * 1.048576
        n = args.large_ops
        serve_pid = stack.procs[1].pid
        cpu_ms: dict[str, list[float]] = {}

        def large(op: str, who: str, fn: Any) -> None:
            before = process_cpu(serve_pid)
            record(op, who, n * mb / timed(lambda: [fn() for _ in range(n)]))
            if who == "proxy":
                cpu_ms.setdefault(op, []).append((process_cpu(serve_pid) - before) * 1000 / n)

        def put_big(c: Any, b: str) -> None:
            with big.open("rb") as f:
                c.put_object(Bucket=b, Key="big", Body=f)

        def put_small(c: Any, b: str) -> None:
            for i in range(args.small):
                c.put_object(Bucket=b, Key=f"s{i}", Body=small)

        def get_small(c: Any, b: str) -> None:
            for i in range(args.small):
                c.get_object(Bucket=b, Key=f"s{i}")["Body"].read()

        calls_before = sum(kms.call("getUsage", {})["usage"].values())
        targets = [("proxy", proxy, "bench-proxy"), ("direct", direct, "bench-direct")]
        for r in range(args.rounds):
            # A B B A (issue 20): neither side always goes first, so a slow start or a warm
            # cache after the other's turn does not always fall on the same one.
            for who, c, b in (targets if r % 2 == 0 else targets[::-1]):
                large(f"PUT {args.large_mib} MiB (MB/s)", who, lambda: put_big(c, b))  # noqa: B023
                large(f"GET {args.large_mib} MiB (MB/s)", who,
                      lambda: c.get_object(Bucket=b, Key="big")["Body"].read())  # noqa: B023
                record("PUT 4 KiB (ops/s)", who, args.small / timed(lambda: put_small(c, b)))  # noqa: B023
                record("GET 4 KiB (ops/s)", who, args.small / timed(lambda: get_small(c, b)))  # noqa: B023
            large(f"PUT {args.large_mib} MiB (MB/s)", "haproxy", lambda: put_big(relayed, "bench-haproxy"))
            large(f"GET {args.large_mib} MiB (MB/s)", "haproxy",
                  lambda: relayed.get_object(Bucket="bench-haproxy", Key="big")["Body"].read())
        usage = kms.call("getUsage", {})["usage"]
        puts = args.rounds * (args.small + n)
        print(f"{'operation':22} {'proxy':>10} {'direct':>10} {'ratio':>7}   "
              f"(median of {args.rounds}, A B B A; store: {args.backend})")
        for op, by in results.items():
            p, d = statistics.median(by["proxy"]), statistics.median(by["direct"])
            print(f"{op:22} {p:10.1f} {d:10.1f} {p / d:6.2f}x")
        for op, by in results.items():
            if "haproxy" in by:
                h, d = statistics.median(by["haproxy"]), statistics.median(by["direct"])
                print(f"{op:22} {h:10.1f} {d:10.1f} {h / d:6.2f}x   (HAProxy, no encryption, vs direct; "
                      "rounds: " + " ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(by["haproxy"], by["direct"],
                                                                              strict=False)) + ")")
        # Goals (issue 20): 64 MiB PUT and GET >= 0.9x the same store direct.
        goals = {f"PUT {args.large_mib} MiB (MB/s)": 0.9, f"GET {args.large_mib} MiB (MB/s)": 0.9}
        report = from_proxy_direct("s3_proxy", results, f"{args.backend} direct", goals,
                                   [f"store: {args.backend}; {args.large_ops} large ops per round; the rows "
                                    "against HAProxy: ours beside the same store through HAProxy relaying with "
                                    "no encryption (its defaults), each round after ours and direct"])
        for op, by in results.items():
            if "haproxy" in by:
                name, _, unit = op.partition(" (")
                row = report.metric(f"{name} vs a relay", unit.rstrip(")"), "HAProxy relay, no encryption")
                for ours_round, relayed_round in zip(by["proxy"], by["haproxy"], strict=False):
                    report.add(row.name, ours_round, relayed_round)
        report.write(args.json)
        for op, ms in cpu_ms.items():
            print(f"  proxy CPU per {op.split(' (')[0]}: {statistics.median(ms):.0f} ms (all its threads)")
        ours, raw = encryption_path(args.large_mib)
        print(f"{'encryption path (MB/s)':22} {ours:10.0f} {raw:10.0f} {ours / raw:6.2f}x   "
              "(envelope sealer, writing the zeroed 1 MiB pieces that leave, vs raw AESGCM per package)")
        gdk = usage.get("generateDataKey", 0)
        print(f"KMS calls per PUT: {(sum(usage.values()) - calls_before - usage.get('decrypt', 0)) / puts:.2f} "
              f"(generateDataKey {gdk} for {puts} PUTs; decrypt {usage.get('decrypt', 0)} for the GETs)")
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
