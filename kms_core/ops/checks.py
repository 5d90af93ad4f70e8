"""Input checks, refusals and small helpers shared by several operation modules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from kms_core.errors import InvalidMarker, InvalidParameter, UnsupportedOperation
from kms_core.models import Key

MAX_DESCRIPTION = 8192
MAX_LIST_LIMIT = 1000


def refuse_default(key: Key, what: str) -> None:
    if key.default_product:
        raise UnsupportedOperation(
            f"{key.id} is the default key of {key.default_product}; it cannot {what}"
        )


def check_description(description: str) -> None:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidParameter(f"description must be a string of at most {MAX_DESCRIPTION} characters")


def check_limit(limit: int) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidParameter(f"limit must be 1-{MAX_LIST_LIMIT}")
    return limit


def key_marker(marker: str) -> str:
    """A ListKeys marker is the last key id of the page before (any key id keeps its place)."""
    try:
        ok = str(uuid.UUID(marker)) == marker
    except (ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise InvalidMarker(f"the marker {marker!r} was not handed out by ListKeys")
    return marker


def as_utc(ts: datetime) -> datetime:
    """Datetimes read back from some databases are naive; every stored time is UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def opt_utc(ts: datetime | None) -> datetime | None:
    return None if ts is None else as_utc(ts)
