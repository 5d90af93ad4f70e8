"""The KMS service: the one front the HTTP dialects, the console, the CLI and the product clients
call. HTTP-free. Every call names its `Caller`; a key of another account or region is NotFound,
by id and by alias alike.

The front holds no logic of its own: it builds a `KeyRepository` (sessions, lookup, caches, key
stores) and the operation objects of `kms_core.ops` that use it, and delegates each public call
to one of them. Marking the public calls `@operation` here (frozen-account gate, audit log,
metering) keeps that wrapping to exactly one per call, whichever modules the call goes through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy.engine import Engine

from kms_core.changes import ChangeFeed
from kms_core.keystore import KeyStore
from kms_core.models import utcnow
from kms_core.observe import Observer, operation
from kms_core.ops.aliases import AliasOps
from kms_core.ops.asymmetric import AsymmetricOps
from kms_core.ops.crypto import DEFAULT_DATA_KEY, CryptoOps
from kms_core.ops.due import DueWork
from kms_core.ops.imports import ImportOps
from kms_core.ops.keys import DEFAULT_PENDING_DAYS, KeyOps
from kms_core.ops.rotation import DEFAULT_ROTATION_DAYS, RotationOps
from kms_core.ops.trash import Trash
from kms_core.repository import DEFAULT_CACHE_TTL, KeyRecord, KeyRepository
from kms_core.specs import Protection
from kms_core.states import Action
from kms_core.types import (
    AliasInfo,
    AsymmetricDecryptResult,
    AsymmetricEncryptResult,
    Caller,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    ExportDataKeyResult,
    ImportParameters,
    KeyMetadata,
    KeyVersionInfo,
    Page,
    PublicKeyResult,
    ReEncryptResult,
    RotationInfo,
    RotationStatus,
    SignResult,
    VerifyResult,
)


class KmsService:
    def __init__(
        self,
        engine: Engine,
        keystores: Mapping[Protection, KeyStore | Callable[[], KeyStore]],
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        clock: Callable[[], datetime] = utcnow,
        default_protection: Protection = Protection.SOFTWARE,
        observer: Observer | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        # Frozen-account gate, metering and audit around every @operation (None: none of them).
        self.observer = observer
        self.repository = KeyRepository(engine, keystores, cache_ttl=cache_ttl, clock=clock, changes=changes)
        keys = self.repository
        trash = Trash(keys)
        self._crypto = CryptoOps(keys)
        self._asymmetric = AsymmetricOps(keys, self._crypto)
        self._rotation = RotationOps(keys)
        self._imports = ImportOps(keys, trash)
        self._keys = KeyOps(keys, self._asymmetric, self._imports, self._rotation, observer, default_protection)
        self._aliases = AliasOps(keys)
        self._due = DueWork(keys, self._rotation, trash, observer)

    # ----------------------------------------------------------------- plumbing

    def keystore(self, protection: Protection) -> KeyStore:
        return self.repository.keystore(protection)

    def on_change(self, message: str) -> None:
        """A change made by another node (kms_core.changes): drop what it makes stale."""
        self.repository.on_change(message)

    def latest_version_id(self, caller: Caller, ref: str) -> str:
        """The newest version of a key, for dialects whose calls name no version (AWS's)."""
        return self.repository.latest_version_id(caller, ref)

    def resolve_key_id(self, caller: Caller, ref: str) -> str:
        """The key id an id, alias or ARN names for this caller (NotFound otherwise); not audited."""
        return self.repository.resolve(caller, ref).id

    # ------------------------------------------------------------ key lifecycle

    @operation("createKey", metered=False)
    def create_key(
        self,
        caller: Caller,
        *,
        spec: str = "AES_256",
        usage: str = "ENCRYPT_DECRYPT",
        protection: str | None = None,
        origin: str = "KMS",
        description: str = "",
        alias: str | None = None,
        enterprise_project: str = "default",
        rotation_period_days: int | None = None,
    ) -> KeyMetadata:
        return self._keys.create(caller, spec=spec, usage=usage, protection=protection, origin=origin,
                                 description=description, alias=alias, enterprise_project=enterprise_project,
                                 rotation_period_days=rotation_period_days)

    @operation("describeKey", metered=False)
    def describe_key(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._keys.describe(caller, ref)

    @operation("listKeys", metered=False)
    def list_keys(self, caller: Caller, *, limit: int = 100, marker: str | None = None) -> Page[KeyMetadata]:
        return self._keys.page(caller, limit, marker)

    @operation("updateKeyDescription", metered=False)
    def update_key_description(self, caller: Caller, ref: str, description: str) -> KeyMetadata:
        return self._keys.update_description(caller, ref, description)

    @operation("enableKey", metered=False)
    def enable_key(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._keys.change_state(caller, ref, Action.ENABLE)

    @operation("disableKey", metered=False)
    def disable_key(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._keys.change_state(caller, ref, Action.DISABLE)

    @operation("scheduleKeyDeletion", metered=False)
    def schedule_key_deletion(
        self, caller: Caller, ref: str, pending_days: int = DEFAULT_PENDING_DAYS
    ) -> KeyMetadata:
        return self._keys.schedule_deletion(caller, ref, pending_days)

    @operation("cancelKeyDeletion", metered=False)
    def cancel_key_deletion(self, caller: Caller, ref: str) -> KeyMetadata:
        return self._keys.change_state(caller, ref, Action.CANCEL_DELETION, deletion_date=None)

    def default_key(self, caller: Caller, product: str) -> KeyRecord:
        """The product's default key for this account and region, created on first use."""
        return self._keys.default_key(caller, product)

    # ------------------------------------------------------------------ aliases

    @operation("createAlias", metered=False)
    def create_alias(self, caller: Caller, alias: str, ref: str) -> AliasInfo:
        return self._aliases.create(caller, alias, ref)

    @operation("updateAlias", metered=False)
    def update_alias(self, caller: Caller, alias: str, ref: str) -> AliasInfo:
        return self._aliases.update(caller, alias, ref)

    @operation("deleteAlias", metered=False)
    def delete_alias(self, caller: Caller, alias: str) -> None:
        self._aliases.delete(caller, alias)

    @operation("listAlias", metered=False)
    def list_aliases(self, caller: Caller, *, limit: int = 100, marker: str | None = None) -> Page[AliasInfo]:
        return self._aliases.page(caller, limit, marker)

    @operation("listAliasByUuid", metered=False)
    def list_aliases_by_key(self, caller: Caller, ref: str) -> list[AliasInfo]:
        return self._aliases.by_key(caller, ref)

    # --------------------------------------------------------- cryptographic API

    @operation("encrypt", metered=True)
    def encrypt(
        self, caller: Caller, ref: str, plaintext: bytes, context: Mapping[str, str] | None = None
    ) -> EncryptResult:
        return self._crypto.encrypt(caller, ref, plaintext, context)

    @operation("decrypt", metered=True)
    def decrypt(
        self,
        caller: Caller,
        ciphertext: bytes,
        context: Mapping[str, str] | None = None,
        *,
        key: str | None = None,
    ) -> DecryptResult:
        return self._crypto.open(caller, ciphertext, context, key)[1]

    @operation("generateDataKey", metered=True)
    def generate_data_key(
        self,
        caller: Caller,
        ref: str,
        length: int = DEFAULT_DATA_KEY,
        context: Mapping[str, str] | None = None,
    ) -> DataKeyResult:
        return self._crypto.data_key(caller, ref, length, context, with_plaintext=True)

    @operation("generateDataKeyWithoutPlaintext", metered=True)
    def generate_data_key_without_plaintext(
        self,
        caller: Caller,
        ref: str,
        length: int = DEFAULT_DATA_KEY,
        context: Mapping[str, str] | None = None,
    ) -> DataKeyResult:
        return self._crypto.data_key(caller, ref, length, context, with_plaintext=False)

    @operation("reEncrypt", metered=True)
    def re_encrypt(
        self,
        caller: Caller,
        ciphertext: bytes,
        destination: str,
        *,
        source_context: Mapping[str, str] | None = None,
        destination_context: Mapping[str, str] | None = None,
        source_key: str | None = None,
        source_key_version: str | None = None,
        source_algorithm: str | None = None,
    ) -> ReEncryptResult:
        """A symmetric blob, or with `source_key_version` a public-key ciphertext of
        `source_key` (RSA OAEP or SM2, `source_algorithm`), re-sealed under `destination`."""
        dest = self._crypto.encryption_key(caller, destination)
        if source_key_version is not None:
            return self._asymmetric.re_encrypt(caller, ciphertext, dest, source_key, source_key_version,
                                               source_algorithm, destination_context)
        return self._crypto.re_encrypt(caller, ciphertext, dest, source_context, destination_context, source_key)

    def generate_random(self, length: int) -> bytes:
        return self._crypto.generate_random(length)

    # ---------------------------------------------------------------- rotation

    @operation("enableKeyRotation", metered=False)
    def enable_key_rotation(
        self, caller: Caller, ref: str, period_days: int = DEFAULT_ROTATION_DAYS
    ) -> RotationStatus:
        """Set or change the rotation policy: a new primary version every `period_days` days."""
        return self._rotation.enable(caller, ref, period_days)

    @operation("disableKeyRotation", metered=False)
    def disable_key_rotation(self, caller: Caller, ref: str) -> RotationStatus:
        """Cancel the rotation policy. Existing versions stay; the primary stays primary."""
        return self._rotation.disable(caller, ref)

    @operation("getKeyRotationStatus", metered=False)
    def get_key_rotation_status(self, caller: Caller, ref: str) -> RotationStatus:
        return self._rotation.status(caller, ref)

    @operation("rotateKeyOnDemand", metered=False)
    def rotate_key_on_demand(self, caller: Caller, ref: str) -> RotationInfo:
        """Make a new primary version now; the automatic schedule is not changed."""
        return self._rotation.rotate_on_demand(caller, ref)

    @operation("listKeyRotations", metered=False)
    def list_key_rotations(
        self, caller: Caller, ref: str, *, limit: int = 100, marker: str | None = None
    ) -> Page[RotationInfo]:
        return self._rotation.page(caller, ref, limit, marker)

    # -------------------------------------------------------------------- BYOK

    @operation("getParametersForImport", metered=False)
    def get_parameters_for_import(
        self,
        caller: Caller,
        ref: str,
        wrapping_algorithm: str = "RSAES_OAEP_SHA_256",
        wrapping_key_spec: str = "RSA_2048",
    ) -> ImportParameters:
        """An RSA_2048 wrapping public key (DER) and an import token valid for 24 hours.

        The token is bound to this key and may be used any number of times until it expires.
        """
        return self._imports.parameters(caller, ref, wrapping_algorithm, wrapping_key_spec)

    @operation("importKeyMaterial", metered=False)
    def import_key_material(
        self,
        caller: Caller,
        ref: str,
        encrypted_material: bytes,
        import_token: bytes,
        *,
        expires_at: datetime | None = None,
    ) -> KeyMetadata:
        """Import 256 bits of material wrapped under the token's public key; the key becomes
        Enabled. `expires_at` (optional) is when the material is deleted again.

        A key accepts only the material first imported into it, ever.
        """
        return self._imports.import_material(caller, ref, encrypted_material, import_token, expires_at)

    @operation("deleteImportedKeyMaterial", metered=False)
    def delete_key_material(self, caller: Caller, ref: str) -> KeyMetadata:
        """Delete imported material: the key goes to PendingImport with its metadata kept."""
        return self._imports.delete_material(caller, ref)

    # ---------------------------------------------------------- asymmetric keys

    @operation("createKeyVersion", metered=False)
    def create_key_version(self, caller: Caller, ref: str) -> KeyVersionInfo:
        """A new key pair for an asymmetric key. It is usable at once; nothing becomes primary."""
        return self._asymmetric.create_key_version(caller, ref)

    @operation("listKeyVersions", metered=False)
    def list_key_versions(
        self, caller: Caller, ref: str, *, limit: int = 100, marker: str | None = None
    ) -> Page[KeyVersionInfo]:
        """Versions of any key, oldest first; `marker` is the last version id of the page before."""
        return self._asymmetric.list_key_versions(caller, ref, limit=limit, marker=marker)

    @operation("describeKeyVersion", metered=False)
    def describe_key_version(self, caller: Caller, ref: str, version_id: str) -> KeyVersionInfo:
        return self._asymmetric.describe_key_version(caller, ref, version_id)

    @operation("getPublicKey", metered=True)
    def get_public_key(self, caller: Caller, ref: str, version_id: str) -> PublicKeyResult:
        return self._asymmetric.get_public_key(caller, ref, version_id)

    @operation("asymmetricSign", metered=True)
    def asymmetric_sign(
        self, caller: Caller, ref: str, version_id: str, message: bytes, *,
        algorithm: str | None = None, message_type: str = "RAW",
    ) -> SignResult:
        """Sign a message (RAW, hashed here) or its digest (DIGEST: SHA-256, SM3(Z||M) for SM2)."""
        return self._asymmetric.asymmetric_sign(caller, ref, version_id, message, algorithm=algorithm,
                                                message_type=message_type)

    @operation("asymmetricVerify", metered=True)
    def asymmetric_verify(
        self, caller: Caller, ref: str, version_id: str, message: bytes, signature: bytes, *,
        algorithm: str | None = None, message_type: str = "RAW",
    ) -> VerifyResult:
        """`valid` is False for any signature that does not verify, malformed ones included."""
        return self._asymmetric.asymmetric_verify(caller, ref, version_id, message, signature,
                                                  algorithm=algorithm, message_type=message_type)

    @operation("asymmetricEncrypt", metered=True)
    def asymmetric_encrypt(
        self, caller: Caller, ref: str, version_id: str, plaintext: bytes, *, algorithm: str | None = None,
    ) -> AsymmetricEncryptResult:
        return self._asymmetric.asymmetric_encrypt(caller, ref, version_id, plaintext, algorithm=algorithm)

    @operation("asymmetricDecrypt", metered=True)
    def asymmetric_decrypt(
        self, caller: Caller, ref: str, version_id: str, ciphertext: bytes, *, algorithm: str | None = None,
    ) -> AsymmetricDecryptResult:
        """InvalidCiphertext for anything that does not decrypt under this version."""
        return self._asymmetric.asymmetric_decrypt(caller, ref, version_id, ciphertext, algorithm=algorithm)

    @operation("exportDataKey", metered=True)
    def export_data_key(
        self, caller: Caller, ciphertext_blob: bytes, public_key: bytes | str, *,
        algorithm: str | None = None, context: Mapping[str, str] | None = None,
    ) -> ExportDataKeyResult:
        """Re-encrypt a sealed data key under the caller's RSA_2048 or SM2 public key (PEM/DER).

        The data key is opened here and only leaves encrypted under that public key.
        """
        return self._asymmetric.export_data_key(caller, ciphertext_blob, public_key, algorithm=algorithm,
                                                context=context)

    @operation("generateAndExportDataKey", metered=True)
    def generate_and_export_data_key(
        self, caller: Caller, ref: str, public_key: bytes | str, *,
        algorithm: str | None = None, length: int = 32, context: Mapping[str, str] | None = None,
    ) -> ExportDataKeyResult:
        """A new data key, sealed under the CMK and encrypted under the given public key."""
        return self._asymmetric.generate_and_export_data_key(caller, ref, public_key, algorithm=algorithm,
                                                             length=length, context=context)

    # ----------------------------------------------------------- scheduler work

    def due_rotations(self, wall: datetime, limit: int) -> list[str]:
        return self._due.due_rotations(wall, limit)

    def due_deletions(self, limit: int) -> list[str]:
        return self._due.due_deletions(limit)

    def due_expiries(self, limit: int) -> list[str]:
        return self._due.due_expiries(limit)

    def run_due_rotation(self, key_id: str, owner: str, wall: datetime) -> RotationInfo | None:
        return self._due.run_due_rotation(key_id, owner, wall)

    def run_due_deletion(self, key_id: str, owner: str, wall: datetime) -> bool:
        return self._due.run_due_deletion(key_id, owner, wall)

    def run_due_expiry(self, key_id: str, owner: str, wall: datetime) -> bool:
        return self._due.run_due_expiry(key_id, owner, wall)

    def run_trash_sweep(self, owner: str, wall: datetime, limit: int) -> int:
        return self._due.run_trash_sweep(owner, wall, limit)

    def purge_import_tokens(self) -> int:
        return self._due.purge_import_tokens()
