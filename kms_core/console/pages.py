"""Usage (metered calls per month, the audit log) and the encryption of the products."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kms_core.client.products import NONE, SSE_KMS, SSE_S3, BucketSetting, ProductSettingError
from kms_core.console.sessions import SignedIn
from kms_core.console.web import PREFIX, Console, in_thread, redirect
from kms_core.errors import KmsError
from kms_core.specs import KeySpec, KeyUsage
from kms_core.states import KeyState

AUDIT_PAGE = 50
CHART_MONTHS = 12


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


def chart(series: list[tuple[str, int]], width: int = 640, height: int = 200) -> list[Bar]:
    """Bars of an inline SVG chart (geometry only; the template draws them)."""
    if not any(v for _, v in series):
        return []
    top = max(v for _, v in series) or 1
    plot_h, gap = height - 40, 8.0
    step = (width - 40) / len(series)
    bars = []
    for i, (label, value) in enumerate(series):
        h = plot_h * value / top
        bars.append(Bar(label, value, 40 + i * step + gap / 2, 10 + plot_h - h, step - gap, h))
    return bars


def last_months(now: datetime, n: int = CHART_MONTHS) -> list[str]:
    """The `n` months up to and including now's, oldest first, as YYYY-MM."""
    year, month = now.year, now.month
    out = []
    for _ in range(n):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out[::-1]


def _parse_time(value: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


async def usage(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    kms, account = console.kms, session.account_id
    params = request.query_params
    key, op = params.get("key", "").strip(), params.get("operation", "").strip()
    start, end = _parse_time(params.get("from", "")), _parse_time(params.get("to", ""))
    before = params.get("before", "")
    before_id = int(before) if before.isdigit() else None

    def load() -> dict[str, Any]:
        months = kms.meter.monthly(account)
        series = [(m, sum(months.get(m, {}).values())) for m in last_months(kms.audit.now())]
        events = kms.audit.search(account, key_id=key or None, operation=op or None, start=start,
                                  end=end, before_id=before_id, limit=AUDIT_PAGE + 1)
        return {"months": months, "bars": chart(series), "events": events[:AUDIT_PAGE],
                "older": events[AUDIT_PAGE - 1].id if len(events) > AUDIT_PAGE else None}

    data = await in_thread(load)
    return console.page(request, "usage.html", 200, session, **data,
                        f_key=key, f_operation=op, f_from=params.get("from", ""), f_to=params.get("to", ""),
                        filter_query=_filter_query(key, op, params.get("from", ""), params.get("to", "")))


def _filter_query(key: str, op: str, start: str, end: str) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in (("key", key), ("operation", op), ("from", start), ("to", end)) if v})


async def products(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    provider = console.products
    if provider is None:
        return console.page(request, "products.html", 200, session, buckets=[], keys=[], unavailable=True)
    caller = console.caller(session)
    error, status, failed = None, 200, None
    if request.method == "POST":
        bucket = str(form.get("bucket", ""))
        sse = str(form.get("sse", NONE))
        kms_key = str(form.get("kms_key", "")).strip() or None
        setting = BucketSetting(bucket, sse, kms_key if sse == SSE_KMS else None,
                                sse == SSE_KMS and form.get("bucket_key") == "on")
        try:
            await provider.set_default_encryption(caller, setting)
        except (ProductSettingError, KmsError) as e:
            error, status, failed = str(e), 400, bucket
        else:
            return redirect(f"{PREFIX}/products?done=1")
    buckets = await provider.list_buckets(caller)
    keys = await in_thread(_encryption_keys, console, session)
    return console.page(request, "products.html", status, session, buckets=buckets, keys=keys,
                        error=error, failed=failed, done=request.query_params.get("done"),
                        NONE=NONE, SSE_S3=SSE_S3, SSE_KMS=SSE_KMS, unavailable=False)


def _encryption_keys(console: Console, session: SignedIn) -> list[Any]:
    from kms_core.console.keys import _all_keys

    keys = _all_keys(console.kms.service, console.caller(session))
    return [k for k in keys if KeySpec(k.spec).symmetric and k.usage == KeyUsage.ENCRYPT_DECRYPT.value
            and k.state == KeyState.ENABLED.value and not k.default_product]
