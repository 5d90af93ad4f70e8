"""Rotation policies of symmetric keys, automatic rotation on the injected clock, on-demand
rotation, and the keys that refuse rotation."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from kms_core.embedded import Kms
from kms_core.errors import (
    Disabled,
    InvalidParameter,
    InvalidState,
    NotFound,
    UnsupportedOperation,
)
from kms_core.models import Key
from kms_core.ops.rotation import next_rotation_after
from kms_core.scheduler import Scheduler
from kms_core.types import Caller
from tests.kms_core.lifecycle_support import (
    FakeClock,
    hsm_labels,
    new_caller,
    versions,
)


@pytest.fixture
def user(ckms: Kms) -> Caller:
    return new_caller(ckms, "rotation-user")


@pytest.mark.parametrize("days", [7, 30, 90, 180, 365, 730])
def test_rotation_period_presets_and_custom_range(
    ckms: Kms, user: Caller, clock: FakeClock, days: int
) -> None:
    svc = ckms.service
    key = svc.create_key(user).key_id
    st = svc.enable_key_rotation(user, key, days)
    assert (st.enabled, st.period_days, st.next_rotation_at) == (
        True, days, clock() + timedelta(days=days))
    m = svc.describe_key(user, key)
    assert (m.rotation_period_days, m.next_rotation_at) == (days, clock() + timedelta(days=days))


@pytest.mark.parametrize("days", [0, 6, 731, -30, "30", 30.0, True, None])
def test_rotation_period_out_of_range_is_refused_and_changes_nothing(
    ckms: Kms, user: Caller, days: object
) -> None:
    svc = ckms.service
    key = svc.create_key(user).key_id
    with pytest.raises(InvalidParameter, match="7-730"):
        svc.enable_key_rotation(user, key, days)  # type: ignore[arg-type]
    assert svc.get_key_rotation_status(user, key).enabled is False
    before = len(svc.list_keys(user).items)
    with pytest.raises(InvalidParameter):
        svc.create_key(user, rotation_period_days=days if days is not None else 5)  # type: ignore[arg-type]
    assert len(svc.list_keys(user).items) == before


def test_create_key_with_rotation_period(ckms: Kms, user: Caller, clock: FakeClock) -> None:
    m = ckms.service.create_key(user, rotation_period_days=90, alias="rotating")
    assert m.rotation_period_days == 90 and m.next_rotation_at == clock() + timedelta(days=90)
    assert m.aliases == ("rotating",)


def test_change_counts_from_the_last_rotation_and_cancel_stops_it(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user).key_id
    t0 = clock()
    svc.enable_key_rotation(user, key, 180)
    clock.advance(days=10)
    # Changed to 30 days: next rotation is 30 days after the policy was set, not after now.
    assert svc.enable_key_rotation(user, key, 30).next_rotation_at == t0 + timedelta(days=30)
    clock.advance(days=10)
    # Changed to 7 days: that point (t0 + 7) has passed, so the rotation is due now.
    assert svc.enable_key_rotation(user, key, 7).next_rotation_at == clock()
    st = svc.disable_key_rotation(user, key)
    assert (st.enabled, st.period_days, st.next_rotation_at) == (False, None, None)
    m = svc.describe_key(user, key)
    assert (m.rotation_period_days, m.next_rotation_at) == (None, None)
    clock.advance(days=1000)
    assert Scheduler(ckms).run_once().rotated == []
    assert len(versions(ckms, key)) == 1


@pytest.mark.parametrize("protection", ["SOFTWARE", "HSM"])
def test_automatic_rotation_on_the_clock_keeps_old_versions_decrypting(
    ckms: Kms, user: Caller, clock: FakeClock, protection: str
) -> None:
    svc = ckms.service
    created = svc.create_key(user, protection=protection, rotation_period_days=30)
    key, v1 = created.key_id, created.primary_version_id
    t0 = clock()
    old = svc.encrypt(user, key, b"made by v1")
    sched = Scheduler(ckms)

    clock.advance(days=30, seconds=-1)
    assert sched.run_once().rotated == []
    clock.advance(seconds=1)
    report = sched.run_once()
    assert [(r.key_id, r.rotation_type) for r in report.rotated] == [(key, "AUTOMATIC")]
    v2 = report.rotated[0].version_id
    assert sched.run_once().rotated == []  # exactly once
    m = svc.describe_key(user, key)
    assert m.primary_version_id == v2 != v1
    assert m.next_rotation_at == t0 + timedelta(days=60)

    new = svc.encrypt(user, key, b"made by v2")
    assert new.version_id == v2
    assert svc.decrypt(user, old.ciphertext_blob).plaintext == b"made by v1"
    assert svc.decrypt(user, old.ciphertext_blob).version_id == v1
    assert svc.decrypt(user, new.ciphertext_blob).plaintext == b"made by v2"
    if protection == "HSM":
        assert {f"ssegw-key-{v1}", f"ssegw-key-{v2}"} <= hsm_labels(ckms)

    clock.advance(days=30)
    assert len(sched.run_once().rotated) == 1
    rotations = svc.list_key_rotations(user, key).items
    assert [r.rotation_type for r in rotations] == ["AUTOMATIC", "AUTOMATIC"]
    assert rotations[0].version_id == v2
    assert [v.id for v in versions(ckms, key)][0] == v1 and len(versions(ckms, key)) == 3
    # Rotation never disables old versions.
    assert svc.decrypt(user, old.ciphertext_blob).plaintext == b"made by v1"


def test_a_scheduler_down_for_several_periods_rotates_once(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user, rotation_period_days=30).key_id
    t0 = clock()
    clock.advance(days=100)
    assert len(Scheduler(ckms).run_once().rotated) == 1
    assert Scheduler(ckms).run_once().rotated == []
    assert svc.describe_key(user, key).next_rotation_at == t0 + timedelta(days=120)


def test_next_rotation_grid() -> None:
    due = FakeClock().now
    assert next_rotation_after(due, 30, due) == due + timedelta(days=30)
    assert next_rotation_after(due, 30, due + timedelta(days=30)) == due + timedelta(days=60)
    assert next_rotation_after(due, 7, due + timedelta(days=50)) == due + timedelta(days=56)


def test_disabled_and_pending_deletion_keys_wait_for_rotation(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user, rotation_period_days=7).key_id
    svc.disable_key(user, key)
    clock.advance(days=8)
    sched = Scheduler(ckms)
    assert sched.run_once().rotated == []
    svc.enable_key(user, key)
    assert [r.key_id for r in sched.run_once().rotated] == [key]
    svc.schedule_key_deletion(user, key, 30)
    clock.advance(days=8)
    assert sched.run_once().rotated == []
    with pytest.raises(InvalidState):
        svc.enable_key_rotation(user, key, 30)
    # Cancelling the policy is allowed in any state.
    assert svc.disable_key_rotation(user, key).enabled is False


def test_on_demand_rotation(ckms: Kms, user: Caller, clock: FakeClock) -> None:
    svc = ckms.service
    created = svc.create_key(user, rotation_period_days=90)
    key = created.key_id
    before = svc.get_key_rotation_status(user, key)
    old = svc.encrypt(user, key, b"v1")
    info = svc.rotate_key_on_demand(user, key)
    assert info.rotation_type == "ON_DEMAND" and info.key_id == key
    assert svc.describe_key(user, key).primary_version_id == info.version_id
    assert svc.get_key_rotation_status(user, key) == before  # schedule unchanged
    assert svc.encrypt(user, key, b"v2").version_id == info.version_id
    assert svc.decrypt(user, old.ciphertext_blob).plaintext == b"v1"
    # Also for keys without a policy; and by alias.
    svc.create_alias(user, "plain", svc.create_key(user).key_id)
    assert svc.rotate_key_on_demand(user, "alias/plain").rotation_type == "ON_DEMAND"
    # Only Enabled keys rotate on demand.
    svc.disable_key(user, key)
    with pytest.raises(Disabled):
        svc.rotate_key_on_demand(user, key)
    page = svc.list_key_rotations(user, key, limit=1)
    assert [r.version_id for r in page.items] == [info.version_id] and page.next_marker is None


def test_list_rotations_paginates(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    key = svc.create_key(user).key_id
    made = [svc.rotate_key_on_demand(user, key).version_id for _ in range(5)]
    seen: list[str] = []
    marker: str | None = None
    while True:
        page = svc.list_key_rotations(user, key, limit=2, marker=marker)
        seen += [r.version_id for r in page.items]
        if page.next_marker is None:
            break
        marker = page.next_marker
    assert seen == made


def test_default_keys_cannot_be_rotated_by_the_user(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    default = svc.default_key(user, "oss").id
    for call in (
        lambda: svc.enable_key_rotation(user, default, 30),
        lambda: svc.enable_key_rotation(user, "alias_oss", 30),
        lambda: svc.rotate_key_on_demand(user, default),
        lambda: svc.disable_key_rotation(user, default),
    ):
        with pytest.raises(UnsupportedOperation, match="cannot be rotated by the user"):
            call()
    assert svc.get_key_rotation_status(user, default).enabled is False
    assert len(versions(ckms, default)) == 1


def test_asymmetric_keys_refuse_a_rotation_policy(ckms: Kms, user: Caller) -> None:
    # Inserted directly so the test does not depend on how asymmetric keys are created.
    svc = ckms.service
    key_id = str(uuid.uuid4())
    with Session(ckms.engine) as s:
        s.add(Key(id=key_id, account_id=user.account_id, region=user.region, spec="RSA_2048",
                  usage="SIGN_VERIFY", protection="SOFTWARE", state="Enabled"))
        s.commit()
    with pytest.raises(UnsupportedOperation, match="RSA_2048"):
        svc.enable_key_rotation(user, key_id, 30)
    with pytest.raises(UnsupportedOperation, match="RSA_2048"):
        svc.rotate_key_on_demand(user, key_id)


def test_rotation_of_other_accounts_keys_is_not_found(ckms: Kms, user: Caller) -> None:
    key = ckms.service.create_key(user).key_id
    other = new_caller(ckms, "someone-else")
    with pytest.raises(NotFound):
        ckms.service.enable_key_rotation(other, key, 30)
    with pytest.raises(NotFound):
        ckms.service.rotate_key_on_demand(other, key)
    with pytest.raises(NotFound):
        ckms.service.list_key_rotations(other, key)


def test_rotation_commands_from_the_terminal(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def ssegw(*args: str, ok: bool = True) -> dict[str, Any]:
        p = subprocess.run([sys.executable, "-m", "gateway.cli", *args,
                            "--data-dir", str(tmp_path / "var")],
                           capture_output=True, text=True, env=env, timeout=120)
        assert (p.returncode == 0) is ok, p.stderr
        out: dict[str, Any] = json.loads(p.stdout if ok else p.stderr)
        return out

    ssegw("account", "create", "--name", "rot")
    key = ssegw("kms", "create-key", "--rotation-days", "90", "--account", "rot")
    kid = str(key["cmkUuid"])
    assert key["rotationPeriodInDays"] == 90 and key["nextRotationDate"]
    st = ssegw("kms", "set-rotation", kid, "--days", "30", "--account", "rot")
    assert st["keyRotationEnabled"] is True and st["rotationPeriodInDays"] == 30
    assert ssegw("kms", "get-rotation-status", kid, "--account", "rot") == st
    assert ssegw("kms", "set-rotation", kid, "--days", "731", "--account", "rot",
                 ok=False)["errorCode"] == "InvalidParameter"
    r = ssegw("kms", "rotate-key", kid, "--account", "rot")
    assert r["rotationType"] == "ON_DEMAND"
    assert ssegw("kms", "describe-key", kid, "--account", "rot")["primaryKeyVersionId"] == \
        r["keyVersionId"]
    listed = ssegw("kms", "list-rotations", kid, "--account", "rot")
    assert [x["keyVersionId"] for x in listed["rotations"]] == [r["keyVersionId"]]
    off = ssegw("kms", "cancel-rotation", kid, "--account", "rot")
    assert off["keyRotationEnabled"] is False and off["nextRotationDate"] is None
