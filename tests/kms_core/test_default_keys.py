"""Default keys: one per product, account and region, even under races; their restrictions."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import pytest

from kms_core.client.inprocess import InProcessKmsClient
from kms_core.embedded import Kms, KmsConfig, open_kms
from kms_core.errors import UnsupportedOperation
from kms_core.types import Caller


def test_created_on_first_use_with_alias(kms: Kms, caller: Caller) -> None:
    client = InProcessKmsClient(kms.service, caller)
    dk = client.generate_data_key("oss")
    meta = kms.service.describe_key(caller, "alias_oss")
    assert meta.key_id == dk.key_id and meta.default_product == "oss"
    assert meta.aliases == ("alias_oss",) and meta.spec == "AES_256"
    assert client.generate_data_key("oss").key_id == dk.key_id
    assert {client.generate_data_key(p).key_id for p in ("oss", "ecs", "sfs")} != {dk.key_id}
    assert client.decrypt_data_key(dk.sealed).plaintext == dk.plaintext


def test_restrictions(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.default_key(caller, "ecs").id
    user_key = svc.create_key(caller).key_id
    svc.create_alias(caller, "user", user_key)
    for call in (
        lambda: svc.disable_key(caller, key),
        lambda: svc.schedule_key_deletion(caller, key, 7),
        lambda: svc.create_alias(caller, "extra", key),
        lambda: svc.delete_alias(caller, "alias_ecs"),
        lambda: svc.update_alias(caller, "alias_ecs", user_key),
        lambda: svc.update_alias(caller, "user", key),
        lambda: svc.create_alias(caller, "alias_sfs", user_key),
    ):
        with pytest.raises(UnsupportedOperation):
            call()
    meta = svc.describe_key(caller, key)
    assert meta.state == "Enabled" and meta.aliases == ("alias_ecs",)
    assert svc.describe_key(caller, "user").key_id == user_key


def test_per_region_and_per_account(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    west = Caller(caller.account_id, "cn-west-1", caller.principal)
    info, _ = kms.accounts.create_account("second")
    other = Caller(info.account_id, "cn-east-1")
    ids = {svc.default_key(c, "oss").id for c in (caller, west, other)}
    assert len(ids) == 3


def test_thread_race_makes_one_key(kms: Kms, caller: Caller) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        results.append(kms.service.default_key(caller, "sfs").id)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    defaults = [m for m in kms.service.list_keys(caller).items if m.default_product == "sfs"]
    assert len(defaults) == 1


def _race_worker(data_dir: str, db_url: str | None, account_id: str, start: object,
                 out: object) -> None:
    kms = open_kms(KmsConfig(data_dir=Path(data_dir), db_url=db_url))
    start.wait()  # type: ignore[attr-defined]
    out.put(kms.service.default_key(Caller(account_id, "cn-east-1"), "oss").id)  # type: ignore[attr-defined]


def test_process_race_makes_one_key(tmp_path: Path, kms_db_url: str | None) -> None:
    kms = open_kms(KmsConfig(data_dir=tmp_path, db_url=kms_db_url))
    info, _ = kms.accounts.create_account("racer")
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(str(tmp_path), kms_db_url, info.account_id, start, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    ids = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(set(ids)) == 1
    caller = Caller(info.account_id, "cn-east-1")
    assert [m.key_id for m in kms.service.list_keys(caller).items] == ids[:1]
