"""hsm_token's retry of SoftHSM2's transient CKR_GENERAL_ERROR (pure logic; the real token's
behaviour under ten processes is tests/gateway/test_cluster_startup.py)."""

from __future__ import annotations

from collections.abc import Callable

import pkcs11
import pkcs11.exceptions as p11e
import pytest

from kms_core.keystore import hsm_token
from kms_core.keystore.hsm_token import _BUSY_TRIES, HsmConfig, _again_if_busy


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


def test_finding_the_token_is_made_again_while_the_token_is_busy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CI saw one of ten nodes starting at once fail in `get_token` (the token list) with
    CKR_GENERAL_ERROR; the lookup is retried like the other calls that change nothing."""
    calls, get_token = _failing(_BUSY_TRIES - 1)

    class Lib:
        def __init__(self, module: str) -> None:
            self.module = module

        def get_token(self, token_label: str) -> str:
            assert token_label == "t"
            return get_token()

    module = "/nonexistent/busy-token-test.so"
    monkeypatch.setattr(pkcs11, "lib", Lib)  # the module hsm_token calls
    try:
        assert hsm_token._find_token(HsmConfig(module, "t", "pin")) == "done"
    finally:
        hsm_token._IN_USE.discard(module)
    assert len(calls) == _BUSY_TRIES
