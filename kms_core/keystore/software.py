"""Software protection level: key material wrapped by a 256-bit root key kept in a file.

The root key file is created on first start with mode 0600, written whole and then linked into
place, so processes starting at once agree on one complete file. Everything stored under it is
AES-256-GCM with the owner's identity as associated data, so sealed values cannot be swapped
between rows.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from kms_core.asym_crypto import PrivateKeyOps
from kms_core.blob import Aead
from kms_core.errors import InvalidCiphertext, KmsError
from kms_core.keystore import material_aad
from kms_core.keystore.aead import AesGcm, Sm4Gcm
from kms_core.keystore.software_asym import SoftwareAsymmetric
from kms_core.specs import KeySpec, KeyUsage, Protection

ROOT_KEY_LEN = 32
NONCE_LEN = 12
_SEAL_VERSION = b"\x01"


def load_or_create_root_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create_root_key(path)
    data = path.read_bytes()
    if len(data) != ROOT_KEY_LEN:
        raise KmsError(f"root key file {path} is damaged ({len(data)} bytes)")
    if path.stat().st_mode & 0o077:
        raise KmsError(f"root key file {path} is readable by others; chmod 600 it")
    return data


def _create_root_key(path: Path) -> None:
    # Written whole to a private temporary file, then linked into place: link() fails if the
    # name exists, so of several processes starting at once exactly one key wins, and nobody
    # ever reads a file that is still being written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(ROOT_KEY_LEN))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process made it first: use theirs
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


class RootSealer:
    """Seal small secrets (key material, account secrets) under the root key."""

    def __init__(self, root_key: bytes) -> None:
        self._aead = AesGcm(root_key)
        # A separate key for MACs, derived one-way, so the AEAD key is never used for anything else.
        self._mac_root = hmac.new(root_key, b"ssegw/mac-root/v1", hashlib.sha256).digest()

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, data, aad)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < 1 + NONCE_LEN + 16 or sealed[:1] != _SEAL_VERSION:
            raise InvalidCiphertext("sealed value is damaged")
        return self._aead.decrypt(sealed[1 : 1 + NONCE_LEN], sealed[1 + NONCE_LEN :], aad)

    def mac(self, purpose: str, data: bytes) -> bytes:
        """HMAC-SHA-256 under a root-derived key, domain-separated by `purpose`."""
        key = hmac.new(self._mac_root, f"ssegw/mac/v1/{purpose}".encode(), hashlib.sha256).digest()
        return hmac.new(key, data, hashlib.sha256).digest()


def aead_for(spec: KeySpec, material: bytes) -> Aead:
    if spec is KeySpec.AES_256:
        return AesGcm(material)
    if spec is KeySpec.SM4:
        return Sm4Gcm(material)
    raise ValueError(f"{spec.value} is not a symmetric spec")


def material_len(spec: KeySpec) -> int:
    return 32 if spec is KeySpec.AES_256 else 16


class SoftwareKeyStore:
    protection = Protection.SOFTWARE

    def __init__(self, sealer: RootSealer) -> None:
        self._sealer = sealer
        self._asymmetric = SoftwareAsymmetric(sealer)

    @property
    def sealer(self) -> RootSealer:
        """The software root sealer (BYOK seals wrapping keys and digests material with it)."""
        return self._sealer

    def generate_symmetric(self, spec: KeySpec, version_id: str) -> bytes:
        material = os.urandom(material_len(spec))
        return self._sealer.seal(material, material_aad("material", version_id, spec))

    def open_symmetric(self, spec: KeySpec, version_id: str, stored: bytes) -> Aead:
        material = self._sealer.unseal(stored, material_aad("material", version_id, spec))
        return aead_for(spec, material)

    def import_symmetric(self, spec: KeySpec, version_id: str, material: bytes) -> bytes:
        # Same sealed form as generated material, so open_symmetric needs no second path.
        if len(material) != material_len(spec):
            raise ValueError(f"{spec.value} material must be {material_len(spec)} bytes")
        return self._sealer.seal(material, material_aad("material", version_id, spec))

    def destroy(self, spec: KeySpec, version_id: str, stored: bytes) -> None:
        # The wrapped material lives only in metadata; the caller erases that row's reference.
        return None

    def generate_asymmetric(self, spec: KeySpec, usage: KeyUsage, version_id: str) -> tuple[bytes, bytes]:
        return self._asymmetric.generate_asymmetric(spec, usage, version_id)

    def open_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str, stored: bytes, public_key: bytes
    ) -> PrivateKeyOps:
        return self._asymmetric.open_asymmetric(spec, usage, version_id, stored, public_key)
