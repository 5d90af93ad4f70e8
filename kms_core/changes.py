"""Key and account state changes, told to every node at once (PostgreSQL LISTEN/NOTIFY).

Each process caches key snapshots and account gates for a couple of seconds (kms_core.service,
kms_core.accounts). A change made through this process drops its own caches at once; on
PostgreSQL it is also published on the `ssegw_changes` channel, and every node listening drops
the same entries when the change commits, so a key disabled through one node is refused by the
others within a database round trip instead of a cache lifetime. If the listening connection is
lost, the node drops all its caches on reconnecting (it may have missed messages); meanwhile the
cache lifetime still bounds how stale a node can be. SQLite has no such channel: there, other
processes see changes within the cache lifetime, as before.

Messages: `*` (drop everything: aliases moved, keys changed), `k:<key id>` (a key's material
went away: drop its opened material too), `a:<account id>` (an account was frozen or thawed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("kms_core.changes")

CHANNEL = "ssegw_changes"
EVERYTHING = "*"

Handler = Callable[[str], None]


class ChangeFeed:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.shared = engine.dialect.name == "postgresql"
        self._handlers: list[Handler] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while the LISTEN connection is up
        self.received = 0

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def publish(self, message: str) -> None:
        """Tell the other nodes (after the change has committed)."""
        if not self.shared:
            return
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT pg_notify(:channel, :message)"),
                             {"channel": CHANNEL, "message": message})
                conn.commit()
        except SQLAlchemyError as exc:
            # The change is made; other nodes see it within their cache lifetime instead.
            log.warning("could not notify other nodes of a change: %s", type(exc).__name__)

    def _deliver(self, message: str) -> None:
        self.received += 1
        for handler in self._handlers:
            try:
                handler(message)
            except Exception:  # a cache that cannot drop an entry must not stop the others
                log.exception("change handler failed")

    def start(self) -> None:
        if not self.shared or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._listen, name="ssegw-changes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _conninfo(self) -> str:
        url = self._engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen(self) -> None:
        import psycopg

        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if not first:
                        self._deliver(EVERYTHING)  # messages may have been missed meanwhile
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("lost the change channel (%s); reconnecting", type(exc).__name__)
                self._stop.wait(1.0)
        self.listening.clear()
