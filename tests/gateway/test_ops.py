"""/healthz, /readyz and /metrics on both ports, request ids and JSON request logs, SIGTERM drain.

One real `ssegw serve` (SQLite, embedded SoftHSM2 token) in front of a moto server, with the
access log on (stderr to a file, read back by the tests).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer

from tests.serving import Served, free_port, start, stop

ROOT = Path(__file__).resolve().parents[2]


def _serve(tmp: Path, backend_url: str, *extra: str) -> Served:
    return start(tmp / "var", "--backend-url", backend_url, "--backend-access-key", "k",
                 "--backend-secret-key", "s", "--access-log", *extra, backend=None, stderr=tmp / "stderr.log")


def _log(served: Served) -> str:
    assert served.log is not None
    return served.log.read_text()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def node(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = _serve(tmp_path_factory.mktemp("ops"), moto_url)
    yield served
    stop(served, timeout=30)


def test_health_and_readiness_on_both_ports(node: Served) -> None:
    for base in (node.url, node.s3_url):
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "hsm": "ok", "s3_backend": "ok"}


def test_metrics_count_requests_with_ids_and_log_them(node: Served) -> None:
    r = httpx.post(f"{node.url}/", headers={"x-amz-target": "TrentService.ListKeys",
                                            "content-type": "application/x-amz-json-1.1"},
                   content=b"{}")
    assert r.status_code >= 400  # unsigned: refused, and still counted and logged
    request_id = r.headers["x-amz-request-id"]
    s3 = httpx.get(f"{node.s3_url}/some-bucket/some-key")
    assert s3.status_code == 403 and s3.headers["x-amz-request-id"]
    for base in (node.url, node.s3_url):
        text = httpx.get(f"{base}/metrics").text
        assert 'ssegw_requests_total{operation="ListKeys",server="kms"' in text
        assert 'ssegw_requests_total{operation="GET_object",server="s3",status="403"}' in text
        assert "ssegw_request_seconds_bucket" in text and "ssegw_kms_calls_total" in text
    deadline = time.monotonic() + 30
    while True:
        lines = [json.loads(x) for x in _log(node).splitlines() if x.startswith("{")]
        mine = [x for x in lines if x["request_id"] == request_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine and mine[0]["operation"] == "ListKeys" and mine[0]["status"] == r.status_code
    assert all(x["request_id"] for x in lines)


def test_not_ready_without_the_backend(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    served = _serve(tmp_path, dead)
    try:
        ready = httpx.get(f"{served.s3_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["s3_backend"].startswith("ConnectionRefusedError")
        assert ready.json()["checks"]["database"] == "ok"
        assert httpx.get(f"{served.s3_url}/healthz").status_code == 200
    finally:
        stop(served, timeout=30)


def test_sigterm_lets_in_flight_requests_finish(moto_url: str, tmp_path: Path) -> None:
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    served = _serve(tmp_path, moto_url, "--drain-delay", "0.5")
    creds = Credentials(served.credentials["AWS_ACCESS_KEY_ID"],
                        served.credentials["AWS_SECRET_ACCESS_KEY"])
    boto3.client("s3", endpoint_url=served.s3_url, region_name="cn-east-1",
                 aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                 ).create_bucket(Bucket="drain")
    data = os.urandom(64 * 1024)
    url = f"{served.s3_url}/drain/slow"
    signed = AWSRequest("PUT", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                                             "content-length": str(len(data))})
    SigV4Auth(creds, "s3", "cn-east-1").add_auth(signed)
    body_started = threading.Event()
    result: dict[str, object] = {}

    def slow_body() -> Iterator[bytes]:
        yield data[:1024]
        body_started.set()
        time.sleep(1.5)  # the request is in flight when SIGTERM arrives
        yield data[1024:]

    def request() -> None:
        try:
            r = httpx.put(url, content=slow_body(), headers=dict(signed.headers.items()), timeout=30)
            result["status"] = r.status_code
        except httpx.HTTPError as exc:
            result["error"] = repr(exc)

    t = threading.Thread(target=request)
    t.start()
    assert body_started.wait(30)
    served.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result.get("status") == 200, result  # finished and stored, not cut off
    assert served.proc.wait(30) == 0
    stored = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
    assert stored.head_object(Bucket="drain", Key="slow")["ContentLength"] > len(data)  # sealed
