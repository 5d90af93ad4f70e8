"""Material that goes away (deletion, expiry, deleted imported material) goes through the trash,
so that it is destroyed exactly once even with several processes on one database:

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

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, update
from sqlmodel import Session, col, select

from kms_core.models import Key, KeyVersion, MaterialTrash
from kms_core.repository import KeyRepository
from kms_core.specs import KeySpec, Protection

log = logging.getLogger("kms_core.lifecycle")

LEASE = timedelta(minutes=5)


def lease_free(lease_until: Any, wall: datetime) -> ColumnElement[bool]:
    return or_(col(lease_until).is_(None), col(lease_until) < wall)


class Trash:
    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys

    def unlink(
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
            .values(updated_at=self._keys.clock(), **values)
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

    def empty(self, ids: list[str], owner: str) -> int:
        """Destroy the material of trash rows we hold the lease of; count what was destroyed.

        A failure (HSM unavailable) releases the row's lease so the next pass retries it.
        """
        done = 0
        for tid in ids:
            with self._keys.session() as s:
                row = s.get(MaterialTrash, tid)
            if row is None or row.lease_owner != owner:
                continue
            try:
                # Idempotent: an HSM object already gone is not an error.
                self._keys.keystore(Protection(row.protection)).destroy(
                    KeySpec(row.spec), row.version_id, row.stored
                )
            except Exception as exc:  # noqa: BLE001 - keep the row; retried on the next pass
                log.warning("could not destroy material of version %s: %s",
                            row.version_id, type(exc).__name__)
                self._release(tid, owner)
                continue
            with self._keys.session() as s:
                s.exec(
                    delete(MaterialTrash).where(
                        col(MaterialTrash.id) == tid, col(MaterialTrash.lease_owner) == owner
                    )
                )
                s.commit()
            self._keys.caches.aeads.pop((row.key_id, row.version_id), None)
            done += 1
        return done

    def _release(self, tid: str, owner: str) -> None:
        with self._keys.session() as s:
            s.exec(
                update(MaterialTrash)
                .where(col(MaterialTrash.id) == tid,
                       col(MaterialTrash.lease_owner) == owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            s.commit()

    def sweep(self, owner: str, wall: datetime, limit: int) -> int:
        """Destroy material a crashed (or failed) process left in the trash."""
        with self._keys.session() as s:
            ids = list(s.exec(
                select(MaterialTrash.id)
                .where(lease_free(MaterialTrash.lease_until, wall))
                .order_by(col(MaterialTrash.created_at))
                .limit(limit)
            ).all())
        claimed: list[str] = []
        for tid in ids:
            with self._keys.session() as s:
                res = s.exec(
                    update(MaterialTrash)
                    .where(col(MaterialTrash.id) == tid,
                           lease_free(MaterialTrash.lease_until, wall))
                    .values(lease_owner=owner, lease_until=wall + LEASE)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    s.commit()
                    claimed.append(tid)
        return self.empty(claimed, owner)
