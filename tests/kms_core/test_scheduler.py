"""The scheduler: destruction after the deletion window (key store and HSM), leases, crash
recovery, the background thread, and two scheduler processes racing on one SQLite database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from kms_core.embedded import Kms
from kms_core.errors import KeyUnavailable, NotFound
from kms_core.keystore.hsm import HsmConfig, HsmKeyStore
from kms_core.models import Alias, Key, KeyRotation, MaterialTrash, utcnow
from kms_core.scheduler import Scheduler, start_scheduler
from kms_core.specs import KeySpec, Protection
from kms_core.types import Caller
from tests.kms_core.lifecycle_support import (
    FakeClock,
    close_kms,
    hsm_labels,
    key_row,
    new_caller,
    open_clocked_kms,
    version_labels,
    versions,
    wrap_material,
)

ROOT = Path(__file__).parents[2]


@pytest.fixture
def user(ckms: Kms) -> Caller:
    return new_caller(ckms, "scheduler-user")


@pytest.mark.parametrize("protection", ["SOFTWARE", "HSM"])
def test_key_is_destroyed_when_the_deletion_window_ends(
    ckms: Kms, user: Caller, clock: FakeClock, protection: str
) -> None:
    svc = ckms.service
    key = svc.create_key(user, protection=protection, alias="doomed").key_id
    svc.rotate_key_on_demand(user, key)  # two versions, two HSM objects at the HSM level
    blob = svc.encrypt(user, key, b"last words").ciphertext_blob
    labels = version_labels(ckms, key)
    if protection == "HSM":
        assert labels <= hsm_labels(ckms)
    svc.schedule_key_deletion(user, key, 7)
    sched = Scheduler(ckms)

    clock.advance(days=7, seconds=-1)
    assert sched.run_once().destroyed == []
    assert svc.cancel_key_deletion(user, key).state == "Enabled"  # still possible here
    svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=7)
    report = sched.run_once()
    assert report.destroyed == [key] and report.errors == []
    assert sched.run_once().destroyed == []  # exactly once

    # Metadata says the key no longer exists, for every call.
    with pytest.raises(NotFound):
        svc.decrypt(user, blob)
    with pytest.raises(NotFound):
        svc.describe_key(user, key)
    with pytest.raises(NotFound):
        svc.cancel_key_deletion(user, key)
    with pytest.raises(NotFound):
        svc.encrypt(user, "alias/doomed", b"x")
    assert key not in [m.key_id for m in svc.list_keys(user).items]
    # Material is gone: no stored reference, no trash left, and no object on the token.
    assert all(v.stored is None for v in versions(ckms, key))
    assert key_row(ckms, key).destroyed_at == clock()
    with Session(ckms.engine) as s:
        assert s.exec(select(MaterialTrash)).all() == []
        assert s.exec(select(Alias).where(Alias.key_id == key)).all() == []
    if protection == "HSM":
        assert not labels & hsm_labels(ckms)
    # The alias name is free again.
    svc.create_alias(user, "doomed", svc.create_key(user).key_id)


def test_cancel_deletion_returns_the_key_to_enabled_and_the_scheduler_leaves_it(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user).key_id
    svc.disable_key(user, key)
    svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=3)
    m = svc.cancel_key_deletion(user, key)
    assert (m.state, m.deletion_date) == ("Enabled", None)
    clock.advance(days=30)
    assert Scheduler(ckms).run_once().destroyed == []
    assert svc.decrypt(user, svc.encrypt(user, key, b"ok").ciphertext_blob).plaintext == b"ok"


def test_a_lease_held_by_another_scheduler_blocks_until_it_runs_out(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user, rotation_period_days=7).key_id
    wall = utcnow()
    with Session(ckms.engine) as s:
        s.exec(update(Key).where(Key.id == key)  # type: ignore[arg-type]
               .values(lease_owner="other-process", lease_until=wall + timedelta(minutes=5)))
        s.commit()
    clock.advance(days=7)
    assert Scheduler(ckms).run_once().rotated == []
    # The other process died; once its lease has run out, the work is taken over.
    later = Scheduler(ckms, lease_clock=lambda: wall + timedelta(minutes=6))
    assert [r.key_id for r in later.run_once().rotated] == [key]
    row = key_row(ckms, key)
    assert (row.lease_owner, row.lease_until) == (None, None)


def test_material_left_by_a_crash_is_swept(ckms: Kms, user: Caller) -> None:
    """A process that unlinked material and died before destroying it leaves a trash row."""
    store = ckms.service.keystore(Protection.HSM)
    assert isinstance(store, HsmKeyStore)
    version_id = str(uuid.uuid4())
    stored = store.generate_symmetric(KeySpec.AES_256, version_id)
    label = f"ssegw-key-{version_id}"
    assert label in hsm_labels(ckms)
    wall = utcnow()
    with Session(ckms.engine) as s:
        s.add(MaterialTrash(id=str(uuid.uuid4()), key_id=str(uuid.uuid4()), version_id=version_id,
                            spec="AES_256", protection="HSM", stored=stored,
                            lease_owner="crashed", lease_until=wall - timedelta(seconds=1)))
        s.commit()
    report = Scheduler(ckms).run_once()
    assert report.material_destroyed == 1 and report.errors == []
    assert label not in hsm_labels(ckms)
    with Session(ckms.engine) as s:
        assert s.exec(select(MaterialTrash)).all() == []


def test_hsm_failure_during_destruction_is_retried(
    ckms: Kms, user: Caller, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = ckms.service
    key = svc.create_key(user, protection="HSM").key_id
    labels = version_labels(ckms, key)
    svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=7)
    real_destroy = HsmKeyStore.destroy

    def broken(self: HsmKeyStore, spec: KeySpec, version_id: str, stored: bytes) -> None:
        raise KeyUnavailable("HSM operation failed: injected")

    monkeypatch.setattr(HsmKeyStore, "destroy", broken)
    sched = Scheduler(ckms)
    first = sched.run_once()
    # The key is destroyed as far as every caller is concerned; its material waits in the trash.
    assert first.destroyed == [key] and first.material_destroyed == 0
    with pytest.raises(NotFound):
        svc.describe_key(user, key)
    assert labels <= hsm_labels(ckms)
    monkeypatch.setattr(HsmKeyStore, "destroy", real_destroy)
    second = sched.run_once()
    assert second.destroyed == [] and second.material_destroyed == 1
    assert not labels & hsm_labels(ckms)


def test_background_thread_runs_passes_until_stopped(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user, rotation_period_days=7).key_id
    clock.advance(days=7)
    sched = start_scheduler(ckms, interval=3600)
    try:
        assert sched.running
        assert sched.wait_for_passes(1, timeout=60)
        assert len(svc.list_key_rotations(user, key).items) == 1
        clock.advance(days=7)
        sched.trigger()
        assert sched.wait_for_passes(2, timeout=60)
        assert len(svc.list_key_rotations(user, key).items) == 2
    finally:
        sched.stop()
    assert not sched.running
    with pytest.raises(ValueError):
        sched.start(interval=0)


def test_one_failing_key_does_not_stop_the_others(
    ckms: Kms, user: Caller, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = ckms.service
    hsm_key = svc.create_key(user, protection="HSM", rotation_period_days=7).key_id
    sw_key = svc.create_key(user, protection="SOFTWARE", rotation_period_days=7).key_id
    clock.advance(days=7)

    def broken(self: HsmKeyStore, spec: KeySpec, version_id: str) -> bytes:
        raise KeyUnavailable("HSM operation failed: injected")

    monkeypatch.setattr(HsmKeyStore, "generate_symmetric", broken)
    report = Scheduler(ckms).run_once()
    assert [r.key_id for r in report.rotated] == [sw_key]
    assert len(report.errors) == 1 and hsm_key in report.errors[0]
    # The failed key's lease was released: the next pass (HSM back) rotates it.
    assert key_row(ckms, hsm_key).lease_owner is None
    monkeypatch.undo()
    assert [r.key_id for r in Scheduler(ckms).run_once().rotated] == [hsm_key]


def test_two_scheduler_processes_on_one_database_do_each_action_once(
    tmp_path: Path, hsm_config: HsmConfig, clock: FakeClock, kms_db_url: str | None
) -> None:
    data_dir = tmp_path / "shared"
    k = open_clocked_kms(data_dir, hsm_config, clock, kms_db_url)
    try:
        svc = k.service
        user = new_caller(k, "racer")
        rotating = [svc.create_key(user, rotation_period_days=30).key_id for _ in range(20)]
        rotating += [svc.create_key(user, protection="HSM", rotation_period_days=30).key_id
                     for _ in range(3)]
        deleting = [svc.create_key(user).key_id for _ in range(12)]
        deleting += [svc.create_key(user, protection="HSM").key_id for _ in range(3)]
        hsm_doomed: set[str] = set()
        for key in deleting:
            hsm_doomed |= version_labels(k, key)
            svc.schedule_key_deletion(user, key, 7)
        expiring = []
        for _ in range(8):
            key = svc.create_key(user, origin="EXTERNAL").key_id
            params = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_1")
            svc.import_key_material(user, key, wrap_material(params, os.urandom(32)), params.import_token,
                                    expires_at=clock() + timedelta(days=1))
            expiring.append(key)
        due_at = clock() + timedelta(days=30)
    finally:
        close_kms(k)

    cfg = json.dumps({
        "data_dir": str(data_dir), "db_url": kms_db_url, "now": due_at.isoformat(), "passes": 2,
        "hsm": {"module": hsm_config.module, "token_label": hsm_config.token_label,
                "pin": hsm_config.pin, "root_label": hsm_config.root_label},
    })
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.kms_core.scheduler_race_worker", cfg],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
        for _ in range(2)
    ]
    def both_say(expected: str) -> list[str]:
        lines = []
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            assert line.startswith(expected), (line, p.stderr.read() if p.stderr else "")
            lines.append(line)
        for p in procs:  # both are waiting: release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return lines

    both_say("ready")
    # Each process lists what is due before either claims anything, so both go for every key.
    assert both_say("listed rotations") == [f"listed rotations {len(rotating)}"] * 2
    both_say("listed deletions")
    both_say("listed expiries")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert [r["errors"] for r in results] == [[], []]
    # Both processes tried every due key; each key was done by exactly one of them.
    for r in results:
        assert r["attempts"]["rotation"] >= len(rotating)
        assert r["attempts"]["deletion"] >= len(deleting)
        assert r["attempts"]["expiry"] >= len(expiring)
    for kind, expected in (("rotated", rotating), ("destroyed", deleting),
                           ("expired", expiring)):
        done = Counter(x for r in results for x in r[kind])
        assert set(done) == set(expected), kind
        assert set(done.values()) == {1}, f"{kind} done twice: {done}"

    # And the database agrees: one rotation per key, every deleted key destroyed once.
    clock.now = due_at
    k = open_clocked_kms(data_dir, hsm_config, clock, kms_db_url)
    try:
        with Session(k.engine) as s:
            per_key = Counter(s.exec(select(KeyRotation.key_id)).all())
        assert per_key == Counter({key: 1 for key in rotating})
        for key in rotating:
            assert len(versions(k, key)) == 2
        for key in deleting:
            row = key_row(k, key)
            assert row.destroyed_at is not None and row.lease_owner is None
            assert all(v.stored is None for v in versions(k, key))
        for key in expiring:
            assert key_row(k, key).state == "PendingImport"
        with Session(k.engine) as s:
            assert s.exec(select(MaterialTrash)).all() == []
        assert not hsm_doomed & hsm_labels(k)
        assert Scheduler(k).run_once().actions == 0
    finally:
        close_kms(k)


def test_asymmetric_hsm_key_pairs_are_destroyed_too(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = svc.create_key(user, spec="RSA_2048", usage="SIGN_VERIFY", protection="HSM").key_id
    svc.create_key_version(user, key)
    labels = version_labels(ckms, key)
    assert len(labels) == 2 and labels <= hsm_labels(ckms, secret_keys_only=False)
    svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=7)
    assert Scheduler(ckms).run_once().destroyed == [key]
    # Both halves of both key pairs are gone from the token.
    assert not labels & hsm_labels(ckms, secret_keys_only=False)
    with pytest.raises(NotFound):
        svc.describe_key(user, key)


def test_scheduler_actions_are_audited_as_the_scheduler(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    rotating = svc.create_key(user, rotation_period_days=7).key_id
    doomed = svc.create_key(user).key_id
    svc.schedule_key_deletion(user, doomed, 7)
    clock.advance(days=7)
    Scheduler(ckms).run_once()
    ckms.observer.flush()
    events = ckms.audit.query(user.account_id, limit=1000)
    mine = {(e.operation, e.key_id) for e in events if e.principal == "kms:scheduler"}
    assert mine == {("rotateKey", rotating), ("destroyKey", doomed)}
