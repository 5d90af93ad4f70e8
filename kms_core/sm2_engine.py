"""Which implementation runs SM2, behind one small interface.

Two engines, both vetted implementations rather than our own curve arithmetic:

- `openssl` (`kms_core.sm2_openssl`): OpenSSL's SM2 in the system libcrypto (3.0+), through a
  dozen ctypes calls. `cryptography` does not expose SM2 (its curve list has no sm2p256v1 and
  SM2 signatures are not ECDSA), so this is the only fast vetted path available. It runs at
  ~95% of `openssl speed sm2` (see bench/asym_ops.py), about 30 times gmssl.
- `gmssl` (`kms_core.sm2_gmssl`): the pure-Python gmssl package. Sign and verify only: its
  encryption draws its ephemeral key from `random` (not a CSPRNG) and its decryption never
  checks C3, so the KMS does not encrypt or decrypt with it. It is the independent
  cross-check in the tests, and the fallback for signatures where libcrypto lacks SM2.

`SSEGW_SM2_ENGINE=openssl|gmssl` forces one; the default takes OpenSSL when it loads.

Engines work on the digest e = SM3(Z || M) (see `kms_core.sm2`), so the Z value is computed
once, in one place, for both, and a DIGEST-type request goes the same way as a RAW one.
"""

from __future__ import annotations

import functools
import os
from typing import Protocol

from kms_core.errors import KeyUnavailable


class Sm2PrivateKey(Protocol):
    def sign_digest(self, e: bytes) -> bytes:
        """DER signature of the 32-byte digest e = SM3(Z || M)."""
        ...

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Plaintext of a GM/T 0009 DER ciphertext; InvalidCiphertext on any failure."""
        ...


class Sm2PublicKey(Protocol):
    def verify_digest(self, e: bytes, signature: bytes) -> bool: ...

    def encrypt(self, plaintext: bytes) -> bytes:
        """GM/T 0009 DER ciphertext (C1C3C2) under this key, SM3 as the hash."""
        ...


class Sm2Engine(Protocol):
    name: str

    def generate(self) -> tuple[int, bytes]:
        """A fresh key pair: (d, uncompressed public point)."""
        ...

    def load_private(self, d: int, point: bytes) -> Sm2PrivateKey:
        """The private key d whose public point is `point`; a mismatch is an error."""
        ...

    def load_public(self, point: bytes) -> Sm2PublicKey: ...


ENGINE_ENV = "SSEGW_SM2_ENGINE"


def engine_named(name: str) -> Sm2Engine:
    if name == "openssl":
        from kms_core.sm2_openssl import OpenSslSm2

        return OpenSslSm2()
    if name == "gmssl":
        from kms_core.sm2_gmssl import GmsslSm2

        return GmsslSm2()
    raise KeyUnavailable(f"unknown SM2 engine {name!r}; expected openssl or gmssl")


@functools.cache
def default_engine() -> Sm2Engine:
    choice = os.environ.get(ENGINE_ENV, "auto").strip().lower()
    if choice != "auto":
        return engine_named(choice)
    try:
        return engine_named("openssl")
    except KeyUnavailable:
        return engine_named("gmssl")
