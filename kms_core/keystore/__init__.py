"""Key stores: where key material lives and where it is used.

Two implementations behind one interface: `SoftwareKeyStore` (material wrapped by a root key
file) and `HsmKeyStore` (PKCS#11; AES keys generated and used inside the HSM). Metadata keeps an
opaque `stored` reference per key version, produced by `generate_symmetric` and given back to
`open_symmetric`; only the key store that made it understands it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from kms_core.blob import Aead
from kms_core.specs import KeySpec, KeyUsage, Protection

if TYPE_CHECKING:
    from kms_core.asym_crypto import PrivateKeyOps


class Sealer(Protocol):
    """Seals small secrets under a root key: the software root key file (`RootSealer`) or the
    HSM root key inside the token (`HsmRootSealer`)."""

    def seal(self, data: bytes, aad: bytes) -> bytes: ...

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        """The sealed data; InvalidCiphertext when it or its associated data was altered."""
        ...


class KeyStore(Protocol):
    protection: Protection

    def generate_symmetric(self, spec: KeySpec, version_id: str) -> bytes:
        """Create key material for a new version; return the reference metadata stores."""
        ...

    def open_symmetric(self, spec: KeySpec, version_id: str, stored: bytes) -> Aead:
        """An AEAD that uses the version's material (inside the HSM where it can)."""
        ...

    def destroy(self, spec: KeySpec, version_id: str, stored: bytes) -> None:
        """Remove the material for good (HSM objects are deleted from the token)."""
        ...

    def import_symmetric(self, spec: KeySpec, version_id: str, material: bytes) -> bytes:
        """Keep imported (BYOK) material for a version; return the reference metadata stores.

        The result is opened by `open_symmetric` like generated material.
        """
        ...

    # Asymmetric keys (kms_core.keystore.software_asym, kms_core.keystore.hsm_asym).

    def generate_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str
    ) -> tuple[bytes, bytes]:
        """A new key pair: (the reference metadata stores, public key DER SubjectPublicKeyInfo)."""
        ...

    def open_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str, stored: bytes, public_key: bytes
    ) -> PrivateKeyOps:
        """Private-key operations of a version (checked to belong to `public_key`)."""
        ...


def material_aad(purpose: str, version_id: str, spec: KeySpec) -> bytes:
    """Associated data that binds wrapped material to its version and spec."""
    return f"ssegw/{purpose}/v1/{spec.value}/{version_id}".encode()


def asymmetric_aad(version_id: str, spec: KeySpec, public_key: bytes) -> bytes:
    """Associated data for a wrapped private key: its version, spec and public key.

    Binding the public key means a public key column changed in the database makes the private
    key fail to open, instead of letting verification disagree with signing.
    """
    digest = hashlib.sha256(public_key).hexdigest()
    return material_aad("asymmetric-private", version_id, spec) + f"/{digest}".encode()
