"""`ssegw account ...` and `ssegw kms ...`: the key lifecycle from a terminal.

Every command prints one JSON object (the REST dialect's camelCase shapes) on success, and
`{"errorCode": ..., "message": ...}` on stderr with exit status 1 on a KMS error.

Which account a `kms` command acts for: the access key in SSEGW_ACCESS_KEY_ID and
SSEGW_SECRET_ACCESS_KEY (checked against the stored secret), or `--account NAME_OR_ID` for an
operator working on the data directory directly.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kms_core import wire
from kms_core.asym_cli import ASYMMETRIC_COMMANDS, asymmetric_arguments
from kms_core.embedded import DEFAULT_REGION, Kms, KmsConfig, default_data_dir, open_kms
from kms_core.errors import AccessDenied, InvalidParameter, KmsError
from kms_core.lifecycle_cli import LIFECYCLE_COMMANDS, lifecycle_arguments
from kms_core.types import Caller

Handler = Callable[[argparse.Namespace], Any]


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=default_data_dir(),
                   help="where the embedded KMS keeps its state (default ./var or $SSEGW_DATA_DIR)")
    p.add_argument("--db-url", default=os.environ.get("SSEGW_DB_URL"),
                   help="SQLAlchemy URL of the metadata DB (default: SQLite under --data-dir)")
    p.add_argument("--region", default=os.environ.get("SSEGW_REGION", DEFAULT_REGION),
                   help=f"KMS region / resource pool (default {DEFAULT_REGION})")


def open_from_args(args: argparse.Namespace) -> Kms:
    return open_kms(KmsConfig(data_dir=args.data_dir, db_url=args.db_url, region=args.region))


def caller_from_args(kms: Kms, args: argparse.Namespace) -> Caller:
    if getattr(args, "account", None):
        info = kms.accounts.resolve(args.account)
        return Caller(info.account_id, args.region, f"cli:{info.name}")
    key_id = os.environ.get("SSEGW_ACCESS_KEY_ID")
    secret = os.environ.get("SSEGW_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise AccessDenied(
            "no credentials: set SSEGW_ACCESS_KEY_ID and SSEGW_SECRET_ACCESS_KEY, or pass --account"
        )
    creds = kms.accounts.credentials(key_id)
    if not hmac.compare_digest(creds.secret_access_key.encode(), secret.encode()):
        raise AccessDenied("the secret access key does not match the access key id")
    return Caller(creds.account_id, args.region, key_id)


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


# --------------------------------------------------------------------- account


def _account_create(args: argparse.Namespace) -> Any:
    kms = open_from_args(args)
    info, creds = kms.accounts.create_account(args.name)
    return {
        "accountId": info.account_id,
        "name": info.name,
        "accessKeyId": creds.access_key_id,
        "secretAccessKey": creds.secret_access_key,
    }


def _account_list(args: argparse.Namespace) -> Any:
    kms = open_from_args(args)
    return {"accounts": [
        {"accountId": a.account_id, "name": a.name, "frozen": a.frozen,
         "creationDate": wire.iso(a.created_at)}
        for a in kms.accounts.list()
    ]}


def _account_usage(args: argparse.Namespace) -> Any:
    kms = open_from_args(args)
    info = kms.accounts.resolve(args.account)
    usage = kms.meter.usage(info.account_id, args.month)
    kms.close()
    return {"accountId": info.account_id, "month": args.month or kms.config.clock().strftime("%Y-%m"),
            "usage": usage, "total": sum(usage.values())}


def _set_frozen(args: argparse.Namespace, frozen: bool) -> Any:
    kms = open_from_args(args)
    info = kms.accounts.set_frozen(kms.accounts.resolve(args.account).account_id, frozen)
    kms.close()
    return {"accountId": info.account_id, "name": info.name, "frozen": info.frozen}


def _account_freeze(args: argparse.Namespace) -> Any:
    return _set_frozen(args, True)


def _account_thaw(args: argparse.Namespace) -> Any:
    return _set_frozen(args, False)


def _account_audit(args: argparse.Namespace) -> Any:
    kms = open_from_args(args)
    info = kms.accounts.resolve(args.account)
    events = kms.audit.query(info.account_id, key_id=args.key, after_id=args.marker, limit=args.limit)
    kms.close()
    return {"events": [wire.audit_event(e) for e in events]}


# ------------------------------------------------------------------------- kms


def _with_caller(fn: Callable[[Kms, Caller, argparse.Namespace], Any]) -> Handler:
    def run(args: argparse.Namespace) -> Any:
        kms = open_from_args(args)
        try:
            return fn(kms, caller_from_args(kms, args), args)
        finally:
            kms.close()  # writes the audit events of this command

    return run


def _read_input(args: argparse.Namespace, text_attr: str) -> bytes:
    text = getattr(args, text_attr, None)
    if text is not None:
        return text.encode() if text_attr == "plaintext" else wire.unb64(text, "blob")
    if args.infile is None:
        raise InvalidParameter(f"give --{text_attr} or --in FILE")
    data = sys.stdin.buffer.read() if args.infile == "-" else Path(args.infile).read_bytes()
    return data


def _encrypt(kms: Kms, c: Caller, a: argparse.Namespace) -> Any:
    r = kms.service.encrypt(c, a.key, _read_input(a, "plaintext"), parse_context(a.context))
    if a.out:
        Path(a.out).write_bytes(r.ciphertext_blob)
    return wire.encrypt_result(r)


def _decrypt(kms: Kms, c: Caller, a: argparse.Namespace) -> Any:
    r = kms.service.decrypt(c, _read_input(a, "blob"), parse_context(a.context))
    if a.out:
        Path(a.out).write_bytes(r.plaintext)
        return {"cmkUuid": r.key_id, "keyVersionId": r.version_id}
    return wire.decrypt_result(r)


def _list_keys(kms: Kms, c: Caller, a: argparse.Namespace) -> Any:
    page = kms.service.list_keys(c, limit=a.limit, marker=a.marker)
    return {"keys": [wire.key_metadata(m) for m in page.items], "nextMarker": page.next_marker,
            "truncated": page.truncated}


def _list_aliases(kms: Kms, c: Caller, a: argparse.Namespace) -> Any:
    if a.key:
        return {"aliases": [wire.alias_info(x) for x in kms.service.list_aliases_by_key(c, a.key)]}
    page = kms.service.list_aliases(c, limit=a.limit, marker=a.marker)
    return {"aliases": [wire.alias_info(x) for x in page.items], "nextMarker": page.next_marker,
            "truncated": page.truncated}


def _delete_alias(kms: Kms, c: Caller, a: argparse.Namespace) -> Any:
    kms.service.delete_alias(c, a.alias)
    return {"alias": a.alias, "deleted": True}


KMS_COMMANDS: dict[str, tuple[str, Callable[[Kms, Caller, argparse.Namespace], Any]]] = {
    "create-key": ("create a customer master key", lambda k, c, a: wire.key_metadata(
        k.service.create_key(c, spec=a.spec, usage=a.usage, protection=a.protection,
                             description=a.description, alias=a.alias,
                             enterprise_project=a.enterprise_project, origin=a.origin,
                             rotation_period_days=a.rotation_days))),
    "list-keys": ("list keys of the account in the region", _list_keys),
    "describe-key": ("describe a key", lambda k, c, a: wire.key_metadata(k.service.describe_key(c, a.key))),
    "update-description": ("change a key's description", lambda k, c, a: wire.key_metadata(
        k.service.update_key_description(c, a.key, a.description))),
    "enable-key": ("enable a key", lambda k, c, a: wire.key_metadata(k.service.enable_key(c, a.key))),
    "disable-key": ("disable a key", lambda k, c, a: wire.key_metadata(k.service.disable_key(c, a.key))),
    "schedule-deletion": ("schedule a key's deletion in 7-30 days", lambda k, c, a: wire.key_metadata(
        k.service.schedule_key_deletion(c, a.key, a.days))),
    "cancel-deletion": ("cancel a scheduled deletion", lambda k, c, a: wire.key_metadata(
        k.service.cancel_key_deletion(c, a.key))),
    "create-alias": ("name a key", lambda k, c, a: wire.alias_info(k.service.create_alias(c, a.alias, a.key))),
    "update-alias": ("point an alias at another key", lambda k, c, a: wire.alias_info(
        k.service.update_alias(c, a.alias, a.key))),
    "delete-alias": ("delete an alias (never the key)", _delete_alias),
    "list-aliases": ("list aliases (of one key with --key)", _list_aliases),
    "encrypt": ("encrypt up to 6144 bytes", _encrypt),
    "decrypt": ("decrypt a ciphertext blob", _decrypt),
}
KMS_COMMANDS.update(LIFECYCLE_COMMANDS)  # rotation and BYOK (kms_core.lifecycle_cli)
KMS_COMMANDS.update(ASYMMETRIC_COMMANDS)  # versions, sign/verify, public keys (kms_core.asym_cli)


def _kms_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", help="act for this account (name or id) instead of the "
                                     "SSEGW_ACCESS_KEY_ID credentials")
    if name == "create-key":
        p.add_argument("--spec", default="AES_256", help="AES_256 | SM4 | RSA_2048 | SM2")
        p.add_argument("--usage", default="ENCRYPT_DECRYPT", help="ENCRYPT_DECRYPT | SIGN_VERIFY")
        p.add_argument("--protection", default=None, help="SOFTWARE | HSM")
        p.add_argument("--description", default="")
        p.add_argument("--alias")
        p.add_argument("--enterprise-project", default="default")
        p.add_argument("--origin", default="KMS",
                       help="KMS | EXTERNAL (AES_256 only; import material afterwards)")
        p.add_argument("--rotation-days", type=int, default=None,
                       help="rotate automatically every N days, 7-730 (default: no rotation)")
    elif name in LIFECYCLE_COMMANDS:
        lifecycle_arguments(name, p)
    elif name in ASYMMETRIC_COMMANDS:
        asymmetric_arguments(name, p)
    elif name in ("list-keys", "list-aliases"):
        p.add_argument("--limit", type=int, default=100)
        p.add_argument("--marker")
        if name == "list-aliases":
            p.add_argument("--key", help="only the aliases of this key")
    elif name in ("create-alias", "update-alias"):
        p.add_argument("alias")
        p.add_argument("key")
    elif name == "delete-alias":
        p.add_argument("alias")
    elif name in ("encrypt", "decrypt"):
        if name == "encrypt":
            p.add_argument("key")
            p.add_argument("--plaintext", help="text to encrypt")
        else:
            p.add_argument("--blob", help="base64 ciphertext blob")
        p.add_argument("--in", dest="infile", help="read the input bytes from FILE ('-': stdin)")
        p.add_argument("--out", help="write the raw output bytes to FILE")
        p.add_argument("--context", action="append", metavar="KEY=VALUE",
                       help="encryption context entry (repeatable)")
    else:
        p.add_argument("key", help="key id or alias")
        if name == "schedule-deletion":
            p.add_argument("--days", type=int, default=30, help="pending window, 7-30 days")
        if name == "update-description":
            p.add_argument("description")


def register(sub: Any) -> None:
    acct = sub.add_parser("account", help="accounts and their access keys")
    acct_sub = acct.add_subparsers(dest="account_command", required=True)
    p = acct_sub.add_parser("create", help="create an account; prints its first access key")
    p.add_argument("--name", required=True)
    add_store_options(p)
    p.set_defaults(handler=_account_create)
    p = acct_sub.add_parser("list", help="list accounts")
    add_store_options(p)
    p.set_defaults(handler=_account_list)
    for name, help_text, fn in (
        ("usage", "cryptographic calls of an account in a month", _account_usage),
        ("freeze", "freeze an account (arrears): every call is refused", _account_freeze),
        ("thaw", "thaw a frozen account", _account_thaw),
        ("audit", "audit events of an account (optionally of one key)", _account_audit),
    ):
        p = acct_sub.add_parser(name, help=help_text)
        p.add_argument("account", help="account name or id")
        if name == "usage":
            p.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
        if name == "audit":
            p.add_argument("--key", help="only events of this key id")
            p.add_argument("--limit", type=int, default=100)
            p.add_argument("--marker", type=int, default=0, help="event id to continue after")
        add_store_options(p)
        p.set_defaults(handler=fn)

    kms = sub.add_parser("kms", help="key lifecycle and cryptographic calls")
    kms_sub = kms.add_subparsers(dest="kms_command", required=True)
    for name, (help_text, fn) in KMS_COMMANDS.items():
        p = kms_sub.add_parser(name, help=help_text)
        _kms_arguments(name, p)
        add_store_options(p)
        p.set_defaults(handler=_with_caller(fn))


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    try:
        result = handler(args)
    except KmsError as e:
        print(json.dumps({"errorCode": e.code, "message": e.message}), file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0
