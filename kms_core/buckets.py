"""S3 bucket ownership, claimed in the KMS database that every gateway node shares.

A claim is one row per bucket name (`BucketClaim`): the insert that commits first wins the name
and every other one fails on the primary key, so two nodes can never both hand a name out.
Taking over a released name is one conditional UPDATE (on the row as read), which also only one
can win. Gateways reach this through the KMS client interface (`claimBucket`, `bucketAccess`,
`listBucketClaims`, `releaseBucket`), so a gateway with a remote KMS claims in the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from kms_core.errors import InvalidParameter, NotFound
from kms_core.models import Account, BucketClaim

# Longer than the gateways' ownership cache (gateway.s3.buckets.CACHE_TTL): until it has passed,
# a node may still believe the old owner owns a deleted bucket, so nobody else may take the name.
REUSE_DELAY = timedelta(seconds=30)


class Claim(str, Enum):
    CREATED = "created"  # the caller owns the name now (new, or re-created after its release)
    YOURS = "yours"  # the caller owned it already
    TAKEN = "taken"  # another account owns it
    BUSY = "busy"  # released by another account too recently to be taken yet


class Access(str, Enum):
    MINE = "mine"
    OTHER = "other"
    NONE = "none"  # no live claim: nobody may use the name until it is claimed or assigned


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite hands back naive datetimes


def check_name(bucket: str) -> str:
    if not isinstance(bucket, str) or not 3 <= len(bucket) <= 63:
        raise InvalidParameter("bucket must be a bucket name of 3-63 characters")
    return bucket


class BucketClaims:
    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _now,
                 reuse_delay: timedelta = REUSE_DELAY) -> None:
        self._engine = engine
        self._clock = clock
        self._reuse_delay = reuse_delay

    def claim(self, account_id: str, bucket: str) -> Claim:
        check_name(bucket)
        now = self._clock()
        with Session(self._engine) as s:
            s.add(BucketClaim(bucket=bucket, account_id=account_id, claimed_at=now))
            try:
                s.commit()
                return Claim.CREATED
            except IntegrityError:
                s.rollback()
        with Session(self._engine) as s:
            row = s.get(BucketClaim, bucket)
            if row is None:  # released and purged in between: try once more from the top
                return self.claim(account_id, bucket)
            if row.released_at is None:
                return Claim.YOURS if row.account_id == account_id else Claim.TAKEN
            if row.account_id != account_id and _aware(row.released_at) + self._reuse_delay > now:
                return Claim.BUSY
            # Take the released name over, only if the row is still as read.
            result = s.execute(
                update(BucketClaim)
                .where(col(BucketClaim.bucket) == bucket, col(BucketClaim.account_id) == row.account_id,
                       col(BucketClaim.released_at) == row.released_at)
                .values(account_id=account_id, claimed_at=now, released_at=None))
            s.commit()
            if getattr(result, "rowcount", 0) == 1:
                return Claim.CREATED
        return self.claim(account_id, bucket)  # someone else moved first: see what they did

    def access(self, account_id: str, bucket: str) -> Access:
        with Session(self._engine) as s:
            row = s.get(BucketClaim, bucket)
        if row is None or row.released_at is not None:
            return Access.NONE
        return Access.MINE if row.account_id == account_id else Access.OTHER

    def owned(self, account_id: str) -> list[str]:
        """The names `account_id` owns now, sorted."""
        with Session(self._engine) as s:
            rows = s.exec(select(BucketClaim.bucket).where(
                col(BucketClaim.account_id) == account_id, col(BucketClaim.released_at).is_(None))
                .order_by(col(BucketClaim.bucket)))
            return list(rows)

    def release(self, account_id: str, bucket: str, *, hold: bool = True) -> bool:
        """Give the name up; False if the caller did not own it. `hold`: its bucket existed and
        was deleted, so the name is kept from other accounts for REUSE_DELAY. Without: the claim
        was a mistake (nothing was made under it, the backend already had the bucket) and goes."""
        with Session(self._engine) as s:
            owned = (col(BucketClaim.bucket) == bucket, col(BucketClaim.account_id) == account_id,
                     col(BucketClaim.released_at).is_(None))
            if hold:
                result = s.execute(update(BucketClaim).where(*owned).values(released_at=self._clock()))
            else:
                result = s.execute(delete(BucketClaim).where(*owned))
            s.commit()
            return bool(getattr(result, "rowcount", 0) == 1)

    def assign(self, bucket: str, account_id: str) -> None:
        """The operator's word: `bucket` belongs to `account_id` from now on, whoever had it."""
        check_name(bucket)
        with Session(self._engine) as s:
            if s.get(Account, account_id) is None:
                raise NotFound(f"account {account_id!r} does not exist")
            row = s.get(BucketClaim, bucket)
            if row is None:
                s.add(BucketClaim(bucket=bucket, account_id=account_id, claimed_at=self._clock()))
            else:
                row.account_id, row.claimed_at, row.released_at = account_id, self._clock(), None
                s.add(row)
            s.commit()

    def owner(self, bucket: str) -> str | None:
        """The account that owns `bucket` now (operators only: tenants learn mine/other/none)."""
        with Session(self._engine) as s:
            row = s.get(BucketClaim, bucket)
        return row.account_id if row is not None and row.released_at is None else None
