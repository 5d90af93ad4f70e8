"""Key stores: where key material lives and where it is used.

Two implementations behind one interface: `SoftwareKeyStore` (material wrapped by a root key
file) and `HsmKeyStore` (PKCS#11; AES keys generated and used inside the HSM). Metadata keeps an
opaque `stored` reference per key version, produced by `generate_symmetric` and given back to
`open_symmetric`; only the key store that made it understands it.
"""

from __future__ import annotations

from typing import Protocol

from kms_core.blob import Aead
from kms_core.specs import KeySpec, Protection


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


def material_aad(purpose: str, version_id: str, spec: KeySpec) -> bytes:
    """Associated data that binds wrapped material to its version and spec."""
    return f"ssegw/{purpose}/v1/{spec.value}/{version_id}".encode()
