"""`ssegw s3 ...`: object-storage commands run against the S3 proxy.

    ssegw s3 rewrap --bucket B [--prefix P] [--to-key KEY]
    ssegw s3 assign-bucket BUCKET ACCOUNT [--data-dir D | --db-url U]   (operators)

Talks to the proxy as the bucket owner (SSEGW_ACCESS_KEY_ID / SSEGW_SECRET_ACCESS_KEY, or the
AWS_* variables), so it needs neither backend credentials nor the KMS's data directory, and
works against the in-memory backend of `make run` as against a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

import boto3
from botocore.config import Config

from kms_core.cli import add_store_options, open_from_args
from kms_core.embedded import DEFAULT_REGION


def register(sub: Any) -> None:
    s3 = sub.add_parser("s3", help="object storage through the S3 proxy (rewrap)")
    s3_sub = s3.add_subparsers(dest="s3_command", required=True)
    p = s3_sub.add_parser(
        "rewrap", help="re-seal every object's key under a new key or its key's new primary version",
        description="Re-seal the data key of every object in a bucket (optionally under a prefix) under "
                    "--to-key, or under the primary version of the key that seals it now (after a "
                    "rotation). No data is re-encrypted. Interrupted runs resume when run again.")
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", default="")
    p.add_argument("--to-key", help="key id or alias to move to (default: each object's own key, "
                                    "its primary version)")
    p.add_argument("--endpoint-url", default=os.environ.get("SSEGW_S3_URL", "http://127.0.0.1:9000"),
                   help="the S3 proxy (default $SSEGW_S3_URL or http://127.0.0.1:9000)")
    p.add_argument("--region", default=os.environ.get("SSEGW_REGION", DEFAULT_REGION),
                   help=f"KMS region of the credentials (default {DEFAULT_REGION})")
    p.add_argument("--ca-bundle", help="CA certificate to verify an HTTPS proxy")
    p.add_argument("--concurrency", type=int, default=8, help="objects in flight (default 8)")
    p.set_defaults(handler=_rewrap)
    a = s3_sub.add_parser(
        "assign-bucket", help="give a backend bucket to an account (operators)",
        description="Record ACCOUNT as the owner of BUCKET in the KMS database every gateway shares. "
                    "A bucket made in the backend without the proxy is nobody's (unreachable "
                    "through the proxy) until assigned; assigning an owned bucket moves it.")
    a.add_argument("bucket")
    a.add_argument("account", help="account id or name")
    add_store_options(a)
    a.set_defaults(handler=_assign_bucket)


def _assign_bucket(args: argparse.Namespace) -> Any:
    kms = open_from_args(args)
    try:
        account = kms.accounts.resolve(args.account)
        previous = kms.buckets.owner(args.bucket)
        kms.buckets.assign(args.bucket, account.account_id)
    finally:
        kms.close()
    return {"bucket": args.bucket, "accountId": account.account_id, "previousOwner": previous}


def _client(args: argparse.Namespace) -> Any:
    key = os.environ.get("SSEGW_ACCESS_KEY_ID") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("SSEGW_SECRET_ACCESS_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        print(json.dumps({"errorCode": "MissingCredentials",
                          "message": "set SSEGW_ACCESS_KEY_ID and SSEGW_SECRET_ACCESS_KEY "
                                     "(the bucket owner's access key)"}), file=sys.stderr)
        raise SystemExit(2)
    return boto3.client(
        "s3", endpoint_url=args.endpoint_url, region_name=args.region, aws_access_key_id=key,
        aws_secret_access_key=secret, verify=args.ca_bundle or True,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                      max_pool_connections=max(10, args.concurrency * 2)))


def _rewrap(args: argparse.Namespace) -> Any:
    from gateway.s3.rewrap import rewrap

    client = _client(args)
    stop = threading.Event()

    def interrupted(signum: int, frame: Any) -> None:
        # Finish the objects in flight, then stop: every object is either done or untouched.
        stop.set()

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        summary = rewrap(client, args.bucket, args.prefix, args.to_key, concurrency=args.concurrency, stop=stop)
    except Exception as e:  # noqa: BLE001 - listing failed: say why in the commands' JSON form
        print(json.dumps({"errorCode": type(e).__name__, "message": str(e)}), file=sys.stderr)
        raise SystemExit(1) from None
    out = summary.as_json()
    if summary.interrupted or summary.counts["failed"]:
        print(json.dumps(out, indent=2))
        raise SystemExit(130 if summary.interrupted else 1)
    return out
