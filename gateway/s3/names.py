"""S3's rules for bucket names, key lengths and user metadata, with the error codes S3 gives.

Bucket names follow the rules for general purpose buckets: 3-63 characters of lowercase
letters, digits, dots and hyphens, starting and ending with a letter or digit, no two dots
in a row, not an IP address, none of the prefixes and suffixes AWS reserves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.s3.errors import S3Error

MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048
META_PREFIX = "x-amz-meta-"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid bucket name, or None."""
    if not 3 <= len(name) <= 63:
        return "Bucket names must be between 3 and 63 characters long"
    if not _BUCKET.match(name):
        return ("Bucket names may hold only lowercase letters, digits, dots and hyphens, and must "
                "begin and end with a letter or digit")
    if ".." in name or ".-" in name or "-." in name:
        return "Bucket names must not have two adjacent periods or a period next to a hyphen"
    if _IP.match(name):
        return "Bucket names must not be formatted as an IP address"
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return "Bucket names must not use a prefix or suffix AWS reserves"
    return None


def check_bucket_name(name: str) -> None:
    problem = bucket_name_problem(name)
    if problem is not None:
        raise S3Error("InvalidBucketName", f"The specified bucket is not valid. {problem}.", 400, f"/{name}")


def check_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long", 400)


def check_metadata(headers: Mapping[str, str]) -> None:
    """User metadata (x-amz-meta-*): at most 2 KB of names (without the prefix) and values."""
    size = sum(len(name[len(META_PREFIX):].encode()) + len(value.encode("utf-8", "surrogateescape"))
               for name, value in headers.items() if name.startswith(META_PREFIX))
    if size > MAX_METADATA_BYTES:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata "
                      f"size ({size} bytes of at most {MAX_METADATA_BYTES})", 400)
