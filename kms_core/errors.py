"""One error root for the KMS. Each error carries the codes its wire dialects send.

`code` is our REST dialect's errorCode (the guide's vocabulary), `aws_code` the AWS KMS
exception name, `http_status` the status both dialects reply with.
"""

from __future__ import annotations


class KmsError(Exception):
    code = "InternalError"
    aws_code = "KMSInternalException"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class NotFound(KmsError):
    code = "NotFound"
    aws_code = "NotFoundException"
    http_status = 404


class Disabled(KmsError):
    code = "Disabled"
    aws_code = "DisabledException"
    http_status = 409


class InvalidState(KmsError):
    code = "InvalidState"
    aws_code = "KMSInvalidStateException"
    http_status = 409


class InvalidCiphertext(KmsError):
    code = "InvalidCiphertext"
    aws_code = "InvalidCiphertextException"
    http_status = 400

    def __init__(self, message: str = "the ciphertext is invalid or was not made by this key") -> None:
        super().__init__(message)


class InvalidParameter(KmsError):
    code = "InvalidParameter"
    aws_code = "ValidationException"
    http_status = 400


class InvalidKeyUsage(KmsError):
    code = "InvalidKeyUsage"
    aws_code = "InvalidKeyUsageException"
    http_status = 400


class LimitExceeded(KmsError):
    code = "LimitExceeded"
    aws_code = "LimitExceededException"
    http_status = 400


class AlreadyExists(KmsError):
    code = "AlreadyExists"
    aws_code = "AlreadyExistsException"
    http_status = 409


class AccessDenied(KmsError):
    code = "AccessDenied"
    aws_code = "AccessDeniedException"
    http_status = 403


class UnsupportedOperation(KmsError):
    """The operation is not allowed on this kind of key (default keys, specs, origins)."""

    code = "UnsupportedOperation"
    aws_code = "UnsupportedOperationException"
    http_status = 400


class KeyUnavailable(KmsError):
    """The key store (HSM) could not be reached or failed; retrying may help."""

    code = "KeyUnavailable"
    aws_code = "KeyUnavailableException"
    http_status = 503


class AccountFrozen(KmsError):
    """The account is in arrears: every call, decrypt included, is refused until it is thawed."""

    code = "AccountFrozen"
    aws_code = "AccessDeniedException"
    http_status = 403


class InvalidImportToken(InvalidParameter):
    """BYOK: the import token is unknown, malformed or was issued for another key."""

    code = "InvalidImportToken"
    aws_code = "InvalidImportTokenException"


class ExpiredImportToken(InvalidParameter):
    """BYOK: the import token is older than its 24 hours; get new import parameters."""

    code = "ExpiredImportToken"
    aws_code = "ExpiredImportTokenException"


class IncorrectKeyMaterial(InvalidParameter):
    """BYOK: a key accepts only the material first imported into it, ever."""

    code = "IncorrectKeyMaterial"
    aws_code = "IncorrectKeyMaterialException"


class MissingAuthentication(KmsError):
    code = "MissingAuthentication"
    aws_code = "MissingAuthenticationTokenException"
    http_status = 403


class IncompleteSignature(KmsError):
    code = "IncompleteSignature"
    aws_code = "IncompleteSignatureException"
    http_status = 403


class InvalidAccessKeyId(KmsError):
    code = "InvalidAccessKeyId"
    aws_code = "UnrecognizedClientException"
    http_status = 403


class RequestExpired(KmsError):
    code = "RequestExpired"
    aws_code = "InvalidSignatureException"
    http_status = 403


class SignatureDoesNotMatch(KmsError):
    code = "SignatureDoesNotMatch"
    aws_code = "InvalidSignatureException"
    http_status = 403


class InvalidMarker(InvalidParameter):
    """A paging marker that no page of this listing handed out."""

    code = "InvalidMarker"
    aws_code = "InvalidMarkerException"


class UnknownOperation(KmsError):
    code = "UnknownOperation"
    aws_code = "UnknownOperationException"
    http_status = 400


class MalformedRequest(KmsError):
    """The body is not JSON, not an object, or too large."""

    code = "MalformedRequest"
    aws_code = "SerializationException"
    http_status = 400


class SignatureInvalid(KmsError):
    """Verify in the AWS dialect: AWS answers an invalid signature with an error, not False."""

    code = "SignatureInvalid"
    aws_code = "KMSInvalidSignatureException"
    http_status = 400


class InvalidRegion(KmsError):
    """The request is signed for a resource pool this deployment does not serve (as AWS answers
    a credential scoped to the wrong region); nothing is created in a pool nobody serves."""

    code = "InvalidRegion"
    aws_code = "InvalidSignatureException"
    http_status = 400
