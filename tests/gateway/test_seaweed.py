"""The embedded SeaweedFS's process management: its identity file, its ports, and a leftover
`weed` (a gateway that crashed) stopped by the next start."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import boto3
import pytest

from gateway.seaweed import IDENTITY_FILE, EmbeddedSeaweed, SeaweedConfig, SeaweedError, load_or_create_credentials


def test_identity_file_is_private_random_and_kept(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path)
    path = tmp_path / IDENTITY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_credentials(tmp_path) == first
    assert first.secret_access_key not in repr(first)
    other = load_or_create_credentials(tmp_path / "elsewhere")
    assert other.access_key_id != first.access_key_id and other.secret_access_key != first.secret_access_key
    identity = json.loads(path.read_text())["identities"][0]
    assert identity["credentials"][0]["secretKey"] == first.secret_access_key
    path.write_text("{not json")
    with pytest.raises(SeaweedError):
        load_or_create_credentials(tmp_path)


def test_a_leftover_weed_is_stopped_and_its_objects_served_by_the_next_start(tmp_path: Path) -> None:
    crashed = EmbeddedSeaweed(SeaweedConfig(tmp_path / "s3", volume_size_limit_mb=64)).start()
    assert crashed.process is not None and crashed.credentials is not None
    leftover = crashed.process
    c = boto3.client("s3", endpoint_url=crashed.url, region_name="us-east-1",
                     aws_access_key_id=crashed.credentials.access_key_id,
                     aws_secret_access_key=crashed.credentials.secret_access_key)
    c.create_bucket(Bucket="kept")
    c.put_object(Bucket="kept", Key="k", Body=b"still here")
    # The gateway that started it is gone without a word: the next start finds its pid file.
    again = EmbeddedSeaweed(SeaweedConfig(tmp_path / "s3", volume_size_limit_mb=64))
    try:
        again.start()
        assert leftover.poll() is not None  # stopped before the new one started
        assert again.ports == crashed.ports and again.credentials == crashed.credentials
        assert c.get_object(Bucket="kept", Key="k")["Body"].read() == b"still here"
    finally:
        again.stop()
    assert not (tmp_path / "s3" / "weed.pid").exists()
