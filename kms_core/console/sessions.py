"""Console sign-in sessions, kept in the metadata database so every server process sees them.

The browser holds only a random token; the row is found by the token's SHA-256, so a copy of
the database does not hand out live sessions. Sign out deletes the row, and a session unused
for `idle_timeout` is refused (and swept) whatever the cookie says. Each session carries its
CSRF token and the resource pool it looks at.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel

from kms_core.models import utcnow

DEFAULT_IDLE_TIMEOUT = timedelta(minutes=30)
# last_seen is written at most this often: a page view should not always cost a write.
_TOUCH_EVERY = timedelta(seconds=30)


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_session"
    token_hash: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(index=True, max_length=32)
    access_key_id: str = Field(max_length=32)
    csrf: str = Field(max_length=64)
    pool: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow, index=True)


@dataclass(frozen=True)
class SignedIn:
    token_hash: str
    account_id: str
    access_key_id: str
    csrf: str
    pool: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite returns naive datetimes


class SessionStore:
    def __init__(self, engine: Engine, idle_timeout: timedelta = DEFAULT_IDLE_TIMEOUT,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self.idle_timeout = idle_timeout
        self._clock = clock  # the table comes with the schema (migration 0002_console)

    def create(self, account_id: str, access_key_id: str, pool: str) -> tuple[str, SignedIn]:
        """A new session; returns the cookie token (shown to nobody else) and the session."""
        token = secrets.token_urlsafe(32)
        row = ConsoleSession(token_hash=_hash(token), account_id=account_id,
                             access_key_id=access_key_id, csrf=secrets.token_urlsafe(32),
                             pool=pool, created_at=self._clock(), last_seen=self._clock())
        with Session(self._engine, expire_on_commit=False) as s:
            s.add(row)
            s.commit()
        return token, _signed_in(row)

    def get(self, token: str | None) -> SignedIn | None:
        if not token or len(token) > 128:
            return None
        now = self._clock()
        with Session(self._engine, expire_on_commit=False) as s:
            row = s.get(ConsoleSession, _hash(token))
            if row is None:
                return None
            idle = now - _aware(row.last_seen)
            if idle > self.idle_timeout:
                s.delete(row)
                s.commit()
                return None
            if idle > _TOUCH_EVERY:
                row.last_seen = now
                s.add(row)
                s.commit()
            return _signed_in(row)

    def set_pool(self, token_hash: str, pool: str) -> None:
        with Session(self._engine) as s:
            row = s.get(ConsoleSession, token_hash)
            if row is not None:
                row.pool = pool
                s.add(row)
                s.commit()

    def end(self, token_hash: str) -> None:
        with Session(self._engine) as s:
            s.exec(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))  # type: ignore[arg-type]
            s.commit()

    def sweep(self) -> None:
        """Delete sessions idle past the timeout (those never seen again would stay otherwise)."""
        cutoff = self._clock() - self.idle_timeout
        with Session(self._engine) as s:
            s.exec(delete(ConsoleSession).where(ConsoleSession.last_seen < cutoff))  # type: ignore[arg-type]
            s.commit()


def _signed_in(row: ConsoleSession) -> SignedIn:
    return SignedIn(row.token_hash, row.account_id, row.access_key_id, row.csrf, row.pool)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class SignInThrottle:
    """Slows down guessing: after a few failures from one address, each further attempt from
    it waits, doubling up to `max_delay` seconds. Per process (each worker counts alone)."""

    def __init__(self, free_failures: int = 3, max_delay: float = 8.0, forget_after: float = 900.0) -> None:
        self._free = free_failures
        self._max = max_delay
        self._forget = forget_after
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}

    def delay(self, address: str) -> float:
        now = time.monotonic()
        with self._lock:
            n, at = self._failures.get(address, (0, now))
            if now - at > self._forget:
                self._failures.pop(address, None)
                return 0.0
        if n < self._free:
            return 0.0
        return float(min(self._max, 0.5 * 2 ** (n - self._free)))

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            n, _ = self._failures.get(address, (0, now))
            self._failures[address] = (n + 1, now)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
