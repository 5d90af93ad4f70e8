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
from botocore.exceptions import BotoCoreError, ClientError
from moto.server import ThreadedMotoServer

from kms_core.keystore.softhsm import init_token
from tests.postgres import PostgresCluster
from tests.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
BACKEND_KEY = ("cluster-backend", "cluster-backend-secret")




@dataclass
class Node:
    data_dir: Path
    argv: list[str]
    kms_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
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
        stderr = self.proc.stderr.read() if self.proc.stderr is not None else ""
        raise AssertionError(f"node did not start: {''.join(self.banner)}{stderr}")

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
    port = free_port()
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


# Another node of the cluster, 31 days later: its scheduler pass destroys what is due.
_LATER_NODE = """
import json, sys
from datetime import timedelta
from pathlib import Path
from kms_core.embedded import KmsConfig, open_kms
from kms_core.keystore.hsm import HsmConfig
from kms_core.models import utcnow
from kms_core.scheduler import Scheduler
cfg = json.loads(sys.argv[1])
later = utcnow() + timedelta(days=31)
kms = open_kms(KmsConfig(data_dir=Path(cfg["data_dir"]), db_url=cfg["db_url"], root_key="hsm",
                         hsm=HsmConfig(cfg["module"], cfg["token"], cfg["pin"]), clock=lambda: later))
report = Scheduler(kms, lease_clock=lambda: later).run_once()
kms.close()
print(json.dumps({"destroyed": sorted(report.destroyed), "errors": [str(e) for e in report.errors]}))
"""

# A fresh process (SoftHSM2 reads the token when the library starts): every label on the token.
_TOKEN_LABELS = """
import json, sys
import pkcs11
lib = pkcs11.lib(sys.argv[1])
with lib.get_token(token_label=sys.argv[2]).open(user_pin=sys.argv[3]) as s:
    print(json.dumps(sorted({o[pkcs11.Attribute.LABEL] for o in s.get_objects()})))
"""


