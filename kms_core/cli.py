"""`ssegw account ...` and `ssegw kms ...`: the key lifecycle from a terminal.

Every command prints one JSON object (the REST dialect's camelCase shapes) on success, and
`{"errorCode": ..., "message": ...}` on stderr with exit status 1 on a KMS error.

Which account a `kms` command acts for: the access key in SSEGW_ACCESS_KEY_ID and
SSEGW_SECRET_ACCESS_KEY (checked against the stored secret), or `--account NAME_OR_ID` for an
operator working on the data directory directly.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kms_core import billing, envelope, wire
from kms_core.asym_cli import ASYMMETRIC_COMMANDS
from kms_core.cli_commands import (
    Command,
    _fields,
    b64,
    both,
    io_args,
    key_arg,
    page_args,
    parse_context,
    read_input,
    write_out,
)
from kms_core.client import KmsClient
from kms_core.client.http import HttpKmsClient
from kms_core.client.inprocess import InProcessKmsClient
from kms_core.embedded import DEFAULT_REGION, Kms, KmsConfig, default_data_dir, open_kms
from kms_core.errors import AccessDenied, InvalidParameter, KmsError
from kms_core.http import rest
from kms_core.http.params import Params
from kms_core.lifecycle_cli import LIFECYCLE_COMMANDS
from kms_core.node_options import add_node_options, hsm_from_args
from kms_core.regions import is_pool
from kms_core.types import Caller

Handler = Callable[[argparse.Namespace], Any]


def pool_id(value: str) -> str:
    """A resource pool id of the guide's catalog (kms_core.regions), for --region."""
    if not is_pool(value):
        raise argparse.ArgumentTypeError(f"unknown resource pool {value!r} (e.g. cn-east-1, cn-xian-5)")
    return value


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=default_data_dir(),
                   help="where the embedded KMS keeps its state (default ./var or $SSEGW_DATA_DIR)")
    p.add_argument("--db-url", default=os.environ.get("SSEGW_DB_URL"),
                   help="SQLAlchemy URL of the metadata DB (default: SQLite under --data-dir)")
    p.add_argument("--region", type=pool_id, default=os.environ.get("SSEGW_REGION", DEFAULT_REGION),
                   help=f"resource pool, an id from the guide's list (default {DEFAULT_REGION}, 华东1)")
    add_node_options(p)


def open_from_args(args: argparse.Namespace) -> Kms:
    return open_kms(KmsConfig(data_dir=args.data_dir, db_url=args.db_url, region=args.region,
                              hsm=hsm_from_args(args), root_key=args.root_key))


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
    try:
        return billing.usage_report(kms, kms.accounts.resolve(args.account).account_id, args.month)
    finally:
        kms.close()


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


def _encrypt_after(a: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    if a.out:
        Path(a.out).write_bytes(base64.b64decode(out["ciphertextBlob"]))
    return out


def _alias_key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("alias")
    p.add_argument("key")


def _create_key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default="AES_256",
                   help="AES_256 | Ctyun_SM4 | RSA_2048 | Ctyun_SM2 (SM4, SM2 also accepted)")
    p.add_argument("--usage", default="Encrypt/Decrypt",
                   help="Encrypt/Decrypt | Sign/Verify (ENCRYPT_DECRYPT, SIGN_VERIFY also accepted)")
    p.add_argument("--protection", default=None,
                   help="Software | Hsm (default Software; Hsm for Ctyun_SM4 and Ctyun_SM2)")
    p.add_argument("--description", default="")
    p.add_argument("--alias")
    p.add_argument("--enterprise-project", default="default")
    p.add_argument("--origin", default="KMS", help="KMS | EXTERNAL (AES_256 only; import material afterwards)")
    p.add_argument("--rotation-days", type=int, default=None,
                   help="rotate automatically every N days, 7-730 (default: no rotation)")


