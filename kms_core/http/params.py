"""Typed access to a JSON request body: every wrong or missing field is an InvalidParameter."""

from __future__ import annotations

import base64
import binascii
import builtins
from collections.abc import Mapping
from typing import Any

from kms_core.errors import InvalidParameter

_MISSING = object()


class Params:
    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = body

    def _get(self, name: builtins.str, required: builtins.bool) -> Any:
        value = self._body.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise InvalidParameter(f"{name} is required")
            return None
        return value

    def raw(self, name: builtins.str) -> Any:
        """The field as sent (None if absent), for callers that check its type themselves."""
        return self._get(name, False)

    def str(self, name: builtins.str, required: builtins.bool = True, default: builtins.str | None = None) -> Any:
        value = self._get(name, required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise InvalidParameter(f"{name} must be a string")
        return value

    def int(self, name: builtins.str, required: builtins.bool = True, default: builtins.int | None = None) -> Any:
        value = self._get(name, required)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidParameter(f"{name} must be an integer")
        return value

    def bool(self, name: builtins.str, default: builtins.bool = False) -> builtins.bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InvalidParameter(f"{name} must be true or false")
        return value

    def blob(self, name: builtins.str, required: builtins.bool = True) -> Any:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidParameter(f"{name} must be a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameter(f"{name} is not valid base64") from None

    def context(self, name: builtins.str) -> dict[builtins.str, builtins.str] | None:
        value = self._get(name, False)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise InvalidParameter(f"{name} must be an object of string values")
        return value
