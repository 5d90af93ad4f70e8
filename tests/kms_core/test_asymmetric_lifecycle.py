"""Asymmetric keys through the lifecycle: destruction after the deletion window removes the
HSM key pairs and frees the account's version quota."""

from __future__ import annotations

import pytest

from kms_core.embedded import Kms
from kms_core.errors import NotFound
from kms_core.scheduler import Scheduler
from tests.kms_core.lifecycle_support import (
    FakeClock,
    hsm_labels,
    new_caller,
    version_labels,
    versions,
)


def test_destroyed_asymmetric_keys_leave_nothing_behind(ckms: Kms, clock: FakeClock) -> None:
    svc = ckms.service
    user = new_caller(ckms, "asym-lifecycle")
    rsa = svc.create_key(user, spec="RSA_2048", usage="SIGN_VERIFY", protection="HSM").key_id
    svc.create_key_version(user, rsa)
    sm2 = svc.create_key(user, spec="SM2", usage="ENCRYPT_DECRYPT").key_id
    v = svc.list_key_versions(user, rsa).items[0].version_id
    svc.asymmetric_sign(user, rsa, v, b"before")
    labels = version_labels(ckms, rsa)
    assert labels <= hsm_labels(ckms, secret_keys_only=False)  # both halves of both pairs
    for key in (rsa, sm2):
        svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=7)
    report = Scheduler(ckms).run_once()
    assert sorted(report.destroyed) == sorted([rsa, sm2]) and report.errors == []
    assert not labels & hsm_labels(ckms, secret_keys_only=False)
    assert all(row.stored is None for key in (rsa, sm2) for row in versions(ckms, key))
    for call in (
        lambda: svc.asymmetric_sign(user, rsa, v, b"after"),
        lambda: svc.get_public_key(user, rsa, v),
        lambda: svc.list_key_versions(user, sm2),
    ):
        with pytest.raises(NotFound):
            call()


def test_forget_asymmetric_drops_cached_private_keys(ckms: Kms) -> None:
    svc = ckms.service
    user = new_caller(ckms, "asym-forget")
    key = svc.create_key(user, spec="SM2", usage="SIGN_VERIFY").key_id
    v = svc.list_key_versions(user, key).items[0].version_id
    svc.asymmetric_sign(user, key, v, b"m")
    caches = svc.repository.caches
    assert (key, v) in caches.private and (key, v) in caches.versions
    caches.forget(key)
    assert (key, v) not in caches.private and (key, v) not in caches.versions
    assert svc.asymmetric_sign(user, key, v, b"m").signature  # reopened on demand
