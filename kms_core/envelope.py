"""The REST dialect's reply envelope, in the product guide's shape (its decrypt example).

Success::

    {"statusCode": 800,
     "returnObj": {"code": 200, "result": {...}, "statusCode": 200, "success": 1}}

Failure: `statusCode` 900 and the error in the same envelope, `code`/`statusCode` being the
HTTP status the reply is sent with; `errorCode` and `message` also sit at the top level (where
they were before the guide's shape was adopted, and where ctyun's OpenAPI puts them)::

    {"statusCode": 900, "errorCode": "NotFound", "message": "...",
     "returnObj": {"code": 404, "errorCode": "NotFound", "message": "...",
                   "statusCode": 404, "success": 0}}

Pure (errors only), so the HTTP client can use it without loading the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kms_core.errors import KmsError

SUCCESS, FAILURE = 800, 900


def success(result: Mapping[str, Any]) -> dict[str, Any]:
    return {"statusCode": SUCCESS,
            "returnObj": {"code": 200, "result": dict(result), "statusCode": 200, "success": 1}}


def failure(error: KmsError) -> dict[str, Any]:
    status = error.http_status
    return {
        "statusCode": FAILURE, "errorCode": error.code, "message": error.message,
        "returnObj": {"code": status, "errorCode": error.code, "message": error.message,
                      "statusCode": status, "success": 0},
    }


def error_classes() -> dict[str, type[KmsError]]:
    """Every KmsError subclass by its REST errorCode."""
    found: dict[str, type[KmsError]] = {}
    todo: list[type[KmsError]] = [KmsError]
    while todo:
        cls = todo.pop(0)
        # Classes elsewhere may reuse a code (node_options.OptionError is an InvalidParameter
        # too): the reply names the service's class, the one kms_core.errors defines.
        if cls.code not in found or cls.__module__ == "kms_core.errors":
            found[cls.code] = cls
        todo.extend(cls.__subclasses__())
    return found


_CLASSES: dict[str, type[KmsError]] | None = None


def error_from(reply: Mapping[str, Any]) -> KmsError:
    """The KmsError a failure envelope names (the generic KmsError for an unknown code)."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = error_classes()
    inner = reply.get("returnObj")
    inner = inner if isinstance(inner, Mapping) else {}
    code = reply.get("errorCode") or inner.get("errorCode") or ""
    message = reply.get("message") or inner.get("message") or "KMS error"
    cls = _CLASSES.get(str(code), KmsError)
    err = cls.__new__(cls)
    KmsError.__init__(err, str(message))
    if cls is KmsError and code:
        err.code = str(code)  # keep an unknown code visible to the caller
    return err


def unwrap(reply: Mapping[str, Any]) -> dict[str, Any]:
    """`returnObj.result` of a success envelope; raises the error a failure envelope names."""
    if reply.get("statusCode") == SUCCESS:
        inner = reply.get("returnObj")
        if isinstance(inner, Mapping) and isinstance(inner.get("result"), Mapping):
            return dict(inner["result"])
        raise KmsError("the KMS reply has no returnObj.result")
    raise error_from(reply)
