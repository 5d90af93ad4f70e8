"""The embedded SeaweedFS's process management: its identity file, its ports, and a leftover
`weed` (a gateway that crashed) stopped by the next start."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import boto3
import pytest

from gateway import seaweed
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


def test_a_first_start_whose_port_was_taken_meanwhile_starts_on_ports_chosen_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Between choosing a free port and weed binding it, something else takes it (here: a
    # listener opened in between). weed exits; the start chooses its ports again and serves.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    handed: list[int] = []

    def choosing(host: str) -> int:
        handed.append(port if not handed else real(host))
        return handed[-1]

    real = seaweed.listen_port
    monkeypatch.setattr(seaweed, "listen_port", choosing)
    weed = EmbeddedSeaweed(SeaweedConfig(tmp_path / "s3", volume_size_limit_mb=64))
    try:
        weed.start()
        assert port not in weed.ports.values() and handed.count(port) == 1
        assert json.loads((tmp_path / "s3" / "ports.json").read_text()) == weed.ports
    finally:
        weed.stop()
        taken.close()


def test_free_ports_are_chosen_below_the_ephemeral_range() -> None:
    # Ports the kernel gives outgoing connections are left to them.
    floor = seaweed._ephemeral_floor()
    ports = {seaweed.listen_port("127.0.0.1") for _ in range(20)}
    assert all(seaweed._LISTEN_FLOOR <= p < floor for p in ports), (floor, ports)
