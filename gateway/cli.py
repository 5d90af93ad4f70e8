"""`ssegw`: one command for the KMS, the S3 proxy and the adapters."""

from __future__ import annotations

import argparse
import sys

from kms_core import cli as kms_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssegw", description="Server-side-encryption gateway with an embedded KMS"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    kms_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return kms_cli.run_handler(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
