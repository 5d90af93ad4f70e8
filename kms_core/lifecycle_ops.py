"""Key lifecycle over time: rotation policies, imported key material (BYOK), and the due work
the scheduler carries out (rotations, destruction after the deletion window, material expiry).

`LifecycleOps` is a mixin of `KmsService`; it uses the service's engine, clock, key stores and
caches. `kms_core.scheduler` decides *when* to call the `run_due_*` methods here.

How every change happens exactly once, even with several processes on one database:

* A change of state is one transaction whose UPDATE repeats, in its WHERE, the conditions it
  was decided on (state, due time, lease holder) and checks the rowcount. SQLite serialises
  writers (the engine begins transactions IMMEDIATE); PostgreSQL re-checks the WHERE of a row
  that another transaction updated meanwhile. So of two processes deciding the same thing, one
  updates a row and the other updates none and backs off. Portable SQL only, no row locks.
* Work outside the database (generating or destroying HSM objects) runs under a lease on the
  key row (`lease_owner`, `lease_until`), claimed by such a conditional UPDATE. A process that
  dies holding a lease loses it when it runs out, and the work is picked up again.
* Material is unlinked from its version in the same transaction that writes a
  `MaterialTrash` row for it, so the database never forgets material that still exists; the
  lease holder destroys it (idempotently) and removes the row, and the scheduler sweeps what a
  crash left behind.

Leases run on the wall clock, never the injected business clock: they are about processes
being alive, not about when a key is due.
"""

from __future__ import annotations

import hmac
import logging
import os
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from kms_core import hosting
from kms_core.blob import Aead
from kms_core.byok import (
    IMPORT_TOKEN_TTL,
    WrappingAlgorithm,
    new_import_token,
    new_wrapping_key_pair,
    parse_wrapping_algorithm,
    parse_wrapping_key_spec,
    token_id,
    unwrap_material,
)
from kms_core.errors import (
    AlreadyExists,
    ExpiredImportToken,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidImportToken,
    InvalidParameter,
    InvalidState,
    KeyUnavailable,
    UnsupportedOperation,
)
from kms_core.keystore import KeyStore
from kms_core.keystore.software import RootSealer
from kms_core.models import (
    Alias,
    ImportToken,
    Key,
    KeyRotation,
    KeyVersion,
    MaterialTrash,
    utcnow,
)
from kms_core.observe import operation
from kms_core.specs import KeySpec, KeyUsage, Origin, Protection
from kms_core.states import Action, KeyState, check_usable, transition
from kms_core.types import (
    Caller,
    ImportParameters,
    KeyMetadata,
    Page,
    RotationInfo,
    RotationStatus,
)

if TYPE_CHECKING:
    from kms_core.observe import Observer

log = logging.getLogger("kms_core.lifecycle")

MIN_ROTATION_DAYS, MAX_ROTATION_DAYS = 7, 730
ROTATION_PRESETS = (30, 90, 180)
# AWS's EnableKeyRotation default when no period is given (the AWS dialect omits it).
DEFAULT_ROTATION_DAYS = 365
IMPORTED_MATERIAL_LEN = 32
LEASE = timedelta(minutes=5)
# Expired import tokens are kept a while so a late import says "expired", not "unknown".
TOKEN_PURGE_GRACE = timedelta(days=7)
SCHEDULER_PRINCIPAL = "kms:scheduler"
MAX_ROTATION_LIST = 1000


