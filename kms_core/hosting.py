"""Key-hosting metering (FAQ 5.1): key-days per account, resource pool and month.

The FAQ's rules, day by day (UTC days):
- every user master key counts on each day it exists, disabled or pending import too;
- default keys are free (they never get a hosting period);
- a key pending deletion stops counting from the day its deletion was scheduled, and counts
  again, from the day of cancelling, if the deletion is cancelled.

So a key counts on day D when it is billable at the end of D (or now, for today): a key
created on D counts on D; one scheduled for deletion on D does not; one cancelled on D does.
Spans are kept in `kms_key_hosting` (kms_core.models.KeyHostingPeriod): a span [start, end)
covers the days from start's date up to, not including, end's date.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import date, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from kms_core.models import Key, KeyHostingPeriod


def start(s: Session, key: Key, at: datetime) -> None:
    """The key becomes billable at `at` (created, or its deletion cancelled); not default keys."""
    if key.default_product is None:
        s.add(KeyHostingPeriod(key_id=key.id, account_id=key.account_id, region=key.region,
                               started_at=at))


def stop(s: Session, key_id: str, at: datetime) -> None:
    """The key stops being billable at `at` (its deletion was scheduled)."""
    for period in s.exec(select(KeyHostingPeriod).where(
            KeyHostingPeriod.key_id == key_id, col(KeyHostingPeriod.ended_at).is_(None))):
        period.ended_at = at
        s.add(period)


def month_bounds(month: str) -> tuple[date, date]:
    """First and last day of a YYYY-MM month."""
    year, mon = int(month[:4]), int(month[5:7])
    return date(year, mon, 1), date(year, mon, calendar.monthrange(year, mon)[1])


def _spans(s: Session, account_id: str) -> list[tuple[str, str, date, date | None]]:
    """(key id, region, first billed day, first unbilled day or None) of the account's keys."""
    out: list[tuple[str, str, date, date | None]] = []
    seen: set[str] = set()
    for p in s.exec(select(KeyHostingPeriod).where(KeyHostingPeriod.account_id == account_id)):
        seen.add(p.key_id)
        out.append((p.key_id, p.region, p.started_at.date(),
                    p.ended_at.date() if p.ended_at else None))
    # Keys made before hosting was metered have no spans: billed from creation, and (when
    # pending deletion or deleted) until their last state change, the best record there is.
    for k in s.exec(select(Key).where(Key.account_id == account_id,
                                      col(Key.default_product).is_(None))):
        if k.id in seen:
            continue
        gone = k.state == "PendingDeletion" or k.destroyed_at is not None
        out.append((k.id, k.region, k.created_at.date(), k.updated_at.date() if gone else None))
    return out


def daily_keys(engine: Engine, account_id: str, month: str, now: datetime) -> dict[str, dict[str, int]]:
    """{pool: {YYYY-MM-DD: billed keys}} for each day of the month up to today (UTC)."""
    first, last = month_bounds(month)
    last = min(last, now.date())
    with Session(engine) as s:
        spans = _spans(s, account_id)
    days: dict[str, dict[date, set[str]]] = defaultdict(lambda: defaultdict(set))
    for key_id, region, begin, end in spans:
        day = max(begin, first)
        stop_day = min(end - timedelta(days=1), last) if end else last
        while day <= stop_day:
            days[region][day].add(key_id)  # a set: overlapping spans of one key count once
            day += timedelta(days=1)
    return {
        region: {d.isoformat(): len(keys) for d, keys in sorted(by_day.items()) if keys}
        for region, by_day in sorted(days.items())
    }
