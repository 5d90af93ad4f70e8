"""The HTTP client is a drop-in for the in-process client: same results, same errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from kms_core.client import KmsClient
from kms_core.client.http import HttpKmsClient
from kms_core.client.inprocess import InProcessKmsClient
from kms_core.errors import Disabled, InvalidCiphertext, KeyUnavailable, NotFound
from kms_core.types import Caller
from tests.kms_server import KmsServer, Tenant
from tests.serving import free_port

Factory = Callable[[KmsServer, Tenant], KmsClient]


def in_process(server: KmsServer, t: Tenant) -> KmsClient:
    return InProcessKmsClient(server.kms.service, Caller(t.account_id, server.region, t.access_key_id))


def over_http(server: KmsServer, t: Tenant) -> KmsClient:
    return HttpKmsClient(server.url, t.access_key_id, t.secret_access_key, server.region)


@pytest.fixture(params=[in_process, over_http], ids=["in-process", "http"])
def make(request: pytest.FixtureRequest) -> Factory:
    return request.param  # type: ignore[no-any-return]


def test_same_behaviour(kms_server: KmsServer, make: Factory) -> None:
    t = kms_server.tenant(f"t-{uuid.uuid4().hex[:6]}")
    client = make(kms_server, t)
    caller = Caller(t.account_id, kms_server.region)
    dk = client.generate_data_key("ecs", context={"volume": "v1"}, length=64)
    assert dk.plaintext is not None and len(dk.plaintext) == 64
    meta = client.describe_key(dk.key_id)
    assert meta.default_product == "ecs" and meta.aliases == ("alias_ecs",)
    assert client.decrypt_data_key(dk.sealed, {"volume": "v1"}).plaintext == dk.plaintext
    with pytest.raises(InvalidCiphertext):
        client.decrypt_data_key(dk.sealed, {"volume": "v2"})
    user_key = kms_server.kms.service.create_key(caller, alias="mine").key_id
    moved = client.reseal_data_key(dk.sealed, "ecs", "mine", {"volume": "v1"}, {"volume": "v1"})
    assert moved.key_id == user_key and not hasattr(moved, "plaintext")
    assert (moved.source_key_id, moved.source_version_id) == (dk.key_id, dk.version_id)
    again = client.reseal_data_key(moved.sealed, "ecs", "mine", {"volume": "v1"}, {"volume": "v1"})
    assert (again.source_key_id, again.source_version_id) == (again.key_id, again.version_id) == (
        moved.key_id, moved.version_id)
    assert client.decrypt_data_key(moved.sealed, {"volume": "v1"}).plaintext == dk.plaintext
    kms_server.kms.service.disable_key(caller, user_key)
    with pytest.raises(Disabled):
        client.decrypt_data_key(moved.sealed, {"volume": "v1"})
    with pytest.raises(NotFound):
        client.generate_data_key("ecs", str(uuid.uuid4()))


def test_unreachable_kms_is_key_unavailable() -> None:
    client = HttpKmsClient(f"http://127.0.0.1:{free_port()}", "AK", "SK", "cn-east-1", timeout=2)
    with pytest.raises(KeyUnavailable):
        client.generate_data_key("oss")
