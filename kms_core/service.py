"""The KMS service: key lifecycle, aliases, default keys and the cryptographic API.

HTTP-free: the REST and AWS dialects, the CLI and the product clients all call this. Every call
names its `Caller`; a key of another account or region is NotFound, by id and by alias alike.

The cryptographic calls are the hot path. They resolve a key through a short-lived in-process
snapshot cache (local mutations invalidate it at once; on PostgreSQL other nodes' changes do too,
through kms_core.changes; otherwise changes made by another process are seen within `cache_ttl`
seconds) and reuse one AEAD object per key version, so a data key costs no database round trip.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from kms_core import blob as blobfmt
from kms_core import hosting
from kms_core.asymmetric_ops import AsymmetricOps
from kms_core.blob import Aead, Algorithm, BlobHeader
from kms_core.changes import EVERYTHING, ChangeFeed
from kms_core.errors import (
    AlreadyExists,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidMarker,
    InvalidParameter,
    InvalidState,
    KeyUnavailable,
    NotFound,
    UnsupportedOperation,
)
from kms_core.keystore import KeyStore
from kms_core.lifecycle_ops import LifecycleOps, check_rotation_period
from kms_core.metrics import KEY_CACHE_HIT, KEY_CACHE_MISS
from kms_core.models import Alias, DefaultKey, Key, KeyVersion, utcnow
from kms_core.observe import Observer, operation
from kms_core.specs import (
    KeySpec,
    KeyUsage,
    Origin,
    Protection,
    check_combination,
    parse_enum,
    parse_spec,
)
from kms_core.states import Action, KeyState, check_usable, transition
from kms_core.types import (
    PRODUCTS,
    AliasInfo,
    Caller,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    KeyMetadata,
    Page,
    ReEncryptResult,
)

MAX_PLAINTEXT = 6144
MAX_DATA_KEY = 1024
DEFAULT_DATA_KEY = 32
MIN_PENDING_DAYS, MAX_PENDING_DAYS, DEFAULT_PENDING_DAYS = 7, 30, 30
MAX_DESCRIPTION = 8192
MAX_LIST_LIMIT = 1000
DEFAULT_CACHE_TTL = 2.0

_ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-/:]{1,256}$")
_ALGORITHM = {KeySpec.AES_256: Algorithm.AES_256_GCM, KeySpec.SM4: Algorithm.SM4_GCM}


def default_alias(product: str) -> str:
    return f"alias_{product}"


_RESERVED_ALIASES = frozenset(default_alias(p) for p in PRODUCTS)


def _key_marker(marker: str) -> str:
    """A ListKeys marker is the last key id of the page before (any key id keeps its place)."""
    try:
        ok = str(uuid.UUID(marker)) == marker
    except (ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise InvalidMarker(f"the marker {marker!r} was not handed out by ListKeys")
    return marker


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The part of a key the hot path needs, as of when it was read."""

    id: str
    account_id: str
    region: str
    spec: KeySpec
    usage: KeyUsage
    protection: Protection
    origin: Origin
    state: KeyState
    primary_version_id: str | None
    default_product: str | None

    @classmethod
    def of(cls, k: Key) -> KeyRecord:
        return cls(
            id=k.id,
            account_id=k.account_id,
            region=k.region,
            spec=KeySpec(k.spec),
            usage=KeyUsage(k.usage),
            protection=Protection(k.protection),
            origin=Origin(k.origin),
            state=KeyState(k.state),
            primary_version_id=k.primary_version_id,
            default_product=k.default_product,
        )


def _parse_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def normalize_alias(name: str) -> str:
    """Aliases are stored without AWS's `alias/` prefix; either spelling is accepted.

    The guide also writes a product's default key as `alias/<product>` (`alias/ecs`, FAQ 5.3)
    beside `alias_<product>`: both name the default key."""
    if not isinstance(name, str):
        raise InvalidParameter("alias must be a string")
    bare = name[len("alias/") :] if name.startswith("alias/") else name
    if bare != name and bare in PRODUCTS:
        return default_alias(bare)
    if not _ALIAS_RE.match(bare) or _parse_uuid(bare) is not None:
        raise InvalidParameter(
            "alias must be 1-256 characters of letters, digits, '_', '-', '/', ':' "
            "and must not look like a key id"
        )
    return bare


