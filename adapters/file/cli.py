"""`ssegw fs ...`: init, mount, unmount, rekey and check an encrypted directory.

The KMS is reached in-process from --data-dir (account from --account or the
SSEGW_ACCESS_KEY_ID/SSEGW_SECRET_ACCESS_KEY credentials, as for `ssegw kms`), or over HTTP
with --kms-url and those credentials. Output is one JSON object, like the other commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.file import masterkey
from adapters.file.errors import FsError, SfsError
from kms_core.cli import add_store_options, kms_client


def _fs_errors(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], Any]:
    def run(args: argparse.Namespace) -> Any:
        try:
            return fn(args)
        except SfsError as e:
            print(json.dumps({"errorCode": e.code, "message": e.message}), file=sys.stderr)
            raise SystemExit(1) from None

    return run


def _init(args: argparse.Namespace) -> Any:
    with kms_client(args) as client:
        cfg = masterkey.init_filesystem(Path(args.backing), client, args.key)
    return {"backing": str(Path(args.backing).resolve()), "fsId": cfg.fs_id, "cmkUuid": cfg.key_id}


def _rekey(args: argparse.Namespace) -> Any:
    with kms_client(args) as client:
        cfg = masterkey.rekey(Path(args.backing), client, args.to_key)
    return {"backing": str(Path(args.backing).resolve()), "fsId": cfg.fs_id, "cmkUuid": cfg.key_id}


def _check(args: argparse.Namespace) -> Any:
    from adapters.file.check import check_tree

    with kms_client(args) as client:
        unlocked = masterkey.unlock(Path(args.backing), client)
    report = check_tree(args.backing, unlocked.master_key)
    out = report.as_dict()
    if not report.ok:
        print(json.dumps(out, indent=2))
        raise SystemExit(2)  # damage found: distinct from "could not run" (1)
    return out


def _mount(args: argparse.Namespace) -> Any:
    from adapters.file.fusefs import serve

    backing = Path(args.backing).resolve()
    mountpoint = Path(args.mountpoint).resolve()
    if not mountpoint.is_dir():
        raise FsError(f"mount point {mountpoint} is not a directory")
    with kms_client(args) as client:
        unlocked = masterkey.unlock(backing, client)  # the one KMS call of this mount
    masterkey.prepare_for_writing(backing, unlocked.config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one fd per open file
    fsname = f"ssegw-sfs:{backing}"

    def run(on_ready: Callable[[], None] | None) -> None:
        serve(str(backing), str(mountpoint), unlocked.master_key, fsname=fsname,
              allow_other=args.allow_other, debug=args.debug, on_ready=on_ready)

    if args.foreground:
        logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        run(None)
        return None
    return _daemonize(run, args.log, {"backing": str(backing), "mountpoint": str(mountpoint),
                                      "fsId": unlocked.config.fs_id})


def _daemonize(run: Callable[[Callable[[], None] | None], None], log_file: str | None,
               info: dict[str, Any]) -> Any:
    """Fork a daemon that mounts and serves; return once the mount answers (or failed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        os.setsid()
        out = os.open(log_file or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        nul = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nul, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        def ready() -> None:
            os.write(w, b"ok")
            os.close(w)

        code = 0
        try:
            run(ready)
        except BaseException as e:  # noqa: BLE001 - the forked child reports any failure to its waiting parent and exits
            try:
                os.write(w, f"error: {e}".encode())
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    msg = b"".join(chunks)
    if not msg.startswith(b"ok"):
        os.waitpid(pid, 0)
        raise FsError(msg.decode(errors="replace") or "the mount daemon exited before mounting")
    return {**info, "pid": pid}


def _unmount(args: argparse.Namespace) -> Any:
    tool = shutil.which("fusermount3") or "fusermount"
    p = subprocess.run([tool, "-u", str(args.mountpoint)], capture_output=True, text=True)
    if p.returncode != 0:
        raise FsError(p.stderr.strip() or f"{tool} failed")
    return {"mountpoint": str(Path(args.mountpoint).resolve()), "unmounted": True}


def _kms_options(p: argparse.ArgumentParser) -> None:
    add_store_options(p)
    p.add_argument("--account", help="act for this account (name or id) instead of the "
                                     "SSEGW_ACCESS_KEY_ID credentials")
    p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL"),
                   help="reach the KMS over HTTP instead of in-process from --data-dir")


def register(sub: Any) -> None:
    fs = sub.add_parser("fs", help="encrypted directories mounted with FUSE")
    fs_sub = fs.add_subparsers(dest="fs_command", required=True)

    p = fs_sub.add_parser("init", help="make BACKING an encrypted directory")
    p.add_argument("backing")
    p.add_argument("--key", help="CMK id or alias sealing the master key (default alias_sfs)")
    _kms_options(p)
    p.set_defaults(handler=_fs_errors(_init))

    p = fs_sub.add_parser("mount", help="mount BACKING's plaintext view on MOUNTPOINT")
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("--foreground", "-f", action="store_true", help="do not become a daemon")
    p.add_argument("--allow-other", action="store_true", help="let other users in (allow_other)")
    p.add_argument("--log", help="daemon log file (default: none)")
    p.add_argument("--debug", action="store_true", help="log every FUSE request")
    _kms_options(p)
    p.set_defaults(handler=_fs_errors(_mount))

    p = fs_sub.add_parser("unmount", help="unmount (fusermount3 -u)")
    p.add_argument("mountpoint")
    p.set_defaults(handler=_fs_errors(_unmount))

    p = fs_sub.add_parser("rekey", help="re-seal the master key under another CMK")
    p.add_argument("backing")
    p.add_argument("--to-key", required=True, help="CMK id or alias")
    _kms_options(p)
    p.set_defaults(handler=_fs_errors(_rekey))

    p = fs_sub.add_parser("check", help="verify every name and block; exit 2 on damage")
    p.add_argument("backing")
    _kms_options(p)
    p.set_defaults(handler=_fs_errors(_check))
