"""The `ssegw kms` commands as REST calls: each names its REST operation, builds the request
fields from its arguments, and may post-process the reply (write raw bytes to --out files).

One path for both modes: in-process the request goes to the REST dialect's handler with the
local caller; with --kms-url it goes over HTTP, signed with the caller's credentials. The
output is the same JSON either way.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kms_core import wire
from kms_core.errors import InvalidParameter

Body = Callable[[argparse.Namespace], dict[str, Any]]
After = Callable[[argparse.Namespace, dict[str, Any]], dict[str, Any]]
Arguments = Callable[[argparse.ArgumentParser], object]


@dataclass(frozen=True)
class Command:
    help: str
    operation: str
    body: Body
    arguments: Arguments
    after: After | None = None


# ------------------------------------------------------------------ helpers


def read_input(a: argparse.Namespace, text_attr: str | None, b64_attr: str | None = None) -> bytes:
    """An input as bytes: --TEXT (UTF-8), --BASE64, or --in FILE ('-' for stdin)."""
    text = getattr(a, text_attr, None) if text_attr else None
    if text is not None:
        return str(text).encode()
    encoded = getattr(a, b64_attr, None) if b64_attr else None
    if encoded is not None:
        return wire.unb64(encoded, b64_attr or "input")
    if getattr(a, "infile", None) is None:
        options = " or ".join(f"--{x.replace('_', '-')}" for x in (text_attr, b64_attr) if x)
        raise InvalidParameter(f"give {options} or --in FILE")
    return sys.stdin.buffer.read() if a.infile == "-" else Path(a.infile).read_bytes()


def b64_or_raw(data: bytes) -> bytes:
    """A file written by `openssl enc -e -base64 -A` (or plain bytes): decoded bytes."""
    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return data


def parse_context(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    ctx: dict[str, str] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep or not k:
            raise InvalidParameter(f"encryption context entries are KEY=VALUE, got {pair!r}")
        ctx[k] = v
    return ctx


def _fields(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def write_out(field: str, raw: bool = True) -> After:
    """Write the reply's base64 `field` (decoded) to --out, and drop it from what is printed."""

    def after(a: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
        if getattr(a, "out", None) and field in out:
            value = out.pop(field)
            Path(a.out).write_bytes(base64.b64decode(value) if raw else str(value).encode())
        return out

    return after


def key_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", help="key id or alias")


def page_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--marker")


def both(*fns: Arguments) -> Arguments:
    def run(p: argparse.ArgumentParser) -> None:
        for fn in fns:
            fn(p)

    return run


def io_args(text: str | None, b64: str | None = None, *, context: bool = False) -> Arguments:
    def run(p: argparse.ArgumentParser) -> None:
        if text:
            p.add_argument(f"--{text}", help="input as text")
        if b64:
            p.add_argument(f"--{b64.replace('_', '-')}", dest=b64, help="input as base64")
        p.add_argument("--in", dest="infile", help="read the input bytes from FILE ('-': stdin)")
        p.add_argument("--out", help="write the raw output bytes to FILE")
        if context:
            p.add_argument("--context", action="append", metavar="KEY=VALUE",
                           help="encryption context entry (repeatable)")

    return run


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
