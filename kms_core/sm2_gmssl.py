"""SM2 signatures through gmssl (pure Python): the cross-check and the fallback engine.

gmssl facts this wrapper works around (gmssl 3.2.2):
- `CryptSM2.__init__` does `public_key.lstrip("04")` when the key starts with "04", which
  also eats leading '0'/'4' digits of x; we set `public_key` after construction instead.
- `func.random_hex` draws from `random.choice` (Mersenne Twister, predictable), so we never let
  gmssl pick a nonce: the signing nonce k comes from `secrets`. Its `encrypt` offers no way to
  pass k and its `decrypt` computes C3 but never compares it, so this engine refuses to encrypt
  or decrypt; OpenSSL's engine does those.
- `verify` does not range-check r and s; the strict DER decoder here does.
- Signatures come back as raw r||s hex; they are DER-encoded here.
"""

from __future__ import annotations

import secrets

from gmssl import sm2 as gm

from kms_core import sm2
from kms_core.errors import KeyUnavailable
from kms_core.sm2_api import Sm2PrivateKey, Sm2PublicKey

_G = f"{sm2.GX:064x}{sm2.GY:064x}"
_NO_ENCRYPTION = (
    "SM2 encryption needs OpenSSL's SM2 (system libcrypto 3); gmssl's encrypt uses a "
    "non-cryptographic random nonce and its decrypt does not authenticate"
)


def _crypt(d: int | None, point: bytes) -> gm.CryptSM2:
    c = gm.CryptSM2(private_key=f"{d:064x}" if d is not None else "", public_key="", mode=1)
    c.public_key = point[1:].hex()  # x||y without the 04 prefix, untouched by lstrip
    return c


class _Public:
    def __init__(self, point: bytes) -> None:
        sm2.decode_point(point)
        self._crypt = _crypt(None, point)

    def verify_digest(self, e: bytes, signature: bytes) -> bool:
        if len(e) != sm2.DIGEST_LEN:
            return False
        try:
            raw = sm2.signature_to_raw(signature)
        except sm2.Sm2FormatError:
            return False
        return bool(self._crypt.verify(raw, e))

    def encrypt(self, plaintext: bytes) -> bytes:
        raise KeyUnavailable(_NO_ENCRYPTION)


class _Private:
    def __init__(self, d: int, point: bytes) -> None:
        self._crypt = _crypt(d, point)

    def sign_digest(self, e: bytes) -> bytes:
        if len(e) != sm2.DIGEST_LEN:
            raise ValueError("SM2 signs a 32-byte SM3 digest")
        while True:
            k = secrets.randbelow(sm2.N - 1) + 1
            raw = self._crypt.sign(e, f"{k:064x}")
            if raw is not None:  # r = 0, r + k = n or s = 0: draw another k, as the standard says
                return sm2.signature_from_raw(raw)

    def decrypt(self, ciphertext: bytes) -> bytes:
        raise KeyUnavailable(_NO_ENCRYPTION)

    def __repr__(self) -> str:
        return "GmsslSm2Private(<key hidden>)"


class GmsslSm2:
    name = "gmssl"

    def generate(self) -> tuple[int, bytes]:
        d = secrets.randbelow(sm2.N - 2) + 1  # [1, n-2]
        xy = _crypt(d, b"\x04" + bytes(64))._kg(d, _G)
        return d, b"\x04" + bytes.fromhex(xy)

    def load_private(self, d: int, point: bytes) -> Sm2PrivateKey:
        sm2.private_key_der(d, point)  # range and curve checks
        if _crypt(d, point)._kg(d, _G) != point[1:].hex():
            raise KeyUnavailable("SM2 private key does not match its public key")
        return _Private(d, point)

    def load_public(self, point: bytes) -> Sm2PublicKey:
        return _Public(point)
