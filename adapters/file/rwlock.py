"""A readers-writer lock: reads of one file run at once, a write or truncate runs alone.

Why: the kernel's readahead sends several READs of one file at once, and with the block loop
in C (no GIL) they can decrypt on different cores; a plain lock per file ran them one after
another. Writes still exclude everything else on the file (a partial-block write is a
read-modify-write, and a read must never see a record half-written).

`with lock:` takes it exclusively (so code written for a threading.Lock keeps its meaning);
`with lock.shared():` takes it for reading. A writer holds the gate from the moment it asks
until it is done, and readers pass the gate to come in: new readers queue behind a waiting
writer, so readers cannot starve writers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


class RWLock:
    __slots__ = ("_gate", "_mutex", "_readers", "_idle")

    def __init__(self) -> None:
        self._gate = threading.Lock()
        self._mutex = threading.Lock()
        self._readers = 0
        self._idle = threading.Condition(self._mutex)  # notified when the last reader leaves

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._gate, self._mutex:
            self._readers += 1
        try:
            yield
        finally:
            with self._mutex:
                self._readers -= 1
                if self._readers == 0:
                    self._idle.notify_all()

    def __enter__(self) -> None:
        self._gate.acquire()
        try:
            with self._mutex:
                while self._readers:
                    self._idle.wait()
        except BaseException:
            self._gate.release()
            raise

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._gate.release()
