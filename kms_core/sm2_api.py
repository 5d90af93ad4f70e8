"""The interface of an SM2 engine (`kms_core.sm2_openssl`, `kms_core.sm2_gmssl`), which
`kms_core.sm2_engine` picks one of. Engines work on the digest e = SM3(Z || M) (`kms_core.sm2`)."""

from __future__ import annotations

from typing import Protocol


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