class RotationType(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


def as_utc(ts: datetime) -> datetime:
    """Datetimes read back from some databases are naive; every stored time is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _opt_utc(ts: datetime | None) -> datetime | None:
    return None if ts is None else as_utc(ts)


def check_rotation_period(days: object) -> int:
    if type(days) is not int or not MIN_ROTATION_DAYS <= days <= MAX_ROTATION_DAYS:
        raise InvalidParameter(
            f"the rotation period must be {MIN_ROTATION_DAYS}-{MAX_ROTATION_DAYS} days "
            f"(presets {', '.join(map(str, ROTATION_PRESETS))}); got {days!r}"
        )
    return days


def next_rotation_after(due: datetime, period_days: int, now: datetime) -> datetime:
    """The first point of the rotation grid `due + k * period` (k >= 1) that is after `now`.

    A scheduler that was down for several periods rotates once, not once per missed period,
    and the schedule keeps the time of day the policy was set at.
    """
    step = timedelta(days=period_days)
    nxt = due + step
    if nxt <= now:
        nxt += step * ((now - nxt) // step + 1)
    return nxt


def _refuse_rotation(key: Key) -> None:
    if key.default_product:
        raise UnsupportedOperation(
            f"{key.id} is the default key of {key.default_product}; it cannot be rotated by "
            "the user"
        )
    if key.origin == Origin.EXTERNAL.value:
        raise UnsupportedOperation(
            f"{key.id} holds imported key material; imported keys have no versions and "
            "cannot be rotated"
        )
    if key.spec not in (KeySpec.AES_256.value, KeySpec.SM4.value):
        raise UnsupportedOperation(
            f"{key.spec} keys are not rotated; create a new key version instead"
        )


def _refuse_non_external(key: Key, what: str) -> None:
    if key.default_product:
        raise UnsupportedOperation(
            f"{key.id} is the default key of {key.default_product}; it cannot {what}"
        )
    if key.origin != Origin.EXTERNAL.value:
        raise UnsupportedOperation(
            f"{key.id} was created with KMS key material; only keys of origin EXTERNAL can {what}"
        )


def _lease_free(lease_until: Any, wall: datetime) -> ColumnElement[bool]:
    return or_(col(lease_until).is_(None), col(lease_until) < wall)


def _digest_input(key_id: str, material: bytes) -> bytes:
    # Bound to the key id: equal material in two keys must not show as equal digests.
    return key_id.encode() + b"\x00" + material


def _rotation_info(r: KeyRotation) -> RotationInfo:
    return RotationInfo(r.key_id, r.version_id, as_utc(r.rotated_at), r.rotation_type)


def _rotation_status(key: Key) -> RotationStatus:
    return RotationStatus(
        key.id,
        key.rotation_period_days is not None,
        key.rotation_period_days,
        _opt_utc(key.next_rotation_at) if key.rotation_period_days is not None else None,
    )


class LifecycleOps:
    """Mixin of KmsService: rotation, BYOK and the scheduler's due work."""

    if TYPE_CHECKING:
        # Provided by KmsService.
        _engine: Any
        _clock: Callable[[], datetime]
        _aeads: dict[tuple[str, str], Aead]
        observer: Observer | None

        def _new_key_row(self, caller: Caller, key_id: str, spec: KeySpec, usage: KeyUsage,
                         level: Protection, origin: Origin, state: KeyState, description: str,
                         enterprise_project: str, primary_version_id: str | None,
                         default_product: str | None, now: datetime) -> Key: ...

        def keystore(self, protection: Protection) -> KeyStore: ...

        def _session(self) -> AbstractContextManager[Session]: ...

        def _invalidate(self) -> None: ...

        def _forget_key(self, key_id: str) -> None: ...

        @staticmethod
        def _find_key(s: Session, caller: Caller, ref: str) -> Key: ...

        def _metadata(self, s: Session, key: Key) -> KeyMetadata: ...

    # ------------------------------------------------------------------ hooks

    def _has_material(self, s: Session, key: Key) -> bool:
        """Whether cancelling a deletion makes the key Enabled (else it goes to PendingImport)."""
        if key.origin != Origin.EXTERNAL.value:
            return True
        found = s.exec(
            select(KeyVersion.id).where(
                KeyVersion.key_id == key.id, col(KeyVersion.stored).is_not(None)
            )
        ).first()
        return found is not None

    def _software_sealer(self) -> RootSealer:
        sealer = getattr(self.keystore(Protection.SOFTWARE), "sealer", None)
        if not isinstance(sealer, RootSealer):
            raise KeyUnavailable("importing key material needs the software root key")
        return sealer

    def _audit_system(self, key: Key, op: str, version_id: str | None) -> None:
        """Audit what the scheduler did, in the key owner's log, as the scheduler principal."""
        obs = getattr(self, "observer", None)
        if obs is None:
            return
        try:
            obs.record(Caller(key.account_id, key.region, SCHEDULER_PRINCIPAL), op, False,
                       key.id, version_id, "Success")
        except Exception:  # the action is done; a lost audit line must not undo it
            log.exception("could not audit %s of key %s", op, key.id)

    # ------------------------------------------------------------- creation

    def _insert_external_key(
        self,
        caller: Caller,
        spec: KeySpec,
        usage: KeyUsage,
        level: Protection,
        description: str,
        alias_name: str | None,
        enterprise_project: str,
    ) -> KeyMetadata:
        """An EXTERNAL-origin key: no material and no version until importKeyMaterial."""
        self.keystore(level)  # fail now, not at import time, if the level has no key store
        now = self._clock()
        key = self._new_key_row(caller, str(uuid.uuid4()), spec, usage, level, Origin.EXTERNAL,
                                KeyState.PENDING_IMPORT, description, enterprise_project, None, None, now)
        try:
            with self._session() as s:
                s.add(key)
                s.flush()
                hosting.start(s, key, now)  # a key waiting for its material is billed too
                if alias_name:
                    s.add(Alias(account_id=caller.account_id, region=caller.region,
                                name=alias_name, key_id=key.id, created_at=now, updated_at=now))
                s.commit()
                return self._metadata(s, key)
        except IntegrityError:
            raise AlreadyExists(f"alias {alias_name!r} already exists") from None

    # ------------------------------------------------------------- rotation

    def _set_rotation(self, caller: Caller, ref: str, days: int | None) -> KeyMetadata:
        """Set, change (days) or cancel (None) the automatic rotation policy of a key."""
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            _refuse_rotation(key)
            if days is not None and key.state in (
                KeyState.PENDING_DELETION.value, KeyState.PENDING_IMPORT.value
            ):
                raise InvalidState(f"the key is {key.state}; a rotation policy cannot be set")
            now = self._clock()
            if days is None:
                key.rotation_period_days = None
                key.next_rotation_at = None
            else:
                if key.rotation_period_days is not None and key.next_rotation_at is not None:
                    # A changed period counts from the last scheduled rotation (or from when
                    # the policy was set), as AWS KMS does; a date already past is due now.
                    anchor = as_utc(key.next_rotation_at) - timedelta(days=key.rotation_period_days)
                else:
                    anchor = now
                key.rotation_period_days = days
                key.next_rotation_at = max(anchor + timedelta(days=days), now)
            key.updated_at = now
            s.add(key)
            s.commit()
            self._invalidate()
            return self._metadata(s, key)

    @operation("enableKeyRotation", metered=False)
    def enable_key_rotation(
        self, caller: Caller, ref: str, period_days: int = DEFAULT_ROTATION_DAYS
    ) -> RotationStatus:
        """Set or change the rotation policy: a new primary version every `period_days` days."""
        days = check_rotation_period(period_days)
        m = self._set_rotation(caller, ref, days)
        return RotationStatus(m.key_id, True, m.rotation_period_days, m.next_rotation_at)

    @operation("disableKeyRotation", metered=False)
    def disable_key_rotation(self, caller: Caller, ref: str) -> RotationStatus:
        """Cancel the rotation policy. Existing versions stay; the primary stays primary."""
        m = self._set_rotation(caller, ref, None)
        return RotationStatus(m.key_id, False, None, None)

    @operation("getKeyRotationStatus", metered=False)
    def get_key_rotation_status(self, caller: Caller, ref: str) -> RotationStatus:
        with self._session() as s:
            return _rotation_status(self._find_key(s, caller, ref))

    @operation("rotateKeyOnDemand", metered=False)
    def rotate_key_on_demand(self, caller: Caller, ref: str) -> RotationInfo:
        """Make a new primary version now; the automatic schedule is not changed."""
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            _refuse_rotation(key)
            check_usable(KeyState(key.state))
            key_id, spec, level = key.id, KeySpec(key.spec), Protection(key.protection)
        info = self._commit_rotation(
            key_id, spec, level, RotationType.ON_DEMAND,
            [col(Key.state) == KeyState.ENABLED.value, col(Key.destroyed_at).is_(None)], {},
        )
        if info is None:
            raise InvalidState(f"key {key_id} changed state during the rotation; nothing rotated")
        return info

    @operation("listKeyRotations", metered=False)
    def list_key_rotations(
        self, caller: Caller, ref: str, *, limit: int = 100, marker: str | None = None
    ) -> Page[RotationInfo]:
        if type(limit) is not int or not 1 <= limit <= MAX_ROTATION_LIST:
            raise InvalidParameter(f"limit must be 1-{MAX_ROTATION_LIST}")
        after = 0
        if marker:
            try:
                after = int(marker)
            except ValueError:
                raise InvalidParameter(f"invalid marker {marker!r}") from None
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            rows = s.exec(
                select(KeyRotation)
                .where(KeyRotation.key_id == key.id, col(KeyRotation.seq) > after)
                .order_by(col(KeyRotation.seq))
                .limit(limit + 1)
            ).all()
        page = rows[:limit]
        more = len(rows) > limit
        return Page([_rotation_info(r) for r in page], str(page[-1].seq) if more else None)

    def _commit_rotation(
        self,
        key_id: str,
        spec: KeySpec,
        level: Protection,
        rotation_type: RotationType,
        where: list[ColumnElement[bool]],
        values: dict[str, Any],
    ) -> RotationInfo | None:
        """Generate a version and make it primary if the key still satisfies `where`.

        Material is generated first and the database changed after, in one transaction: a
        rotation is either committed whole or not at all, and material of a rotation that lost
        its race is destroyed at once (it was never referenced).
        """
        store = self.keystore(level)
        version_id = str(uuid.uuid4())
        stored = store.generate_symmetric(spec, version_id)
        now = self._clock()
        with self._session() as s:
            res = s.exec(
                update(Key)
                .where(col(Key.id) == key_id, *where)
                .values(primary_version_id=version_id, updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount == 1:
                s.add(KeyVersion(id=version_id, key_id=key_id, stored=stored, created_at=now))
                row = KeyRotation(key_id=key_id, version_id=version_id,
                                  rotation_type=rotation_type.value, rotated_at=now)
                s.add(row)
                # Should commit fail outright the material stays behind unreferenced: a leak
                # is harmless, destroying material a committed version refers to is not.
                s.commit()
                self._forget_key(key_id)
                return _rotation_info(row)
            s.rollback()
        store.destroy(spec, version_id, stored)
        return None

    # ------------------------------------------------------------------ BYOK

    @operation("getParametersForImport", metered=False)
    def get_parameters_for_import(
        self,
        caller: Caller,
        ref: str,
        wrapping_algorithm: str = "RSAES_OAEP_SHA_256",
        wrapping_key_spec: str = "RSA_2048",
    ) -> ImportParameters:
        """An RSA_2048 wrapping public key (DER) and an import token valid for 24 hours.

        The token is bound to this key and may be used any number of times until it expires.
        """
        algorithm = parse_wrapping_algorithm(wrapping_algorithm)
        kspec = parse_wrapping_key_spec(wrapping_key_spec)
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            _refuse_non_external(key, "import key material")
            if key.state == KeyState.PENDING_DELETION.value:
                raise InvalidState("the key is PendingDeletion; cancel the deletion first")
            key_id = key.id
        sealer = self._software_sealer()
        pair = new_wrapping_key_pair()
        token = new_import_token()
        tid = token_id(token)
        now = self._clock()
        row = ImportToken(
            id=tid,
            key_id=key_id,
            wrapping_algorithm=algorithm.value,
            wrapping_key_spec=kspec.value,
            sealed_private_key=sealer.seal(pair.private_der, _wrapping_aad(key_id, tid)),
            created_at=now,
            expires_at=now + IMPORT_TOKEN_TTL,
        )
        with self._session() as s:
            s.add(row)
            s.commit()
        return ImportParameters(key_id, pair.public_der, token, as_utc(row.expires_at),
                                algorithm.value, kspec.value)

    @operation("importKeyMaterial", metered=False)
    def import_key_material(
        self,
        caller: Caller,
        ref: str,
        encrypted_material: bytes,
        import_token: bytes,
        *,
        expires_at: datetime | None = None,
    ) -> KeyMetadata:
        """Import 256 bits of material wrapped under the token's public key; the key becomes
        Enabled. `expires_at` (optional) is when the material is deleted again.

        A key accepts only the material first imported into it, ever.
        """
        if not isinstance(encrypted_material, bytes) or not encrypted_material:
            raise InvalidParameter("the encrypted key material is required (bytes)")
        tid = token_id(import_token)
        now = self._clock()
        valid_to: datetime | None = None
        if expires_at is not None:
            if not isinstance(expires_at, datetime):
                raise InvalidParameter("the expiry of the key material must be a datetime")
            valid_to = as_utc(expires_at)
            if valid_to <= now:
                raise InvalidParameter("the expiry of the key material must be in the future")

        with self._session() as s:
            key = self._find_key(s, caller, ref)
            _refuse_non_external(key, "import key material")
            if key.state != KeyState.PENDING_IMPORT.value:
                if key.state in (KeyState.ENABLED.value, KeyState.DISABLED.value):
                    raise InvalidState(
                        f"the key is {key.state} and already holds key material; delete the "
                        "material before importing it again"
                    )
                transition(KeyState(key.state), Action.IMPORT_MATERIAL)  # raises InvalidState
            tok = s.get(ImportToken, tid)
            if tok is None:
                raise InvalidImportToken("the import token is not valid; get a new one with "
                                         "getParametersForImport")
            if tok.key_id != key.id:
                raise InvalidImportToken(
                    "the import token was issued for another key; a token imports only into "
                    "the key it was issued for"
                )
            if as_utc(tok.expires_at) <= now:
                raise ExpiredImportToken(
                    f"the import token expired at {as_utc(tok.expires_at).isoformat()}; get new "
                    "import parameters"
                )
            key_id, spec, level = key.id, KeySpec(key.spec), Protection(key.protection)
            old_digest, version_id = key.material_digest, key.primary_version_id
            algorithm = parse_wrapping_algorithm(tok.wrapping_algorithm)
            sealed_private = tok.sealed_private_key

        sealer = self._software_sealer()
        private_der = sealer.unseal(sealed_private, _wrapping_aad(key_id, tid))
        if algorithm is WrappingAlgorithm.RSAES_PKCS1_V1_5:
            material = self._unwrap_pkcs1_v15(sealer, key_id, tid, private_der, encrypted_material,
                                              old_digest)
        else:
            material = unwrap_material(private_der, algorithm, encrypted_material)
            if len(material) != IMPORTED_MATERIAL_LEN:
                raise InvalidParameter(
                    f"{spec.value} key material must be 256 bits ({IMPORTED_MATERIAL_LEN} bytes); "
                    f"the decrypted material is {len(material)} bytes"
                )
        digest = sealer.mac("byok-material", _digest_input(key_id, material))
        if old_digest is not None and not hmac.compare_digest(old_digest, digest):
            raise IncorrectKeyMaterial(
                f"key {key_id} accepts only the key material first imported into it; this is "
                "different material"
            )
        version_id = version_id or str(uuid.uuid4())
        store = self.keystore(level)
        stored = store.import_symmetric(spec, version_id, material)
        del material

        with self._session() as s:
            res = s.exec(
                update(Key)
                .where(
                    col(Key.id) == key_id,
                    col(Key.state) == KeyState.PENDING_IMPORT.value,
                    col(Key.destroyed_at).is_(None),
                    or_(col(Key.material_digest).is_(None), col(Key.material_digest) == digest),
                )
                .values(state=KeyState.ENABLED.value, material_digest=digest,
                        material_expires_at=valid_to, primary_version_id=version_id,
                        updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                s.rollback()
                store.destroy(spec, version_id, stored)
                raise InvalidState(f"key {key_id} changed during the import; nothing was imported")
            version = s.get(KeyVersion, version_id)
            if version is None:
                s.add(KeyVersion(id=version_id, key_id=key_id, stored=stored, created_at=now))
            else:
                version.stored = stored
                s.add(version)
            s.commit()
            self._forget_key(key_id)
            return self._metadata(s, s.get(Key, key_id) or key)

    def _unwrap_pkcs1_v15(self, sealer: RootSealer, key_id: str, tid: str, private_der: bytes,
                          encrypted: bytes, old_digest: bytes | None) -> bytes:
        """Material wrapped with RSAES_PKCS1_V1_5, or one opaque InvalidCiphertext.

        PKCS#1 v1.5 is the padding of Bleichenbacher's oracle: anything that tells a caller
        whether padding was good (another error, another timing, an IncorrectKeyMaterial for
        well-padded wrong material) lets them decrypt with enough tries. So bad padding, a
        wrong length and material other than what the key held before are one error, the
        "same material" check runs either way (on a random stand-in when the padding was bad),
        and a failed try burns the import token: each token's RSA key answers at most one
        failed question (tokens stay reusable for successful re-imports within 24 hours).
        """
        material: bytes | None
        try:
            material = unwrap_material(private_der, WrappingAlgorithm.RSAES_PKCS1_V1_5, encrypted,
                                       IMPORTED_MATERIAL_LEN)
        except InvalidCiphertext:
            material = None
        stand_in = material if material is not None else os.urandom(IMPORTED_MATERIAL_LEN)
        digest = sealer.mac("byok-material", _digest_input(key_id, stand_in))
        same = old_digest is None or hmac.compare_digest(old_digest, digest)
        if material is not None and same:
            return material
        with self._session() as s:
            tok = s.get(ImportToken, tid)
            if tok is not None:
                s.delete(tok)
                s.commit()
        raise InvalidCiphertext(
            "the encrypted key material could not be decrypted with the import token's wrapping "
            "key and algorithm, or is not the material this key held before; the import token "
            "is used up: get new import parameters"
        )

    @operation("deleteImportedKeyMaterial", metered=False)
    def delete_key_material(self, caller: Caller, ref: str) -> KeyMetadata:
        """Delete imported material: the key goes to PendingImport with its metadata kept."""
        wall = utcnow()
        owner = f"api:{uuid.uuid4().hex}"
        with self._session() as s:
            key = self._find_key(s, caller, ref)
            _refuse_non_external(key, "have key material deleted")
            old = KeyState(key.state)
            new = transition(old, Action.DELETE_MATERIAL)
            trash = self._unlink_material(
                s, key, owner, wall,
                [col(Key.state) == old.value],
                {"state": new.value, "material_expires_at": None},
            )
            if trash is None:
                raise InvalidState(f"key {key.id} changed meanwhile; try again")
            s.commit()
            key_id = key.id
        self._forget_key(key_id)
        self._empty_trash(trash, owner)
        with self._session() as s:
            return self._metadata(s, self._find_key(s, caller, key_id))

    # -------------------------------------------------------- material trash

    def _unlink_material(
        self,
        s: Session,
        key: Key,
        owner: str,
        wall: datetime,
        where: list[ColumnElement[bool]],
        values: dict[str, Any],
    ) -> list[str] | None:
        """In the caller's transaction: apply `values` to the key if it still satisfies
        `where`, and move every version's material reference to the trash under our lease.
        None if the key no longer satisfied `where` (nothing changed)."""
        res = s.exec(
            update(Key)
            .where(col(Key.id) == key.id, col(Key.destroyed_at).is_(None), *where)
            .values(updated_at=self._clock(), **values)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            s.rollback()
            return None
        ids: list[str] = []
        versions = s.exec(
            select(KeyVersion).where(
                KeyVersion.key_id == key.id, col(KeyVersion.stored).is_not(None)
            )
        ).all()
        for v in versions:
            assert v.stored is not None
            tid = str(uuid.uuid4())
            s.add(MaterialTrash(id=tid, key_id=key.id, version_id=v.id, spec=key.spec,
                                protection=key.protection, stored=v.stored, lease_owner=owner,
                                lease_until=wall + LEASE, created_at=wall))
            v.stored = None
            s.add(v)
            ids.append(tid)
        return ids

    def _empty_trash(self, ids: list[str], owner: str) -> int:
        """Destroy the material of trash rows we hold the lease of; count what was destroyed.

        A failure (HSM unavailable) releases the row's lease so the next pass retries it.
        """
        done = 0
        for tid in ids:
            with self._session() as s:
                row = s.get(MaterialTrash, tid)
            if row is None or row.lease_owner != owner:
                continue
            try:
                # Idempotent: an HSM object already gone is not an error.
                self.keystore(Protection(row.protection)).destroy(
                    KeySpec(row.spec), row.version_id, row.stored
                )
            except Exception as exc:  # noqa: BLE001 - keep the row; retried on the next pass
                log.warning("could not destroy material of version %s: %s",
                            row.version_id, type(exc).__name__)
                with self._session() as s:
                    s.exec(
                        update(MaterialTrash)
                        .where(col(MaterialTrash.id) == tid,
                               col(MaterialTrash.lease_owner) == owner)
                        .values(lease_owner=None, lease_until=None)
                        .execution_options(synchronize_session=False)
                    )
                    s.commit()
                continue
            with self._session() as s:
                s.exec(
                    delete(MaterialTrash).where(
                        col(MaterialTrash.id) == tid, col(MaterialTrash.lease_owner) == owner
                    )
                )
                s.commit()
            self._aeads.pop((row.key_id, row.version_id), None)
            done += 1
        return done

    # ------------------------------------------------------ scheduler work

    def due_rotations(self, wall: datetime, limit: int) -> list[str]:
        now = self._clock()
        with self._session() as s:
            return list(s.exec(
                select(Key.id).where(
                    col(Key.rotation_period_days).is_not(None),
                    col(Key.next_rotation_at) <= now,
                    col(Key.state) == KeyState.ENABLED.value,
                    col(Key.destroyed_at).is_(None),
                    _lease_free(Key.lease_until, wall),
                ).order_by(col(Key.next_rotation_at)).limit(limit)
            ).all())

    def due_deletions(self, limit: int) -> list[str]:
        now = self._clock()
        with self._session() as s:
            return list(s.exec(
                select(Key.id).where(
                    col(Key.state) == KeyState.PENDING_DELETION.value,
                    col(Key.deletion_date) <= now,
                    col(Key.destroyed_at).is_(None),
                ).order_by(col(Key.deletion_date)).limit(limit)
            ).all())

    def due_expiries(self, limit: int) -> list[str]:
        now = self._clock()
        with self._session() as s:
            return list(s.exec(
                select(Key.id).where(
                    col(Key.material_expires_at) <= now,
                    col(Key.destroyed_at).is_(None),
                ).order_by(col(Key.material_expires_at)).limit(limit)
            ).all())

    def run_due_rotation(self, key_id: str, owner: str, wall: datetime) -> RotationInfo | None:
        """Rotate a key whose rotation is due, if this process wins the claim."""
        now = self._clock()
        with self._session() as s:
            res = s.exec(
                update(Key)
                .where(
                    col(Key.id) == key_id,
                    col(Key.rotation_period_days).is_not(None),
                    col(Key.next_rotation_at) <= now,
                    col(Key.state) == KeyState.ENABLED.value,
                    col(Key.destroyed_at).is_(None),
                    _lease_free(Key.lease_until, wall),
                )
                .values(lease_owner=owner, lease_until=wall + LEASE)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                return None
            s.commit()
            key = s.get(Key, key_id)
        info: RotationInfo | None = None
        try:
            assert key is not None and key.rotation_period_days is not None
            assert key.next_rotation_at is not None
            period = key.rotation_period_days
            info = self._commit_rotation(
                key_id, KeySpec(key.spec), Protection(key.protection), RotationType.AUTOMATIC,
                [
                    col(Key.lease_owner) == owner,
                    col(Key.state) == KeyState.ENABLED.value,
                    col(Key.destroyed_at).is_(None),
                    # A policy changed or cancelled meanwhile wins over this rotation.
                    col(Key.rotation_period_days) == period,
                ],
                {
                    "next_rotation_at": next_rotation_after(
                        as_utc(key.next_rotation_at), period, now
                    ),
                    "lease_owner": None,
                    "lease_until": None,
                },
            )
        finally:
            if info is None:
                self._release_key_lease(key_id, owner)
        if info is not None:
            self._audit_system(key, "rotateKey", info.version_id)
        return info

    def run_due_deletion(self, key_id: str, owner: str, wall: datetime) -> bool:
        """Destroy a key whose deletion window has ended: from this transaction on the key does
        not exist for any call; its material is destroyed right after."""
        now = self._clock()
        with self._session() as s:
            key = s.get(Key, key_id)
            if key is None:
                return False
            trash = self._unlink_material(
                s, key, owner, wall,
                [
                    col(Key.state) == KeyState.PENDING_DELETION.value,
                    col(Key.deletion_date) <= now,
                    _lease_free(Key.lease_until, wall),
                ],
                {"destroyed_at": now, "rotation_period_days": None, "next_rotation_at": None,
                 "material_expires_at": None},
            )
            if trash is None:
                return False
            # Aliases go with the key (their names become free); so do its import tokens.
            s.exec(delete(Alias).where(col(Alias.key_id) == key_id))
            s.exec(delete(ImportToken).where(col(ImportToken.key_id) == key_id))
            s.commit()
        self._forget_key(key_id)
        self._audit_system(key, "destroyKey", None)
        self._empty_trash(trash, owner)
        return True

    def run_due_expiry(self, key_id: str, owner: str, wall: datetime) -> bool:
        """Delete imported material whose expiry has come; the key keeps its metadata."""
        now = self._clock()
        with self._session() as s:
            key = s.get(Key, key_id)
            if key is None or key.material_expires_at is None:
                return False
            old = KeyState(key.state)
            # An Enabled or Disabled key waits for new material; a key pending deletion stays
            # so (cancelling that deletion then returns it to PendingImport).
            new = transition(old, Action.DELETE_MATERIAL) if old in (
                KeyState.ENABLED, KeyState.DISABLED) else old
            trash = self._unlink_material(
                s, key, owner, wall,
                [col(Key.state) == old.value, col(Key.material_expires_at) <= now],
                {"state": new.value, "material_expires_at": None},
            )
            if trash is None:
                return False
            s.commit()
        self._forget_key(key_id)
        self._audit_system(key, "expireKeyMaterial", None)
        self._empty_trash(trash, owner)
        return True

    def run_trash_sweep(self, owner: str, wall: datetime, limit: int) -> int:
        """Destroy material a crashed (or failed) process left in the trash."""
        with self._session() as s:
            ids = list(s.exec(
                select(MaterialTrash.id)
                .where(_lease_free(MaterialTrash.lease_until, wall))
                .order_by(col(MaterialTrash.created_at))
                .limit(limit)
            ).all())
        claimed: list[str] = []
        for tid in ids:
            with self._session() as s:
                res = s.exec(
                    update(MaterialTrash)
                    .where(col(MaterialTrash.id) == tid,
                           _lease_free(MaterialTrash.lease_until, wall))
                    .values(lease_owner=owner, lease_until=wall + LEASE)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    s.commit()
                    claimed.append(tid)
        return self._empty_trash(claimed, owner)

    def purge_import_tokens(self) -> int:
        """Delete import tokens well past their expiry (their wrapping private keys with them)."""
        cutoff = self._clock() - TOKEN_PURGE_GRACE
        with self._session() as s:
            res = s.exec(delete(ImportToken).where(col(ImportToken.expires_at) < cutoff))
            s.commit()
            return int(res.rowcount or 0)

    def _release_key_lease(self, key_id: str, owner: str) -> None:
        with self._session() as s:
            s.exec(
                update(Key)
                .where(col(Key.id) == key_id, col(Key.lease_owner) == owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            s.commit()


def _wrapping_aad(key_id: str, tid: str) -> bytes:
    return f"ssegw/import-wrapping-key/v1/{key_id}/{tid}".encode()
