"""Several `ssegw serve` nodes over one PostgreSQL database and one HSM token (#18).

Every node is a real process with its own data directory and ports; they share only what a
cluster shares: the database URL, the HSM (a SoftHSM2 token made for this module, reached with
--pkcs11-token and a PIN file) and `--root-key hsm`, so no node holds a key file.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from kms_core.keystore.softhsm import init_token
from tests.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[2]
BACKEND_KEY = ("cluster-backend", "cluster-backend-secret")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    data_dir: Path
    argv: list[str]
    kms_port: int = field(default_factory=_free_port)
    s3_port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kms_url(self) -> str:
        return f"http://127.0.0.1:{self.kms_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.argv, "--data-dir", str(self.data_dir), "--kms-port", str(self.kms_port),
             "--s3-port", str(self.s3_port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **self.env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_ready(self) -> None:
        # The banner's last line comes after both ports are bound and the set-up is done.
        assert self.proc is not None and self.proc.stdout is not None
        self.banner = []
        for line in self.proc.stdout:
            self.banner.append(line)
            if "aws kms list-keys" in line:
                # Keep draining, so a chatty node never blocks on a full pipe.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise AssertionError(f"node did not start: {''.join(self.banner)}{self.proc.stderr.read()}")

    def credentials(self) -> tuple[str, str]:
        values = dict(line.strip().removeprefix("export ").split("=", 1)
                      for line in self.banner if "export AWS_" in line)
        return values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]

    def kms(self) -> Any:
        access, secret = self.credentials()
        return boto3.client("kms", endpoint_url=self.kms_url, region_name="cn-east-1",
                            aws_access_key_id=access, aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 1}))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Cluster:
    db_url: str
    token: str
    pin_file: Path
    backend_url: str
    root: Path
    nodes: list[Node] = field(default_factory=list)

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", "serve", "--db-url", self.db_url,
                "--pkcs11-token", self.token, "--pkcs11-pin-file", str(self.pin_file),
                "--root-key", "hsm", "--backend-url", self.backend_url,
                "--backend-access-key", BACKEND_KEY[0], "--backend-secret-key", BACKEND_KEY[1],
                "--scheduler-interval", "3600", *extra]

    def add_node(self, *extra: str) -> Node:
        # Key state cached for an hour: only the change channel can make a node see another
        # node's change during a test.
        node = Node(self.root / f"node{len(self.nodes)}", self.argv(*extra),
                    env={"SSEGW_KMS_CACHE_SECONDS": "3600"})
        self.nodes.append(node)
        return node


@pytest.fixture(scope="module")
def cluster(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    # A token of its own, in the session's SoftHSM2 token directory (SOFTHSM2_CONF), which
    # every node process inherits: one HSM for all nodes.
    token, pin = f"ssegw-cluster-{secrets.token_hex(4)}", secrets.token_hex(8)
    init_token(Path(os.environ["SOFTHSM2_CONF"]), token, pin)
    pin_file = root / "pin"
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    db = postgres.create_database()
    c = Cluster(postgres.url(db), token, pin_file, f"http://127.0.0.1:{port}", root)
    for _ in range(2):
        c.add_node()
    for node in c.nodes:  # at the same moment, on an empty database
        node.start()
    try:
        for node in c.nodes:
            node.wait_ready()
        yield c
    finally:
        for node in c.nodes:
            node.stop()
        moto.stop()
        postgres.drop_database(db)


def test_nodes_share_one_demo_account_and_no_key_file(cluster: Cluster) -> None:
    a, b = cluster.nodes[:2]
    assert a.credentials() == b.credentials()
    assert not (a.data_dir / "root.key").exists() and not (b.data_dir / "root.key").exists()


@pytest.mark.parametrize("protection", ["SOFTWARE", "HSM"])
def test_keys_made_on_one_node_work_at_once_on_the_other(cluster: Cluster, protection: str) -> None:
    a, b = (n.kms() for n in cluster.nodes[:2])
    for i in range(15):
        maker, user = (a, b) if i % 2 == 0 else (b, a)
        origin = "AWS_CLOUDHSM" if protection == "HSM" else "AWS_KMS"  # AWS_CLOUDHSM: an HSM key
        key = maker.create_key(Origin=origin)["KeyMetadata"]["KeyId"]
        # No retries: the first call on the other node must work.
        blob = user.encrypt(KeyId=key, Plaintext=b"cross-node %d" % i)["CiphertextBlob"]
        assert maker.decrypt(CiphertextBlob=blob)["Plaintext"] == b"cross-node %d" % i
        dk = maker.generate_data_key(KeyId=key, KeySpec="AES_256")
        assert user.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]


def test_a_node_without_the_clusters_hsm_refuses_to_start(cluster: Cluster) -> None:
    # Same database, but its own embedded SoftHSM2 token: it cannot open the sealed root key.
    argv = [a for a in cluster.argv() if a not in ("--pkcs11-token", cluster.token,
                                                    "--pkcs11-pin-file", str(cluster.pin_file))]
    node = Node(cluster.root / "stranger", argv)
    node.start()
    assert node.proc is not None
    _, err = node.proc.communicate(timeout=120)
    assert node.proc.returncode == 2
    assert "cannot open the cluster's root key" in err and "Traceback" not in err


def test_a_node_with_its_own_root_key_file_refuses_to_start(cluster: Cluster) -> None:
    argv = [a for a in cluster.argv() if a != "hsm"]
    argv[argv.index("--root-key")] = "--root-key=file"
    node = Node(cluster.root / "filed", argv)
    node.data_dir.mkdir()
    (node.data_dir / "root.key").write_bytes(os.urandom(32))
    (node.data_dir / "root.key").chmod(0o600)
    node.start()
    assert node.proc is not None
    _, err = node.proc.communicate(timeout=120)
    assert node.proc.returncode == 2
    assert "is not this database's root key" in err and "Traceback" not in err


def _refused(call: Any) -> str | None:
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def test_a_key_disabled_on_one_node_is_refused_by_the_other(cluster: Cluster) -> None:
    a, b = (n.kms() for n in cluster.nodes[:2])
    for _ in range(3):
        key = a.create_key()["KeyMetadata"]["KeyId"]
        alias = f"alias/moving-{secrets.token_hex(4)}"
        a.create_alias(AliasName=alias, TargetKeyId=key)
        assert _refused(lambda k=key: b.encrypt(KeyId=k, Plaintext=b"x")) is None  # cached on b
        assert _refused(lambda al=alias: b.encrypt(KeyId=al, Plaintext=b"x")) is None
        a.disable_key(KeyId=key)
        # b caches key state for an hour here: only a's notification can make it refuse.
        deadline = time.monotonic() + 60
        while _refused(lambda k=key: b.encrypt(KeyId=k, Plaintext=b"x")) is None:
            assert time.monotonic() < deadline, "node b never heard that the key was disabled"
            time.sleep(0.01)
        assert _refused(lambda k=key: b.encrypt(KeyId=k, Plaintext=b"x")) == "DisabledException"
        # An alias moved on a is followed by b.
        other = a.create_key()["KeyMetadata"]["KeyId"]
        a.update_alias(AliasName=alias, TargetKeyId=other)
        while _refused(lambda al=alias: b.encrypt(KeyId=al, Plaintext=b"x")) is not None:
            assert time.monotonic() < deadline, "node b never heard that the alias moved"
            time.sleep(0.01)
        assert other in b.encrypt(KeyId=alias, Plaintext=b"x")["KeyId"]