def _python(code: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_a_destroyed_hsm_key_is_gone_from_the_one_token(cluster: Cluster) -> None:
    import json

    from kms_core.keystore.softhsm import find_softhsm_module

    a, b = (n.kms() for n in cluster.nodes[:2])
    key = a.create_key(Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"]
    blob = b.encrypt(KeyId=key, Plaintext=b"doomed")["CiphertextBlob"]
    pin = cluster.pin_file.read_text().strip()
    module = find_softhsm_module()
    before = set(json.loads(_python(_TOKEN_LABELS, module, cluster.token, pin)))
    b.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    report = json.loads(_python(_LATER_NODE, json.dumps({
        "data_dir": str(cluster.root / "later"), "db_url": cluster.db_url, "module": module,
        "token": cluster.token, "pin": pin})))
    assert report["errors"] == [] and key in report["destroyed"]
    after = set(json.loads(_python(_TOKEN_LABELS, module, cluster.token, pin)))
    gone = before - after
    assert len(gone) == 1 and gone.pop().startswith("ssegw-key-")  # its one version's object
    for node in (a, b):
        assert _refused(lambda n=node: n.decrypt(CiphertextBlob=blob)) == "NotFoundException"


_HAPROXY_CFG = """
global
    maxconn 1000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
    # A killed node refuses the check's connection at once, so one failed check (fall 1) finds
    # it within 200 ms. Without `timeout check` the check's reply must come within `inter`:
    # a live node slower than 200 ms under CI's load (seen once: three test processes on two
    # cores) was marked down too, and with both down HAProxy answered 503 to requests that no
    # kill was in flight for.
    timeout check 2s
    default-server inter 200ms fall 1 rise 2
frontend s3
    bind 127.0.0.1:{s3}
    default_backend s3_nodes
frontend kms
    bind 127.0.0.1:{kms}
    default_backend kms_nodes
backend s3_nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{s3_servers}
backend kms_nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{kms_servers}
"""


@dataclass
class _Outcome:
    started: float
    ok: bool
    what: str


def test_behind_haproxy_a_killed_node_loses_only_its_requests_in_flight(cluster: Cluster) -> None:
    # Last in this module: it kills node 0 and restarts it.
    import hashlib
    import shutil

    haproxy_bin = shutil.which("haproxy") or "/usr/sbin/haproxy"
    s3_port, kms_port = free_port(), free_port()
    nodes = cluster.nodes[:2]
    cfg = cluster.root / "haproxy.cfg"
    cfg.write_text(_HAPROXY_CFG.format(
        s3=s3_port, kms=kms_port,
        s3_servers="\n".join(f"    server n{i} 127.0.0.1:{n.s3_port} check" for i, n in enumerate(nodes)),
        kms_servers="\n".join(f"    server n{i} 127.0.0.1:{n.kms_port} check" for i, n in enumerate(nodes)),
    ))
    lb = subprocess.Popen([haproxy_bin, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        access, secret = nodes[0].credentials()
        cfg_boto = Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name="cn-east-1",
                          aws_access_key_id=access, aws_secret_access_key=secret, config=cfg_boto)
        kms = boto3.client("kms", endpoint_url=f"http://127.0.0.1:{kms_port}", region_name="cn-east-1",
                           aws_access_key_id=access, aws_secret_access_key=secret, config=cfg_boto)
        deadline = time.monotonic() + 60
        while True:  # haproxy up, both nodes checked
            try:
                s3.create_bucket(Bucket="through-lb")
                break
            except (BotoCoreError, ClientError):
                assert time.monotonic() < deadline, lb.stderr.read() if lb.stderr and lb.poll() is not None else ""
                time.sleep(0.1)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]

        acknowledged: dict[str, str] = {}
        outcomes: list[_Outcome] = []
        lock = threading.Lock()
        stop = threading.Event()

        def worker(n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                started = time.monotonic()
                if i % 2:
                    name, data = f"w{n}/{i}", os.urandom(1024 * (1 + i % 48))
                    try:
                        s3.put_object(Bucket="through-lb", Key=name, Body=data)
                        with lock:
                            acknowledged[name] = hashlib.sha256(data).hexdigest()
                        outcomes.append(_Outcome(started, True, "put"))
                    except Exception as exc:  # noqa: BLE001 - recorded, judged below
                        outcomes.append(_Outcome(started, False, f"put {name}: {exc!r}"))
                else:
                    try:
                        blob = kms.encrypt(KeyId=key_id, Plaintext=b"p%d" % i)["CiphertextBlob"]
                        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"p%d" % i
                        outcomes.append(_Outcome(started, True, "kms"))
                    except Exception as exc:  # noqa: BLE001
                        outcomes.append(_Outcome(started, False, f"kms: {exc!r}"))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        assert nodes[0].proc is not None
        nodes[0].proc.kill()  # kill -9
        nodes[0].proc.wait()
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(120)

        after = [o for o in outcomes if o.started > killed_at]
        assert after and all(o.ok for o in after), [o.what for o in after if not o.ok]
        failed_in_flight = [o for o in outcomes if not o.ok]
        assert len(failed_in_flight) <= len(threads)  # at most one request in flight per client
        assert len(acknowledged) > 10
        for name, digest in acknowledged.items():  # every acknowledged PUT, byte for byte
            body = s3.get_object(Bucket="through-lb", Key=name)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest, name

        # The killed node rejoins on restart and serves again, directly and through HAProxy.
        nodes[0].start()
        nodes[0].wait_ready()
        blob = nodes[0].kms().encrypt(KeyId=key_id, Plaintext=b"back")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"back"
        assert httpx_get(f"{nodes[0].s3_url}/readyz") == 200
    finally:
        lb.terminate()
        lb.wait(10)


def httpx_get(url: str) -> int:
    import httpx

    return httpx.get(url, timeout=10).status_code
