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

Engines implement `kms_core.sm2_api` and work on the digest e = SM3(Z || M) (see
`kms_core.sm2`), so the Z value is computed once, in one place, for both, and a DIGEST-type
request goes the same way as a RAW one.
"""

from __future__ import annotations

import functools
import os

from kms_core.errors import KeyUnavailable
from kms_core.sm2_api import Sm2Engine, Sm2PrivateKey, Sm2PublicKey

# The interface lives in kms_core.sm2_api, which the engines implement without importing this
# module (no cycle); it is re-exported here for those who pick an engine.
__all__ = ["ENGINE_ENV", "Sm2Engine", "Sm2PrivateKey", "Sm2PublicKey", "default_engine", "engine_named"]

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