def _list_aliases_body(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return ("listAliasByUuid", {"cmkUuid": a.key}) if a.key else \
        ("listAlias", _fields(limit=a.limit, marker=a.marker))


KMS_COMMANDS: dict[str, Command] = {
    "create-key": Command("create a customer master key", "createKey", lambda a: _fields(
        keySpec=a.spec, keyUsage=a.usage, protectionLevel=a.protection, description=a.description,
        alias=a.alias, enterpriseProject=a.enterprise_project, origin=a.origin,
        rotationPeriodInDays=a.rotation_days), _create_key_args),
    "list-keys": Command("list keys of the account in the region", "listKeys",
                         lambda a: _fields(limit=a.limit, marker=a.marker), page_args),
    "describe-key": Command("describe a key", "describeKey", lambda a: {"cmkUuid": a.key}, key_arg),
    "update-description": Command(
        "change a key's description", "updateKeyDescription",
        lambda a: {"cmkUuid": a.key, "description": a.description},
        both(key_arg, lambda p: p.add_argument("description"))),
    "enable-key": Command("enable a key", "enableKey", lambda a: {"cmkUuid": a.key}, key_arg),
    "disable-key": Command("disable a key", "disableKey", lambda a: {"cmkUuid": a.key}, key_arg),
    "schedule-deletion": Command(
        "schedule a key's deletion in 7-30 days", "scheduleKeyDeletion",
        lambda a: {"cmkUuid": a.key, "pendingWindowInDays": a.days},
        both(key_arg, lambda p: p.add_argument("--days", type=int, default=30, help="pending window, 7-30 days"))),
    "cancel-deletion": Command("cancel a scheduled deletion", "cancelKeyDeletion",
                               lambda a: {"cmkUuid": a.key}, key_arg),
    "create-alias": Command("name a key", "createAlias", lambda a: {"alias": a.alias, "cmkUuid": a.key},
                            _alias_key_args),
    "update-alias": Command("point an alias at another key", "updateAlias",
                            lambda a: {"alias": a.alias, "cmkUuid": a.key}, _alias_key_args),
    "delete-alias": Command("delete an alias (never the key)", "deleteAlias", lambda a: {"alias": a.alias},
                            lambda p: p.add_argument("alias"),
                            lambda a, out: {**out, "deleted": True}),
    "list-aliases": Command("list aliases (of one key with --key)", "listAlias",
                            lambda a: _list_aliases_body(a)[1],
                            both(page_args, lambda p: p.add_argument("--key", help="only the aliases of this key"))),
    "encrypt": Command("encrypt up to 6144 bytes", "encrypt", lambda a: _fields(
        cmkUuid=a.key, plaintext=b64(read_input(a, "plaintext")), encryptionContext=parse_context(a.context)),
        both(key_arg, io_args("plaintext", context=True)), _encrypt_after),
    "decrypt": Command("decrypt a ciphertext blob", "decrypt", lambda a: _fields(
        ciphertextBlob=b64(read_input(a, None, "blob")), encryptionContext=parse_context(a.context)),
        io_args(None, "blob", context=True), write_out("plaintext")),
    "get-usage": Command("cryptographic calls of your account this month (or --month)", "getUsage",
                         lambda a: _fields(month=a.month),
                         lambda p: p.add_argument("--month", help="YYYY-MM")),
    "list-audit-events": Command(
        "audit events of your account (optionally of one key)", "listAuditEvents",
        lambda a: _fields(cmkUuid=a.key, limit=a.limit, marker=a.marker),
        both(page_args, lambda p: p.add_argument("--key", help="only events of this key"))),
}
KMS_COMMANDS.update(LIFECYCLE_COMMANDS)  # rotation and BYOK (kms_core.lifecycle_cli)
KMS_COMMANDS.update(ASYMMETRIC_COMMANDS)  # versions, sign/verify, public keys (kms_core.asym_cli)


def _operation(name: str, a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    command = KMS_COMMANDS[name]
    if name == "list-aliases":
        return _list_aliases_body(a)
    return command.operation, command.body(a)


def http_client_from_env(url: str, region: str) -> HttpKmsClient:
    key_id = os.environ.get("SSEGW_ACCESS_KEY_ID")
    secret = os.environ.get("SSEGW_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise AccessDenied("--kms-url needs SSEGW_ACCESS_KEY_ID and SSEGW_SECRET_ACCESS_KEY")
    return HttpKmsClient(url, key_id, secret, region, ca_certs=os.environ.get("SSEGW_CA_BUNDLE"))


@contextmanager
def kms_client(args: argparse.Namespace) -> Iterator[KmsClient]:
    """The product-facing client for a command: over HTTP with --kms-url (signed with the
    SSEGW_* credentials), else the embedded KMS of --data-dir, closed afterwards so the
    command's audit events and usage counts are written."""
    if getattr(args, "kms_url", None):
        if getattr(args, "account", None):
            raise AccessDenied("--account works on a data dir; over --kms-url use credentials")
        yield http_client_from_env(args.kms_url, args.region)
        return
    kms = open_from_args(args)
    try:
        yield InProcessKmsClient(kms.service, caller_from_args(kms, args))
    finally:
        kms.close()


def _run_kms_command(name: str) -> Handler:
    def run(a: argparse.Namespace) -> Any:
        op, body = _operation(name, a)
        if a.kms_url:
            if a.account:
                raise InvalidParameter("--account works on a data dir; over --kms-url use credentials")
            result = http_client_from_env(a.kms_url, a.region).call(op, body)
        else:
            kms = open_from_args(a)
            try:
                # The same envelope the server sends, unwrapped the same way as over HTTP.
                _, reply = rest.invoke(kms, caller_from_args(kms, a), op, Params(body))
            finally:
                kms.close()  # writes the audit events of this command
            result = envelope.unwrap(reply)
        after = KMS_COMMANDS[name].after
        return after(a, result) if after else result

    return run


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
        ("usage", "a month's cryptographic calls, key-days per pool and bill of an account",
         _account_usage),
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
    for name, command in KMS_COMMANDS.items():
        p = kms_sub.add_parser(name, help=command.help)
        command.arguments(p)
        p.add_argument("--account", help="act for this account (name or id) on the data dir, "
                                         "instead of the SSEGW_ACCESS_KEY_ID credentials")
        p.add_argument("--kms-url", default=os.environ.get("SSEGW_KMS_URL"),
                       help="a KMS server to call over HTTP (with the SSEGW_* credentials)")
        add_store_options(p)
        p.set_defaults(handler=_run_kms_command(name))


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    try:
        result = handler(args)
    except KmsError as e:
        print(json.dumps({"errorCode": e.code, "message": e.message}), file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0
