"""Multipart throughput, rewrap speed and bucket-key savings of the S3 proxy, in one run.

    .venv/bin/python bench/s3_multipart.py [--backend moto|seaweedfs] [--gib 1] [--rounds 2] [--rewrap 300]
                                           [--small 1000] [--uploads-only]

moto's S3 server or SeaweedFS (`--backend`) runs in its own process as the backend; `ssegw serve`
runs in another with it as `--backend-url`. The aws CLI (`aws s3 cp`, its default 8 MiB parts, 10 in flight) uploads
and downloads a 1 GiB file through the proxy (A) and directly to the same backend (B),
alternating A B B A after one untimed upload each; the median ratio is printed (goal: >= 0.8x
direct). The proxy also uploads with `--sse aws:kms`, compared with the same direct upload. Each
upload also prints the CPU seconds per GiB the store and the proxy spent on it.
The download is timed twice: as the CLI does it (8 MiB ranges, which moto serves by reading the whole object each
time, so moto sets the pace) and as one GET stream (multipart_threshold raised). Then:
- rewrap: `ssegw s3 rewrap --to-key` over --rewrap small objects, objects per second;
- KMS calls per 1,000 small PUTs with and without bucket keys (goal: <= 10 with), counted by
  the KMS's own metering (cryptographic calls; describeKey is a management call and the proxy
  caches it for a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import add_json_argument, from_proxy_direct  # noqa: E402
from bench.s3_proxy import client, process_cpu  # noqa: E402
from bench.stack import BACKENDS  # noqa: E402
from bench.stack import start as start_stack  # noqa: E402
from kms_core.client.http import HttpKmsClient  # noqa: E402

AWS = str(Path(sys.executable).parent / "aws")


def children_cpu() -> float:
    """CPU seconds (user + system) of the child processes waited for so far: the aws CLI runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(8 * 1024 * 1024):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=BACKENDS, default="moto", help="the store, direct and behind the proxy")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the multipart file")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rewrap", type=int, default=300, help="objects to rewrap")
    ap.add_argument("--small", type=int, default=1000, help="small PUTs per bucket-key measurement")
    add_json_argument(ap)
    ap.add_argument("--uploads-only", action="store_true",
                    help="time only the uploads (the CLI's ranged download takes moto ~90 s per GiB)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ssegw-mp-bench-"))
    stack = start_stack(tmp / "var", args.backend)
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF" and not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    try:
        creds = stack.credentials
        proxy_url, direct_url = stack.proxy_url, stack.backend_url
        proxy = client(proxy_url, creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], "cn-east-1")
        direct = client(direct_url, *stack.backend_key, "us-east-1")
        for _ in range(100):
            try:
                proxy.create_bucket(Bucket="mp-proxy")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        direct.create_bucket(Bucket="mp-direct")

        # ---------------------------------------------------------------- 1 GiB with the aws CLI
        size = int(args.gib * 1024**3)
        big = tmp / "big.bin"
        with big.open("wb") as f:
            for _ in range(size // (16 * 1024 * 1024)):
                f.write(os.urandom(16 * 1024 * 1024))
            f.write(os.urandom(size % (16 * 1024 * 1024)))
        want = md5_of(big)
        aws_env = {**env, "AWS_CONFIG_FILE": str(tmp / "aws-config"),
                   "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials")}
        who_env = {
            "proxy": {**aws_env, "AWS_ACCESS_KEY_ID": creds["AWS_ACCESS_KEY_ID"],
                      "AWS_SECRET_ACCESS_KEY": creds["AWS_SECRET_ACCESS_KEY"], "AWS_DEFAULT_REGION": "cn-east-1"},
            "direct": {**aws_env, "AWS_ACCESS_KEY_ID": stack.backend_key[0],
                       "AWS_SECRET_ACCESS_KEY": stack.backend_key[1], "AWS_DEFAULT_REGION": "us-east-1"},
        }
        urls = {"proxy": (proxy_url, "mp-proxy"), "direct": (direct_url, "mp-direct")}
        single_stream = tmp / "aws-config-single-stream"
        single_stream.write_text("[default]\ns3 =\n  multipart_threshold = 64GB\n")
        results: dict[str, dict[str, list[float]]] = {}
        # CPU seconds per GiB of the store and the proxy in each upload: on a 2-core machine the
        # store (moto: one process, one GIL) and the proxy share the cores with the CLI, so what
        # the proxy makes the store do shows up here before it shows up in the ratio.
        cpu: dict[str, list[tuple[float, float, float]]] = {}
        store_pid, proxy_pid = stack.procs[0].pid, stack.procs[-1].pid
        mb = size / 1e6

        def cp(who: str, src: str, dst: str, *extra: str, op_env: dict[str, str] | None = None) -> float:
            start = time.perf_counter()
            subprocess.run([AWS, "--endpoint-url", urls[who][0], "s3", "cp", src, dst, "--only-show-errors",
                            *extra], env=op_env or who_env[who], check=True)
            return time.perf_counter() - start

        # Untimed: the first big upload into a fresh moto costs it ~50% more CPU than later ones
        # (its heap grows), and that used to land on whichever path went first.
        for who in ("proxy", "direct"):
            cp(who, str(big), f"s3://{urls[who][1]}/warm.bin")
        for r in range(args.rounds):
            for who in ("proxy", "direct") if r % 2 == 0 else ("direct", "proxy"):
                url, bucket = urls[who]
                ops: list[tuple[str, str, str, tuple[str, ...]]] = [
                    ("upload", str(big), f"s3://{bucket}/big.bin", ()),
                    ("download", f"s3://{bucket}/big.bin", str(tmp / "back.bin"), ()),
                    ("download 1 stream", f"s3://{bucket}/big.bin", str(tmp / "back.bin"), ())]
                if args.uploads_only:
                    del ops[1:]
                if who == "proxy":
                    # SSE-KMS parts skip the plaintext MD5 that SSE-S3 part ETags need: against
                    # the same direct upload, the difference is that MD5.
                    ops.insert(1, ("upload --sse aws:kms", str(big), f"s3://{bucket}/kms.bin",
                                   ("--sse", "aws:kms")))
                for op, src, dst, extra in ops:
                    op_env = who_env[who]
                    if op == "download 1 stream":
                        # The aws CLI fetches big objects in 8 MiB ranges, and moto reads the
                        # whole object for every range: that measures moto. One GET measures us.
                        op_env = {**op_env, "AWS_CONFIG_FILE": str(single_stream)}
                    before = process_cpu(store_pid), process_cpu(proxy_pid), children_cpu()
                    seconds = cp(who, src, dst, *extra, op_env=op_env)
                    if op.startswith("upload"):
                        cpu.setdefault(f"{op} {who}", []).append(
                            ((process_cpu(store_pid) - before[0]) / args.gib,
                             (process_cpu(proxy_pid) - before[1]) / args.gib,
                             (children_cpu() - before[2]) / args.gib))
                    results.setdefault(f"aws s3 cp {op} (MB/s)", {}).setdefault(who, []).append(mb / seconds)
                    if op.startswith("download"):
                        assert md5_of(tmp / "back.bin") == want, f"{who}: downloaded bytes differ"
                        (tmp / "back.bin").unlink()
        big.unlink()
        print(f"{args.gib:g} GiB file, aws CLI defaults (8 MiB parts); median of {args.rounds}, A B B A; "
              f"store: {args.backend}")
        print(f"{'operation':38} {'proxy':>9} {'direct':>9} {'ratio':>7}")
        direct_upload = results["aws s3 cp upload (MB/s)"]["direct"]
        results["aws s3 cp upload --sse aws:kms (MB/s)"]["direct"] = direct_upload
        for op, by in results.items():
            p, d = statistics.median(by["proxy"]), statistics.median(by["direct"])
            print(f"{op:38} {p:9.1f} {d:9.1f} {p / d:6.2f}x")
        # Goal (issue 7): the aws CLI's multipart upload >= 0.8x the same store direct.
        from_proxy_direct("s3_multipart", results, f"{args.backend} direct",
                          {"aws s3 cp upload (MB/s)": 0.8},
                          [f"{args.gib:g} GiB, aws CLI defaults; store: {args.backend}"]).write(args.json)
        print("every round, MB/s (proxy / direct):")
        for op, by in results.items():
            print(f"  {op:36} " + "  ".join(f"{p:.0f}/{d:.0f}" for p, d in zip(by["proxy"], by["direct"], strict=True)))
        # On two cores the three share, an upload through the proxy takes at best (store + proxy
        # + CLI) / (store + CLI) of the direct one's time, once the direct one keeps both busy.
        print("CPU seconds per GiB in each upload (store / proxy / aws CLI):")
        for op, rounds in cpu.items():
            print(f"  {op:36} " + "  ".join(f"{st:.1f}/{px:.1f}/{cl:.1f}" for st, px, cl in rounds))
        parts = proxy.head_object(Bucket="mp-proxy", Key="big.bin", PartNumber=1)["PartsCount"]
        print(f"  (the proxy's copy has {parts} parts, each sealed on its own)")

        # ---------------------------------------------------------------- rewrap
        kms_boto: Any = boto3.client("kms", endpoint_url=stack.kms_url, region_name="cn-east-1",
                                     aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        proxy.create_bucket(Bucket="rewrap")
        small = os.urandom(4096)
        for i in range(args.rewrap):
            proxy.put_object(Bucket="rewrap", Key=f"obj/{i:05d}", Body=small)
        target = kms_boto.create_key(Description="rewrap target")["KeyMetadata"]["KeyId"]
        rw_env = {**env, "SSEGW_ACCESS_KEY_ID": creds["AWS_ACCESS_KEY_ID"],
                  "SSEGW_SECRET_ACCESS_KEY": creds["AWS_SECRET_ACCESS_KEY"]}
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "s3", "rewrap", "--bucket", "rewrap",
                              "--to-key", target, "--endpoint-url", proxy_url],
                             env=rw_env, capture_output=True, text=True, check=True)
        summary = json.loads(out.stdout)
        again = json.loads(subprocess.run(
            [sys.executable, "-m", "gateway.cli", "s3", "rewrap", "--bucket", "rewrap", "--to-key", target,
             "--endpoint-url", proxy_url], env=rw_env, capture_output=True, text=True, check=True).stdout)
        print(f"rewrap: {summary['rewrapped']} objects in {summary['seconds']:.1f} s = "
              f"{summary['objectsPerSecond']} objects/s (no data re-encrypted); a second run finds "
              f"{again['current']} current at {again['objectsPerSecond']} objects/s")

        # ---------------------------------------------------------------- bucket keys
        kms = HttpKmsClient(stack.kms_url, creds["AWS_ACCESS_KEY_ID"],
                            creds["AWS_SECRET_ACCESS_KEY"], "cn-east-1")
        counts = {}
        for label, bucket_key in (("without bucket keys", False), ("with bucket keys", True)):
            b = f"bk-{'on' if bucket_key else 'off'}"
            proxy.create_bucket(Bucket=b)
            proxy.put_bucket_encryption(Bucket=b, ServerSideEncryptionConfiguration={"Rules": [{
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"},
                "BucketKeyEnabled": bucket_key}]})
            before = sum(kms.call("getUsage", {})["usage"].values())
            start = time.perf_counter()
            for i in range(args.small):
                proxy.put_object(Bucket=b, Key=f"s{i}", Body=small)
            elapsed = time.perf_counter() - start
            calls = sum(kms.call("getUsage", {})["usage"].values()) - before
            counts[label] = calls
            print(f"KMS calls per 1,000 small PUTs {label}: {calls * 1000 / args.small:.1f} "
                  f"({calls} for {args.small} PUTs, {args.small / elapsed:.0f} PUTs/s)")
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
