"""Keys themselves: creating (each kind through its own module), describing and listing them,
their descriptions and states, and the products' default keys (made on first use)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from kms_core import hosting
from kms_core.errors import AlreadyExists, InvalidParameter, NotFound, UnsupportedOperation
from kms_core.models import Alias, DefaultKey, Key, KeyVersion
from kms_core.observe import Observer
from kms_core.ops.asymmetric import AsymmetricOps
from kms_core.ops.checks import check_description, check_limit, key_marker
from kms_core.ops.imports import ImportOps
from kms_core.ops.rotation import RotationOps, check_rotation_period
from kms_core.repository import (
    RESERVED_ALIASES,
    KeyRecord,
    KeyRepository,
    default_alias,
    normalize_alias,
    to_metadata,
)
from kms_core.specs import KeySpec, KeyUsage, Origin, Protection, check_combination, parse_enum, parse_spec
from kms_core.states import Action, KeyState, transition
from kms_core.types import PRODUCTS, Caller, KeyMetadata, Page

MIN_PENDING_DAYS, MAX_PENDING_DAYS, DEFAULT_PENDING_DAYS = 7, 30, 30


class KeyOps:
    def __init__(self, keys: KeyRepository, asymmetric: AsymmetricOps, imports: ImportOps,
                 rotation: RotationOps, observer: Observer | None, default_protection: Protection) -> None:
        self._keys = keys
        self._asymmetric = asymmetric
        self._imports = imports
        self._rotation = rotation
        self._observer = observer
        self._default_protection = default_protection

    def create(
        self,
        caller: Caller,
        *,
        spec: str,
        usage: str,
        protection: str | None,
        origin: str,
        description: str,
        alias: str | None,
        enterprise_project: str,
        rotation_period_days: int | None,
    ) -> KeyMetadata:
        kspec = parse_spec(spec)
        kusage = parse_enum(KeyUsage, usage, "key usage")
        # SM4 and SM2 exist only in the HSM, so they default there; the rest to the configured level.
        default_level = (Protection.HSM if kspec in (KeySpec.SM4, KeySpec.SM2)
                         else self._default_protection)
        level = parse_enum(Protection, protection, "protection level") if protection else default_level
        korigin = parse_enum(Origin, origin, "origin")
        check_combination(kspec, kusage, level, korigin)
        if rotation_period_days is not None:
            # Checked before anything is written: bad input changes nothing.
            check_rotation_period(rotation_period_days)
            if korigin is Origin.EXTERNAL or not kspec.symmetric:
                raise UnsupportedOperation("only symmetric keys with KMS key material rotate")
        check_description(description)
        alias_name = normalize_alias(alias) if alias else None
        if alias_name in RESERVED_ALIASES:
            raise UnsupportedOperation(f"alias {alias_name!r} is reserved for a default key")
        if not kspec.symmetric:
            # RSA_2048 / SM2: a key pair as the first version, never primary.
            return self._asymmetric.create_key(
                caller, kspec, kusage, level, description, alias_name, enterprise_project
            )
        if korigin is Origin.EXTERNAL:
            # BYOK: no material yet; the key waits in PendingImport.
            return self._imports.create_external_key(
                caller, kspec, kusage, level, description, alias_name, enterprise_project
            )
        made = self._insert(
            caller, kspec, kusage, level, korigin, description, alias_name, enterprise_project, None
        )
        if rotation_period_days is None:
            return made
        return self._rotation.set_policy(caller, made.key_id, rotation_period_days)

    def _insert(
        self,
        caller: Caller,
        spec: KeySpec,
        usage: KeyUsage,
        level: Protection,
        origin: Origin,
        description: str,
        alias_name: str | None,
        enterprise_project: str,
        default_product: str | None,
    ) -> KeyMetadata:
        store = self._keys.keystore(level)
        key_id, version_id = str(uuid.uuid4()), str(uuid.uuid4())
        stored = store.generate_symmetric(spec, version_id)
        now = self._keys.clock()
        key = self._keys.new_key_row(caller, key_id, spec, usage, level, origin, KeyState.ENABLED,
                                     description, enterprise_project, version_id, default_product, now)
        try:
            with self._keys.session() as s:
                s.add(key)
                s.flush()
                hosting.start(s, key, now)  # billed from today; default keys are free
                s.add(KeyVersion(id=version_id, key_id=key_id, stored=stored, created_at=now))
                if alias_name:
                    s.add(self._keys.new_alias_row(caller, alias_name, key_id, now))
                if default_product:
                    s.add(DefaultKey(account_id=caller.account_id, region=caller.region,
                                     product=default_product, key_id=key_id))
                s.commit()
                return to_metadata(key, (alias_name,) if alias_name else ())
        except IntegrityError:
            # Nothing was written; an HSM object made for it must not linger.
            store.destroy(spec, version_id, stored)
            if default_product:
                raise
            raise AlreadyExists(f"alias {alias_name!r} already exists") from None

    def describe(self, caller: Caller, ref: str) -> KeyMetadata:
        with self._keys.session() as s:
            return self._keys.metadata(s, self._keys.find_key(s, caller, ref))

    def page(self, caller: Caller, limit: int, marker: str | None) -> Page[KeyMetadata]:
        limit = check_limit(limit)
        with self._keys.session() as s:
            q = select(Key).where(Key.account_id == caller.account_id, Key.region == caller.region,
                                  col(Key.destroyed_at).is_(None))
            if marker:
                q = q.where(col(Key.id) > key_marker(marker))
            keys = s.exec(q.order_by(col(Key.id)).limit(limit + 1)).all()
            page, more = keys[:limit], len(keys) > limit
            names: dict[str, list[str]] = {k.id: [] for k in page}
            if page:
                for a in s.exec(
                    select(Alias).where(col(Alias.key_id).in_(list(names))).order_by(col(Alias.name))
                ).all():
                    names[a.key_id].append(a.name)
            items = [to_metadata(k, tuple(names[k.id])) for k in page]
        return Page(items, page[-1].id if more else None)

    def update_description(self, caller: Caller, ref: str, description: str) -> KeyMetadata:
        check_description(description)
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            key.description = description
            key.updated_at = self._keys.clock()
            s.add(key)
            s.commit()
            return self._keys.metadata(s, key)

    def change_state(self, caller: Caller, ref: str, action: Action, **fields: object) -> KeyMetadata:
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            if key.default_product and action in (Action.DISABLE, Action.SCHEDULE_DELETION):
                raise UnsupportedOperation(
                    f"{key.id} is the default key of {key.default_product}; it cannot be "
                    f"{'disabled' if action is Action.DISABLE else 'scheduled for deletion'}"
                )
            key.state = transition(KeyState(key.state), action,
                                   has_material=self._keys.has_material(s, key)).value
            for name, value in fields.items():
                setattr(key, name, value)
            key.updated_at = self._keys.clock()
            # FAQ 5.1: no hosting fee from the day deletion is scheduled; again once cancelled.
            if action is Action.SCHEDULE_DELETION:
                hosting.stop(s, key.id, key.updated_at)
            elif action is Action.CANCEL_DELETION:
                hosting.start(s, key, key.updated_at)
            s.add(key)
            s.commit()
            self._keys.invalidate()
            return self._keys.metadata(s, key)

    def schedule_deletion(self, caller: Caller, ref: str, pending_days: int) -> KeyMetadata:
        if (
            not isinstance(pending_days, int)
            or isinstance(pending_days, bool)
            or not MIN_PENDING_DAYS <= pending_days <= MAX_PENDING_DAYS
        ):
            raise InvalidParameter(
                f"the pending window must be {MIN_PENDING_DAYS}-{MAX_PENDING_DAYS} days"
            )
        when = self._keys.clock() + timedelta(days=pending_days)
        return self.change_state(caller, ref, Action.SCHEDULE_DELETION, deletion_date=when)

    def default_key(self, caller: Caller, product: str) -> KeyRecord:
        """The product's default key for this account and region, created on first use.

        Exactly one exists even when threads or processes race: the registry's primary key
        lets one insert win, and the losers read the winner's key.
        """
        if product not in PRODUCTS:
            raise InvalidParameter(f"unknown product {product!r}; expected one of {PRODUCTS}")
        if self._observer is not None:
            self._observer.admit(caller)
        alias = default_alias(product)
        try:
            return self._keys.resolve(caller, alias)
        except NotFound:
            pass
        try:
            made = self._insert(caller, KeySpec.AES_256, KeyUsage.ENCRYPT_DECRYPT,
                                Protection.SOFTWARE, Origin.KMS, f"default key of {product}",
                                alias, "default", product)
        except IntegrityError:
            pass
        else:
            if self._observer is not None:
                self._observer.record(caller, "createDefaultKey", False, made.key_id,
                                      made.primary_version_id, "Success")
        return self._keys.resolve(caller, alias)
