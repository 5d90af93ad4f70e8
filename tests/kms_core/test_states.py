"""The key state machine, pure."""

from __future__ import annotations

import pytest

from kms_core.errors import Disabled, InvalidState
from kms_core.states import Action, KeyState, check_usable, transition

S, A = KeyState, Action


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (S.ENABLED, A.DISABLE, S.DISABLED),
        (S.DISABLED, A.ENABLE, S.ENABLED),
        (S.ENABLED, A.ENABLE, S.ENABLED),
        (S.DISABLED, A.DISABLE, S.DISABLED),
        (S.ENABLED, A.SCHEDULE_DELETION, S.PENDING_DELETION),
        (S.DISABLED, A.SCHEDULE_DELETION, S.PENDING_DELETION),
        (S.PENDING_IMPORT, A.SCHEDULE_DELETION, S.PENDING_DELETION),
        (S.PENDING_DELETION, A.CANCEL_DELETION, S.ENABLED),
        (S.PENDING_IMPORT, A.IMPORT_MATERIAL, S.ENABLED),
        (S.ENABLED, A.DELETE_MATERIAL, S.PENDING_IMPORT),
    ],
)
def test_allowed_transitions(state: KeyState, action: Action, expected: KeyState) -> None:
    assert transition(state, action) is expected


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.PENDING_DELETION, A.ENABLE),
        (S.PENDING_DELETION, A.DISABLE),
        (S.PENDING_DELETION, A.SCHEDULE_DELETION),
        (S.ENABLED, A.CANCEL_DELETION),
        (S.DISABLED, A.CANCEL_DELETION),
        (S.PENDING_IMPORT, A.ENABLE),
        (S.ENABLED, A.IMPORT_MATERIAL),
        (S.PENDING_IMPORT, A.DELETE_MATERIAL),
    ],
)
def test_refused_transitions(state: KeyState, action: Action) -> None:
    with pytest.raises(InvalidState):
        transition(state, action)


def test_every_pair_is_either_a_state_or_invalid_state() -> None:
    for state in S:
        for action in A:
            try:
                assert isinstance(transition(state, action), KeyState)
            except InvalidState:
                pass


def test_cancel_deletion_without_material_returns_to_pending_import() -> None:
    assert transition(S.PENDING_DELETION, A.CANCEL_DELETION, has_material=False) is S.PENDING_IMPORT


def test_only_enabled_keys_are_usable() -> None:
    check_usable(S.ENABLED)
    with pytest.raises(Disabled):
        check_usable(S.DISABLED)
    for s in (S.PENDING_DELETION, S.PENDING_IMPORT):
        with pytest.raises(InvalidState):
            check_usable(s)
