"""The key repository: database sessions, key lookup, the hot path's caches and the key stores.

Every operation module (`kms_core.ops`) is handed one `KeyRepository` and reaches keys only
through it. Lookups by the cryptographic calls go through a short-lived in-process snapshot
cache (local mutations invalidate it at once; on PostgreSQL other nodes' changes do too, through
kms_core.changes; otherwise changes made by another process are seen within `cache_ttl`
seconds), and one AEAD object (or public key and private-key handle) is kept per key version,
so a data key costs no database round trip.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from kms_core.asym_crypto import PrivateKeyOps, PublicKey
from kms_core.blob import Aead
from kms_core.changes import EVERYTHING, ChangeFeed
from kms_core.errors import InvalidCiphertext, InvalidParameter, InvalidState, KeyUnavailable, NotFound
from kms_core.keystore import KeyStore
from kms_core.metrics import KEY_CACHE_HIT, KEY_CACHE_MISS
from kms_core.models import Alias, Key, KeyVersion
from kms_core.specs import KeySpec, KeyUsage, Origin, Protection
from kms_core.states import KeyState
from kms_core.types import PRODUCTS, Caller, KeyMetadata

DEFAULT_CACHE_TTL = 2.0

_ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-/:]{1,256}$")


def default_alias(product: str) -> str:
    return f"alias_{product}"


RESERVED_ALIASES = frozenset(default_alias(p) for p in PRODUCTS)


def parse_uuid(value: str) -> str | None:
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
    if not _ALIAS_RE.match(bare) or parse_uuid(bare) is not None:
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
    key_id = parse_uuid(ref)
    if key_id is not None:
        return KeyRef(key_id=key_id)
    return KeyRef(alias=normalize_alias(ref))


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


@dataclass(frozen=True)
class AsymmetricVersion:
    """What a cached asymmetric version needs: its public key and its key store reference."""

    public: PublicKey
    stored: bytes = field(repr=False)


@dataclass
class VersionCaches:
    """Per key version, what this process holds in memory: symmetric AEADs (key material),
    asymmetric public keys, and private-key handles (unwrapped SM2 scalars, HSM handles)."""

    aeads: dict[tuple[str, str], Aead] = field(default_factory=dict)
    versions: dict[tuple[str, str], AsymmetricVersion] = field(default_factory=dict)
    private: dict[tuple[str, str], PrivateKeyOps] = field(default_factory=dict)

    def forget(self, key_id: str) -> None:
        for cache in (self.aeads, self.versions, self.private):
            for ck in [ck for ck in cache if ck[0] == key_id]:
                dropped = cache.pop(ck, None)
                # An HSM key's AEAD holds copies of the key inside the HSM (hsm_token): they
                # go with it, here and (through the change feed) on every other node.
                release = getattr(dropped, "release", None)
                if release is not None:
                    release()


class KeyRepository:
    def __init__(
        self,
        engine: Engine,
        keystores: Mapping[Protection, KeyStore | Callable[[], KeyStore]],
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], datetime],
        changes: ChangeFeed | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        # Other nodes' caches hear of our changes through it (and ours of theirs: on_change).
        self._changes = changes
        # A key store may be given as a factory so the HSM is opened only when first needed.
        self._keystore_sources = dict(keystores)
        self._keystores: dict[Protection, KeyStore] = {}
        self._keystore_lock = threading.Lock()
        self._cache_ttl = cache_ttl
        self._records: dict[tuple[str, str, str], tuple[float, KeyRecord]] = {}
        # Bumped whenever snapshots are dropped: a lookup that read the database before a drop
        # does not put its (possibly stale) snapshot back after it.
        self._generation = 0
        self.caches = VersionCaches()

    # ------------------------------------------------------------ key stores

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
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # ------------------------------------------------------------- caches

    def forget_key(self, key_id: str) -> None:
        """Drop every cache this process holds of a key: snapshots, AEADs (symmetric material in
        memory), asymmetric versions and private keys. Called when material goes away; other
        nodes are told to do the same."""
        self._drop_key(key_id)
        self._publish(f"k:{key_id}")

    def _drop_key(self, key_id: str) -> None:
        self._drop_records()
        self.caches.forget(key_id)

    def invalidate(self) -> None:
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

    # ------------------------------------------------------------- lookup

    @staticmethod
    def find_key(s: Session, caller: Caller, ref: str) -> Key:
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

    def resolve(self, caller: Caller, ref: str) -> KeyRecord:
        ck = (caller.account_id, caller.region, ref)
        now = time.monotonic()
        hit = self._records.get(ck)
        if hit is not None and hit[0] > now:
            KEY_CACHE_HIT.inc()
            return hit[1]
        KEY_CACHE_MISS.inc()
        generation = self._generation
        with self.session() as s:
            rec = KeyRecord.of(self.find_key(s, caller, ref))
        if generation == self._generation:
            self._records[ck] = (now + self._cache_ttl, rec)
        return rec

    def latest_version_id(self, caller: Caller, ref: str) -> str:
        with self.session() as s:
            key = self.find_key(s, caller, ref)
            v = s.exec(
                select(KeyVersion)
                .where(KeyVersion.key_id == key.id)
                .order_by(col(KeyVersion.created_at).desc(), col(KeyVersion.id).desc())
            ).first()
        if v is None:
            raise InvalidState(f"key {key.id} has no key material")
        return v.id

    def aead(self, rec: KeyRecord, version_id: str) -> Aead:
        ck = (rec.id, version_id)
        aead = self.caches.aeads.get(ck)
        if aead is None:
            with self.session() as s:
                v = s.get(KeyVersion, version_id)
            if v is None or v.key_id != rec.id:
                raise InvalidCiphertext()
            if v.stored is None:
                raise NotFound("the key material of this version has been destroyed")
            aead = self.keystore(rec.protection).open_symmetric(rec.spec, version_id, v.stored)
            self.caches.aeads[ck] = aead
        return aead

    @staticmethod
    def has_material(s: Session, key: Key) -> bool:
        """Whether cancelling a deletion makes the key Enabled (else it goes to PendingImport)."""
        if key.origin != Origin.EXTERNAL.value:
            return True
        found = s.exec(
            select(KeyVersion.id).where(
                KeyVersion.key_id == key.id, col(KeyVersion.stored).is_not(None)
            )
        ).first()
        return found is not None

    # ----------------------------------------------------------- rows

    @staticmethod
    def metadata(s: Session, key: Key) -> KeyMetadata:
        aliases = s.exec(
            select(Alias.name).where(Alias.key_id == key.id).order_by(col(Alias.name))
        ).all()
        return to_metadata(key, tuple(aliases))

    def new_key_row(
        self,
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

    @staticmethod
    def new_alias_row(caller: Caller, name: str, key_id: str, now: datetime) -> Alias:
        return Alias(account_id=caller.account_id, region=caller.region, name=name, key_id=key_id,
                     created_at=now, updated_at=now)


def to_metadata(key: Key, aliases: tuple[str, ...]) -> KeyMetadata:
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
