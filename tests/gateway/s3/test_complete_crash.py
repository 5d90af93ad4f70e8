"""CompleteMultipartUpload stopped at each step (as a crash there leaves it), then retried.

The proxy (a real one, over HTTPS, in front of a real store) is made to fail its Complete at
each point through `Completion.fault`, an in-process seam nothing on the network reaches. Whatever
the point, a retried Complete finishes the job and answers the ETag every later HEAD answers,
the object reads back whole (even before the retry: a reader finishes the manifest), and the
upload's state records are gone once it is done.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.gateway.s3.conftest import S3Stack, bucket_name

MiB = 1024 * 1024
POINTS = ("before-backend-complete", "after-backend-complete", "after-manifest")


class Crash(Exception):
    pass


@pytest.fixture
def crash_at(s3: S3Stack) -> Iterator[list[str]]:
    """Points at which the next Complete fails (each once)."""
    points: list[str] = []
    completion = s3.proxy.uploads.completion

    async def fault(point: str) -> None:
        if point in points:
            points.remove(point)
            raise Crash(point)

    completion.fault = fault  # type: ignore[method-assign]
    try:
        yield points
    finally:
        del completion.fault


def _upload(c: Any, b: str, key: str) -> tuple[str, list[dict[str, Any]], bytes]:
    up = c.create_multipart_upload(Bucket=b, Key=key, ServerSideEncryption="aws:kms")["UploadId"]
    plains = [os.urandom(5 * MiB), os.urandom(123_457)]
    parts = [{"PartNumber": n, "ETag": c.upload_part(Bucket=b, Key=key, UploadId=up, PartNumber=n, Body=p)["ETag"]}
             for n, p in enumerate(plains, 1)]
    return up, parts, b"".join(plains)


def _state_keys(s3: S3Stack, b: str) -> list[str]:
    state = s3.proxy.state_bucket
    keys = [o["Key"] for o in s3.backend.list_objects_v2(Bucket=state).get("Contents", [])]
    return [k for k in keys if f"/{b}/" in f"/{k}"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("read_first", [False, True], ids=["retry", "read-then-retry"])
def test_complete_stopped_at_each_point_is_finished_by_a_retry(s3: S3Stack, crash_at: list[str], point: str,
                                                              read_first: bool) -> None:
    t = s3.tenant()
    c: Any = s3.client(t)
    # An SDK would retry the failed Complete at once (boto3 does): this client does not, so
    # that the test can look at what the failure left.
    once: Any = boto3.client("s3", endpoint_url=s3.url, region_name="cn-east-1", aws_access_key_id=t.access_key_id,
                             aws_secret_access_key=t.secret_access_key, verify=str(s3.cert),
                             config=Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
    b = bucket_name()
    c.create_bucket(Bucket=b)
    up, parts, body = _upload(c, b, "obj")
    crash_at.append(point)
    with pytest.raises(ClientError) as e:
        once.complete_multipart_upload(Bucket=b, Key="obj", UploadId=up, MultipartUpload={"Parts": parts})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    if point != "before-backend-complete":
        # The backend holds the object; only the proxy's manifest may be missing.
        assert s3.backend.head_object(Bucket=b, Key="obj")["Metadata"]["ssegw"] == "4"
    s3.proxy.reader._manifests.clear()  # as a fresh node would
    if read_first and point != "before-backend-complete":
        # A reader does not wait for the retry: the object reads whole.
        assert c.get_object(Bucket=b, Key="obj")["Body"].read() == body
    done = c.complete_multipart_upload(Bucket=b, Key="obj", UploadId=up, MultipartUpload={"Parts": parts})
    head = c.head_object(Bucket=b, Key="obj")
    assert done["ETag"] == head["ETag"] and head["ContentLength"] == len(body)
    assert c.get_object(Bucket=b, Key="obj")["Body"].read() == body
    again = c.complete_multipart_upload(Bucket=b, Key="obj", UploadId=up, MultipartUpload={"Parts": parts})
    assert again["ETag"] == done["ETag"]  # idempotent
    assert _state_keys(s3, b) == []  # nothing of the upload is left behind
    assert "Uploads" not in c.list_multipart_uploads(Bucket=b)
