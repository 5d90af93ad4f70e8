"""S3 errors: one root for the gateway, carrying the S3 code and HTTP status, rendered as S3 XML.

Every error the S3 proxy raises on purpose is an `S3Error` (or a subclass: `ChunkedError` for
request bodies, `BackendError` for a backend that failed), so the edge (app.py) answers any of
them from its attributes: `code`, `message`, `status`, `resource`, `headers`, `details`, and
`detail`, a note for the operator's log that never goes to the client.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from xml.sax.saxutils import escape

from kms_core import client as kms

# What AWS S3 answers when the KMS refuses (SSE-KMS objects): "KMS.<exception>", mostly 400.
_KMS_CODES: dict[type[kms.KmsError], tuple[str, int]] = {
    kms.NotFound: ("KMS.NotFoundException", 400),
    kms.Disabled: ("KMS.DisabledException", 400),
    kms.InvalidState: ("KMS.KMSInvalidStateException", 400),
    kms.InvalidCiphertext: ("KMS.InvalidCiphertextException", 400),
    kms.InvalidKeyUsage: ("KMS.InvalidKeyUsageException", 400),
    kms.UnsupportedOperation: ("KMS.UnsupportedOperationException", 400),
    kms.AccountFrozen: ("AccessDenied", 403),
    kms.AccessDenied: ("AccessDenied", 403),
    kms.InvalidParameter: ("InvalidArgument", 400),
    kms.KeyUnavailable: ("ServiceUnavailable", 503),
}


class S3Error(Exception):
    def __init__(self, code: str, message: str, status: int = 400, resource: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.resource = resource
        self.details: dict[str, str] = {}  # extra elements S3 adds for some codes (HeadersNotSigned)
        self.headers = headers or {}  # sent with the error (x-amz-delete-marker, x-amz-version-id)
        self.detail = ""  # for the operator's log only (set: the edge logs it as a warning)

    def to_xml(self, request_id: str) -> bytes:
        extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in self.details.items())
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>{extra}"
            f"<Resource>{escape(self.resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
        ).encode()


def from_kms(error: kms.KmsError) -> S3Error:
    for cls in type(error).__mro__:
        if cls in _KMS_CODES:
            code, status = _KMS_CODES[cls]
            return S3Error(code, error.message, status)
    return S3Error("KMS.KMSInternalException", error.message, 500)


def access_denied(message: str = "Access Denied") -> S3Error:
    return S3Error("AccessDenied", message, 403)


def no_such_bucket(bucket: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", 404, f"/{bucket}")


def no_such_key(bucket: str, key: str) -> S3Error:
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, f"/{bucket}/{key}")


def invalid_argument(message: str) -> S3Error:
    return S3Error("InvalidArgument", message, 400)


def not_implemented(message: str) -> S3Error:
    return S3Error("NotImplemented", message, 501)


_STATUS_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey", 405: "MethodNotAllowed",
                 409: "OperationAborted", 412: "PreconditionFailed", 416: "InvalidRange",
                 501: "NotImplemented", 503: "ServiceUnavailable"}
_KEPT_HEADERS = ("x-amz-delete-marker", "x-amz-version-id")


def from_backend(status: int, body: bytes, headers: Mapping[str, str]) -> S3Error:
    """The backend's error answer as our own: its Code and Message, our RequestId and Resource
    (the backend's name the backend's request, not the client's)."""
    code = message = None
    if body:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            root = None
        if root is not None:
            code, message = root.findtext("Code"), root.findtext("Message")
    if status == 200:  # an <Error> inside a 200 (S3 answers long operations before they end)
        status = 500
    if not code:
        code = _STATUS_CODES.get(status, "InternalError" if status >= 500 else "InvalidRequest")
    if status >= 500 and code not in ("NotImplemented", "ServiceUnavailable", "SlowDown"):
        code, message = "InternalError", f"the storage backend failed ({status} {code})"
    kept = {h: headers[h] for h in _KEPT_HEADERS if headers.get(h)}
    return S3Error(code, message or code, status, headers=kept)
