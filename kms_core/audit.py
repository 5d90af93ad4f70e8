"""Audit log: who used which key, for what, with what result. Append-only.

Events carry identities, operation names and result codes only: never plaintext, data keys,
ciphertext or key material (the recorder takes no such argument). Management calls are written
at once; key uses are buffered and written in batches by the flusher, so the hot path does not
wait for the database; a clean shutdown flushes, a crash loses at most one flush interval.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select


class AuditEvent(SQLModel, table=True):
    __tablename__ = "kms_audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    request_id: str = Field(max_length=64)
    account_id: str = Field(index=True, max_length=32)
    region: str = Field(max_length=64)
    principal: str = Field(max_length=128)
    operation: str = Field(max_length=64)
    key_id: str | None = Field(default=None, index=True, max_length=36)
    version_id: str | None = Field(default=None, max_length=36)
    result: str = Field(max_length=64)  # "Success" or the error code


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    request_id: str
    account_id: str
    region: str
    principal: str
    operation: str
    key_id: str | None
    version_id: str | None
    result: str


_TABLE = SQLModel.metadata.tables["kms_audit"]
_COLUMNS = ("at", "request_id", "account_id", "region", "principal", "operation", "key_id",
            "version_id", "result")


class AuditLog:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer: list[tuple[object, ...]] = []

    def now(self) -> datetime:
        return self._clock()

    def record(
        self,
        *,
        at: datetime | None = None,
        request_id: str,
        account_id: str,
        region: str,
        principal: str,
        operation: str,
        key_id: str | None,
        version_id: str | None,
        result: str,
        immediate: bool = False,
    ) -> None:
        row = (at or self._clock(), request_id, account_id, region, principal, operation,
               key_id, version_id, result)
        with self._lock:
            self._buffer.append(row)
        if immediate:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._buffer = self._buffer, []
        if not rows:
            return
        try:
            # Core, not the ORM's bulk insert, which builds per-row state it throws away: the
            # flusher took a tenth of a loaded KMS node's CPU (py-spy, bench/kms_http.py);
            # 2,000 rows take 22-23 ms this way, 28-34 ms through the ORM.
            params = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
            with self._engine.begin() as conn:
                conn.execute(_TABLE.insert(), params)
        except Exception:
            with self._lock:
                self._buffer[:0] = rows
            raise

    def query(
        self,
        account_id: str,
        *,
        key_id: str | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Events of one account (optionally one key), oldest first, after the `after_id` marker."""
        self.flush()
        with Session(self._engine) as s:
            q = select(AuditEvent).where(AuditEvent.account_id == account_id,
                                         col(AuditEvent.id) > after_id)
            if key_id:
                q = q.where(AuditEvent.key_id == key_id)
            rows = s.exec(q.order_by(col(AuditEvent.id)).limit(limit)).all()
        return [AuditRecord(r.id or 0, r.at, r.request_id, r.account_id, r.region, r.principal,
                            r.operation, r.key_id, r.version_id, r.result) for r in rows]

    def search(
        self,
        account_id: str,
        *,
        key_id: str | None = None,
        operation: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[AuditRecord]:
        """Events of one account, newest first, filtered; page on with `before_id` (the last id
        of the page before). `start` is inclusive, `end` exclusive."""
        self.flush()
        with Session(self._engine) as s:
            q = select(AuditEvent).where(AuditEvent.account_id == account_id)
            if key_id:
                q = q.where(AuditEvent.key_id == key_id)
            if operation:
                q = q.where(AuditEvent.operation == operation)
            if start is not None:
                q = q.where(col(AuditEvent.at) >= start)
            if end is not None:
                q = q.where(col(AuditEvent.at) < end)
            if before_id is not None:
                q = q.where(col(AuditEvent.id) < before_id)
            rows = s.exec(q.order_by(col(AuditEvent.id).desc()).limit(limit)).all()
        return [AuditRecord(r.id or 0, r.at, r.request_id, r.account_id, r.region, r.principal,
                            r.operation, r.key_id, r.version_id, r.result) for r in rows]
