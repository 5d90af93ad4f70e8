"""Imported key material (BYOK): keys of origin EXTERNAL, import parameters (a wrapping key pair
and a token valid 24 hours), importing 256 bits of material, and deleting it again.

A key accepts only the material first imported into it, ever (a keyed digest of it is kept).
"""

from __future__ import annotations

import hmac
import os
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from kms_core import hosting
from kms_core.byok import (
    IMPORT_TOKEN_TTL,
    WrappingAlgorithm,
    new_import_token,
    new_wrapping_key_pair,
    parse_wrapping_algorithm,
    parse_wrapping_key_spec,
    token_id,
    unwrap_material,
)
from kms_core.errors import (
    AlreadyExists,
    ExpiredImportToken,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidImportToken,
    InvalidParameter,
    InvalidState,
    KeyUnavailable,
    UnsupportedOperation,
)
from kms_core.keystore.software import RootSealer
from kms_core.models import ImportToken, Key, KeyVersion, utcnow
from kms_core.ops.checks import as_utc
from kms_core.ops.trash import Trash
from kms_core.repository import KeyRepository
from kms_core.specs import KeySpec, KeyUsage, Origin, Protection
from kms_core.states import Action, KeyState, transition
from kms_core.types import Caller, ImportParameters, KeyMetadata

IMPORTED_MATERIAL_LEN = 32


def _refuse_non_external(key: Key, what: str) -> None:
    if key.default_product:
        raise UnsupportedOperation(
            f"{key.id} is the default key of {key.default_product}; it cannot {what}"
        )
    if key.origin != Origin.EXTERNAL.value:
        raise UnsupportedOperation(
            f"{key.id} was created with KMS key material; only keys of origin EXTERNAL can {what}"
        )


def _digest_input(key_id: str, material: bytes) -> bytes:
    # Bound to the key id: equal material in two keys must not show as equal digests.
    return key_id.encode() + b"\x00" + material


def _wrapping_aad(key_id: str, tid: str) -> bytes:
    return f"ssegw/import-wrapping-key/v1/{key_id}/{tid}".encode()


def _material_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime):
        raise InvalidParameter("the expiry of the key material must be a datetime")
    valid_to = as_utc(expires_at)
    if valid_to <= now:
        raise InvalidParameter("the expiry of the key material must be in the future")
    return valid_to


@dataclass(frozen=True)
class _Import:
    """What an import was checked against, read in one transaction: the key and the token."""

    key_id: str
    spec: KeySpec
    level: Protection
    old_digest: bytes | None
    version_id: str | None
    token_id: str
    algorithm: WrappingAlgorithm
    sealed_private: bytes