@dataclass(frozen=True, slots=True)
class KeyRef:
    key_id: str | None = None
    alias: str | None = None


def parse_key_ref(ref: str) -> KeyRef:
    """A key id, an alias (with or without `alias/`), or an ARN naming either."""
    if not isinstance(ref, str) or not ref:
        raise InvalidParameter("a key id or alias is required")
    if ref.startswith("arn:"):
        # arn:aws:kms:<region>:<account>:key/<id> or ...:alias/<name>
        resource = ref.split(":", 5)[-1]
        if resource.startswith("key/"):
            ref = resource[len("key/") :]
        elif resource.startswith("alias/"):
            ref = resource
        else:
            raise InvalidParameter(f"not a key or alias ARN: {ref!r}")
    key_id = _parse_uuid(ref)
    if key_id is not None:
        return KeyRef(key_id=key_id)
    return KeyRef(alias=normalize_alias(ref))


class KmsService(LifecycleOps, AsymmetricOps):
    def __init__(
        self,
        engine: Engine,
        keystores: Mapping[Protection, KeyStore | Callable[[], KeyStore]],
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], datetime] = utcnow,
        default_protection: Protection = Protection.SOFTWARE,
        observer: Observer | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        self._engine = engine
        # Other nodes' caches hear of our changes through it (and ours of theirs: on_change).
        self._changes = changes
        # Frozen-account gate, metering and audit around every @operation (None: none of them).
        self.observer = observer
        # A key store may be given as a factory so the HSM is opened only when first needed.
        self._keystore_sources = dict(keystores)
        self._keystores: dict[Protection, KeyStore] = {}
        self._keystore_lock = threading.Lock()
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._default_protection = default_protection
        self._records: dict[tuple[str, str, str], tuple[float, KeyRecord]] = {}
        # Bumped whenever snapshots are dropped: a lookup that read the database before a drop
        # does not put its (possibly stale) snapshot back after it.
        self._generation = 0
        self._aeads: dict[tuple[str, str], Aead] = {}

    # ----------------------------------------------------------------- plumbing

    def keystore(self, protection: Protection) -> KeyStore:
        store = self._keystores.get(protection)
        if store is not None:
            return store
        with self._keystore_lock:
            store = self._keystores.get(protection)
            if store is None:
                source = self._keystore_sources.get(protection)
                if source is None:
                    raise KeyUnavailable(f"no key store is configured for {protection.value}")
                store = source if not callable(source) else source()
                self._keystores[protection] = store
        return store

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as s:
            yield s

    def _forget_key(self, key_id: str) -> None:
        """Drop every cache this process holds of a key: snapshots, AEADs (symmetric material in
        memory), asymmetric versions and private keys. Called when material goes away; other
        nodes are told to do the same."""
        self._drop_key(key_id)
        self._publish(f"k:{key_id}")

    def _drop_key(self, key_id: str) -> None:
        self._drop_records()
        for ck in [ck for ck in self._aeads if ck[0] == key_id]:
            self._aeads.pop(ck, None)
        self._forget_asymmetric(key_id)

    def _invalidate(self) -> None:
        # Mutations are rare; dropping every snapshot keeps alias and id entries consistent.
        self._drop_records()
        self._publish(EVERYTHING)

    def _drop_records(self) -> None:
        self._generation += 1
        self._records.clear()

    def _publish(self, message: str) -> None:
        if self._changes is not None:
            self._changes.publish(message)

    def on_change(self, message: str) -> None:
        """A change made by another node (kms_core.changes): drop what it makes stale."""
        if message.startswith("k:"):
            self._drop_key(message[2:])
        elif not message.startswith("a:"):
            self._drop_records()

    @staticmethod
    def _find_key(s: Session, caller: Caller, ref: str) -> Key:
        kr = parse_key_ref(ref)
        key_id = kr.key_id
        if key_id is None:
            alias = s.exec(
                select(Alias).where(
                    Alias.account_id == caller.account_id,
                    Alias.region == caller.region,
                    Alias.name == kr.alias,
                )
            ).first()
            if alias is None:
                raise NotFound(f"alias {kr.alias!r} does not exist")
            key_id = alias.key_id
        key = s.get(Key, key_id)
        if (key is None or key.account_id != caller.account_id or key.region != caller.region
                or key.destroyed_at is not None):  # destroyed keys are tombstones
            raise NotFound(f"key {ref!r} does not exist")
        return key

    def _resolve(self, caller: Caller, ref: str) -> KeyRecord:
        ck = (caller.account_id, caller.region, ref)
        now = time.monotonic()
        hit = self._records.get(ck)
        if hit is not None and hit[0] > now:
            KEY_CACHE_HIT.inc()
            return hit[1]
        KEY_CACHE_MISS.inc()
        generation = self._generation
        with self._session() as s:
            rec = KeyRecord.of(self._find_key(s, caller, ref))
        if generation == self._generation:
            self._records[ck] = (now + self._cache_ttl, rec)
        return rec

    def latest_version_id(self, caller: Caller, ref: str) -> str:
        """The newest version of a key, for dialects whose calls name no version (AWS's)."""
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            v = s.exec(
                select(KeyVersion)
                .where(KeyVersion.key_id == key.id)
                .order_by(col(KeyVersion.created_at).desc(), col(KeyVersion.id).desc())
            ).first()
        if v is None:
            raise InvalidState(f"key {key.id} has no key material")
        return v.id

    def resolve_key_id(self, caller: Caller, ref: str) -> str:
        """The key id an id, alias or ARN names for this caller (NotFound otherwise); not audited."""
        return self._resolve(caller, ref).id

    def _aead(self, rec: KeyRecord, version_id: str) -> Aead:
        ck = (rec.id, version_id)
        aead = self._aeads.get(ck)
        if aead is None:
            with self._session() as s:
                v = s.get(KeyVersion, version_id)
            if v is None or v.key_id != rec.id:
                raise InvalidCiphertext()
            if v.stored is None:
                raise NotFound("the key material of this version has been destroyed")
            aead = self.keystore(rec.protection).open_symmetric(rec.spec, version_id, v.stored)
            self._aeads[ck] = aead
        return aead

    def _metadata(self, s: Session, key: Key) -> KeyMetadata:
        aliases = s.exec(
            select(Alias.name).where(Alias.key_id == key.id).order_by(col(Alias.name))
        ).all()
        return _to_metadata(key, tuple(aliases))

    # ------------------------------------------------------------ key lifecycle

    @operation("createKey", metered=False)
    def create_key(
        self,
        caller: Caller,
        *,
        spec: str = "AES_256",
        usage: str = "ENCRYPT_DECRYPT",
        protection: str | None = None,
        origin: str = "KMS",
        description: str = "",
        alias: str | None = None,
        enterprise_project: str = "default",
        rotation_period_days: int | None = None,
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
        _check_description(description)
        alias_name = normalize_alias(alias) if alias else None
        if alias_name in _RESERVED_ALIASES:
            raise UnsupportedOperation(f"alias {alias_name!r} is reserved for a default key")
        if not kspec.symmetric:
            # RSA_2048 / SM2: a key pair as the first version, never primary (asymmetric_ops).
            return self._create_asymmetric_key(
                caller, kspec, kusage, level, description, alias_name, enterprise_project
            )
        if korigin is Origin.EXTERNAL:
            # BYOK: no material yet; the key waits in PendingImport (lifecycle_ops).
            return self._insert_external_key(
                caller, kspec, kusage, level, description, alias_name, enterprise_project
            )
        made = self._insert_key(
            caller, kspec, kusage, level, korigin, description, alias_name, enterprise_project, None
        )
        if rotation_period_days is None:
            return made
        return self._set_rotation(caller, made.key_id, rotation_period_days)

    def _insert_key(
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
        store = self.keystore(level)
        key_id, version_id = str(uuid.uuid4()), str(uuid.uuid4())
        stored = store.generate_symmetric(spec, version_id)
        now = self._clock()
        key = self._new_key_row(caller, key_id, spec, usage, level, origin, KeyState.ENABLED,
                                description, enterprise_project, version_id, default_product, now)
        try:
            with self._session() as s:
                s.add(key)
                s.flush()
                hosting.start(s, key, now)  # billed from today; default keys are free
                s.add(KeyVersion(id=version_id, key_id=key_id, stored=stored, created_at=now))
                if alias_name:
                    s.add(Alias(account_id=caller.account_id, region=caller.region,
                                name=alias_name, key_id=key_id, created_at=now, updated_at=now))
                if default_product:
                    s.add(DefaultKey(account_id=caller.account_id, region=caller.region,
                                     product=default_product, key_id=key_id))
                s.commit()
                return _to_metadata(key, (alias_name,) if alias_name else ())
        except IntegrityError:
            # Nothing was written; an HSM object made for it must not linger.
            store.destroy(spec, version_id, stored)
            if default_product:
                raise
            raise AlreadyExists(f"alias {alias_name!r} already exists") from None

    @staticmethod
    def _new_key_row(
        caller: Caller,
        key_id: str,
        spec: KeySpec,
        usage: KeyUsage,
        level: Protection,
        origin: Origin,
        state: KeyState,
        description: str,
        enterprise_project: str,
        primary_version_id: str | None,
        default_product: str | None,
        now: datetime,
    ) -> Key:
        """The metadata row of a new key, whichever kind (symmetric, asymmetric, imported)."""
        return Key(
            id=key_id, account_id=caller.account_id, region=caller.region,
            enterprise_project=enterprise_project or "default", description=description,
            spec=spec.value, usage=usage.value, protection=level.value, origin=origin.value,
            # The guide's creator is the user id (the account), not the access key it used.
            state=state.value, creator=caller.account_id,
            default_product=default_product, primary_version_id=primary_version_id,
            created_at=now, updated_at=now,
        )

    @operation("describeKey", metered=False)
    def describe_key(self, caller: Caller, ref: str) -> KeyMetadata:
        with self._session() as s:
            return self._metadata(s, self._find_key(s, caller, ref))

    @operation("listKeys", metered=False)
    def list_keys(self, caller: Caller, *, limit: int = 100, marker: str | None = None) -> Page[KeyMetadata]:
        limit = _check_limit(limit)
        with self._session() as s:
            q = select(Key).where(Key.account_id == caller.account_id, Key.region == caller.region,
                                  col(Key.destroyed_at).is_(None))
            if marker:
                q = q.where(col(Key.id) > _key_marker(marker))
            keys = s.exec(q.order_by(col(Key.id)).limit(limit + 1)).all()
            page, more = keys[:limit], len(keys) > limit
            names: dict[str, list[str]] = {k.id: [] for k in page}
            if page:
                for a in s.exec(
                    select(Alias).where(col(Alias.key_id).in_(list(names))).order_by(col(Alias.name))
                ).all():
                    names[a.key_id].append(a.name)
            items = [_to_metadata(k, tuple(names[k.id])) for k in page]
        return Page(items, page[-1].id if more else None)

    @operation("updateKeyDescription", metered=False)
    def update_key_description(self, caller: Caller, ref: str, description: str) -> KeyMetadata:
        _check_description(description)
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            key.description = description
            key.updated_at = self._clock()
            s.add(key)
            s.commit()
            return self._metadata(s, key)

    def _change_state(self, caller: Caller, ref: str, action: Action, **fields: object) -> KeyMetadata:
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            if key.default_product and action in (Action.DISABLE, Action.SCHEDULE_DELETION):
                raise UnsupportedOperation(
                    f"{key.id} is the default key of {key.default_product}; it cannot be "
                    f"{'disabled' if action is Action.DISABLE else 'scheduled for deletion'}"
                )
            key.state = transition(KeyState(key.state), action,
                                   has_material=self._has_material(s, key)).value
            for name, value in fields.items():
                setattr(key, name, value)
            key.updated_at = self._clock()
            # FAQ 5.1: no hosting fee from the day deletion is scheduled; again once cancelled.
            if action is Action.SCHEDULE_DELETION:
                hosting.stop(s, key.id, key.updated_at)
            elif action is Action.CANCEL_DELETION:
                hosting.start(s, key, key.updated_at)
            s.add(key)
            s.commit()
            self._invalidate()
            return self._metadata(s, key)

    @operation("enableKey", metered=False)
    def enable_key(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._change_state(caller, ref, Action.ENABLE)

    @operation("disableKey", metered=False)
    def disable_key(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._change_state(caller, ref, Action.DISABLE)

    @operation("scheduleKeyDeletion", metered=False)
    def schedule_key_deletion(
        self, caller: Caller, ref: str, pending_days: int = DEFAULT_PENDING_DAYS
    ) -> KeyMetadata:
        if (
            not isinstance(pending_days, int)
            or isinstance(pending_days, bool)
            or not MIN_PENDING_DAYS <= pending_days <= MAX_PENDING_DAYS
        ):
            raise InvalidParameter(
                f"the pending window must be {MIN_PENDING_DAYS}-{MAX_PENDING_DAYS} days"
            )
        when = self._clock() + timedelta(days=pending_days)
        return self._change_state(caller, ref, Action.SCHEDULE_DELETION, deletion_date=when)

    @operation("cancelKeyDeletion", metered=False)
    def cancel_key_deletion(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._change_state(caller, ref, Action.CANCEL_DELETION, deletion_date=None)

    # ------------------------------------------------------------------ aliases

    @operation("createAlias", metered=False)
    def create_alias(self, caller: Caller, alias: str, ref: str) -> AliasInfo:
        name = normalize_alias(alias)
        if name in _RESERVED_ALIASES:
            raise UnsupportedOperation(f"alias {name!r} is reserved for a default key")
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            _refuse_default(key, "have aliases added")
            now = self._clock()
            row = Alias(account_id=caller.account_id, region=caller.region, name=name,
                        key_id=key.id, created_at=now, updated_at=now)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"alias {name!r} already exists") from None
            self._invalidate()
            return _to_alias(row)

    def _alias_row(self, s: Session, caller: Caller, alias: str) -> Alias:
        name = normalize_alias(alias)
        row = s.exec(
            select(Alias).where(
                Alias.account_id == caller.account_id,
                Alias.region == caller.region,
                Alias.name == name,
            )
        ).first()
        if row is None:
            raise NotFound(f"alias {name!r} does not exist")
        if name in _RESERVED_ALIASES:
            raise UnsupportedOperation(f"alias {name!r} belongs to a default key and cannot change")
        return row

    @operation("updateAlias", metered=False)
    def update_alias(self, caller: Caller, alias: str, ref: str) -> AliasInfo:
        with self._session() as s:
            row = self._alias_row(s, caller, alias)
            key = self._find_key(s, caller, ref)
            _refuse_default(key, "have aliases added")
            row.key_id = key.id
            row.updated_at = self._clock()
            s.add(row)
            s.commit()
            self._invalidate()
            return _to_alias(row)

    @operation("deleteAlias", metered=False)
    def delete_alias(self, caller: Caller, alias: str) -> None:
        with self._session() as s:
            row = self._alias_row(s, caller, alias)
            s.delete(row)
            s.commit()
            self._invalidate()

    @operation("listAlias", metered=False)
    def list_aliases(
        self, caller: Caller, *, limit: int = 100, marker: str | None = None
    ) -> Page[AliasInfo]:
        limit = _check_limit(limit)
        with self._session() as s:
            q = select(Alias).where(
                Alias.account_id == caller.account_id, Alias.region == caller.region
            )
            if marker:
                # The marker is the last alias of the page before: it must be one of this
                # account's (an invented marker would silently answer an empty or shifted page).
                if s.exec(q.where(col(Alias.name) == marker)).first() is None:
                    raise InvalidMarker(f"the marker {marker!r} was not handed out by ListAliases")
                q = q.where(col(Alias.name) > marker)
            rows = s.exec(q.order_by(col(Alias.name)).limit(limit + 1)).all()
        page = [_to_alias(r) for r in rows[:limit]]
        return Page(page, page[-1].name if len(rows) > limit else None)

    @operation("listAliasByUuid", metered=False)
    def list_aliases_by_key(self, caller: Caller, ref: str) -> list[AliasInfo]:
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            rows = s.exec(
                select(Alias).where(Alias.key_id == key.id).order_by(col(Alias.name))
            ).all()
        return [_to_alias(r) for r in rows]

    # ------------------------------------------------------------- default keys

    def default_key(self, caller: Caller, product: str) -> KeyRecord:
        """The product's default key for this account and region, created on first use.

        Exactly one exists even when threads or processes race: the registry's primary key
        lets one insert win, and the losers read the winner's key.
        """
        if product not in PRODUCTS:
            raise InvalidParameter(f"unknown product {product!r}; expected one of {PRODUCTS}")
        if self.observer is not None:
            self.observer.admit(caller)
        alias = default_alias(product)
        try:
            return self._resolve(caller, alias)
        except NotFound:
            pass
        try:
            made = self._insert_key(caller, KeySpec.AES_256, KeyUsage.ENCRYPT_DECRYPT,
                                    Protection.SOFTWARE, Origin.KMS, f"default key of {product}",
                                    alias, "default", product)
        except IntegrityError:
            pass
        else:
            if self.observer is not None:
                self.observer.record(caller, "createDefaultKey", False, made.key_id,
                                     made.primary_version_id, "Success")
        return self._resolve(caller, alias)

    # --------------------------------------------------------- cryptographic API

    def _encryption_key(self, caller: Caller, ref: str) -> KeyRecord:
        rec = self._resolve(caller, ref)
        check_usable(rec.state)
        if rec.usage is not KeyUsage.ENCRYPT_DECRYPT or not rec.spec.symmetric:
            raise InvalidKeyUsage(f"key {rec.id} cannot encrypt ({rec.spec.value}, {rec.usage.value})")
        if rec.primary_version_id is None:
            raise InvalidState(f"key {rec.id} has no key material")
        return rec

    def _seal(self, rec: KeyRecord, plaintext: bytes, context: Mapping[str, str] | None) -> bytes:
        version_id = rec.primary_version_id
        assert version_id is not None
        header = BlobHeader(_ALGORITHM[rec.spec], rec.id, version_id)
        return blobfmt.seal(self._aead(rec, version_id), header, plaintext, context)

    @operation("encrypt", metered=True)
    def encrypt(
        self, caller: Caller, ref: str, plaintext: bytes, context: Mapping[str, str] | None = None
    ) -> EncryptResult:
        if not isinstance(plaintext, bytes) or not 1 <= len(plaintext) <= MAX_PLAINTEXT:
            raise InvalidParameter(f"plaintext must be 1-{MAX_PLAINTEXT} bytes")
        rec = self._encryption_key(caller, ref)
        sealed = self._seal(rec, plaintext, context)
        return EncryptResult(sealed, rec.id, rec.primary_version_id or "")

    def _open(
        self, caller: Caller, ciphertext: bytes, context: Mapping[str, str] | None,
        expect_key: str | None = None,
    ) -> tuple[KeyRecord, DecryptResult]:
        if not isinstance(ciphertext, bytes):
            raise InvalidParameter("ciphertext must be bytes")
        b = blobfmt.decode_blob(ciphertext)
        rec = self._resolve(caller, b.header.key_id)
        if expect_key is not None and self._resolve(caller, expect_key).id != rec.id:
            raise InvalidKeyUsage("the ciphertext was made by a different key than the one given")
        check_usable(rec.state)
        if _ALGORITHM.get(rec.spec) is not b.header.algorithm:
            raise InvalidCiphertext()
        plaintext = blobfmt.open_blob(self._aead(rec, b.header.version_id), b, context)
        return rec, DecryptResult(plaintext, rec.id, b.header.version_id)

    @operation("decrypt", metered=True)
    def decrypt(
        self,
        caller: Caller,
        ciphertext: bytes,
        context: Mapping[str, str] | None = None,
        *,
        key: str | None = None,
    ) -> DecryptResult:
        return self._open(caller, ciphertext, context, key)[1]

    @operation("generateDataKey", metered=True)
    def generate_data_key(
        self,
        caller: Caller,
        ref: str,
        length: int = DEFAULT_DATA_KEY,
        context: Mapping[str, str] | None = None,
    ) -> DataKeyResult:
        return self._data_key(caller, ref, length, context, with_plaintext=True)

    @operation("generateDataKeyWithoutPlaintext", metered=True)
    def generate_data_key_without_plaintext(
        self,
        caller: Caller,
        ref: str,
        length: int = DEFAULT_DATA_KEY,
        context: Mapping[str, str] | None = None,
    ) -> DataKeyResult:
        return self._data_key(caller, ref, length, context, with_plaintext=False)

    def _data_key(
        self, caller: Caller, ref: str, length: int, context: Mapping[str, str] | None,
        *, with_plaintext: bool,
    ) -> DataKeyResult:
        if type(length) is not int or not 1 <= length <= MAX_DATA_KEY:
            raise InvalidParameter(f"data key length must be 1-{MAX_DATA_KEY} bytes")
        rec = self._encryption_key(caller, ref)
        data_key = os.urandom(length)
        sealed = self._seal(rec, data_key, context)
        return DataKeyResult(data_key if with_plaintext else None, sealed, rec.id,
                             rec.primary_version_id or "")

    @operation("reEncrypt", metered=True)
    def re_encrypt(
        self,
        caller: Caller,
        ciphertext: bytes,
        destination: str,
        *,
        source_context: Mapping[str, str] | None = None,
        destination_context: Mapping[str, str] | None = None,
        source_key: str | None = None,
        source_key_version: str | None = None,
        source_algorithm: str | None = None,
    ) -> ReEncryptResult:
        """A symmetric blob, or with `source_key_version` a public-key ciphertext of
        `source_key` (RSA OAEP or SM2, `source_algorithm`), re-sealed under `destination`."""
        dest = self._encryption_key(caller, destination)
        if source_key_version is not None:
            return self._re_encrypt_asymmetric(caller, ciphertext, dest, source_key,
                                               source_key_version, source_algorithm,
                                               destination_context)
        src, opened = self._open(caller, ciphertext, source_context, source_key)
        sealed = self._seal(dest, opened.plaintext, destination_context)
        return ReEncryptResult(sealed, src.id, opened.version_id, dest.id,
                               dest.primary_version_id or "")

    def generate_random(self, length: int) -> bytes:
        if type(length) is not int or not 1 <= length <= MAX_DATA_KEY:
            raise InvalidParameter(f"random length must be 1-{MAX_DATA_KEY} bytes")
        return os.urandom(length)


def _refuse_default(key: Key, what: str) -> None:
    if key.default_product:
        raise UnsupportedOperation(
            f"{key.id} is the default key of {key.default_product}; it cannot {what}"
        )


def _check_description(description: str) -> None:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidParameter(f"description must be a string of at most {MAX_DESCRIPTION} characters")


def _check_limit(limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidParameter(f"limit must be 1-{MAX_LIST_LIMIT}")
    return limit


def _to_metadata(key: Key, aliases: tuple[str, ...]) -> KeyMetadata:
    return KeyMetadata(
        key_id=key.id,
        account_id=key.account_id,
        region=key.region,
        spec=key.spec,
        usage=key.usage,
        protection=key.protection,
        origin=key.origin,
        state=key.state,
        description=key.description,
        enterprise_project=key.enterprise_project,
        # Rows written before the creator became the user id hold an access key id.
        creator=key.account_id,
        created_at=key.created_at,
        primary_version_id=key.primary_version_id,
        deletion_date=key.deletion_date,
        default_product=key.default_product,
        aliases=aliases,
        rotation_period_days=key.rotation_period_days,
        next_rotation_at=key.next_rotation_at if key.rotation_period_days is not None else None,
        material_expires_at=key.material_expires_at,
    )


def _to_alias(row: Alias) -> AliasInfo:
    return AliasInfo(row.name, row.key_id, row.created_at, row.updated_at)
