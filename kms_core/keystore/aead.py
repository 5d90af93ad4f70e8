"""AEAD adapters over `cryptography` with the KMS's single failure type.

Every tamper failure becomes one opaque `InvalidCiphertext`, as pyca's `InvalidToken` does:
callers never learn which check failed.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_core.errors import InvalidCiphertext

TAG_LEN = 16


class AesGcm:
    """AES-256-GCM; the `AESGCM` object is built once per key and reused (it is the fast path)."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256 needs a 32-byte key")
        self._aead = AESGCM(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, data, associated_data)
        except InvalidTag:
            raise InvalidCiphertext() from None

    def __repr__(self) -> str:
        return "AesGcm(<key hidden>)"


class Sm4Gcm:
    """SM4-GCM (GB/T 36624), through OpenSSL's SM4 in `cryptography`."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError("SM4 needs a 16-byte key")
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(associated_data)
        body = enc.update(data) + enc.finalize()
        return body + enc.tag

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        if len(data) < TAG_LEN:
            raise InvalidCiphertext()
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, data[-TAG_LEN:])).decryptor()
        dec.authenticate_additional_data(associated_data)
        try:
            return dec.update(data[:-TAG_LEN]) + dec.finalize()
        except InvalidTag:
            raise InvalidCiphertext() from None

    def __repr__(self) -> str:
        return "Sm4Gcm(<key hidden>)"
