"""The KMS service with real key stores: symmetric keys, aliases, tenancy, errors."""

from __future__ import annotations

import uuid

import pytest

from kms_core.embedded import Kms
from kms_core.errors import (
    AlreadyExists,
    Disabled,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidParameter,
    InvalidState,
    NotFound,
    UnsupportedOperation,
)
from kms_core.types import Caller


def other_caller(kms: Kms, region: str = "cn-east-1") -> Caller:
    info, creds = kms.accounts.create_account(f"other-{uuid.uuid4().hex[:8]}")
    return Caller(info.account_id, region, creds.access_key_id)


@pytest.mark.parametrize(("spec", "protection"), [("AES_256", "SOFTWARE"), ("AES_256", "HSM"), ("SM4", "HSM")])
def test_encrypt_decrypt_and_data_keys(kms: Kms, caller: Caller, spec: str, protection: str) -> None:
    svc = kms.service
    key = svc.create_key(caller, spec=spec, protection=protection, description="d")
    assert (key.spec, key.protection, key.state) == (spec, protection, "Enabled")
    r = svc.encrypt(caller, key.key_id, b"attack at dawn", {"purpose": "test"})
    assert (r.key_id, r.version_id) == (key.key_id, key.primary_version_id)
    d = svc.decrypt(caller, r.ciphertext_blob, {"purpose": "test"})
    assert d.plaintext == b"attack at dawn" and d.key_id == key.key_id
    with pytest.raises(InvalidCiphertext):
        svc.decrypt(caller, r.ciphertext_blob, {"purpose": "other"})
    dk = svc.generate_data_key(caller, key.key_id)
    assert dk.plaintext is not None and len(dk.plaintext) == 32
    assert svc.decrypt(caller, dk.ciphertext_blob).plaintext == dk.plaintext
    nk = svc.generate_data_key_without_plaintext(caller, key.key_id, length=1024)
    assert nk.plaintext is None
    assert len(svc.decrypt(caller, nk.ciphertext_blob).plaintext) == 1024


def test_sm4_only_at_hsm_level_and_symmetric_only_encrypt(kms: Kms, caller: Caller) -> None:
    with pytest.raises(InvalidParameter):
        kms.service.create_key(caller, spec="SM4", protection="SOFTWARE")
    with pytest.raises(InvalidParameter):
        kms.service.create_key(caller, spec="AES_256", usage="SIGN_VERIFY")
    assert kms.service.create_key(caller, spec="Ctyun_SM4").protection == "HSM"


