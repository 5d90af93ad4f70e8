"""Key-hosting metering and the month's bill (FAQ 5.1), over simulated days with the test clock.

The FAQ's rules: every user master key counts each day it exists, disabled too; default keys
are free; a key pending deletion stops counting from the day its deletion was scheduled and
counts again if the deletion is cancelled; API calls count the cryptographic operations only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kms_core import billing
from kms_core.embedded import Kms
from kms_core.errors import InvalidParameter
from kms_core.keystore.hsm import HsmConfig
from kms_core.scheduler import Scheduler
from kms_core.types import Caller
from tests.kms_core.lifecycle_support import FakeClock, close_kms, open_clocked_kms

ROOT = Path(__file__).parents[2]
MARCH = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MARCH)


@pytest.fixture
def ckms(tmp_path: Path, hsm_config: HsmConfig, clock: FakeClock) -> Iterator[Kms]:
    k = open_clocked_kms(tmp_path / "kms", hsm_config, clock)
    yield k
    close_kms(k)


def on_day(clock: FakeClock, day: int, hour: int = 10) -> None:
    clock.now = MARCH.replace(day=day, hour=hour)


def daily(k: Kms, account: str, region: str = "cn-east-1", month: str = "2027-03") -> dict[int, int]:
    report = billing.usage_report(k, account, month)
    days = report["keyHosting"]["byRegion"].get(region, {"daily": {}})["daily"]
    return {int(d[-2:]): n for d, n in days.items()}


def expect(ranges: list[tuple[int, int, int]]) -> dict[int, int]:
    """{day: keys} from (first day, last day, keys) runs; days with no key are absent."""
    return {d: n for first, last, n in ranges for d in range(first, last + 1) if n}


def test_a_month_day_by_day(ckms: Kms, clock: FakeClock) -> None:
    info, creds = ckms.accounts.create_account("billed")
    east = Caller(info.account_id, "cn-east-1", creds.access_key_id)
    xian = Caller(info.account_id, "cn-xian-5", creds.access_key_id)
    svc = ckms.service
    # Day 1: two user keys, a key in another pool, and a default key (free).
    a = svc.create_key(east).key_id
    b = svc.create_key(east, spec="RSA_2048", usage="Sign/Verify").key_id
    svc.create_key(xian)
    svc.default_key(east, "ecs")
    assert daily(ckms, info.account_id) == {1: 2}
    on_day(clock, 3)
    svc.disable_key(east, a)  # disabled keys are still billed
    on_day(clock, 5)
    svc.schedule_key_deletion(east, b, 7)  # not billed from day 5 on
    on_day(clock, 6)
    assert daily(ckms, info.account_id) == expect([(1, 4, 2), (5, 6, 1)])
    on_day(clock, 8, hour=23)
    svc.cancel_key_deletion(east, b)  # billed again from day 8
    on_day(clock, 10)
    svc.schedule_key_deletion(east, a, 7)
    on_day(clock, 17, hour=11)
    report = Scheduler(ckms).run_once()
    assert report.destroyed == [a]  # deleted for good: never billed again
    on_day(clock, 20)
    d = svc.create_key(east).key_id
    svc.schedule_key_deletion(east, d, 7)  # created and scheduled the same day: never billed
    e = svc.create_key(east).key_id
    svc.schedule_key_deletion(east, e, 7)
    svc.cancel_key_deletion(east, e)  # scheduled and cancelled the same day: billed that day
    svc.encrypt(east, e, b"billed call")
    svc.get_public_key(east, b, svc.list_key_versions(east, b).items[0].version_id)
    on_day(clock, 31, hour=23)
    assert daily(ckms, info.account_id) == expect(
        [(1, 4, 2), (5, 7, 1), (8, 9, 2), (10, 19, 1), (20, 31, 2)])
    assert daily(ckms, info.account_id, "cn-xian-5") == expect([(1, 31, 1)])
    # Next month: the same keys go on being billed; March is unchanged.
    on_day(clock, 31, hour=23)
    clock.now = datetime(2027, 4, 2, 8, tzinfo=UTC)
    assert daily(ckms, info.account_id, month="2027-04") == {1: 2, 2: 2}
    assert sum(daily(ckms, info.account_id).values()) == 4 * 2 + 3 + 2 * 2 + 10 + 12 * 2

    # The bill: key-days at the configured price plus the cryptographic calls.
    (ckms.config.data_dir / "prices.json").write_text(json.dumps(
        {"currency": "CNY", "keyHostingPerKeyDay": "0.5", "apiCallsPer10k": "100"}))
    march = billing.usage_report(ckms, info.account_id, "2027-03")
    assert march["keyHosting"]["keyDays"] == 49 + 31
    assert march["usage"] == {"encrypt": 1, "getPublicKey": 1} and march["total"] == 2
    assert march["bill"] == {
        "currency": "CNY",
        "keyHosting": {"keyDays": 80, "unitPrice": "0.5", "unit": "key-day", "amount": "40.00"},
        "apiCalls": {"calls": 2, "unitPrice": "100", "unit": "10000 calls", "amount": "0.02"},
        "total": "40.02",
    }


def test_default_keys_alone_cost_nothing(ckms: Kms) -> None:
    info, creds = ckms.accounts.create_account("defaults-only")
    caller = Caller(info.account_id, "cn-east-1", creds.access_key_id)
    for product in ("oss", "ecs", "sfs"):
        ckms.service.generate_data_key(caller, ckms.service.default_key(caller, product).id)
    report = billing.usage_report(ckms, info.account_id)
    assert report["keyHosting"] == {"keyDays": 0, "byRegion": {}}
    assert report["total"] == 3 and report["bill"]["keyHosting"]["amount"] == "0.00"


def test_a_bad_month_is_refused(ckms: Kms) -> None:
    info, _ = ckms.accounts.create_account("bad-month")
    for month in ("2027-13", "2027-3", "march"):
        with pytest.raises(InvalidParameter):
            billing.usage_report(ckms, info.account_id, month)


def test_account_usage_from_the_terminal(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "gateway.cli"]
    data = ["--data-dir", str(tmp_path / "var")]

    def run(*args: str) -> dict[str, object]:
        p = subprocess.run([*base, *args, *data], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        out: dict[str, object] = json.loads(p.stdout)
        return out

    run("account", "create", "--name", "cli-billed")
    key = run("kms", "create-key", "--account", "cli-billed")["cmkUuid"]
    assert isinstance(key, str)
    run("kms", "encrypt", key, "--plaintext", "x", "--account", "cli-billed")
    usage = run("account", "usage", "cli-billed")
    today = datetime.now(UTC).date().isoformat()
    assert usage["keyHosting"] == {"keyDays": 1, "byRegion": {
        "cn-east-1": {"keyDays": 1, "daily": {today: 1}}}}
    assert usage["usage"] == {"encrypt": 1}
    bill = usage["bill"]
    assert isinstance(bill, dict) and set(bill) == {"currency", "keyHosting", "apiCalls", "total"}
