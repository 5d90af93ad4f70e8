"""HTTP Range and conditional-request rules as S3 applies them. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) for a Range header, None to serve the whole object.

    Malformed headers and multiple ranges are ignored (S3 serves the whole object); ranges
    that start past the end are RangeNotSatisfiable (416).
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        end = size if not last else min(int(last) + 1, size)
        if last and int(last) < start:
            return None
        if start >= size:
            raise RangeNotSatisfiable()
        return start, end
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable()
    return max(0, size - suffix), size


def _etags(value: str) -> list[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in value.split(",")]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def check_conditions(headers: Mapping[str, str], etag: str, last_modified: datetime | None) -> int | None:
    """304 or 412 when the conditional headers say so, else None (serve the object).

    S3's order: If-Match beats If-Unmodified-Since, If-None-Match beats If-Modified-Since.
    """
    bare = etag.strip('"')
    if_match = headers.get("if-match")
    if if_match is not None:
        if "*" not in if_match and bare not in _etags(if_match):
            return 412
    else:
        since = _date(headers.get("if-unmodified-since"))
        if since and last_modified and last_modified > since:
            return 412
    if_none = headers.get("if-none-match")
    if if_none is not None:
        if "*" in if_none or bare in _etags(if_none):
            return 304
    else:
        since = _date(headers.get("if-modified-since"))
        if since and last_modified and last_modified <= since:
            return 304
    return None
