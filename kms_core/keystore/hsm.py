"""The HSM protection level: a key store over the PKCS#11 token of `kms_core.keystore.hsm_token`.

AES_256 versions are secret-key objects generated inside the token, sensitive and not
extractable; encryption and decryption run inside the HSM (CKM_AES_GCM). Algorithms the token
cannot run (SoftHSM2 has no SM2/SM4) keep their material wrapped by the HSM root key, an AES key
that never leaves the token, and unwrap it only in memory for the operation. Asymmetric keys are
`kms_core.keystore.hsm_asym`'s.
"""

from __future__ import annotations

import os

from kms_core.asym_crypto import PrivateKeyOps
from kms_core.blob import Aead
from kms_core.errors import KmsError
from kms_core.keystore import material_aad
from kms_core.keystore.hsm_asym import HsmAsymmetric
from kms_core.keystore.hsm_token import (
    OBJECT,
    WRAPPED,
    CreationLock,
    Hsm,
    HsmAesGcm,
    HsmConfig,
    HsmRootSealer,
    key_label,
)
from kms_core.keystore.software import aead_for, material_len
from kms_core.specs import KeySpec, KeyUsage, Protection

# The token layer's names, for those who configure or open an HSM (node options, root keys).
__all__ = ["CreationLock", "Hsm", "HsmAesGcm", "HsmConfig", "HsmKeyStore", "HsmRootSealer"]


class HsmKeyStore:
    protection = Protection.HSM

    def __init__(self, config: HsmConfig, lock: CreationLock | None = None) -> None:
        self.hsm = Hsm(config)
        self.sealer = HsmRootSealer(self.hsm, lock)
        self._asymmetric = HsmAsymmetric(self.hsm, self.sealer)

    def generate_symmetric(self, spec: KeySpec, version_id: str) -> bytes:
        if spec is KeySpec.AES_256:
            label = key_label(version_id)
            self.hsm.generate_aes(label)
            return OBJECT + label.encode()
        if spec is KeySpec.SM4:
            material = os.urandom(material_len(spec))
            return WRAPPED + self.sealer.seal(material, material_aad("hsm-wrapped", version_id, spec))
        raise ValueError(f"{spec.value} is not a symmetric spec")

    def open_symmetric(self, spec: KeySpec, version_id: str, stored: bytes) -> Aead:
        kind, rest = stored[:1], stored[1:]
        if kind == OBJECT:
            return HsmAesGcm(self.hsm, rest.decode())
        if kind == WRAPPED:
            material = self.sealer.unseal(rest, material_aad("hsm-wrapped", version_id, spec))
            return aead_for(spec, material)
        raise KmsError("unknown HSM key reference")

    def import_symmetric(self, spec: KeySpec, version_id: str, material: bytes) -> bytes:
        # Imported material is wrapped by the HSM root key rather than made a token object:
        # the user holds a copy anyway, it is the same bytes on every re-import (so an AEAD
        # cached by another process stays valid), and deleting or expiring it is then a
        # database change with no HSM call that could fail half-way.
        if len(material) != material_len(spec):
            raise ValueError(f"{spec.value} material must be {material_len(spec)} bytes")
        return WRAPPED + self.sealer.seal(material, material_aad("hsm-wrapped", version_id, spec))

    def destroy(self, spec: KeySpec, version_id: str, stored: bytes) -> None:
        if stored[:1] == OBJECT:
            self.hsm.destroy(stored[1:].decode())

    def generate_asymmetric(self, spec: KeySpec, usage: KeyUsage, version_id: str) -> tuple[bytes, bytes]:
        return self._asymmetric.generate_asymmetric(spec, usage, version_id)

    def open_asymmetric(
        self, spec: KeySpec, usage: KeyUsage, version_id: str, stored: bytes, public_key: bytes
    ) -> PrivateKeyOps:
        return self._asymmetric.open_asymmetric(spec, usage, version_id, stored, public_key)
