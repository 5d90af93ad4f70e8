"""The KMS scheduler: carries out what is due on the clock.

* rotations of keys with a rotation policy whose next rotation time has come;
* destruction of keys whose deletion window has ended (material gone from the key store and
  the HSM, the key a tombstone that every call reports as NotFound);
* expiry of imported key material (the key returns to PendingImport, metadata kept);
* a sweep of material a crashed process left to destroy, and old import tokens.

`Scheduler(kms).run_once()` does one pass and reports what it did; `start()`/`stop()` run
passes on a background thread (what `ssegw serve` uses). Any number of schedulers may run on
one database, in one process or many: every action is claimed in the database first (see
`kms_core.ops.due` and `kms_core.ops.trash`), so each happens once. Time comes from the
service's injectable clock; leases use the wall clock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, cast

from kms_core.models import utcnow
from kms_core.types import RotationInfo

if TYPE_CHECKING:
    from kms_core.embedded import Kms
    from kms_core.service import KmsService

log = logging.getLogger("kms_core.scheduler")

DEFAULT_INTERVAL = 60.0
DEFAULT_BATCH = 100
# Bounds one pass, so a pass ends even when work keeps arriving or an item keeps failing.
MAX_BATCHES_PER_PASS = 50


@dataclass
class SchedulerReport:
    """What one pass did. Ids are key ids; errors are one line each, without secrets."""

    rotated: list[RotationInfo] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    material_destroyed: int = 0
    tokens_purged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def actions(self) -> int:
        return len(self.rotated) + len(self.destroyed) + len(self.expired)


def _owner_id() -> str:
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Scheduler:
    def __init__(
        self,
        kms: Kms | KmsService,
        *,
        batch_size: int = DEFAULT_BATCH,
        lease_clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
    ) -> None:
        # Either the embedded Kms bundle or a bare service (duck-typed: no import cycle).
        self.service = cast("KmsService", getattr(kms, "service", kms))
        self.owner = owner or _owner_id()
        self._batch = batch_size
        self._lease_clock = lease_clock
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._passes = 0
        self._cond = threading.Condition()
        self._interval = DEFAULT_INTERVAL
        self.last_report: SchedulerReport | None = None

    # ---------------------------------------------------------------- one pass

    def run_once(self) -> SchedulerReport:
        """Carry out everything that is due now; safe to call from several places at once."""
        report = SchedulerReport()
        with self._run_lock:
            self._drain("rotation", self._rotations, report)
            self._drain("deletion", self._deletions, report)
            self._drain("expiry", self._expiries, report)
            self._step("trash sweep", report, self._sweep)
            self._step("token purge", report, self._purge)
        self.last_report = report
        if report.actions or report.errors:
            log.info("scheduler pass: %d rotated, %d destroyed, %d expired, %d errors",
                     len(report.rotated), len(report.destroyed), len(report.expired),
                     len(report.errors))
        return report

    def _drain(
        self,
        kind: str,
        batch: Callable[[SchedulerReport, set[str]], tuple[int, int]],
        report: SchedulerReport,
    ) -> None:
        failed: set[str] = set()
        for _ in range(MAX_BATCHES_PER_PASS):
            seen, done = batch(report, failed)
            # Stop when nothing more is due, or when what is due only keeps failing or losing
            # races (another scheduler holds it): the next pass looks again.
            if seen < self._batch or done == 0:
                return
        log.warning("scheduler: %s work left after %d batches", kind, MAX_BATCHES_PER_PASS)

    def _each(
        self,
        kind: str,
        ids: list[str],
        failed: set[str],
        report: SchedulerReport,
        act: Callable[[str], bool],
    ) -> int:
        done = 0
        for key_id in ids:
            if key_id in failed:
                continue
            try:
                if act(key_id):
                    done += 1
            except Exception as exc:  # noqa: BLE001 - one bad key must not stop the others
                failed.add(key_id)
                msg = getattr(exc, "message", None) or type(exc).__name__
                report.errors.append(f"{kind} of key {key_id}: {type(exc).__name__}: {msg}")
                log.warning("scheduler: %s of key %s failed: %s", kind, key_id,
                            type(exc).__name__)
        return done

    def _rotations(self, report: SchedulerReport, failed: set[str]) -> tuple[int, int]:
        wall = self._lease_clock()
        ids = self.service.due_rotations(wall, self._batch)

        def act(key_id: str) -> bool:
            info = self.service.run_due_rotation(key_id, self.owner, self._lease_clock())
            if info is not None:
                report.rotated.append(info)
            return info is not None

        return len(ids), self._each("rotation", ids, failed, report, act)

    def _deletions(self, report: SchedulerReport, failed: set[str]) -> tuple[int, int]:
        ids = self.service.due_deletions(self._batch)

        def act(key_id: str) -> bool:
            done = self.service.run_due_deletion(key_id, self.owner, self._lease_clock())
            if done:
                report.destroyed.append(key_id)
            return done

        return len(ids), self._each("deletion", ids, failed, report, act)

    def _expiries(self, report: SchedulerReport, failed: set[str]) -> tuple[int, int]:
        ids = self.service.due_expiries(self._batch)

        def act(key_id: str) -> bool:
            done = self.service.run_due_expiry(key_id, self.owner, self._lease_clock())
            if done:
                report.expired.append(key_id)
            return done

        return len(ids), self._each("expiry", ids, failed, report, act)

    def _sweep(self, report: SchedulerReport) -> None:
        report.material_destroyed += self.service.run_trash_sweep(
            self.owner, self._lease_clock(), self._batch
        )

    def _purge(self, report: SchedulerReport) -> None:
        report.tokens_purged += self.service.purge_import_tokens()

    @staticmethod
    def _step(kind: str, report: SchedulerReport, fn: Callable[[SchedulerReport], None]) -> None:
        try:
            fn(report)
        except Exception as exc:  # noqa: BLE001 - housekeeping failing must not stop a pass
            report.errors.append(f"{kind}: {type(exc).__name__}")
            log.warning("scheduler: %s failed: %s", kind, type(exc).__name__)

    # ------------------------------------------------------- background thread

    def start(self, interval: float = DEFAULT_INTERVAL) -> None:
        """Run a pass now and then every `interval` seconds on a daemon thread, until stop()."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        if self._thread is not None and self._thread.is_alive():
            return
        self._interval = interval
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._loop, name="kms-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread after the pass in progress (if any) finishes."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def trigger(self) -> None:
        """Ask the background thread for a pass now instead of at the next interval."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def passes(self) -> int:
        """Passes the background thread has completed."""
        return self._passes

    def wait_for_passes(self, count: int, timeout: float | None = None) -> bool:
        """Block until the background thread has completed `count` passes in total."""
        with self._cond:
            return self._cond.wait_for(lambda: self._passes >= count, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the thread must outlive a bad pass
                log.exception("scheduler pass failed")
            with self._cond:
                self._passes += 1
                self._cond.notify_all()
            self._wake.wait(self._interval)
            self._wake.clear()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_scheduler(kms: Kms | KmsService, interval: float = DEFAULT_INTERVAL) -> Scheduler:
    """Start a background scheduler (for `ssegw serve`); call `.stop()` on shutdown."""
    scheduler = Scheduler(kms)
    scheduler.start(interval)
    return scheduler
