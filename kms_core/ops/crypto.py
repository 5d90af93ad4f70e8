"""The symmetric cryptographic calls: encrypt, decrypt, data keys and re-encryption of blobs.

The hot path: a key is resolved through the repository's snapshot cache and sealed with the
version's cached AEAD, so a data key costs no database round trip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from kms_core import blob as blobfmt
from kms_core.blob import Algorithm, BlobHeader
from kms_core.errors import InvalidCiphertext, InvalidKeyUsage, InvalidParameter, InvalidState
from kms_core.repository import KeyRecord, KeyRepository
from kms_core.specs import KeySpec, KeyUsage
from kms_core.states import check_usable
from kms_core.types import (
    Caller,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    ReEncryptResult,
)

MAX_PLAINTEXT = 6144
MAX_DATA_KEY = 1024
DEFAULT_DATA_KEY = 32

ALGORITHM = {KeySpec.AES_256: Algorithm.AES_256_GCM, KeySpec.SM4: Algorithm.SM4_GCM}


def check_data_key_length(length: int) -> None:
    if type(length) is not int or not 1 <= length <= MAX_DATA_KEY:
        raise InvalidParameter(f"data key length must be 1-{MAX_DATA_KEY} bytes")


class CryptoOps:
    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys

    def encryption_key(self, caller: Caller, ref: str) -> KeyRecord:
        rec = self._keys.resolve(caller, ref)
        check_usable(rec.state)
        if rec.usage is not KeyUsage.ENCRYPT_DECRYPT or not rec.spec.symmetric:
            raise InvalidKeyUsage(f"key {rec.id} cannot encrypt ({rec.spec.value}, {rec.usage.value})")
        if rec.primary_version_id is None:
            raise InvalidState(f"key {rec.id} has no key material")
        return rec

    def seal(self, rec: KeyRecord, plaintext: bytes, context: Mapping[str, str] | None) -> bytes:
        version_id = rec.primary_version_id
        assert version_id is not None
        header = BlobHeader(ALGORITHM[rec.spec], rec.id, version_id)
        return blobfmt.seal(self._keys.aead(rec, version_id), header, plaintext, context)

    def open(
        self, caller: Caller, ciphertext: bytes, context: Mapping[str, str] | None,
        expect_key: str | None = None,
    ) -> tuple[KeyRecord, DecryptResult]:
        if not isinstance(ciphertext, bytes):
            raise InvalidParameter("ciphertext must be bytes")
        b = blobfmt.decode_blob(ciphertext)
        rec = self._keys.resolve(caller, b.header.key_id)
        if expect_key is not None and self._keys.resolve(caller, expect_key).id != rec.id:
            raise InvalidKeyUsage("the ciphertext was made by a different key than the one given")
        check_usable(rec.state)
        if ALGORITHM.get(rec.spec) is not b.header.algorithm:
            raise InvalidCiphertext()
        plaintext = blobfmt.open_blob(self._keys.aead(rec, b.header.version_id), b, context)
        return rec, DecryptResult(plaintext, rec.id, b.header.version_id)

    def encrypt(
        self, caller: Caller, ref: str, plaintext: bytes, context: Mapping[str, str] | None
    ) -> EncryptResult:
        if not isinstance(plaintext, bytes) or not 1 <= len(plaintext) <= MAX_PLAINTEXT:
            raise InvalidParameter(f"plaintext must be 1-{MAX_PLAINTEXT} bytes")
        rec = self.encryption_key(caller, ref)
        sealed = self.seal(rec, plaintext, context)
        return EncryptResult(sealed, rec.id, rec.primary_version_id or "")

    def data_key(
        self, caller: Caller, ref: str, length: int, context: Mapping[str, str] | None,
        *, with_plaintext: bool,
    ) -> DataKeyResult:
        check_data_key_length(length)
        rec = self.encryption_key(caller, ref)
        data_key = os.urandom(length)
        sealed = self.seal(rec, data_key, context)
        return DataKeyResult(data_key if with_plaintext else None, sealed, rec.id,
                             rec.primary_version_id or "")

    def re_encrypt(
        self, caller: Caller, ciphertext: bytes, dest: KeyRecord, source_context: Mapping[str, str] | None,
        destination_context: Mapping[str, str] | None, source_key: str | None,
    ) -> ReEncryptResult:
        """A symmetric blob opened and sealed again under `dest` (an `encryption_key`)."""
        src, opened = self.open(caller, ciphertext, source_context, source_key)
        sealed = self.seal(dest, opened.plaintext, destination_context)
        return ReEncryptResult(sealed, src.id, opened.version_id, dest.id,
                               dest.primary_version_id or "")

    @staticmethod
    def generate_random(length: int) -> bytes:
        if type(length) is not int or not 1 <= length <= MAX_DATA_KEY:
            raise InvalidParameter(f"random length must be 1-{MAX_DATA_KEY} bytes")
        return os.urandom(length)
