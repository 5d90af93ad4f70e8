"""Key specs, usages, protection levels and origins, and which combinations the guide allows."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from kms_core.errors import InvalidParameter


class KeySpec(str, Enum):
    AES_256 = "AES_256"
    SM4 = "SM4"
    RSA_2048 = "RSA_2048"
    SM2 = "SM2"

    @property
    def symmetric(self) -> bool:
        return self in (KeySpec.AES_256, KeySpec.SM4)

    @property
    def guide_name(self) -> str:
        """The name the product guide's console and REST API use (`Ctyun_SM4`, ...)."""
        return _SPEC_GUIDE_NAMES.get(self.value, self.value)


class KeyUsage(str, Enum):
    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
    SIGN_VERIFY = "SIGN_VERIFY"

    @property
    def guide_name(self) -> str:
        return "Encrypt/Decrypt" if self is KeyUsage.ENCRYPT_DECRYPT else "Sign/Verify"


class Protection(str, Enum):
    SOFTWARE = "SOFTWARE"
    HSM = "HSM"

    @property
    def guide_name(self) -> str:
        return "Software" if self is Protection.SOFTWARE else "Hsm"


class Origin(str, Enum):
    KMS = "KMS"
    EXTERNAL = "EXTERNAL"


# The console names the Chinese algorithms with a vendor prefix; accept those spellings too.
_SPEC_ALIASES = {"CTYUN_SM4": "SM4", "CTYUN_SM2": "SM2", "SYMMETRIC_DEFAULT": "AES_256"}
_SPEC_GUIDE_NAMES = {"SM4": "Ctyun_SM4", "SM2": "Ctyun_SM2"}
# The guide writes usages as `Encrypt/Decrypt` and `Sign/Verify`; upper-cased for lookup.
_ENUM_ALIASES = {"ENCRYPT/DECRYPT": "ENCRYPT_DECRYPT", "SIGN/VERIFY": "SIGN_VERIFY"}


def parse_spec(value: str) -> KeySpec:
    name = value.strip().upper()
    name = _SPEC_ALIASES.get(name, name)
    try:
        return KeySpec(name)
    except ValueError:
        raise InvalidParameter(
            f"unknown key spec {value!r}; expected one of AES_256, SM4, RSA_2048, SM2"
        ) from None


E = TypeVar("E", bound=Enum)


def parse_enum(enum: type[E], value: str, what: str) -> E:
    name = value.strip().upper()
    try:
        return enum(_ENUM_ALIASES.get(name, name))
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise InvalidParameter(f"unknown {what} {value!r}; expected one of {allowed}") from None


def check_combination(spec: KeySpec, usage: KeyUsage, protection: Protection, origin: Origin) -> None:
    """Reject what the guide does not offer, with a message that says which rule."""
    if spec.symmetric and usage is not KeyUsage.ENCRYPT_DECRYPT:
        raise InvalidParameter(f"{spec.value} keys can only be used for ENCRYPT_DECRYPT")
    if spec in (KeySpec.SM4, KeySpec.SM2) and protection is not Protection.HSM:
        raise InvalidParameter(f"{spec.value} keys exist only at the HSM protection level")
    if origin is Origin.EXTERNAL and spec is not KeySpec.AES_256:
        raise InvalidParameter("only AES_256 keys can have imported (EXTERNAL) key material")