class ImportOps:
    def __init__(self, keys: KeyRepository, trash: Trash) -> None:
        self._keys = keys
        self._trash = trash

    def _sealer(self) -> RootSealer:
        sealer = getattr(self._keys.keystore(Protection.SOFTWARE), "sealer", None)
        if not isinstance(sealer, RootSealer):
            raise KeyUnavailable("importing key material needs the software root key")
        return sealer

    def create_external_key(
        self,
        caller: Caller,
        spec: KeySpec,
        usage: KeyUsage,
        level: Protection,
        description: str,
        alias_name: str | None,
        enterprise_project: str,
    ) -> KeyMetadata:
        """An EXTERNAL-origin key: no material and no version until importKeyMaterial."""
        self._keys.keystore(level)  # fail now, not at import time, if the level has no key store
        now = self._keys.clock()
        key = self._keys.new_key_row(caller, str(uuid.uuid4()), spec, usage, level, Origin.EXTERNAL,
                                     KeyState.PENDING_IMPORT, description, enterprise_project, None, None, now)
        try:
            with self._keys.session() as s:
                s.add(key)
                s.flush()
                hosting.start(s, key, now)  # a key waiting for its material is billed too
                if alias_name:
                    s.add(self._keys.new_alias_row(caller, alias_name, key.id, now))
                s.commit()
                return self._keys.metadata(s, key)
        except IntegrityError:
            raise AlreadyExists(f"alias {alias_name!r} already exists") from None

    def parameters(self, caller: Caller, ref: str, wrapping_algorithm: str,
                   wrapping_key_spec: str) -> ImportParameters:
        algorithm = parse_wrapping_algorithm(wrapping_algorithm)
        kspec = parse_wrapping_key_spec(wrapping_key_spec)
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            _refuse_non_external(key, "import key material")
            if key.state == KeyState.PENDING_DELETION.value:
                raise InvalidState("the key is PendingDeletion; cancel the deletion first")
            key_id = key.id
        sealer = self._sealer()
        pair = new_wrapping_key_pair()
        token = new_import_token()
        tid = token_id(token)
        now = self._keys.clock()
        row = ImportToken(
            id=tid,
            key_id=key_id,
            wrapping_algorithm=algorithm.value,
            wrapping_key_spec=kspec.value,
            sealed_private_key=sealer.seal(pair.private_der, _wrapping_aad(key_id, tid)),
            created_at=now,
            expires_at=now + IMPORT_TOKEN_TTL,
        )
        with self._keys.session() as s:
            s.add(row)
            s.commit()
        return ImportParameters(key_id, pair.public_der, token, as_utc(row.expires_at),
                                algorithm.value, kspec.value)

    def import_material(self, caller: Caller, ref: str, encrypted_material: bytes, import_token: bytes,
                        expires_at: datetime | None) -> KeyMetadata:
        if not isinstance(encrypted_material, bytes) or not encrypted_material:
            raise InvalidParameter("the encrypted key material is required (bytes)")
        tid = token_id(import_token)
        now = self._keys.clock()
        valid_to = _material_expiry(expires_at, now)
        with self._keys.session() as s:
            target = self._check_import(s, caller, ref, tid, now)
        material, digest = self._unwrap(target, encrypted_material)
        return self._store(target, material, digest, valid_to, now)

    def _check_import(self, s: Session, caller: Caller, ref: str, tid: str, now: datetime) -> _Import:
        """The key waits for material and the token is its own and still valid."""
        key = self._keys.find_key(s, caller, ref)
        _refuse_non_external(key, "import key material")
        if key.state != KeyState.PENDING_IMPORT.value:
            if key.state in (KeyState.ENABLED.value, KeyState.DISABLED.value):
                raise InvalidState(
                    f"the key is {key.state} and already holds key material; delete the "
                    "material before importing it again"
                )
            transition(KeyState(key.state), Action.IMPORT_MATERIAL)  # raises InvalidState
        tok = s.get(ImportToken, tid)
        if tok is None:
            raise InvalidImportToken("the import token is not valid; get a new one with "
                                     "getParametersForImport")
        if tok.key_id != key.id:
            raise InvalidImportToken(
                "the import token was issued for another key; a token imports only into "
                "the key it was issued for"
            )
        if as_utc(tok.expires_at) <= now:
            raise ExpiredImportToken(
                f"the import token expired at {as_utc(tok.expires_at).isoformat()}; get new "
                "import parameters"
            )
        return _Import(key.id, KeySpec(key.spec), Protection(key.protection), key.material_digest,
                       key.primary_version_id, tid, parse_wrapping_algorithm(tok.wrapping_algorithm),
                       tok.sealed_private_key)

    def _unwrap(self, target: _Import, encrypted: bytes) -> tuple[bytes, bytes]:
        """The material and its keyed digest; the digest must be the key's first material's."""
        sealer = self._sealer()
        private_der = sealer.unseal(target.sealed_private, _wrapping_aad(target.key_id, target.token_id))
        if target.algorithm is WrappingAlgorithm.RSAES_PKCS1_V1_5:
            material = self._unwrap_pkcs1_v15(sealer, target, private_der, encrypted)
        else:
            material = unwrap_material(private_der, target.algorithm, encrypted)
            if len(material) != IMPORTED_MATERIAL_LEN:
                raise InvalidParameter(
                    f"{target.spec.value} key material must be 256 bits ({IMPORTED_MATERIAL_LEN} bytes); "
                    f"the decrypted material is {len(material)} bytes"
                )
        digest = sealer.mac("byok-material", _digest_input(target.key_id, material))
        if target.old_digest is not None and not hmac.compare_digest(target.old_digest, digest):
            raise IncorrectKeyMaterial(
                f"key {target.key_id} accepts only the key material first imported into it; this is "
                "different material"
            )
        return material, digest

    def _store(self, target: _Import, material: bytes, digest: bytes, valid_to: datetime | None,
               now: datetime) -> KeyMetadata:
        """Into the key store, then the key Enabled in one conditional transaction (or nothing)."""
        key_id, spec = target.key_id, target.spec
        version_id = target.version_id or str(uuid.uuid4())
        store = self._keys.keystore(target.level)
        stored = store.import_symmetric(spec, version_id, material)
        del material
        with self._keys.session() as s:
            res = s.exec(
                update(Key)
                .where(
                    col(Key.id) == key_id,
                    col(Key.state) == KeyState.PENDING_IMPORT.value,
                    col(Key.destroyed_at).is_(None),
                    or_(col(Key.material_digest).is_(None), col(Key.material_digest) == digest),
                )
                .values(state=KeyState.ENABLED.value, material_digest=digest,
                        material_expires_at=valid_to, primary_version_id=version_id,
                        updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                s.rollback()
                store.destroy(spec, version_id, stored)
                raise InvalidState(f"key {key_id} changed during the import; nothing was imported")
            version = s.get(KeyVersion, version_id)
            if version is None:
                s.add(KeyVersion(id=version_id, key_id=key_id, stored=stored, created_at=now))
            else:
                version.stored = stored
                s.add(version)
            s.commit()
            self._keys.forget_key(key_id)
            key = s.get(Key, key_id)
            assert key is not None
            return self._keys.metadata(s, key)

    def _unwrap_pkcs1_v15(self, sealer: RootSealer, target: _Import, private_der: bytes,
                          encrypted: bytes) -> bytes:
        """Material wrapped with RSAES_PKCS1_V1_5, or one opaque InvalidCiphertext.

        PKCS#1 v1.5 is the padding of Bleichenbacher's oracle: anything that tells a caller
        whether padding was good (another error, another timing, an IncorrectKeyMaterial for
        well-padded wrong material) lets them decrypt with enough tries. So bad padding, a
        wrong length and material other than what the key held before are one error, the
        "same material" check runs either way (on a random stand-in when the padding was bad),
        and a failed try burns the import token: each token's RSA key answers at most one
        failed question (tokens stay reusable for successful re-imports within 24 hours).
        """
        material: bytes | None
        try:
            material = unwrap_material(private_der, WrappingAlgorithm.RSAES_PKCS1_V1_5, encrypted,
                                       IMPORTED_MATERIAL_LEN)
        except InvalidCiphertext:
            material = None
        stand_in = material if material is not None else os.urandom(IMPORTED_MATERIAL_LEN)
        digest = sealer.mac("byok-material", _digest_input(target.key_id, stand_in))
        same = target.old_digest is None or hmac.compare_digest(target.old_digest, digest)
        if material is not None and same:
            return material
        with self._keys.session() as s:
            tok = s.get(ImportToken, target.token_id)
            if tok is not None:
                s.delete(tok)
                s.commit()
        raise InvalidCiphertext(
            "the encrypted key material could not be decrypted with the import token's wrapping "
            "key and algorithm, or is not the material this key held before; the import token "
            "is used up: get new import parameters"
        )

    def delete_material(self, caller: Caller, ref: str) -> KeyMetadata:
        """Imported material deleted: the key goes to PendingImport with its metadata kept."""
        wall = utcnow()
        owner = f"api:{uuid.uuid4().hex}"
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            _refuse_non_external(key, "have key material deleted")
            old = KeyState(key.state)
            new = transition(old, Action.DELETE_MATERIAL)
            trash = self._trash.unlink(
                s, key, owner, wall,
                [col(Key.state) == old.value],
                {"state": new.value, "material_expires_at": None},
            )
            if trash is None:
                raise InvalidState(f"key {key.id} changed meanwhile; try again")
            s.commit()
            key_id = key.id
        self._keys.forget_key(key_id)
        self._trash.empty(trash, owner)
        with self._keys.session() as s:
            return self._keys.metadata(s, self._keys.find_key(s, caller, key_id))
