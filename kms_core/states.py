"""The key state machine, pure: which action moves a key from which state to which.

The guide's states are Enabled, Disabled, PendingDeletion and PendingImport; only Enabled keys do
cryptography. Every function here is total over its inputs and raises `InvalidState` for an
action the current state does not allow, so callers never half-apply a transition.
"""

from __future__ import annotations

from enum import Enum

from kms_core.errors import Disabled, InvalidState


class KeyState(str, Enum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_IMPORT = "PendingImport"


class Action(str, Enum):
    ENABLE = "enable"
    DISABLE = "disable"
    SCHEDULE_DELETION = "scheduleDeletion"
    CANCEL_DELETION = "cancelDeletion"
    IMPORT_MATERIAL = "importMaterial"
    DELETE_MATERIAL = "deleteMaterial"


S = KeyState
A = Action

_TRANSITIONS: dict[tuple[KeyState, Action], KeyState] = {
    (S.ENABLED, A.ENABLE): S.ENABLED,
    (S.DISABLED, A.ENABLE): S.ENABLED,
    (S.ENABLED, A.DISABLE): S.DISABLED,
    (S.DISABLED, A.DISABLE): S.DISABLED,
    (S.ENABLED, A.SCHEDULE_DELETION): S.PENDING_DELETION,
    (S.DISABLED, A.SCHEDULE_DELETION): S.PENDING_DELETION,
    (S.PENDING_IMPORT, A.SCHEDULE_DELETION): S.PENDING_DELETION,
    # The guide: a cancelled deletion makes the key usable again.
    (S.PENDING_DELETION, A.CANCEL_DELETION): S.ENABLED,
    (S.PENDING_IMPORT, A.IMPORT_MATERIAL): S.ENABLED,
    (S.ENABLED, A.DELETE_MATERIAL): S.PENDING_IMPORT,
    (S.DISABLED, A.DELETE_MATERIAL): S.PENDING_IMPORT,
}


def transition(state: KeyState, action: Action, *, has_material: bool = True) -> KeyState:
    """The state after `action`, or InvalidState if `state` does not allow it.

    `has_material` matters only for imported keys: cancelling the deletion of a key whose
    material was never imported (or was deleted) returns it to PendingImport, not Enabled.
    """
    try:
        nxt = _TRANSITIONS[(state, action)]
    except KeyError:
        raise InvalidState(f"the key is {state.value}; {action.value} is not allowed") from None
    if action is A.CANCEL_DELETION and not has_material:
        return S.PENDING_IMPORT
    return nxt


def check_usable(state: KeyState) -> None:
    """Raise the error a cryptographic call on a key in `state` must fail with."""
    if state is S.ENABLED:
        return
    if state is S.DISABLED:
        raise Disabled("the key is disabled")
    raise InvalidState(f"the key is {state.value} and cannot be used")
