"""HSM AES keys through the lifecycle, with the session copies the KMS uses them through
(kms_core.keystore.hsm_token): the copies go when the KMS lets go of a key version, here or on
another node told by the change feed, and when the key is destroyed."""

from __future__ import annotations

import pytest

from kms_core.embedded import Kms
from kms_core.errors import NotFound
from kms_core.keystore.hsm_token import COPY_SUFFIX
from kms_core.scheduler import Scheduler
from tests.kms_core.lifecycle_support import (
    FakeClock,
    hsm_labels,
    new_caller,
    version_labels,
)


def _copies(k: Kms, key_id: str) -> set[str]:
    return {label + COPY_SUFFIX for label in version_labels(k, key_id)} & hsm_labels(k)


def test_copies_go_when_the_kms_lets_go_of_the_key(ckms: Kms) -> None:
    svc = ckms.service
    user = new_caller(ckms, "hsm-copies")
    key = svc.create_key(user, protection="HSM").key_id
    blob = svc.generate_data_key(user, key).ciphertext_blob
    assert svc.decrypt(user, blob).plaintext  # through the copy made on first use
    assert len(_copies(ckms, key)) == 1
    # What a node does when another tells it (kms_core.changes) that the key changed.
    svc.repository.on_change(f"k:{key}")
    assert _copies(ckms, key) == set()
    assert svc.decrypt(user, blob).plaintext  # found and copied again on demand
    assert len(_copies(ckms, key)) == 1


def test_a_destroyed_key_leaves_no_copy(ckms: Kms, clock: FakeClock) -> None:
    svc = ckms.service
    user = new_caller(ckms, "hsm-destroyed")
    key = svc.create_key(user, protection="HSM").key_id
    svc.generate_data_key(user, key)
    labels = version_labels(ckms, key)
    assert labels <= hsm_labels(ckms) and len(_copies(ckms, key)) == 1
    svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=7)
    report = Scheduler(ckms).run_once()
    assert report.destroyed == [key] and report.errors == []
    assert not labels & hsm_labels(ckms) and _copies(ckms, key) == set()
    with pytest.raises(NotFound):
        svc.generate_data_key(user, key)
