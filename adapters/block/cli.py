"""`ssegw volume ...`: create, inspect, unseal, re-key and serve encrypted volumes.

The KMS is reached in-process from `--data-dir` (the account from `--account` or the
SSEGW_ACCESS_KEY_ID/SSEGW_SECRET_ACCESS_KEY credentials, as for `ssegw kms`), or over HTTP
with `--kms-url` and those credentials. Errors print `{"errorCode", "message"}` on stderr and
exit 1, like `ssegw kms`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.block import luks
from adapters.block import volume as vol
from adapters.block.errors import BlockError
from adapters.block.nbd_server import NbdServer, run, serve
from adapters.block.workers import serve_with_workers
from kms_core.cli import add_store_options, kms_client

Handler = Callable[[argparse.Namespace], Any]


def _default_key(key: str | None) -> str | None:
    """`alias_ecs` (or the guide's `alias/ecs`) means the product default key, which the KMS
    creates on first use."""
    return None if key in (None, "", "alias_ecs", "alias/alias_ecs", "alias/ecs") else key


def _create(args: argparse.Namespace) -> Any:
    size = vol.parse_size(args.size)
    with kms_client(args) as client:
        info = vol.create_volume(Path(args.image), size, client, key=_default_key(args.key),
                                 cipher=args.cipher)
    return info.as_json()


def _info(args: argparse.Namespace) -> Any:
    return vol.volume_info(Path(args.image)).as_json()


def _passphrase(args: argparse.Namespace) -> Any:
    with kms_client(args) as client:
        secret = vol.unseal_passphrase(Path(args.image), client)
    # Bare, so `$(ssegw volume passphrase IMG)` feeds qemu-img, nbdkit or cryptsetup.
    sys.stdout.write(secret.decode("ascii") + "\n")
    sys.stdout.flush()
    return None


def _rekey(args: argparse.Namespace) -> Any:
    with kms_client(args) as client:
        info = vol.rekey_volume(Path(args.image), client, _default_key(args.to_key))
    return info.as_json()


def _serve(args: argparse.Namespace) -> Any:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    image = Path(args.image)
    with kms_client(args) as client:
        volume = vol.open_volume(image, client, read_only=args.read_only)
    # The KMS is closed here: serving needs only the master key, held by the sector cipher.
    server = NbdServer(volume, name=args.export_name or "",
                       description=f"ssegw volume {volume.uuid}")

    def ready(uri: str) -> None:
        print(json.dumps({"uri": uri, "image": str(image), "uuid": volume.uuid,
                          "size": volume.size, "pid": os.getpid(), "workers": args.workers}),
              flush=True)

    sock = Path(args.socket) if args.socket else None
    if args.workers > 1:
        try:
            serve_with_workers(server, args.workers, socket_path=sock, host=args.host,
                               port=args.port, ready=ready)
        finally:
            volume.flush()
            volume.close()
        return None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        await serve(server, socket_path=sock, host=args.host, port=args.port, ready=ready,
                    stop=stop)

    try:
        run(main())
    finally:
        volume.flush()
        volume.close()
    return None


def _guarded(fn: Handler) -> Handler:
    def run(args: argparse.Namespace) -> Any:
        try:
            return fn(args)
        except BlockError as e:
            print(json.dumps({"errorCode": e.code, "message": e.message}), file=sys.stderr)
            raise SystemExit(1) from None

    return run


def _common(p: argparse.ArgumentParser, *, kms: bool = True) -> None:
    p.add_argument("image", help="the volume's image file")
    if kms:
        p.add_argument("--account", help="act for this account (name or id) instead of the "
                                         "SSEGW_ACCESS_KEY_ID credentials")
        p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL"),
                       help="reach the KMS over HTTP instead of in-process from --data-dir")
    add_store_options(p)


def register(sub: Any) -> None:
    v = sub.add_parser("volume", help="encrypted block volumes (LUKS1 images) served over NBD")
    vs = v.add_subparsers(dest="volume_command", required=True)

    p = vs.add_parser("create", help="create a sparse LUKS1 volume sealed by the KMS")
    _common(p)
    p.add_argument("--size", required=True, help="e.g. 64M, 10G, 1T (a multiple of 512 bytes)")
    p.add_argument("--key", help="key id or alias (default: the ecs default key alias_ecs)")
    p.add_argument("--cipher", default=vol.DEFAULT_CIPHER, choices=sorted(luks.CIPHERS))
    p.set_defaults(handler=_guarded(_create))

    p = vs.add_parser("info", help="what the image says about itself (no KMS call)")
    _common(p, kms=False)
    p.set_defaults(handler=_guarded(_info))

    p = vs.add_parser("passphrase", help="print the unsealed LUKS passphrase (audited)")
    _common(p)
    p.set_defaults(handler=_guarded(_passphrase))

    p = vs.add_parser("rekey", help="re-seal the passphrase under another key")
    _common(p)
    p.add_argument("--to-key", required=True, help="key id or alias (alias_ecs: the default)")
    p.set_defaults(handler=_guarded(_rekey))

    p = vs.add_parser("serve", help="serve the volume over NBD")
    _common(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="listen on this Unix socket")
    where.add_argument("--port", type=int, help="listen on this TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="TCP address to bind (default 127.0.0.1)")
    p.add_argument("--export-name", default="", help="export name (\"\" is always accepted)")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="server processes sharing the connections (default: one per core, "
                        "at most 4; 1 serves from this process alone)")
    p.set_defaults(handler=_guarded(_serve))


def _default_workers() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))
