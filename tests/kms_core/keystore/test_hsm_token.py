"""hsm_token's retry of SoftHSM2's transient CKR_GENERAL_ERROR (pure logic; the real token's
behaviour under ten processes is tests/gateway/test_cluster_startup.py)."""

from __future__ import annotations

from collections.abc import Callable

import pkcs11.exceptions as p11e
import pytest

from kms_core.keystore.hsm_token import _BUSY_TRIES, _again_if_busy


def _failing(times: int, error: type[Exception] = p11e.GeneralError) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error()
        return "done"

    return calls, call


def test_a_call_that_fails_busy_and_then_succeeds_is_made_again() -> None:
    calls, call = _failing(_BUSY_TRIES - 1)
    assert _again_if_busy(call) == "done"
    assert len(calls) == _BUSY_TRIES


def test_a_call_that_keeps_failing_raises_the_token_error() -> None:
    calls, call = _failing(_BUSY_TRIES)
    with pytest.raises(p11e.GeneralError):
        _again_if_busy(call)
    assert len(calls) == _BUSY_TRIES


def test_other_errors_are_not_retried() -> None:
    calls, call = _failing(1, p11e.KeyHandleInvalid)
    with pytest.raises(p11e.KeyHandleInvalid):
        _again_if_busy(call)
    assert len(calls) == 1
