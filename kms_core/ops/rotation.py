"""Rotation of symmetric keys: policies (a new primary version every N days), on-demand rotation,
and the one way a rotation is committed (the scheduler's due rotations use it too, `ops.due`)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlmodel import col, select

from kms_core.errors import InvalidParameter, InvalidState, UnsupportedOperation
from kms_core.models import Key, KeyRotation, KeyVersion
from kms_core.ops.checks import as_utc, opt_utc
from kms_core.repository import KeyRepository
from kms_core.specs import KeySpec, Origin, Protection
from kms_core.states import KeyState, check_usable
from kms_core.types import Caller, KeyMetadata, Page, RotationInfo, RotationStatus

MIN_ROTATION_DAYS, MAX_ROTATION_DAYS = 7, 730
ROTATION_PRESETS = (30, 90, 180)
# AWS's EnableKeyRotation default when no period is given (the AWS dialect omits it).
DEFAULT_ROTATION_DAYS = 365
MAX_ROTATION_LIST = 1000


class RotationType(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


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


def rotation_info(r: KeyRotation) -> RotationInfo:
    return RotationInfo(r.key_id, r.version_id, as_utc(r.rotated_at), r.rotation_type)


def _rotation_status(key: Key) -> RotationStatus:
    return RotationStatus(
        key.id,
        key.rotation_period_days is not None,
        key.rotation_period_days,
        opt_utc(key.next_rotation_at) if key.rotation_period_days is not None else None,
    )


class RotationOps:
    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys

    def set_policy(self, caller: Caller, ref: str, days: int | None) -> KeyMetadata:
        """Set, change (days) or cancel (None) the automatic rotation policy of a key."""
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            _refuse_rotation(key)
            if days is not None and key.state in (
                KeyState.PENDING_DELETION.value, KeyState.PENDING_IMPORT.value
            ):
                raise InvalidState(f"the key is {key.state}; a rotation policy cannot be set")
            now = self._keys.clock()
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
            self._keys.invalidate()
            return self._keys.metadata(s, key)

    def enable(self, caller: Caller, ref: str, period_days: int) -> RotationStatus:
        days = check_rotation_period(period_days)
        m = self.set_policy(caller, ref, days)
        return RotationStatus(m.key_id, True, m.rotation_period_days, m.next_rotation_at)

    def disable(self, caller: Caller, ref: str) -> RotationStatus:
        m = self.set_policy(caller, ref, None)
        return RotationStatus(m.key_id, False, None, None)

    def status(self, caller: Caller, ref: str) -> RotationStatus:
        with self._keys.session() as s:
            return _rotation_status(self._keys.find_key(s, caller, ref))

    def rotate_on_demand(self, caller: Caller, ref: str) -> RotationInfo:
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            _refuse_rotation(key)
            check_usable(KeyState(key.state))
            key_id, spec, level = key.id, KeySpec(key.spec), Protection(key.protection)
        info = self.commit(
            key_id, spec, level, RotationType.ON_DEMAND,
            [col(Key.state) == KeyState.ENABLED.value, col(Key.destroyed_at).is_(None)], {},
        )
        if info is None:
            raise InvalidState(f"key {key_id} changed state during the rotation; nothing rotated")
        return info

    def page(self, caller: Caller, ref: str, limit: int, marker: str | None) -> Page[RotationInfo]:
        if type(limit) is not int or not 1 <= limit <= MAX_ROTATION_LIST:
            raise InvalidParameter(f"limit must be 1-{MAX_ROTATION_LIST}")
        after = 0
        if marker:
            try:
                after = int(marker)
            except ValueError:
                raise InvalidParameter(f"invalid marker {marker!r}") from None
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            rows = s.exec(
                select(KeyRotation)
                .where(KeyRotation.key_id == key.id, col(KeyRotation.seq) > after)
                .order_by(col(KeyRotation.seq))
                .limit(limit + 1)
            ).all()
        page = rows[:limit]
        more = len(rows) > limit
        return Page([rotation_info(r) for r in page], str(page[-1].seq) if more else None)

    def commit(
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
        store = self._keys.keystore(level)
        version_id = str(uuid.uuid4())
        stored = store.generate_symmetric(spec, version_id)
        now = self._keys.clock()
        with self._keys.session() as s:
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
                self._keys.forget_key(key_id)
                return rotation_info(row)
            s.rollback()
        store.destroy(spec, version_id, stored)
        return None
