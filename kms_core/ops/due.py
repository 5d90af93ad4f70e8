"""The scheduler's due work: rotations whose time has come, keys whose deletion window has
ended, imported material whose expiry has passed, the trash, and old import tokens.

`kms_core.scheduler` decides *when*; each `run_due_*` here does the work at most once across
processes (a conditional UPDATE claims it; see `ops.trash` for how), and audits it in the key
owner's log as the scheduler principal.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select

from kms_core.models import Alias, ImportToken, Key
from kms_core.observe import Observer
from kms_core.ops.checks import as_utc
from kms_core.ops.rotation import RotationOps, RotationType, next_rotation_after
from kms_core.ops.trash import LEASE, Trash, lease_free
from kms_core.repository import KeyRepository
from kms_core.specs import KeySpec, Protection
from kms_core.states import Action, KeyState, transition
from kms_core.types import Caller, RotationInfo

log = logging.getLogger("kms_core.lifecycle")

# Expired import tokens are kept a while so a late import says "expired", not "unknown".
TOKEN_PURGE_GRACE = timedelta(days=7)
SCHEDULER_PRINCIPAL = "kms:scheduler"


class DueWork:
    def __init__(self, keys: KeyRepository, rotation: RotationOps, trash: Trash,
                 observer: Observer | None) -> None:
        self._keys = keys
        self._rotation = rotation
        self._trash = trash
        self._observer = observer

    def _audit(self, key: Key, op: str, version_id: str | None) -> None:
        """Audit what the scheduler did, in the key owner's log, as the scheduler principal."""
        if self._observer is None:
            return
        try:
            self._observer.record(Caller(key.account_id, key.region, SCHEDULER_PRINCIPAL), op, False,
                                  key.id, version_id, "Success")
        except Exception:  # the action is done; a lost audit line must not undo it
            log.exception("could not audit %s of key %s", op, key.id)

    def due_rotations(self, wall: datetime, limit: int) -> list[str]:
        now = self._keys.clock()
        with self._keys.session() as s:
            return list(s.exec(
                select(Key.id).where(
                    col(Key.rotation_period_days).is_not(None),
                    col(Key.next_rotation_at) <= now,
                    col(Key.state) == KeyState.ENABLED.value,
                    col(Key.destroyed_at).is_(None),
                    lease_free(Key.lease_until, wall),
                ).order_by(col(Key.next_rotation_at)).limit(limit)
            ).all())

    def due_deletions(self, limit: int) -> list[str]:
        now = self._keys.clock()
        with self._keys.session() as s:
            return list(s.exec(
                select(Key.id).where(
                    col(Key.state) == KeyState.PENDING_DELETION.value,
                    col(Key.deletion_date) <= now,
                    col(Key.destroyed_at).is_(None),
                ).order_by(col(Key.deletion_date)).limit(limit)
            ).all())

    def due_expiries(self, limit: int) -> list[str]:
        now = self._keys.clock()
        with self._keys.session() as s:
            return list(s.exec(
                select(Key.id).where(
                    col(Key.material_expires_at) <= now,
                    col(Key.destroyed_at).is_(None),
                ).order_by(col(Key.material_expires_at)).limit(limit)
            ).all())

    def _claim_rotation(self, key_id: str, owner: str, wall: datetime, now: datetime) -> Key | None:
        with self._keys.session() as s:
            res = s.exec(
                update(Key)
                .where(
                    col(Key.id) == key_id,
                    col(Key.rotation_period_days).is_not(None),
                    col(Key.next_rotation_at) <= now,
                    col(Key.state) == KeyState.ENABLED.value,
                    col(Key.destroyed_at).is_(None),
                    lease_free(Key.lease_until, wall),
                )
                .values(lease_owner=owner, lease_until=wall + LEASE)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                return None
            s.commit()
            return s.get(Key, key_id)

    def run_due_rotation(self, key_id: str, owner: str, wall: datetime) -> RotationInfo | None:
        """Rotate a key whose rotation is due, if this process wins the claim."""
        now = self._keys.clock()
        key = self._claim_rotation(key_id, owner, wall, now)
        if key is None:
            return None
        info: RotationInfo | None = None
        try:
            assert key.rotation_period_days is not None and key.next_rotation_at is not None
            period = key.rotation_period_days
            info = self._rotation.commit(
                key_id, KeySpec(key.spec), Protection(key.protection), RotationType.AUTOMATIC,
                [
                    col(Key.lease_owner) == owner,
                    col(Key.state) == KeyState.ENABLED.value,
                    col(Key.destroyed_at).is_(None),
                    # A policy changed or cancelled meanwhile wins over this rotation.
                    col(Key.rotation_period_days) == period,
                ],
                {
                    "next_rotation_at": next_rotation_after(as_utc(key.next_rotation_at), period, now),
                    "lease_owner": None,
                    "lease_until": None,
                },
            )
        finally:
            if info is None:
                self._release_key_lease(key_id, owner)
        if info is not None:
            self._audit(key, "rotateKey", info.version_id)
        return info

    def run_due_deletion(self, key_id: str, owner: str, wall: datetime) -> bool:
        """Destroy a key whose deletion window has ended: from this transaction on the key does
        not exist for any call; its material is destroyed right after."""
        now = self._keys.clock()
        with self._keys.session() as s:
            key = s.get(Key, key_id)
            if key is None:
                return False
            trash = self._trash.unlink(
                s, key, owner, wall,
                [
                    col(Key.state) == KeyState.PENDING_DELETION.value,
                    col(Key.deletion_date) <= now,
                    lease_free(Key.lease_until, wall),
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
        self._keys.forget_key(key_id)
        self._audit(key, "destroyKey", None)
        self._trash.empty(trash, owner)
        return True

    def run_due_expiry(self, key_id: str, owner: str, wall: datetime) -> bool:
        """Delete imported material whose expiry has come; the key keeps its metadata."""
        now = self._keys.clock()
        with self._keys.session() as s:
            key = s.get(Key, key_id)
            if key is None or key.material_expires_at is None:
                return False
            old = KeyState(key.state)
            # An Enabled or Disabled key waits for new material; a key pending deletion stays
            # so (cancelling that deletion then returns it to PendingImport).
            new = transition(old, Action.DELETE_MATERIAL) if old in (
                KeyState.ENABLED, KeyState.DISABLED) else old
            trash = self._trash.unlink(
                s, key, owner, wall,
                [col(Key.state) == old.value, col(Key.material_expires_at) <= now],
                {"state": new.value, "material_expires_at": None},
            )
            if trash is None:
                return False
            s.commit()
        self._keys.forget_key(key_id)
        self._audit(key, "expireKeyMaterial", None)
        self._trash.empty(trash, owner)
        return True

    def run_trash_sweep(self, owner: str, wall: datetime, limit: int) -> int:
        """Destroy material a crashed (or failed) process left in the trash."""
        return self._trash.sweep(owner, wall, limit)

    def purge_import_tokens(self) -> int:
        """Delete import tokens well past their expiry (their wrapping private keys with them)."""
        cutoff = self._keys.clock() - TOKEN_PURGE_GRACE
        with self._keys.session() as s:
            res = s.exec(delete(ImportToken).where(col(ImportToken.expires_at) < cutoff))
            s.commit()
            return int(res.rowcount or 0)

    def _release_key_lease(self, key_id: str, owner: str) -> None:
        with self._keys.session() as s:
            s.exec(
                update(Key)
                .where(col(Key.id) == key_id, col(Key.lease_owner) == owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            s.commit()
