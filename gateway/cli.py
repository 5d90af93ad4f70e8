"""`ssegw`: one command for the KMS, the S3 proxy and the adapters."""

from __future__ import annotations

import argparse
import sys

from adapters.block import cli as volume_cli
from adapters.file import cli as fs_cli
from gateway import serve
from gateway.s3 import cli as s3_cli
from kms_core import cli as kms_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssegw", description="Server-side-encryption gateway with an embedded KMS"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the KMS HTTP API and the S3 proxy")
    serve.add_arguments(serve_p)
    serve_p.set_defaults(serve=True)
    kms_cli.register(sub)
    fs_cli.register(sub)
    volume_cli.register(sub)
    s3_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "serve", False):
        return serve.run(args)
    return kms_cli.run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
