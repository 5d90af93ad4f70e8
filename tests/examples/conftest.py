"""One `ssegw serve` for the examples that talk to a running gateway, as their readers would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.serving import start, stop


@dataclass
class Gateway:
    kms_url: str
    s3_url: str
    env: dict[str, str]  # the AWS_* exports the banner prints, as a reader pastes them


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Its default backend (SeaweedFS), as a reader who runs `ssegw serve` gets.
    served = start(tmp_path_factory.mktemp("gw"), backend=None)
    yield Gateway(served.url, served.s3_url,
                  {**served.env, "SSEGW_KMS_URL": served.url, "SSEGW_S3_URL": served.s3_url})
    stop(served)
