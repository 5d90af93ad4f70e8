"""Usage metering: cryptographic calls counted per account, month and operation.

Counting must not cost a database write per call, so counts aggregate in memory and a flush
adds them to the stored totals with `count = count + n` (additive, so several server processes
on one database never lose each other's counts). `close()` flushes: a clean shutdown loses
nothing; a crash loses at most one flush interval.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select


class UsageCount(SQLModel, table=True):
    __tablename__ = "kms_usage"
    account_id: str = Field(primary_key=True, max_length=32)
    month: str = Field(primary_key=True, max_length=7)  # YYYY-MM (UTC)
    operation: str = Field(primary_key=True, max_length=64)
    count: int = 0


# "YYYY-MM" by (year, month): a few entries a year.
_MONTHS: dict[tuple[int, int], str] = {}


class Meter:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Counter[tuple[str, str, str]] = Counter()

    def count(self, account_id: str, operation: str, at: datetime | None = None) -> None:
        when = at or self._clock()
        month = _MONTHS.get((when.year, when.month))
        if month is None:  # formatting it cost half of what counting a call did
            month = _MONTHS[(when.year, when.month)] = f"{when.year:04d}-{when.month:02d}"
        key = (account_id, month, operation)
        with self._lock:
            self._pending[key] += 1

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
        if not pending:
            return
        try:
            with Session(self._engine) as s:
                for (account_id, month, op), n in pending.items():
                    self._add(s, account_id, month, op, n)
                s.commit()
        except Exception:
            with self._lock:  # keep the counts for the next flush rather than lose them
                self._pending.update(pending)
            raise

    @staticmethod
    def _add(s: Session, account_id: str, month: str, op: str, n: int) -> None:
        where = and_(col(UsageCount.account_id) == account_id, col(UsageCount.month) == month,
                     col(UsageCount.operation) == op)
        result = s.exec(update(UsageCount).where(where).values(count=col(UsageCount.count) + n))
        if result.rowcount == 0:
            try:
                with s.begin_nested():
                    s.add(UsageCount(account_id=account_id, month=month, operation=op, count=n))
            except IntegrityError:  # another process inserted the row first
                s.exec(update(UsageCount).where(where).values(count=col(UsageCount.count) + n))

    def usage(self, account_id: str, month: str | None = None) -> dict[str, int]:
        """Totals per operation for a month (default: the current one), unflushed counts included."""
        month = month or self._clock().strftime("%Y-%m")
        totals: Counter[str] = Counter()
        with Session(self._engine) as s:
            for row in s.exec(select(UsageCount).where(UsageCount.account_id == account_id,
                                                       UsageCount.month == month)):
                totals[row.operation] += row.count
        with self._lock:
            for (acct, m, op), n in self._pending.items():
                if acct == account_id and m == month:
                    totals[op] += n
        return dict(sorted(totals.items()))

    def monthly(self, account_id: str) -> dict[str, dict[str, int]]:
        """Every month's totals per operation ({"YYYY-MM": {op: n}}), oldest month first,
        unflushed counts included."""
        months: dict[str, Counter[str]] = {}
        with Session(self._engine) as s:
            for row in s.exec(select(UsageCount).where(UsageCount.account_id == account_id)):
                months.setdefault(row.month, Counter())[row.operation] += row.count
        with self._lock:
            for (acct, m, op), n in self._pending.items():
                if acct == account_id:
                    months.setdefault(m, Counter())[op] += n
        return {m: dict(sorted(c.items())) for m, c in sorted(months.items())}
