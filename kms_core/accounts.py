"""Accounts (tenants) and their access keys. Secrets are sealed under the software root key."""

from __future__ import annotations

import builtins
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from kms_core.changes import EVERYTHING, ChangeFeed
from kms_core.errors import AccessDenied, AlreadyExists, InvalidParameter, NotFound
from kms_core.keystore.software import RootSealer
from kms_core.models import AccessKey, Account

_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True)
class AccountInfo:
    account_id: str
    name: str
    frozen: bool
    created_at: datetime


@dataclass(frozen=True)
class Credentials:
    account_id: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


def _secret_aad(access_key_id: str) -> bytes:
    return f"ssegw/access-key/v1/{access_key_id}".encode()


class AccountService:
    def __init__(self, engine: Engine, sealer: RootSealer, cache_ttl: float = 2.0,
                 changes: ChangeFeed | None = None) -> None:
        self._engine = engine
        self._changes = changes
        self._sealer = sealer
        self._cache_ttl = cache_ttl
        # account id -> (expiry, frozen): the frozen gate runs on every call, so it is cached;
        # a freeze made in this process applies at once, one made elsewhere within cache_ttl.
        self._frozen: dict[str, tuple[float, bool]] = {}
        self._credentials: dict[str, tuple[float, Credentials]] = {}

    def create_account(self, name: str) -> tuple[AccountInfo, Credentials]:
        if not isinstance(name, str) or not 1 <= len(name) <= 128 or not name.strip():
            raise InvalidParameter("account name must be 1-128 characters")
        account = Account(id="".join(secrets.choice(string.digits) for _ in range(12)), name=name)
        key, creds = self._new_access_key(account.id)
        # One transaction: an account is never seen without its first access key, even by a
        # process that lost the race to create it.
        with Session(self._engine, expire_on_commit=False) as s:
            try:
                s.add(account)
                s.flush()  # the account row first: the access key refers to it
                s.add(key)
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"account {name!r} already exists") from None
        return _info(account), creds

    def create_access_key(self, account_id: str) -> Credentials:
        self.get(account_id)
        key, creds = self._new_access_key(account_id)
        with Session(self._engine) as s:
            s.add(key)
            s.commit()
        return creds

    def _new_access_key(self, account_id: str) -> tuple[AccessKey, Credentials]:
        key_id = "SSEG" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        row = AccessKey(access_key_id=key_id, account_id=account_id,
                        sealed_secret=self._sealer.seal(secret.encode(), _secret_aad(key_id)))
        return row, Credentials(account_id, key_id, secret)

    def set_frozen(self, account_id: str, frozen: bool) -> AccountInfo:
        with Session(self._engine, expire_on_commit=False) as s:
            row = s.get(Account, account_id)
            if row is None:
                raise NotFound(f"account {account_id!r} does not exist")
            row.frozen = frozen
            s.add(row)
            s.commit()
        self._frozen.pop(account_id, None)
        if self._changes is not None:
            self._changes.publish(f"a:{account_id}")
        return _info(row)

    def on_change(self, message: str) -> None:
        """A change made by another node (kms_core.changes): drop what it makes stale."""
        if message.startswith("a:"):
            self._frozen.pop(message[2:], None)
        elif message == EVERYTHING:
            self._frozen.clear()

    def is_frozen(self, account_id: str) -> bool:
        now = time.monotonic()
        hit = self._frozen.get(account_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        with Session(self._engine) as s:
            row = s.get(Account, account_id)
            frozen = bool(row and row.frozen)
        self._frozen[account_id] = (now + self._cache_ttl, frozen)
        return frozen

    def resolve(self, name_or_id: str) -> AccountInfo:
        try:
            return self.get(name_or_id)
        except NotFound:
            return self.by_name(name_or_id)

    def get(self, account_id: str) -> AccountInfo:
        with Session(self._engine) as s:
            row = s.get(Account, account_id)
            if row is None:
                raise NotFound(f"account {account_id!r} does not exist")
            return _info(row)

    def by_name(self, name: str) -> AccountInfo:
        with Session(self._engine) as s:
            row = s.exec(select(Account).where(Account.name == name)).first()
            if row is None:
                raise NotFound(f"account {name!r} does not exist")
            return _info(row)

    def list(self) -> builtins.list[AccountInfo]:
        with Session(self._engine) as s:
            return [_info(a) for a in s.exec(select(Account).order_by(col(Account.created_at)))]

    def credentials(self, access_key_id: str) -> Credentials:
        """The secret behind an access key id, for signature checks. Unknown ids: AccessDenied.

        Cached for `cache_ttl` seconds: every signed request needs it.
        """
        now = time.monotonic()
        hit = self._credentials.get(access_key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        creds = self._load_credentials(access_key_id)
        self._credentials[access_key_id] = (now + self._cache_ttl, creds)
        return creds

    def _load_credentials(self, access_key_id: str) -> Credentials:
        with Session(self._engine) as s:
            row = s.get(AccessKey, access_key_id)
            if row is None or not row.enabled:
                raise AccessDenied(f"unknown access key {access_key_id!r}")
            secret = self._sealer.unseal(row.sealed_secret, _secret_aad(access_key_id))
            return Credentials(row.account_id, access_key_id, secret.decode())

    def access_keys(self, account_id: str) -> builtins.list[str]:
        with Session(self._engine) as s:
            return list(
                s.exec(
                    select(AccessKey.access_key_id)
                    .where(AccessKey.account_id == account_id)
                    .order_by(col(AccessKey.created_at))
                ).all()
            )


def _info(a: Account) -> AccountInfo:
    return AccountInfo(a.id, a.name, a.frozen, a.created_at)
