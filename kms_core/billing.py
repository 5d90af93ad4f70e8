"""A month's usage and bill of an account (FAQ 5.1): key hosting per day and API calls per month.

Two billed items, nothing else (opening the service is free):
- key hosting: key-days per resource pool (kms_core.hosting), at a price per key per day;
- API calls: the cryptographic calls the FAQ lists (kms_core.metering counts exactly those),
  at a price per 10,000 calls.

Prices are configured in one place: `<data-dir>/prices.json` (every field optional), e.g.
`{"currency": "CNY", "keyHostingPerKeyDay": "0.04", "apiCallsPer10k": "0.03"}`; without it
the defaults below apply. They are placeholders, not ctyun's list prices: set your own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kms_core import hosting
from kms_core.errors import InvalidParameter

if TYPE_CHECKING:
    from kms_core.embedded import Kms

PRICES_FILE = "prices.json"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Prices:
    currency: str = "CNY"
    key_hosting_per_key_day: Decimal = Decimal("0.04")
    api_calls_per_10k: Decimal = Decimal("0.03")

    @classmethod
    def load(cls, data_dir: Path) -> Prices:
        path = data_dir / PRICES_FILE
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(
                currency=str(raw.get("currency", cls.currency)),
                key_hosting_per_key_day=Decimal(str(raw.get("keyHostingPerKeyDay",
                                                            cls.key_hosting_per_key_day))),
                api_calls_per_10k=Decimal(str(raw.get("apiCallsPer10k", cls.api_calls_per_10k))),
            )
        except (ValueError, InvalidOperation, AttributeError) as e:
            raise ValueError(f"{path} is not a valid prices file: {e}") from None


def check_month(month: str | None) -> None:
    if month is not None and not (
        isinstance(month, str) and len(month) == 7 and month[4] == "-"
        and month.replace("-", "").isdigit() and 1 <= int(month[5:]) <= 12
    ):
        raise InvalidParameter("month must be YYYY-MM")


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def usage_report(kms: Kms, account_id: str, month: str | None = None) -> dict[str, Any]:
    """Calls and key-days of a month (default: this one, UTC), and the bill they make."""
    check_month(month)
    now = kms.config.clock()
    month = month or now.strftime("%Y-%m")
    calls = kms.meter.usage(account_id, month)
    total_calls = sum(calls.values())
    daily = hosting.daily_keys(kms.engine, account_id, month, now)
    by_region = {region: {"keyDays": sum(days.values()), "daily": days}
                 for region, days in daily.items()}
    key_days = sum(sum(days.values()) for days in daily.values())
    prices = Prices.load(kms.config.data_dir)
    hosting_amount = prices.key_hosting_per_key_day * key_days
    calls_amount = prices.api_calls_per_10k * total_calls / 10000
    return {
        "accountId": account_id,
        "month": month,
        # Cryptographic calls by operation (the FAQ's API call item), as before.
        "usage": calls,
        "total": total_calls,
        "keyHosting": {"keyDays": key_days, "byRegion": by_region},
        "bill": {
            "currency": prices.currency,
            "keyHosting": {"keyDays": key_days, "unitPrice": str(prices.key_hosting_per_key_day),
                           "unit": "key-day", "amount": _money(hosting_amount)},
            "apiCalls": {"calls": total_calls, "unitPrice": str(prices.api_calls_per_10k),
                         "unit": "10000 calls", "amount": _money(calls_amount)},
            "total": _money(hosting_amount + calls_amount),
        },
    }
