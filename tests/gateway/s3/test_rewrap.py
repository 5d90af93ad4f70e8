"""`ssegw s3 rewrap`: re-seal every object's key after a rotation or onto another key, resumably."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.s3.rewrap import rewrap
from kms_core.blob import decode_blob
from tests.gateway.s3.conftest import MiB, S3Stack, bucket_name, upload

pytestmark = pytest.mark.every_store  # runs against moto and SeaweedFS

ROOT = Path(__file__).parents[3]


def sealed_under(s3: S3Stack, bucket: str, key: str) -> tuple[str, str]:
    meta = s3.backend.head_object(Bucket=bucket, Key=key)["Metadata"]
    h = decode_blob(base64.b64decode(meta["ssegw-key"])).header
    return h.key_id, h.version_id


def test_rewrap_after_rotation_and_to_another_key(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    key_a = s3.kms.service.create_key(t.caller, alias="team-a").key_id
    contents: dict[str, bytes] = {}
    for i in range(4):
        contents[f"docs/{i}"] = os.urandom(1000 + i)
        c.put_object(Bucket=b, Key=f"docs/{i}", Body=contents[f"docs/{i}"], ServerSideEncryption="aws:kms",
                     SSEKMSKeyId=key_a, **({"BucketKeyEnabled": True} if i % 2 else {}))
    parts = [os.urandom(5 * MiB), os.urandom(77)]
    upload(c, b, "docs/big", parts, ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    contents["docs/big"] = b"".join(parts)
    c.put_object(Bucket=b, Key="other/x", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    s3.backend.put_object(Bucket=b, Key="docs/plain", Body=b"not ours")
    old_version = sealed_under(s3, b, "docs/0")[1]
    new_version = s3.kms.service.rotate_key_on_demand(t.caller, key_a)
    primary = s3.kms.service.describe_key(t.caller, key_a).primary_version_id
    assert primary != old_version, new_version

    out = io.StringIO()
    summary = rewrap(c, b, "docs/", progress_out=out)
    assert summary.counts == {"rewrapped": 5, "current": 0, "kept": 0, "plaintext": 1, "customer-key": 0, "gone": 0,
                              "failed": 0}, summary
    assert "rewrap 6/6 objects" in out.getvalue()
    for k, data in contents.items():
        assert sealed_under(s3, b, k) == (key_a, primary), k
        assert c.get_object(Bucket=b, Key=k)["Body"].read() == data
    assert sealed_under(s3, b, "other/x")[1] == old_version  # outside the prefix
    assert c.get_object(Bucket=b, Key="docs/big", PartNumber=2)["Body"].read() == parts[1]

    again = rewrap(c, b, "docs/", progress_out=io.StringIO())
    assert again.counts["current"] == 5 and again.counts["rewrapped"] == 0, again

    key_b = s3.kms.service.create_key(t.caller, alias="team-b").key_id
    moved = rewrap(c, b, "", "alias/team-b", progress_out=io.StringIO())
    assert moved.counts["rewrapped"] == 6 and moved.counts["failed"] == 0
    s3.kms.service.disable_key(t.caller, key_a)  # nothing needs the old key any more
    for k, data in contents.items():
        assert sealed_under(s3, b, k)[0] == key_b
        got = c.get_object(Bucket=b, Key=k)
        assert got["Body"].read() == data and got["SSEKMSKeyId"].endswith(key_b)


def test_rewrap_interrupted_and_resumed(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t, https=False)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    n = 120
    for i in range(n):
        c.put_object(Bucket=b, Key=f"k{i:03d}", Body=b"%d" % i)
    key_b = s3.kms.service.create_key(t.caller).key_id
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SSEGW_ACCESS_KEY_ID": t.access_key_id,
           "SSEGW_SECRET_ACCESS_KEY": t.secret_access_key}
    cmd = [sys.executable, "-m", "gateway.cli", "s3", "rewrap", "--bucket", b, "--to-key", key_b,
           "--endpoint-url", s3.http_url, "--concurrency", "1"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    line = first.stderr.readline()  # the first progress line: some objects are done
    assert line.startswith("rewrap "), line
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, (out, err)
    partial = json.loads(out)
    assert partial["interrupted"] and 0 < partial["rewrapped"] < n and "resume" in partial
    done = partial["rewrapped"]
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["current"] == done and summary["rewrapped"] == n - done and not summary["interrupted"]
    assert f"rewrap {n}/{n} objects" in second.stderr
    for i in range(0, n, 17):
        assert sealed_under(s3, b, f"k{i:03d}")[0] == key_b
        assert c.get_object(Bucket=b, Key=f"k{i:03d}")["Body"].read() == b"%d" % i


def test_rewrap_walks_every_version(s3: S3Stack) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    b = bucket_name()
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    key_a = s3.kms.service.create_key(t.caller).key_id
    key_b = s3.kms.service.create_key(t.caller).key_id
    old = c.put_object(Bucket=b, Key="k", Body=b"old", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    cur = c.put_object(Bucket=b, Key="k", Body=b"current", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    hidden = c.put_object(Bucket=b, Key="gone", Body=b"hidden", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    c.delete_object(Bucket=b, Key="gone")  # its only version is now an older one

    summary = rewrap(c, b, to_key=key_b, progress_out=io.StringIO())
    assert summary.objects == 3  # versions: k twice, gone once (a delete marker is no version)
    assert (summary.counts["rewrapped"], summary.counts["kept"], summary.counts["failed"]) == (1, 2, 0)
    assert "kept" in summary.as_json()
    assert c.get_object(Bucket=b, Key="k")["Body"].read() == b"current"
    assert c.head_object(Bucket=b, Key="k")["SSEKMSKeyId"].endswith(key_b)
    # Every version opens: the kept ones, and the one the rewrap's copy superseded.
    for vid, body in ((old["VersionId"], b"old"), (cur["VersionId"], b"current"),
                      (hidden["VersionId"], b"hidden")):
        assert c.get_object(Bucket=b, Key="k" if body != b"hidden" else "gone", VersionId=vid)["Body"].read() == body
    again = rewrap(c, b, to_key=key_b, progress_out=io.StringIO())
    assert again.counts["current"] == 1 and again.counts["rewrapped"] == 0 and again.counts["failed"] == 0
