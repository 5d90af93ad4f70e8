"""Bucket ownership: claimed atomically across gateway nodes, unknown buckets nobody's, frozen
accounts refused, buckets of earlier releases (owner tags) adopted by their owner."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.cli import main as ssegw
from gateway.s3.app import create_app
from gateway.s3.backend import Backend, BackendConfig
from gateway.s3.proxy import S3Proxy
from gateway.serve import _credentials, _kms_clients
from tests.gateway.s3.conftest import BACKEND_KEY, S3Stack, Tenant, _run, bucket_name
from tests.kms_server import KmsServer


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


@pytest.fixture
def second_node(s3: S3Stack, moto_url: str, kms_server: KmsServer) -> Iterator[str]:
    """Another gateway node on the same backend whose key and claim calls go to the KMS over
    HTTP (`--kms-url`): it shares nothing with the first node but the KMS database."""
    backend = Backend(BackendConfig(moto_url, *BACKEND_KEY))
    proxy = S3Proxy(backend, _kms_clients(s3.kms, kms_server.url, None))
    server, port = _run(create_app(proxy, _credentials(s3.kms), frozen=s3.kms.accounts.is_frozen), None)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True


def client(url: str, t: Tenant) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="cn-east-1",
                        aws_access_key_id=t.access_key_id, aws_secret_access_key=t.secret_access_key,
                        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def test_racing_create_bucket_has_exactly_one_winner(s3: S3Stack, second_node: str) -> None:
    alice, bob = s3.tenant(), s3.tenant()
    clients = {"alice": client(s3.http_url, alice), "bob": client(second_node, bob)}
    for _ in range(12):
        name = bucket_name()
        barrier = threading.Barrier(2)
        outcome: dict[str, str] = {}

        def create(who: str, name: str = name, barrier: threading.Barrier = barrier,
                   outcome: dict[str, str] = outcome) -> None:
            barrier.wait()
            try:
                clients[who].create_bucket(Bucket=name)
                outcome[who] = "created"
            except ClientError as e:
                outcome[who] = str(e.response["Error"]["Code"])

        threads = [threading.Thread(target=create, args=(who,)) for who in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome.values()) == ["BucketAlreadyExists", "created"], outcome
        winner = next(w for w, o in outcome.items() if o == "created")
        loser = "bob" if winner == "alice" else "alice"
        clients[winner].put_object(Bucket=name, Key="k", Body=winner.encode())
        with pytest.raises(ClientError) as e:
            clients[loser].put_object(Bucket=name, Key="k2", Body=b"x")
        assert code(e) == "AccessDenied"
        assert [o["Key"] for o in s3.backend.list_objects_v2(Bucket=name).get("Contents", [])] == ["k"]
        assert s3.kms.buckets.owner(name) == (alice if winner == "alice" else bob).account_id


def test_unknown_backend_bucket_is_nobodys_until_assigned(s3: S3Stack, tmp_path: Any) -> None:
    alice = s3.tenant()
    a = s3.client(alice)
    b = bucket_name()
    s3.backend.create_bucket(Bucket=b)  # made around the proxy
    s3.backend.put_object(Bucket=b, Key="found.txt", Body=b"someone's data")
    with pytest.raises(ClientError) as e:
        a.create_bucket(Bucket=b)
    assert code(e) == "BucketAlreadyExists"
    call: Callable[[], object]
    for call in (lambda: a.get_object(Bucket=b, Key="found.txt"), lambda: a.list_objects_v2(Bucket=b),
                 lambda: a.put_object(Bucket=b, Key="x", Body=b"x")):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDenied"
    assert b not in [x["Name"] for x in a.list_buckets()["Buckets"]]
    assert s3.kms.buckets.owner(b) is None
    # The operator assigns it; then it is alice's.
    assert ssegw(["s3", "assign-bucket", b, alice.account_id,
                  "--data-dir", str(s3.kms.config.data_dir)]) == 0
    assert s3.kms.buckets.owner(b) == alice.account_id
    s3.proxy.serve_plaintext = True  # its objects predate the gateway: served while migrating
    assert a.get_object(Bucket=b, Key="found.txt")["Body"].read() == b"someone's data"
    assert b in [x["Name"] for x in a.list_buckets()["Buckets"]]


def test_assign_bucket_cli_reports(s3: S3Stack, capsys: pytest.CaptureFixture[str]) -> None:
    alice = s3.tenant()
    assert ssegw(["s3", "assign-bucket", "some-bucket", alice.account_id,
                  "--data-dir", str(s3.kms.config.data_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"bucket": "some-bucket", "accountId": alice.account_id, "previousOwner": None}
    assert ssegw(["s3", "assign-bucket", "some-bucket", "no-such-account",
                  "--data-dir", str(s3.kms.config.data_dir)]) == 1
    assert "NotFound" in capsys.readouterr().err


def _tag(s3: S3Stack, bucket: str, owner: str) -> None:
    s3.backend.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "ssegw-owner", "Value": owner}]})


def test_tagged_buckets_of_earlier_releases_are_adopted_by_their_owner(s3: S3Stack) -> None:
    alice, bob = s3.tenant(), s3.tenant()
    a, b = s3.client(alice), s3.client(bob)
    old = bucket_name()
    s3.backend.create_bucket(Bucket=old)
    _tag(s3, old, alice.account_id)
    # bob tries first: he may neither create nor use it, and that does not give it away.
    with pytest.raises(ClientError) as e:
        b.create_bucket(Bucket=old)
    assert code(e) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as e:
        b.put_object(Bucket=old, Key="x", Body=b"x")
    assert code(e) == "AccessDenied"
    assert old not in [x["Name"] for x in b.list_buckets()["Buckets"]]
    # alice's first sight records her claim.
    assert old in [x["Name"] for x in a.list_buckets()["Buckets"]]
    assert s3.kms.buckets.owner(old) == alice.account_id
    a.put_object(Bucket=old, Key="k", Body=b"still mine")
    assert a.get_object(Bucket=old, Key="k")["Body"].read() == b"still mine"
    with pytest.raises(ClientError) as e:
        a.create_bucket(Bucket=old)
    assert code(e) == "BucketAlreadyOwnedByYou"


def test_a_deleted_name_is_not_handed_to_another_account_at_once(s3: S3Stack) -> None:
    alice, bob = s3.tenant(), s3.tenant()
    a, b = s3.client(alice), s3.client(bob)
    name = bucket_name()
    a.create_bucket(Bucket=name)
    a.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        b.create_bucket(Bucket=name)
    assert code(e) == "OperationAborted"
    a.create_bucket(Bucket=name)  # its owner may re-create it at once
    a.put_object(Bucket=name, Key="k", Body=b"v")


def test_frozen_accounts_are_refused_every_s3_call(s3: S3Stack) -> None:
    alice = s3.tenant()
    a = s3.client(alice)
    name = bucket_name()
    a.create_bucket(Bucket=name)
    a.put_object(Bucket=name, Key="k", Body=b"v")
    s3.kms.accounts.set_frozen(alice.account_id, True)
    call: Callable[[], object]
    for call in (a.list_buckets, lambda: a.create_bucket(Bucket=bucket_name()),
                 lambda: a.list_objects_v2(Bucket=name), lambda: a.delete_object(Bucket=name, Key="k"),
                 lambda: a.get_object(Bucket=name, Key="k"), lambda: a.delete_bucket(Bucket=name),
                 lambda: a.head_bucket(Bucket=name)):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert [o["Key"] for o in s3.backend.list_objects_v2(Bucket=name)["Contents"]] == ["k"]
    s3.kms.accounts.set_frozen(alice.account_id, False)
    assert a.get_object(Bucket=name, Key="k")["Body"].read() == b"v"
