"""The software root key of a node, and the check that it is the cluster's.

Two ways to hold it (`--root-key`):
- `file` (default): `<data dir>/root.key`, made on first start. Several nodes over one database
  must all have the same file.
- `hsm`: the key is kept in the database, sealed by an AES key inside the HSM (AES-GCM run in
  the HSM, the key never leaves it). A new node needs only the database URL, the HSM and its
  PIN. A data directory that already has a `root.key` is adopted: that key is sealed, not a new
  one made.

Either way the database keeps a check value (an HMAC under the root key), so a node holding
another key refuses to start with a message that says so, instead of failing later on every
sealed value with InvalidCiphertext.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from kms_core.errors import InvalidCiphertext, KeyUnavailable, KmsError
from kms_core.keystore.hsm import HsmAesGcm, HsmKeyStore
from kms_core.keystore.software import ROOT_KEY_LEN, RootSealer, load_or_create_root_key
from kms_core.models import AccessKey, RootKeyRecord

ROOT_KEY_MODES = ("file", "hsm")
RECORD_NAME = "software"
SEAL_LABEL = "ssegw-root-key-seal"
_SEAL_AAD = b"ssegw/root-key/v1/software"
_NONCE_LEN = 12


class RootKeyError(KmsError):
    """This node cannot open the cluster's root key: it must not serve."""


def check_value(root_key: bytes) -> bytes:
    return hmac.new(root_key, b"ssegw/root-key-check/v1", hashlib.sha256).digest()


def open_root_key(
    mode: str,
    data_dir: Path,
    engine: Engine,
    lock: Callable[[], AbstractContextManager[object]],
    hsm: Callable[[], HsmKeyStore],
) -> bytes:
    """The root key this node uses, checked against (or recorded in) the database."""
    if mode not in ROOT_KEY_MODES:
        raise RootKeyError(f"--root-key must be one of {', '.join(ROOT_KEY_MODES)}")
    path = data_dir / "root.key"
    with Session(engine) as s:
        record = s.get(RootKeyRecord, RECORD_NAME)
    if mode == "file":
        if record is not None and record.sealed is not None and not path.exists():
            raise RootKeyError(
                "this database's root key is sealed by the HSM: start with --root-key hsm "
                "(and the cluster's --pkcs11-* settings)"
            )
        key = load_or_create_root_key(path)
        if record is not None:
            _verify(key, record, f"the root key in {path}")
            return key
    else:
        store = hsm()
        if record is not None and record.sealed is not None:
            key = _unseal(store, record)
            _verify(key, record, "the root key sealed in the database")
            return key
        if record is not None and not path.exists():
            raise RootKeyError(
                "this database's root key is kept in root.key files, not in the HSM: start one "
                f"node once with --root-key hsm and the cluster's root.key in {data_dir} to seal "
                "it; after that, nodes need no file"
            )
        # Adopt this data dir's key if it has one; a node of an HSM cluster keeps no file.
        key = load_or_create_root_key(path) if path.exists() else os.urandom(ROOT_KEY_LEN)
        return _record(key, store, engine, lock, path)
    return _record(key, None, engine, lock, path)


def _record(key: bytes, store: HsmKeyStore | None, engine: Engine,
            lock: Callable[[], AbstractContextManager[object]], path: Path) -> bytes:
    # Under a database-wide lock: of nodes starting at once on a new database, the first
    # records its key and the others take (or are checked against) that one.
    with lock(), Session(engine) as s:
        record = s.get(RootKeyRecord, RECORD_NAME)
        if record is None:
            _check_existing_secrets(s, key, path)
            record = RootKeyRecord(name=RECORD_NAME, check_value=check_value(key))
        elif record.sealed is not None and store is not None:
            key = _unseal(store, record)  # another node sealed the cluster's key first
        _verify(key, record, f"the root key in {path}")
        if store is not None and record.sealed is None:
            store.hsm.ensure_aes(SEAL_LABEL)  # under the lock: one seal key for the cluster
            nonce = os.urandom(_NONCE_LEN)
            record.sealed = nonce + HsmAesGcm(store.hsm, SEAL_LABEL).encrypt(nonce, key, _SEAL_AAD)
            record.hsm_label = SEAL_LABEL
        s.add(record)
        s.commit()
    return key


def _unseal(store: HsmKeyStore, record: RootKeyRecord) -> bytes:
    assert record.sealed is not None
    label = record.hsm_label or SEAL_LABEL
    try:
        key = HsmAesGcm(store.hsm, label).decrypt(
            record.sealed[:_NONCE_LEN], record.sealed[_NONCE_LEN:], _SEAL_AAD)
    except (KeyUnavailable, InvalidCiphertext) as exc:
        raise RootKeyError(
            f"cannot open the cluster's root key: it is sealed by the HSM key {label!r}, which "
            f"this node's HSM token {store.hsm.config.token_label!r} cannot use ({exc.message}); "
            "give this node the cluster's HSM (--pkcs11-module, --pkcs11-token, --pkcs11-pin-file)"
        ) from None
    if len(key) != ROOT_KEY_LEN:
        raise RootKeyError("the root key sealed in the database is damaged")
    return key


def _verify(key: bytes, record: RootKeyRecord, what: str) -> None:
    if not hmac.compare_digest(check_value(key), record.check_value):
        raise RootKeyError(
            f"{what} is not this database's root key: this node cannot open the cluster's "
            "keys and secrets. Give every node the same root.key file, or use --root-key hsm "
            "so that nodes take the root key from the database and the HSM"
        )


def _check_existing_secrets(s: Session, key: bytes, path: Path) -> None:
    # A database from before the check value existed: the key must open what is sealed there.
    row = s.exec(select(AccessKey).limit(1)).first()
    if row is None:
        return
    try:
        RootSealer(key).unseal(row.sealed_secret,
                               f"ssegw/access-key/v1/{row.access_key_id}".encode())
    except InvalidCiphertext:
        raise RootKeyError(
            f"the root key in {path} does not open the secrets in this database: this node "
            "cannot open the cluster's keys. Give every node the same root.key file"
        ) from None
