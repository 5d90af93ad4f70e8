"""KMS over HTTP: GenerateDataKey and Decrypt requests/s, our server beside moto's KMS.

    .venv/bin/python bench/kms_http.py [--seconds 10] [--connections 32] [--workers 2]

Both servers get the same load from the same client: wrk replays one SigV4-signed AWS-dialect
request (a signature stays valid within the 15-minute skew window), so the load generator costs
little CPU beside the servers. Every reply is checked: wrk counts non-2xx replies, and the run
fails if there are any. Within a round the two servers take turns in five slices of the round's
seconds each (their rates swing between seconds on a shared machine; taking turns, both see the
same machine). Goal (issue 5): >= 5,500 GenerateDataKey/s on this 2-core machine and >= 20x moto.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import boto3
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import Results, add_json_argument  # noqa: E402

REGION = "cn-east-1"
MOTO_REGION = "us-east-1"  # moto knows only real AWS regions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str) -> None:
    for _ in range(300):
        try:
            urllib3.request("GET", url, retries=False, timeout=1)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def lua_script(path: Path, url: str, target: str, body: Mapping[str, object], creds: Credentials,
               region: str) -> None:
    data = json.dumps(body)
    req = AWSRequest(method="POST", url=url, data=data, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{target}"})
    SigV4Auth(creds, "kms", region).add_auth(req)
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(data)}"]
    for k, v in req.headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")


def wrk(url: str, script: Path, seconds: int, connections: int) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} failed replies:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


# Each round's seconds are spent in this many alternating slices, ours then moto's (the next
# round starts with moto): both servers' rates swing by a quarter between seconds on this
# shared machine, and measured ten seconds apart that swing went into the ratio.
SLICES = 5


def scripts(url: str, creds: Credentials, key_id: str, tmp: Path, region: str,
            tag: str) -> dict[str, Path]:
    """One signed wrk script per measured operation, against the server at `url`."""
    client = boto3.client("kms", endpoint_url=url, region_name=region,
                          aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key)
    blob = client.encrypt(KeyId=key_id, Plaintext=os.urandom(32))["CiphertextBlob"]
    out = {}
    for name, target, body in (
        ("GenerateDataKey", "GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"}),
        ("Decrypt", "Decrypt", {"CiphertextBlob": base64.b64encode(blob).decode()}),
    ):
        script = out[name] = tmp / f"{tag}-{name}.lua"
        lua_script(script, url + "/", target, body, creds, region)
    return out


def measure(servers: list[tuple[str, dict[str, Path]]], seconds: int,
            connections: int) -> list[dict[str, float]]:
    """req/s of each server per operation: warmed up, then `seconds` each in SLICES alternating
    slices (in the order given), the mean of the slices."""
    rates: list[dict[str, list[float]]] = [{} for _ in servers]
    for op in servers[0][1]:
        for url, ops in servers:
            wrk(url + "/", ops[op], 2, connections)  # warm-up
        for _ in range(SLICES):
            for i, (url, ops) in enumerate(servers):
                rates[i].setdefault(op, []).append(
                    wrk(url + "/", ops[op], max(1, seconds // SLICES), connections))
    return [{op: statistics.mean(v) for op, v in r.items()} for r in rates]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="our server's worker processes")
    ap.add_argument("--rounds", type=int, default=1)
    add_json_argument(ap)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ssegw-kms-http-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        env["PYTHONPATH"] = str(ROOT)
        port = free_port()
        ours = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp / "var"),
             "--kms-port", str(port), "--kms-workers", str(args.workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        procs.append(ours)
        assert ours.stdout is not None
        banner = b""
        while b"AWS_DEFAULT_REGION" not in banner:
            line = ours.stdout.readline()
            if not line:
                raise RuntimeError(banner.decode())
            banner += line
        found = dict(re.findall(r"export (\w+)=(\S+)", banner.decode()))
        our_url = f"http://127.0.0.1:{port}"
        wait_http(our_url + "/health")
        our_creds = Credentials(found["AWS_ACCESS_KEY_ID"], found["AWS_SECRET_ACCESS_KEY"])
        our_key = boto3.client("kms", endpoint_url=our_url, region_name=REGION,
                               aws_access_key_id=our_creds.access_key,
                               aws_secret_access_key=our_creds.secret_key).create_key()["KeyMetadata"]["KeyId"]

        moto_port = free_port()
        moto = subprocess.Popen([sys.executable, "-c",
                                 "from moto.server import ThreadedMotoServer as S; import time; "
                                 f"S(port={moto_port}).start(); time.sleep(1e6)"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(moto)
        moto_url = f"http://127.0.0.1:{moto_port}"
        wait_http(moto_url + "/moto-api/")
        moto_creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        moto_key = boto3.client("kms", endpoint_url=moto_url, region_name=MOTO_REGION,
                                aws_access_key_id=moto_creds.access_key,
                                aws_secret_access_key=moto_creds.secret_key).create_key()["KeyMetadata"]["KeyId"]

        results = Results("kms_http", [f"wrk -t2 -c{args.connections}, {args.seconds} s per server "
                                       f"in {SLICES} alternating slices, "
                                       f"our server with {args.workers} worker(s)"])
        for rnd in range(args.rounds):
            # Signed afresh each round: a signature is valid for 15 minutes.
            ours_ops = scripts(our_url, our_creds, our_key, tmp, REGION, "ours")
            moto_ops = scripts(moto_url, moto_creds, moto_key, tmp, MOTO_REGION, "moto")
            if rnd % 2 == 0:  # A B B A, and within the round in alternating slices
                mine, theirs = measure([(our_url, ours_ops), (moto_url, moto_ops)], args.seconds,
                                       args.connections)
            else:
                theirs, mine = measure([(moto_url, moto_ops), (our_url, ours_ops)], args.seconds,
                                       args.connections)
            for op in mine:
                # Goal (issue 5): GenerateDataKey >= 20x moto (and >= 5,500 req/s on 2 cores).
                results.metric(op, "req/s", "moto KMS server", 20.0 if op == "GenerateDataKey" else None)
                results.add(op, mine[op], theirs[op])
        results.write(args.json)
        print(results.notes[0])
        print(f"{'operation':18} {'ssegw req/s':>12} {'moto req/s':>12} {'ratio':>8}   every round (ssegw/moto)")
        for m in results.metrics.values():
            rounds = "  ".join(f"{o:,.0f}/{t:,.0f}" for o, t in zip(m.ours, m.theirs, strict=True))
            print(f"{m.name:18} {statistics.median(m.ours):12,.0f} {statistics.median(m.theirs):12,.0f} "
                  f"{m.ratio() or 0:7.1f}x   {rounds}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
