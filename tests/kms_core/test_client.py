"""The product-facing client interface, in-process implementation."""

from __future__ import annotations

import uuid

import pytest

from kms_core.client.inprocess import InProcessKmsClient
from kms_core.embedded import Kms
from kms_core.errors import Disabled, InvalidCiphertext, NotFound
from kms_core.types import Caller


def test_user_chosen_key_and_context(kms: Kms, caller: Caller) -> None:
    key = kms.service.create_key(caller, alias="volumes").key_id
    client = InProcessKmsClient(kms.service, caller)
    ctx = {"volume": "vol-1"}
    dk = client.generate_data_key("ecs", "volumes", ctx, length=64)
    assert dk.key_id == key and dk.plaintext is not None and len(dk.plaintext) == 64
    assert "plaintext" not in repr(dk) or dk.plaintext.hex() not in repr(dk)
    assert client.decrypt_data_key(dk.sealed, ctx).plaintext == dk.plaintext
    with pytest.raises(InvalidCiphertext):
        client.decrypt_data_key(dk.sealed, {"volume": "vol-2"})
    assert client.describe_key("volumes").key_id == key


def test_reseal_moves_a_data_key_to_another_key(kms: Kms, caller: Caller) -> None:
    client = InProcessKmsClient(kms.service, caller)
    dk = client.generate_data_key("sfs", context={"fs": "a"})
    target = kms.service.create_key(caller, protection="HSM").key_id
    moved = client.reseal_data_key(dk.sealed, "sfs", target, {"fs": "a"}, {"fs": "a"})
    assert not hasattr(moved, "plaintext") and moved.key_id == target
    assert (moved.source_key_id, moved.source_version_id) == (dk.key_id, dk.version_id)
    assert moved.version_id == kms.service.describe_key(caller, target).primary_version_id
    assert client.decrypt_data_key(moved.sealed, {"fs": "a"}).plaintext == dk.plaintext


def test_errors_are_the_service_errors(kms: Kms, caller: Caller) -> None:
    client = InProcessKmsClient(kms.service, caller)
    key = kms.service.create_key(caller).key_id
    dk = client.generate_data_key("oss", key)
    kms.service.disable_key(caller, key)
    with pytest.raises(Disabled):
        client.decrypt_data_key(dk.sealed)
    with pytest.raises(Disabled):
        client.generate_data_key("oss", key)
    with pytest.raises(NotFound):
        client.generate_data_key("oss", str(uuid.uuid4()))
