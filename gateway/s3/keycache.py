"""What the KMS gave the proxy, kept for a bounded time: bucket keys and opened data keys.

Bucket keys exist to cut KMS calls, and reading the same object, or the parts of one upload,
need not ask the KMS each time either. Every entry lives at most `ttl` seconds, so a key that
is disabled, scheduled for deletion or whose account is frozen stops working through this
proxy within `ttl` (the README states it). Entries are per account; the proxy checks bucket
ownership before it looks anything up. Concurrent misses for one entry make one KMS call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from kms_core.client.metrics import CACHE

V = TypeVar("V")

DEFAULT_TTL = 60.0


class KeyCache(Generic[V]):
    def __init__(self, ttl: float = DEFAULT_TTL, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic, name: str = "s3_keys") -> None:
        self.ttl = ttl
        self._hit, self._miss = CACHE.labels(name, "hit"), CACHE.labels(name, "miss")
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[V]] = {}

    def get(self, key: Hashable) -> V | None:
        hit = self._items.get(key)
        if hit is None:
            self._miss.inc()
            return None
        if hit[0] <= self._clock():
            self._items.pop(key, None)
            self._miss.inc()
            return None
        self._hit.inc()
        return hit[1]

    def put(self, key: Hashable, value: V) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (self._clock() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def forget(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        hit = self.get(key)
        if hit is not None:
            return hit
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # marked retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._loading.pop(key, None)
        self.put(key, value)
        future.set_result(value)
        return value
