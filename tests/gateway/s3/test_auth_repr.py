"""Secrets held by the proxy's request objects stay out of their reprs (and so out of log lines)."""

from __future__ import annotations

from gateway.s3.auth import Authenticated
from gateway.serve import DemoCredentials
from kms_core.types import Caller


def test_authenticated_repr_leaves_out_the_secret() -> None:
    a = Authenticated(Caller("123456789012", "cn-east-1", "AKID"), "s3cr3t-value", "UNSIGNED-PAYLOAD", None)
    assert "s3cr3t-value" not in repr(a) and "AKID" in repr(a)


def test_demo_credentials_repr_leaves_out_the_secret() -> None:
    d = DemoCredentials("123456789012", "AKID", "s3cr3t-value")
    assert "s3cr3t-value" not in repr(d)
