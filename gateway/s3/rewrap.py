"""Rewrap a bucket: re-seal every object's key under a new key, or its key's new primary version.

Runs as an S3 client of the proxy, with the bucket owner's credentials: each object gets a copy
onto itself with `x-ssegw-rewrap: true` (copy.py), so the proxy re-seals the key in the KMS
(reEncrypt: the data key never leaves it) and rewrites ~100 bytes of metadata; no data is
re-encrypted. The proxy leaves objects already sealed under the target version alone, so the
progress marker *is* the objects themselves: an interrupted rewrap is resumed by running it
again, and what was done is skipped for the price of one request each.

In a bucket that keeps versions every version is walked. The current version of each key is
rewrapped as above (the copy becomes its new current version; the one it replaces stays, as S3
keeps it). Older versions cannot be rewritten (S3 versions are immutable, and copying one would
make it current), so each is looked at (`x-ssegw-rewrap: check`) and counted `current` or
`kept`: a kept version still opens with the key version that sealed it (rotation never removes
versions), so keep that key enabled until those versions are deleted or expire.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any

from botocore.exceptions import ClientError

from gateway.s3.copy import REWRAP, REWRAP_RESULT

RESULTS = ("rewrapped", "current", "kept", "plaintext", "customer-key", "gone", "failed")


@dataclass
class Summary:
    bucket: str
    prefix: str
    target: str
    objects: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def as_json(self) -> dict[str, Any]:
        done = sum(self.counts.values())
        return {
            "bucket": self.bucket, "prefix": self.prefix, "target": self.target,
            "objects": self.objects, "processed": done, **self.counts,
            "seconds": round(self.seconds, 3),
            "objectsPerSecond": round(done / self.seconds, 1) if self.seconds > 0 else None,
            "interrupted": self.interrupted,
            "errors": self.errors[:20],
            **({"kept": "older versions stay sealed under the key version that sealed them (S3 versions "
                        "cannot be rewritten); keep that key enabled until they are deleted"}
               if self.counts["kept"] else {}),
            **({"resume": "run the same command again: objects already rewrapped are skipped"}
               if self.interrupted or self.counts["failed"] else {}),
        }


class Progress:
    """A progress bar on a terminal; on a pipe, one line per step (scripts and tests read them)."""

    def __init__(self, total: int, out: IO[str] = sys.stderr, width: int = 30) -> None:
        self.total = total
        self.out = out
        self.width = width
        self.tty = out.isatty()
        self.start = time.monotonic()
        self._last = 0.0
        self._step = max(1, total // 20)

    def update(self, done: int, counts: dict[str, int], *, final: bool = False) -> None:
        now = time.monotonic()
        rate = done / (now - self.start) if now > self.start else 0.0
        if self.tty:
            if not final and now - self._last < 0.1:
                return
            self._last = now
            filled = self.width * done // self.total if self.total else self.width
            bar = "#" * filled + "." * (self.width - filled)
            self.out.write(f"\rrewrap [{bar}] {done}/{self.total} objects, {rate:.0f}/s, "
                           f"{counts['rewrapped']} rewrapped, {counts['current']} current, "
                           f"{counts['failed']} failed" + ("\n" if final else ""))
        elif final or done % self._step == 0:
            self.out.write(f"rewrap {done}/{self.total} objects ({rate:.0f}/s, {counts['rewrapped']} rewrapped, "
                           f"{counts['current']} current, {counts['failed']} failed)\n")
        self.out.flush()


Item = tuple[str, str | None]  # (key, version id of an older version; None: the current one)


def _keys(client: Any, bucket: str, prefix: str) -> Iterator[Item]:
    status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    if status not in ("Enabled", "Suspended"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], None
        return
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            yield v["Key"], None if v["IsLatest"] else v["VersionId"]


def rewrap_one(client: Any, bucket: str, item: Item | str, to_key: str | None) -> str:
    """Rewrap one object (or look at one older version) through the proxy; returns one of
    RESULTS (but "failed": it raises)."""
    key, version = (item, None) if isinstance(item, str) else item
    extra: dict[str, Any] = {}
    if to_key:
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": to_key}
    source = {"Bucket": bucket, "Key": key, **({"VersionId": version} if version else {})}
    for attempt in range(3):
        try:
            r = client.copy_object(Bucket=bucket, Key=key, CopySource=source, MetadataDirective="COPY", **extra)
            result = str(r["ResponseMetadata"]["HTTPHeaders"].get(REWRAP_RESULT, "rewrapped"))
            return "kept" if result == "stale" else result
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return "gone"  # deleted since it was listed: nothing to rewrap
            if code == "PreconditionFailed" and attempt < 2:
                continue  # overwritten during the copy: the new object needs a look of its own
            raise
    raise AssertionError("unreachable")


def add_rewrap_header(client: Any) -> None:
    def add(request: Any, **_: Any) -> None:
        # botocore's headers append on assignment: replace, or a second handler signs it twice.
        if REWRAP in request.headers:
            del request.headers[REWRAP]
        # An older version (a versionId in the source) can only be looked at.
        source = request.headers.get("x-amz-copy-source", "")
        source = source.decode() if isinstance(source, bytes) else source
        request.headers[REWRAP] = "check" if "versionId=" in source else "true"

    client.meta.events.register("before-sign.s3.CopyObject", add, unique_id="ssegw-rewrap")


def rewrap(client: Any, bucket: str, prefix: str = "", to_key: str | None = None, *, concurrency: int = 8,
           progress_out: IO[str] = sys.stderr,
           stop: threading.Event | None = None,
           on_result: Callable[[str, str], None] | None = None) -> Summary:
    """Rewrap every object of `bucket` under `prefix`; `stop` set (or Ctrl-C) ends it early.

    `client` is a boto3 S3 client of the proxy; the rewrap header is added to its CopyObject
    calls here.
    """
    add_rewrap_header(client)
    summary = Summary(bucket, prefix, to_key or "each object's own key, primary version")
    start = time.monotonic()
    keys = list(_keys(client, bucket, prefix))
    summary.objects = len(keys)
    progress = Progress(len(keys), progress_out)
    stop = stop or threading.Event()
    done = 0
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="rewrap")
    pending: dict[Future[str], Item] = {}
    it = iter(keys)
    try:
        while True:
            while not stop.is_set() and len(pending) < 2 * concurrency:
                key = next(it, None)
                if key is None:
                    break
                pending[pool.submit(rewrap_one, client, bucket, key, to_key)] = key
            if not pending:
                break
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                key = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - one object's failure must not stop the rest
                    result = "failed"
                    summary.errors.append(f"{_name(key)}: {e}")
                summary.counts[result] = summary.counts.get(result, 0) + 1
                done += 1
                if on_result is not None:
                    on_result(_name(key), result)
                progress.update(done, summary.counts)
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set() and done < len(keys):
        summary.interrupted = True
        for fut in pending:
            fut.cancel()
        for fut in list(pending):
            if not fut.cancelled():
                try:
                    summary.counts[fut.result()] += 1
                except Exception as e:  # noqa: BLE001
                    summary.counts["failed"] += 1
                    summary.errors.append(f"{_name(pending[fut])}: {e}")
                done += 1
    pool.shutdown(wait=True, cancel_futures=True)
    progress.update(done, summary.counts, final=True)
    summary.seconds = time.monotonic() - start
    return summary


def _name(item: Item) -> str:
    key, version = item
    return key if version is None else f"{key}?versionId={version}"
