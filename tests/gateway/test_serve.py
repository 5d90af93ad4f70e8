"""`ssegw serve` as a user starts it: a real process, the aws CLI, a clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3

from tests.serving import Served, free_port, start, stop

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = start(tmp_path / "var")
    yield s
    if s.proc.poll() is None:
        stop(s)


def aws(s: Served, *args: str) -> dict[str, Any]:
    p = subprocess.run([str(BIN / "aws"), *args, "--endpoint-url", s.url, "--output", "json"],
                       capture_output=True, text=True, env=s.env, timeout=60)
    assert p.returncode == 0, p.stderr
    out: dict[str, Any] = json.loads(p.stdout) if p.stdout.strip() else {}
    return out


def ssegw(s: Served, *args: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, env=s.env, timeout=60)
    assert p.returncode == 0, p.stderr
    out: dict[str, Any] = json.loads(p.stdout)
    return out


def test_aws_cli_encrypts_and_decrypts(served: Served, tmp_path: Path) -> None:
    key = aws(served, "kms", "create-key", "--description", "from the aws cli")["KeyMetadata"]["KeyId"]
    aws(served, "kms", "create-alias", "--alias-name", "alias/cli", "--target-key-id", key)
    (tmp_path / "plain.txt").write_text("secret from a file")
    enc = aws(served, "kms", "encrypt", "--key-id", "alias/cli",
              "--plaintext", f"fileb://{tmp_path / 'plain.txt'}")
    assert enc["KeyId"].endswith(key)
    import base64

    (tmp_path / "blob").write_bytes(base64.b64decode(enc["CiphertextBlob"]))
    dec = aws(served, "kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}")
    assert base64.b64decode(dec["Plaintext"]) == b"secret from a file"


def test_usage_survives_a_clean_stop_and_freeze_applies(served: Served) -> None:
    key = aws(served, "kms", "create-key")["KeyMetadata"]["KeyId"]
    for _ in range(3):
        aws(served, "kms", "generate-data-key", "--key-id", key, "--number-of-bytes", "32")
    stop(served)  # buffered counts are flushed on SIGTERM
    usage = ssegw(served, "account", "usage", "demo")
    assert usage["usage"] == {"generateDataKey": 3}
    audit = ssegw(served, "account", "audit", "demo", "--key", key)
    assert [e["operation"] for e in audit["events"]] == ["createKey"] + ["generateDataKey"] * 3
    assert ssegw(served, "account", "freeze", "demo")["frozen"] is True
    again = start(served.data_dir)
    try:
        p = subprocess.run([str(BIN / "aws"), "kms", "list-keys", "--endpoint-url", again.url],
                           capture_output=True, text=True, env=again.env, timeout=60)
        assert p.returncode != 0 and "AccessDenied" in p.stderr
        assert ssegw(again, "account", "thaw", "demo")["frozen"] is False
        time.sleep(2.5)  # the server's frozen-flag cache (cache_ttl 2 s) notices the thaw
        assert aws(again, "kms", "list-keys")["Keys"][0]["KeyId"] == key
    finally:
        stop(again)


def test_https_with_a_generated_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    s = start(tmp_path / "var", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        s.env["AWS_CA_BUNDLE"] = str(cert)
        assert aws(s, "kms", "list-keys")["Keys"] == []
        from kms_core.client.http import HttpKmsClient

        c = HttpKmsClient(s.url, s.env["AWS_ACCESS_KEY_ID"], s.env["AWS_SECRET_ACCESS_KEY"],
                          "cn-east-1", ca_certs=str(cert))
        dk = c.generate_data_key("oss")
        assert c.decrypt_data_key(dk.sealed).plaintext == dk.plaintext
    finally:
        stop(s)


def test_kms_cli_over_http(served: Served, tmp_path: Path) -> None:
    env = {**served.env, "SSEGW_ACCESS_KEY_ID": served.env["AWS_ACCESS_KEY_ID"],
           "SSEGW_SECRET_ACCESS_KEY": served.env["AWS_SECRET_ACCESS_KEY"]}
    elsewhere = tmp_path / "not-the-server-data-dir"  # over HTTP the data dir is never opened

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "gateway.cli", "kms", *args, "--kms-url", served.url,
                            "--data-dir", str(elsewhere)], capture_output=True, text=True, env=env, timeout=60)
        assert (p.returncode == 0) == ok, p.stderr
        return p

    key = json.loads(cli("create-key", "--alias", "remote", "--protection", "HSM").stdout)
    assert key["protectionLevel"] == "Hsm"
    (tmp_path / "p.txt").write_text("over the wire")
    cli("encrypt", "alias/remote", "--in", str(tmp_path / "p.txt"), "--out", str(tmp_path / "c.bin"))
    cli("decrypt", "--in", str(tmp_path / "c.bin"), "--out", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "over the wire"
    usage = json.loads(cli("get-usage").stdout)
    assert usage["usage"]["encrypt"] == 1 and usage["usage"]["decrypt"] == 1
    bad = cli("describe-key", "alias/nope", ok=False)
    assert json.loads(bad.stderr)["errorCode"] == "NotFound"
    assert not elsewhere.exists()
    env["SSEGW_SECRET_ACCESS_KEY"] = "wrong"
    denied = cli("list-keys", ok=False)
    assert json.loads(denied.stderr)["errorCode"] == "SignatureDoesNotMatch"


def test_serve_names_its_pools_and_refuses_the_others(tmp_path: Path) -> None:
    """`--region` is repeatable; a request signed for a pool not served is refused by the S3
    proxy (AuthorizationHeaderMalformed naming the expected pool) and both KMS dialects."""
    import boto3
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials
    from botocore.exceptions import ClientError

    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "x"),
                          "--region", "xx-nowhere-9"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert bad.returncode == 2 and "unknown resource pool xx-nowhere-9" in bad.stderr
    s3_port = free_port()
    s = start(tmp_path / "var", "--region", "cn-east-1", "--region", "cn-xian-5", "--s3-port", str(s3_port))
    try:
        key_id, secret = s.env["AWS_ACCESS_KEY_ID"], s.env["AWS_SECRET_ACCESS_KEY"]

        def s3(region: str) -> Any:
            return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name=region,
                                aws_access_key_id=key_id, aws_secret_access_key=secret,
                                config=Config(retries={"max_attempts": 1}))

        def rest(region: str, op: str) -> tuple[int, dict[str, Any]]:
            url = f"{s.url}/v1/kms/{op}"
            req = AWSRequest(method="POST", url=url, data=b"{}", headers={"Content-Type": "application/json"})
            SigV4Auth(Credentials(key_id, secret), "kms", region).add_auth(req)
            resp = urllib3.request("POST", url, body=b"{}", headers=dict(req.headers.items()))
            return resp.status, json.loads(resp.data)

        s3("cn-xian-5").create_bucket(Bucket="in-xian")  # a served pool
        s3("cn-xian-5").put_object(Bucket="in-xian", Key="k", Body=b"pooled")
        assert s3("cn-xian-5").get_object(Bucket="in-xian", Key="k")["Body"].read() == b"pooled"
        # A PUT signed for us-west-2, sent as a plain signed request: refused, nothing stored.
        url = f"http://127.0.0.1:{s3_port}/in-xian/elsewhere"
        req = AWSRequest(method="PUT", url=url, data=b"never stored")
        S3SigV4Auth(Credentials(key_id, secret), "s3", "us-west-2").add_auth(req)
        refused = urllib3.request("PUT", url, body=b"never stored", headers=dict(req.headers.items()))
        assert refused.status == 400
        assert b"<Code>AuthorizationHeaderMalformed</Code>" in refused.data
        assert b"the region 'us-west-2' is wrong; expecting 'cn-east-1'" in refused.data
        assert b"<Region>cn-east-1</Region>" in refused.data
        keys = [o["Key"] for o in s3("cn-xian-5").list_objects_v2(Bucket="in-xian").get("Contents", [])]
        assert keys == ["k"]
        # boto3 does what it does against AWS: reads the expected region and signs again for it.
        s3("us-west-2").put_object(Bucket="in-xian", Key="redirected", Body=b"served pool")
        assert s3("cn-east-1").get_object(Bucket="in-xian", Key="redirected")["Body"].read() == b"served pool"
        url = s3("xx-nowhere-9").generate_presigned_url("get_object", Params={"Bucket": "in-xian", "Key": "k"})
        presigned = urllib3.request("GET", url)
        assert presigned.status == 400 and b"AuthorizationQueryParametersError" in presigned.data

        status, reply = rest("cn-xian-5", "createKey")
        assert status == 200 and reply["returnObj"]["result"]["region"] == "cn-xian-5"
        status, reply = rest("cn-xian-5", "listRegions")
        assert reply["returnObj"]["result"]["servedRegions"] == ["cn-east-1", "cn-xian-5"]
        status, reply = rest("cn-nanjing-3", "createKey")
        assert (status, reply["statusCode"], reply["errorCode"]) == (400, 900, "InvalidRegion")
        kms = boto3.client("kms", endpoint_url=s.url, region_name="xx-nowhere-9", aws_access_key_id=key_id,
                           aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as e:
            kms.create_key()
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
        status, reply = rest("cn-east-1", "listKeys")
        # Nothing was made in a refused pool (the default key is the redirected PUT's).
        assert [k["defaultProduct"] for k in reply["returnObj"]["result"]["keys"]] == ["oss"]
    finally:
        stop(s)


def _s3(s: Served) -> Any:
    return boto3.client("s3", endpoint_url=s.s3_url, region_name=s.env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=s.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=s.env["AWS_SECRET_ACCESS_KEY"])


def _weed_pid(data_dir: Path) -> int:
    return int((data_dir / "s3" / "weed.pid").read_text())


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_objects_survive_restarts_after_sigterm_and_sigkill(tmp_path: Path) -> None:
    """The default backend keeps objects: put through `ssegw serve`, stop it (SIGTERM, then
    SIGKILL), start it again, every object reads back byte for byte."""
    data = tmp_path / "var"
    s = start(data, backend="seaweedfs")
    stored: dict[tuple[str, str, str | None], bytes] = {}

    def put_round(c: Any, n: int) -> None:
        plain, keyed = f"plain-{n}", f"keyed-{n}"
        c.create_bucket(Bucket=plain)
        c.create_bucket(Bucket=keyed)
        c.put_bucket_encryption(Bucket=keyed, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]})
        for b in (plain, keyed):
            body = os.urandom(100_000 + n)
            c.put_object(Bucket=b, Key="single", Body=body)
            stored[(b, "single", None)] = body
            parts = [os.urandom(5 * 1024 * 1024), os.urandom(4321 + n)]
            up = c.create_multipart_upload(Bucket=b, Key="multi/part")
            done = [{"PartNumber": i, "ETag": c.upload_part(Bucket=b, Key="multi/part", UploadId=up["UploadId"],
                                                            PartNumber=i, Body=p)["ETag"]}
                    for i, p in enumerate(parts, 1)]
            c.complete_multipart_upload(Bucket=b, Key="multi/part", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": done})
            stored[(b, "multi/part", None)] = b"".join(parts)
        versioned = f"versioned-{n}"
        c.create_bucket(Bucket=versioned)
        c.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
        for body in (b"first version", b"second version"):
            v = c.put_object(Bucket=versioned, Key="doc", Body=body)["VersionId"]
            stored[(versioned, "doc", v)] = body

    def check(c: Any) -> None:
        for (b, k, version), body in stored.items():
            got = c.get_object(Bucket=b, Key=k, **({"VersionId": version} if version else {}))
            assert got["Body"].read() == body, (b, k, version)
        assert _s3_head_sizes(c, stored) == {key: len(body) for key, body in stored.items() if key[2] is None}

    try:
        assert f"embedded SeaweedFS: objects are kept in {(data / 's3').resolve()}" in s.banner
        put_round(_s3(s), 1)
        check(_s3(s))
        first = _weed_pid(data)
        stop(s)  # SIGTERM: the gateway stops its SeaweedFS before it exits
        assert not _alive(first) and not (data / "s3" / "weed.pid").exists()

        s = start(data, backend="seaweedfs")
        check(_s3(s))
        put_round(_s3(s), 2)
        orphan = _weed_pid(data)
        s.proc.kill()  # SIGKILL: no clean-up of ours runs
        s.proc.wait()
        # The kernel kills the orphaned weed (PR_SET_PDEATHSIG): it never outlives the gateway.
        deadline = time.monotonic() + 120
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(orphan)

        s = start(data, backend="seaweedfs")
        check(_s3(s))
        again = _weed_pid(data)
        assert again != orphan
    finally:
        if s.proc.poll() is None:
            stop(s)
    assert not _alive(again)


def _s3_head_sizes(c: Any, stored: dict[tuple[str, str, str | None], bytes]) -> dict[tuple[str, str, None], int]:
    return {(b, k, None): c.head_object(Bucket=b, Key=k)["ContentLength"] for (b, k, v) in stored if v is None}
