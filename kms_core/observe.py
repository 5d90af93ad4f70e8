"""What happens around every KMS call: the frozen-account gate, metering and the audit log.

Service methods are marked with `@operation(name, metered=...)`. The wrapper refuses calls of
frozen accounts, then records the call's outcome: key uses and management calls go to the audit
log; metered (cryptographic) calls that succeed are counted for billing.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from kms_core.audit import AuditLog
from kms_core.blob import decode_blob
from kms_core.errors import AccountFrozen, KmsError
from kms_core.metering import Meter
from kms_core.metrics import KMS_CALLS
from kms_core.types import Caller

# Set by the HTTP layer per request so audit events name the request; otherwise one per call.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

F = TypeVar("F", bound=Callable[..., Any])


class FrozenCheck(Protocol):
    def is_frozen(self, account_id: str) -> bool: ...


class Observer:
    def __init__(self, frozen: FrozenCheck, meter: Meter, audit: AuditLog) -> None:
        self.frozen = frozen
        self.meter = meter
        self.audit = audit
        # prometheus' labels() builds and validates the label tuple on every call: a quarter
        # of what recording one data-key call cost. The children are few (operation x result).
        self._calls: dict[tuple[str, str], Any] = {}

    def admit(self, caller: Caller) -> None:
        if self.frozen.is_frozen(caller.account_id):
            # The guide's reason (FAQ 5.1): in arrears the service is frozen and all access to
            # the KMS is restricted, decryption included.
            raise AccountFrozen(
                f"account {caller.account_id} is frozen for arrears: all access to the KMS is "
                "restricted until it is thawed (欠费冻结:所有对于 KMS 的访问均被限制)"
            )

    def record(self, caller: Caller, op: str, metered: bool, key_id: str | None,
               version_id: str | None, result: str) -> None:
        at = self.audit.now()
        counter = self._calls.get((op, result))
        if counter is None:
            counter = self._calls[(op, result)] = KMS_CALLS.labels(op, result)
        counter.inc()
        if metered and result == "Success":
            self.meter.count(caller.account_id, op, at)
        self.audit.record(
            at=at, request_id=REQUEST_ID.get() or _local_request_id(),
            account_id=caller.account_id, region=caller.region,
            principal=caller.principal or caller.account_id, operation=op,
            key_id=key_id, version_id=version_id, result=result,
            immediate=not metered,
        )

    def flush(self) -> None:
        self.meter.flush()
        self.audit.flush()


_PROCESS_PREFIX = uuid.uuid4().hex[:12]
_SEQUENCE = itertools.count(1)


def _local_request_id() -> str:
    # Calls made in-process (CLI, adapters) have no HTTP request id; a uuid4 per call costs
    # more than the call's cryptography, so number them within a per-process prefix.
    return f"local-{_PROCESS_PREFIX}-{next(_SEQUENCE)}"


def _key_hint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The key a failed call was about: its key argument, or the key a blob names."""
    first = args[0] if args else kwargs.get("ref")
    if isinstance(first, str):
        return first[:256]
    if isinstance(first, bytes):
        try:
            return decode_blob(first).header.key_id
        except KmsError:
            return None
    return None


def operation(name: str, *, metered: bool) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, caller: Caller, *args: Any, **kwargs: Any) -> Any:
            obs: Observer | None = self.observer
            if obs is None:
                return fn(self, caller, *args, **kwargs)
            obs.admit(caller)
            try:
                result = fn(self, caller, *args, **kwargs)
            except KmsError as e:
                obs.record(caller, name, metered, _key_hint(args, kwargs), None, e.code)
                raise
            key_id = getattr(result, "key_id", None) or _key_hint(args, kwargs)
            obs.record(caller, name, metered, key_id, getattr(result, "version_id", None), "Success")
            return result

        return cast(F, wrapper)

    return decorate


class Flusher:
    """Flushes meter and audit buffers every `interval` seconds, and once more on stop."""

    def __init__(self, observer: Observer, interval: float = 1.0) -> None:
        self._observer = observer
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kms-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._observer.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the buffers keep what failed
                time.sleep(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._observer.flush()
