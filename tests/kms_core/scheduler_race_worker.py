"""A scheduler process for the race test: opens the shared data dir at a fixed clock, says
"ready", waits for "go" on stdin, runs passes, and prints what it did as one JSON line.

So that the two processes really contend for the same work (and not one finishing before the
other looks), each stops once after listing what is due in each category ("listed <kind>")
until the test says "go": by then both hold the same list of due keys, and both try to claim
every one of them. Every attempt is counted.

    python -m tests.kms_core.scheduler_race_worker '<json config>'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kms_core.embedded import KmsConfig, open_kms
from kms_core.keystore.hsm import HsmConfig
from kms_core.scheduler import Scheduler


def main() -> int:
    cfg = json.loads(sys.argv[1])
    now = datetime.fromisoformat(cfg["now"])
    hsm = HsmConfig(cfg["hsm"]["module"], cfg["hsm"]["token_label"], cfg["hsm"]["pin"],
                    root_label=cfg["hsm"]["root_label"])
    kms = open_kms(KmsConfig(data_dir=Path(cfg["data_dir"]), db_url=cfg.get("db_url"), hsm=hsm,
                             clock=lambda: now))
    # Open the HSM before the start line, so both processes race on the work, not on start-up.
    from kms_core.specs import Protection

    kms.service.keystore(Protection.HSM)
    scheduler = Scheduler(kms, batch_size=cfg.get("batch", 100))
    svc = kms.service
    attempts: dict[str, int] = {}

    def listing(kind: str, fn: Callable[..., list[str]]) -> Callable[..., list[str]]:
        waited = False

        def listed(*args: Any) -> list[str]:
            nonlocal waited
            ids = fn(*args)
            if not waited:
                waited = True
                print(f"listed {kind} {len(ids)}", flush=True)
                sys.stdin.readline()
            return ids

        return listed

    def counting(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def attempt(*args: Any) -> Any:
            attempts[kind] = attempts.get(kind, 0) + 1
            return fn(*args)

        return attempt

    # Instance attributes shadow the service's methods for this process only.
    for kind in ("rotations", "deletions", "expiries"):
        setattr(svc, f"due_{kind}", listing(kind, getattr(svc, f"due_{kind}")))
    for kind in ("rotation", "deletion", "expiry"):
        setattr(svc, f"run_due_{kind}", counting(kind, getattr(svc, f"run_due_{kind}")))
    print("ready", flush=True)
    sys.stdin.readline()
    rotated: list[str] = []
    destroyed: list[str] = []
    expired: list[str] = []
    errors: list[str] = []
    for _ in range(cfg.get("passes", 3)):
        r = scheduler.run_once()
        rotated += [x.key_id for x in r.rotated]
        destroyed += r.destroyed
        expired += r.expired
        errors += r.errors
    print(json.dumps({"owner": scheduler.owner, "rotated": rotated, "destroyed": destroyed,
                      "expired": expired, "errors": errors, "attempts": attempts}), flush=True)
    kms.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