def test_size_limits(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.create_key(caller).key_id
    svc.encrypt(caller, key, b"x" * 6144)
    for bad in (b"", b"x" * 6145):
        with pytest.raises(InvalidParameter):
            svc.encrypt(caller, key, bad)
    for n in (0, 1025, -1):
        with pytest.raises(InvalidParameter):
            svc.generate_data_key(caller, key, n)
    assert len(svc.generate_data_key(caller, key, 1).plaintext or b"") == 1


def test_disable_enable_and_deletion_window(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.create_key(caller).key_id
    blob = svc.encrypt(caller, key, b"keep me").ciphertext_blob
    assert svc.disable_key(caller, key).state == "Disabled"
    with pytest.raises(Disabled):
        svc.encrypt(caller, key, b"x")
    with pytest.raises(Disabled):
        svc.decrypt(caller, blob)
    assert svc.enable_key(caller, key).state == "Enabled"
    for days in (6, 31):
        with pytest.raises(InvalidParameter):
            svc.schedule_key_deletion(caller, key, days)
    assert svc.describe_key(caller, key).state == "Enabled"
    m = svc.schedule_key_deletion(caller, key, 7)
    assert m.state == "PendingDeletion" and m.deletion_date is not None
    with pytest.raises(InvalidState):
        svc.decrypt(caller, blob)
    with pytest.raises(InvalidState):
        svc.generate_data_key(caller, key)
    with pytest.raises(InvalidState):
        svc.enable_key(caller, key)
    m = svc.cancel_key_deletion(caller, key)
    assert m.state == "Enabled" and m.deletion_date is None
    assert svc.decrypt(caller, blob).plaintext == b"keep me"


def test_aliases(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    a, b = svc.create_key(caller).key_id, svc.create_key(caller).key_id
    svc.create_alias(caller, "alias/app", a)
    svc.create_alias(caller, "app-2", a)
    with pytest.raises(AlreadyExists):
        svc.create_alias(caller, "app", b)
    assert sorted(x.name for x in svc.list_aliases_by_key(caller, a)) == ["app", "app-2"]
    r = svc.encrypt(caller, "alias/app", b"via alias")
    assert r.key_id == a
    svc.update_alias(caller, "app", b)
    assert svc.encrypt(caller, "app", b"now b").key_id == b
    assert svc.decrypt(caller, r.ciphertext_blob).plaintext == b"via alias"
    svc.delete_alias(caller, "alias/app")
    with pytest.raises(NotFound):
        svc.encrypt(caller, "app", b"gone")
    assert svc.describe_key(caller, a).state == "Enabled"
    with pytest.raises(InvalidParameter):
        svc.create_alias(caller, str(uuid.uuid4()), a)
    with pytest.raises(InvalidParameter):
        svc.create_alias(caller, "bad alias!", a)


def test_alias_unique_per_account_and_region(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    svc.create_alias(caller, "shared", svc.create_key(caller).key_id)
    west = Caller(caller.account_id, "cn-west-1", caller.principal)
    svc.create_alias(west, "shared", svc.create_key(west).key_id)
    other = other_caller(kms)
    svc.create_alias(other, "shared", svc.create_key(other).key_id)
    assert svc.describe_key(caller, "shared").region == "cn-east-1"
    assert svc.describe_key(west, "shared").region == "cn-west-1"


def test_tenant_isolation(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.create_key(caller, alias="mine").key_id
    blob = svc.encrypt(caller, key, b"private").ciphertext_blob
    other = other_caller(kms)
    for call in (
        lambda: svc.describe_key(other, key),
        lambda: svc.describe_key(other, "mine"),
        lambda: svc.encrypt(other, key, b"x"),
        lambda: svc.decrypt(other, blob),
        lambda: svc.disable_key(other, key),
        lambda: svc.create_alias(other, "steal", key),
        lambda: svc.generate_data_key(other, key),
        lambda: svc.re_encrypt(other, blob, svc.create_key(other).key_id),
    ):
        with pytest.raises(NotFound):
            call()
    assert svc.list_keys(other).items == [] or all(m.key_id != key for m in svc.list_keys(other).items)
    west = Caller(caller.account_id, "cn-west-1", caller.principal)
    with pytest.raises(NotFound):
        svc.decrypt(west, blob)
    assert svc.describe_key(caller, key).state == "Enabled"


def test_re_encrypt_between_keys(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    a = svc.create_key(caller).key_id
    b = svc.create_key(caller, spec="SM4").key_id
    blob = svc.encrypt(caller, a, b"move me", {"x": "1"}).ciphertext_blob
    r = svc.re_encrypt(caller, blob, b, source_context={"x": "1"}, destination_context={"y": "2"})
    assert (r.source_key_id, r.key_id) == (a, b)
    assert svc.decrypt(caller, r.ciphertext_blob, {"y": "2"}).plaintext == b"move me"
    with pytest.raises(InvalidCiphertext):
        svc.re_encrypt(caller, blob, b)  # wrong source context


def test_decrypt_checks_named_key(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    a, b = svc.create_key(caller).key_id, svc.create_key(caller).key_id
    blob = svc.encrypt(caller, a, b"x").ciphertext_blob
    assert svc.decrypt(caller, blob, key=a).plaintext == b"x"
    with pytest.raises(InvalidKeyUsage):
        svc.decrypt(caller, blob, key=b)


def test_garbage_and_unknown_blobs(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    with pytest.raises(InvalidCiphertext):
        svc.decrypt(caller, b"not a blob")
    key = svc.create_key(caller).key_id
    blob = bytearray(svc.encrypt(caller, key, b"x").ciphertext_blob)
    blob[18:34] = uuid.uuid4().bytes  # a version that does not exist
    with pytest.raises(InvalidCiphertext):
        svc.decrypt(caller, bytes(blob))


def test_list_keys_paginates(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    made = {svc.create_key(caller).key_id for _ in range(5)}
    seen: list[str] = []
    marker = None
    while True:
        page = svc.list_keys(caller, limit=2, marker=marker)
        seen += [m.key_id for m in page.items]
        if not page.truncated:
            break
        marker = page.next_marker
    assert set(seen) == made and len(seen) == 5
    with pytest.raises(InvalidParameter):
        svc.list_keys(caller, limit=0)


def test_update_description(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.create_key(caller, description="old").key_id
    assert svc.update_key_description(caller, key, "new").description == "new"
    with pytest.raises(InvalidParameter):
        svc.update_key_description(caller, key, "x" * 9000)
    assert svc.describe_key(caller, key).description == "new"


def test_unsupported_specs_are_clear(kms: Kms, caller: Caller) -> None:
    with pytest.raises(InvalidParameter):
        kms.service.create_key(caller, spec="DES")
    with pytest.raises(InvalidParameter):
        kms.service.create_key(caller, protection="CLOUD")


def test_failed_create_with_taken_alias_leaves_nothing(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    svc.create_alias(caller, "taken", svc.create_key(caller).key_id)
    before = len(svc.list_keys(caller).items)
    with pytest.raises(AlreadyExists):
        svc.create_key(caller, alias="taken", protection="HSM")
    assert len(svc.list_keys(caller).items) == before


def test_reserved_default_aliases(kms: Kms, caller: Caller) -> None:
    with pytest.raises(UnsupportedOperation):
        kms.service.create_key(caller, alias="alias_oss")
