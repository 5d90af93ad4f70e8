"""A backend GET whose body survives the connection breaking off: the rest is asked for again;
and the body read ahead of a consumer that waits on its client (`read_ahead`).

A backend, or a load balancer before it, may end a long answer early (S3 resets connections now
and then; the AWS SDKs resume such reads with a ranged GET). The proxy does the same, so a client
reading through it gets its object whole instead of a broken-off stream: up to `RESUMES` times
per read, each from the first byte not yet received, with If-Match on the ETag the read began
with, so the bytes joined are always of one version of the object (a changed object fails the
read, as S3 fails it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping

from gateway.s3.backend import Backend, BackendError, BackendResponse
from gateway.s3.errors import S3Error

log = logging.getLogger("ssegw.s3")

RESUMES = 3
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def answered_span(r: BackendResponse) -> tuple[int, int] | None:
    """The bytes [first, last] of the object that `r` (a 200 or 206 to a GET) carries, or None
    when its headers do not say (no length: then a broken-off read cannot be resumed)."""
    if r.status_code == 206:
        m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
        return (int(m[1]), int(m[2])) if m else None
    length = r.headers.get("content-length", "")
    return (0, int(length) - 1) if length.isdigit() and int(length) > 0 else None


class ResumableBody:
    """The body of `first` (an open, streamed GET of `bucket`/`key`), continued by ranged GETs
    of what is missing when the backend's answer breaks off.

    `aclose()` closes whichever answer it is reading, also when iteration never began."""

    def __init__(self, backend: Backend, first: BackendResponse, bucket: str, key: str,
                 query: Mapping[str, str], skip: int = 0) -> None:
        self._backend, self._bucket, self._key, self._query = backend, bucket, key, query
        self._r = first
        self._span = answered_span(first)
        self._etag = first.headers.get("etag", "")
        self._skip = skip  # leading bytes of the answer the reader does not want

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def aclose(self) -> None:
        await self._r.aclose()

    async def _chunks(self) -> AsyncIterator[bytes]:
        received = 0
        for resume in range(RESUMES + 1):
            try:
                async for chunk in self._r.aiter_raw():
                    received += len(chunk)
                    if self._skip:
                        if len(chunk) <= self._skip:
                            self._skip -= len(chunk)
                            continue
                        chunk, self._skip = chunk[self._skip:], 0
                    yield chunk
                return
            except BackendError as e:
                span = self._span
                if span is None or not self._etag or resume == RESUMES:
                    raise
                log.warning("the backend's answer to GET %s/%s broke off after %d of %d bytes (%s); "
                            "asking for the rest", self._bucket, self._key, received, span[1] - span[0] + 1,
                            e.detail)
                self._r = await _rest(self._backend, self._bucket, self._key, self._query, self._etag,
                                      span[0] + received, span[1])


async def _rest(backend: Backend, bucket: str, key: str, query: Mapping[str, str], etag: str,
                first: int, last: int) -> BackendResponse:
    r = await backend.send("GET", bucket, key, headers={"range": f"bytes={first}-{last}", "if-match": etag},
                           query=query, stream=True)
    if r.status_code == 206 and answered_span(r) == (first, last):
        return r
    await r.aclose()
    if r.status_code == 412:
        raise S3Error("InternalError", "The object changed while it was read; retry", 500)
    raise BackendError(f"the backend answered {r.status_code} to the GET resuming at byte {first}")


READ_AHEAD = 4 * 1024 * 1024


async def read_ahead(body: AsyncIterable[bytes], limit: int = READ_AHEAD) -> AsyncIterator[bytes]:
    """The backend body, read by a task of its own up to `limit` bytes ahead of the consumer.

    Without it the backend socket is idle whenever the consumer waits for the client to take
    what it sent, so reading the backend and writing the client never overlap. 4 MiB in flight
    cover the client taking a 1 MiB piece (package_cipher.PIECE); 256 KiB left the backend idle for most
    of each client write (profile of a 64 MiB GET: the proxy spent 107 ms of CPU on a GET that
    took ~650 ms). The budget is in bytes, not chunks: a chunk is whatever one socket read gave
    (up to 256,000 bytes with uvloop), so 64 chunks were up to 16 MiB held for every slow
    reader."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = asyncio.Event()
    room.set()
    held = 0

    async def pump() -> None:
        nonlocal held
        try:
            async for chunk in body:
                while held >= limit:
                    room.clear()
                    await room.wait()
                held += len(chunk)
                queue.put_nowait(chunk)
            queue.put_nowait(None)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait(e)

    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            held -= len(item)
            room.set()
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
