"""Asymmetric keys in the KMS service: versions, public keys, signatures, public-key encryption,
data key export, and re-encryption of asymmetric ciphertexts.

`AsymmetricOps` is handed the key repository (sessions, lookup, the version caches, key stores)
and the symmetric `CryptoOps` (for data keys sealed under a CMK). The rules it carries, from the
guide (sections 3.2.6, 3.4, 4.4):

* RSA_2048 (Software or HSM) and SM2 (HSM) keys, usage ENCRYPT_DECRYPT or SIGN_VERIFY.
* No primary version and no automatic rotation: `create_key_version` makes a new key pair, and
  every asymmetric call names the key and the version. A version of another key is NotFound.
* At most 50 asymmetric versions per account per region, the key's first version included
  (LimitExceeded). The count is taken in the same transaction as the insert, with the account
  row locked (SELECT ... FOR UPDATE on PostgreSQL; SQLite serialises writers already).
* Public-key operations (getPublicKey, asymmetricVerify, asymmetricEncrypt, exportDataKey) use
  the version's stored SubjectPublicKeyInfo; private-key operations (asymmetricSign,
  asymmetricDecrypt) go to the key store, and no call returns private key material.
* Asymmetric ciphertexts and signatures are the algorithms' standard encodings (RSA OAEP bytes,
  GM/T 0009 DER for SM2, DER SM2 signatures), with no KMS framing, so that openssl and gmssl
  read them; decryption therefore names key, version and algorithm.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from kms_core import hosting
from kms_core.asym_crypto import (
    ENCRYPTION_ALGORITHMS,
    SIGNING_ALGORITHMS,
    PrivateKeyOps,
    SigningAlgorithm,
    check_usage,
    encryption_algorithm,
    load_public_key,
    parse_message_type,
    signing_algorithm,
)
from kms_core.errors import (
    AlreadyExists,
    InvalidKeyUsage,
    InvalidParameter,
    LimitExceeded,
    NotFound,
    UnsupportedOperation,
)
from kms_core.keystore import KeyStore
from kms_core.models import Account, Key, KeyVersion
from kms_core.ops.crypto import CryptoOps, check_data_key_length
from kms_core.repository import AsymmetricVersion, KeyRecord, KeyRepository
from kms_core.specs import KeySpec, KeyUsage, Origin, Protection
from kms_core.states import KeyState, check_usable
from kms_core.types import (
    AsymmetricDecryptResult,
    AsymmetricEncryptResult,
    Caller,
    ExportDataKeyResult,
    KeyMetadata,
    KeyVersionInfo,
    Page,
    PublicKeyResult,
    ReEncryptResult,
    SignResult,
    VerifyResult,
)

MAX_ASYMMETRIC_VERSIONS = 50
MAX_VERSION_LIST = 1000
ASYMMETRIC_SPECS = tuple(s.value for s in KeySpec if not s.symmetric)


def _version_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidParameter("a key version id is required for asymmetric keys")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"key version {value!r} does not exist") from None


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidParameter(f"{what} must be bytes")
    return value


class AsymmetricOps:
    def __init__(self, keys: KeyRepository, crypto: CryptoOps) -> None:
        self._keys = keys
        self._crypto = crypto

    @staticmethod
    def _count_asymmetric(s: Session, caller: Caller) -> int:
        q = (
            select(func.count())
            .select_from(KeyVersion)
            .join(Key, col(KeyVersion.key_id) == col(Key.id))
            .where(
                Key.account_id == caller.account_id,
                Key.region == caller.region,
                col(Key.spec).in_(ASYMMETRIC_SPECS),
                col(KeyVersion.stored).is_not(None),
            )
        )
        return int(s.exec(q).one())

    def _check_quota(self, s: Session, caller: Caller, *, lock: bool) -> None:
        if lock:
            # Serialises concurrent creators of one account on PostgreSQL; a no-op on SQLite,
            # whose IMMEDIATE transactions already serialise writers.
            s.exec(
                select(Account.id).where(Account.id == caller.account_id).with_for_update()
            ).first()
        if self._count_asymmetric(s, caller) >= MAX_ASYMMETRIC_VERSIONS:
            raise LimitExceeded(
                f"an account may have at most {MAX_ASYMMETRIC_VERSIONS} asymmetric key versions "
                f"per region"
            )

    def _generate_pair(
        self, caller: Caller, spec: KeySpec, usage: KeyUsage, level: Protection, version_id: str
    ) -> tuple[KeyStore, bytes, bytes]:
        # A cheap check before the (slow, HSM-side) generation; the binding one is at insert.
        with self._keys.session() as s:
            self._check_quota(s, caller, lock=False)
        store = self._keys.keystore(level)
        stored, public_der = store.generate_asymmetric(spec, usage, version_id)
        return store, stored, public_der

    def create_key(
        self,
        caller: Caller,
        spec: KeySpec,
        usage: KeyUsage,
        level: Protection,
        description: str,
        alias_name: str | None,
        enterprise_project: str,
    ) -> KeyMetadata:
        """createKey for RSA_2048 / SM2: the key and its first version (never primary)."""
        key_id, version_id = str(uuid.uuid4()), str(uuid.uuid4())
        store, stored, public_der = self._generate_pair(caller, spec, usage, level, version_id)
        now = self._keys.clock()
        key = self._keys.new_key_row(caller, key_id, spec, usage, level, Origin.KMS, KeyState.ENABLED,
                                     description, enterprise_project, None, None, now)
        try:
            with self._keys.session() as s:
                self._check_quota(s, caller, lock=True)
                s.add(key)
                s.flush()
                hosting.start(s, key, now)
                s.add(
                    KeyVersion(
                        id=version_id,
                        key_id=key_id,
                        stored=stored,
                        public_key=public_der,
                        created_at=now,
                    )
                )
                if alias_name:
                    s.add(self._keys.new_alias_row(caller, alias_name, key_id, now))
                s.commit()
                return self._keys.metadata(s, key)
        except IntegrityError:
            store.destroy(spec, version_id, stored)
            raise AlreadyExists(f"alias {alias_name!r} already exists") from None
        except LimitExceeded:
            store.destroy(spec, version_id, stored)
            raise

    # ------------------------------------------------------------- versions

    def create_key_version(self, caller: Caller, ref: str) -> KeyVersionInfo:
        """A new key pair for an asymmetric key. It is usable at once; nothing becomes primary."""
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            spec, usage, level = KeySpec(key.spec), KeyUsage(key.usage), Protection(key.protection)
            if spec.symmetric:
                raise UnsupportedOperation(
                    "symmetric keys get new versions by rotation (rotateKeyOnDemand or a policy)"
                )
            check_usable(KeyState(key.state))
            key_id = key.id
        version_id = str(uuid.uuid4())
        store, stored, public_der = self._generate_pair(caller, spec, usage, level, version_id)
        now = self._keys.clock()
        try:
            with self._keys.session() as s:
                self._check_quota(s, caller, lock=True)
                key = self._keys.find_key(s, caller, key_id)
                check_usable(KeyState(key.state))  # it may have changed during generation
                s.add(
                    KeyVersion(
                        id=version_id,
                        key_id=key_id,
                        stored=stored,
                        public_key=public_der,
                        created_at=now,
                    )
                )
                key.updated_at = now
                s.add(key)
                s.commit()
        except Exception:
            store.destroy(spec, version_id, stored)
            raise
        return KeyVersionInfo(key_id, version_id, now, False, spec.value, usage.value)

    def list_key_versions(
        self, caller: Caller, ref: str, *, limit: int = 100, marker: str | None = None
    ) -> Page[KeyVersionInfo]:
        """Versions of any key, oldest first; `marker` is the last version id of the page before."""
        if type(limit) is not int or not 1 <= limit <= MAX_VERSION_LIST:
            raise InvalidParameter(f"limit must be 1-{MAX_VERSION_LIST}")
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            q = select(KeyVersion).where(KeyVersion.key_id == key.id)
            if marker:
                after = s.get(KeyVersion, _version_id(marker))
                if after is None or after.key_id != key.id:
                    raise InvalidParameter("marker is not a version of this key")
                q = q.where(
                    (col(KeyVersion.created_at) > after.created_at)
                    | (
                        (col(KeyVersion.created_at) == after.created_at)
                        & (col(KeyVersion.id) > after.id)
                    )
                )
            rows = s.exec(
                q.order_by(col(KeyVersion.created_at), col(KeyVersion.id)).limit(limit + 1)
            ).all()
            items = [_version_info(key, v) for v in rows[:limit]]
        return Page(items, items[-1].version_id if len(rows) > limit else None)

    def describe_key_version(self, caller: Caller, ref: str, version_id: str) -> KeyVersionInfo:
        vid = _version_id(version_id)
        with self._keys.session() as s:
            key = self._keys.find_key(s, caller, ref)
            v = s.get(KeyVersion, vid)
            if v is None or v.key_id != key.id:
                raise NotFound(f"key version {vid} does not exist for key {key.id}")
            return _version_info(key, v)

    # ------------------------------------------------------ version resolution

    def _asymmetric_version(
        self, caller: Caller, ref: str, version_id: object, usage: KeyUsage | None
    ) -> tuple[KeyRecord, str, AsymmetricVersion]:
        """An Enabled asymmetric key (of `usage` if given) and one of its versions."""
        vid = _version_id(version_id)
        rec = self._keys.resolve(caller, ref)
        if rec.spec.symmetric:
            raise InvalidKeyUsage(
                f"key {rec.id} is symmetric ({rec.spec.value}); it has no key pair"
            )
        if usage is not None:
            check_usage(rec.spec, rec.usage, usage)
        check_usable(rec.state)
        ck = (rec.id, vid)
        version = self._keys.caches.versions.get(ck)
        if version is None:
            with self._keys.session() as s:
                v = s.get(KeyVersion, vid)
            if v is None or v.key_id != rec.id:
                raise NotFound(f"key version {vid} does not exist for key {rec.id}")
            if v.stored is None or v.public_key is None:
                raise NotFound(f"the key material of version {vid} has been destroyed")
            version = AsymmetricVersion(load_public_key(v.public_key), v.stored)
            self._keys.caches.versions[ck] = version
        return rec, vid, version

    def _private(self, rec: KeyRecord, vid: str, version: AsymmetricVersion) -> PrivateKeyOps:
        ops = self._keys.caches.private.get((rec.id, vid))
        if ops is None:
            ops = self._keys.keystore(rec.protection).open_asymmetric(
                rec.spec, rec.usage, vid, version.stored, version.public.der
            )
            self._keys.caches.private[(rec.id, vid)] = ops
        return ops

    # ------------------------------------------------------------ public keys

    def get_public_key(self, caller: Caller, ref: str, version_id: str) -> PublicKeyResult:
        rec, vid, version = self._asymmetric_version(caller, ref, version_id, None)
        signing = rec.usage is KeyUsage.SIGN_VERIFY
        return PublicKeyResult(
            key_id=rec.id,
            version_id=vid,
            spec=rec.spec.value,
            usage=rec.usage.value,
            public_key_pem=version.public.pem,
            public_key_der=version.public.der,
            signing_algorithms=tuple(a.value for a in SIGNING_ALGORITHMS[rec.spec])
            if signing
            else (),
            encryption_algorithms=()
            if signing
            else tuple(a.value for a in ENCRYPTION_ALGORITHMS[rec.spec]),
        )

    # ------------------------------------------------------------- signatures

    def _signing_input(self, caller: Caller, ref: str, version_id: str, message: bytes, algorithm: str | None,
                       message_type: str) -> tuple[KeyRecord, str, AsymmetricVersion, SigningAlgorithm, bytes]:
        """What signing and verifying share: the version, the algorithm, and the digest to sign."""
        rec, vid, version = self._asymmetric_version(caller, ref, version_id, KeyUsage.SIGN_VERIFY)
        alg = signing_algorithm(rec.spec, algorithm)
        digest = version.public.digest(alg, _bytes(message, "message"), parse_message_type(message_type))
        return rec, vid, version, alg, digest

    def asymmetric_sign(
        self,
        caller: Caller,
        ref: str,
        version_id: str,
        message: bytes,
        *,
        algorithm: str | None = None,
        message_type: str = "RAW",
    ) -> SignResult:
        """Sign a message (RAW, hashed here) or its digest (DIGEST: SHA-256, SM3(Z||M) for SM2)."""
        rec, vid, version, alg, digest = self._signing_input(caller, ref, version_id, message, algorithm,
                                                             message_type)
        signature = self._private(rec, vid, version).sign(alg, digest)
        return SignResult(rec.id, vid, signature, alg.value)

    def asymmetric_verify(
        self,
        caller: Caller,
        ref: str,
        version_id: str,
        message: bytes,
        signature: bytes,
        *,
        algorithm: str | None = None,
        message_type: str = "RAW",
    ) -> VerifyResult:
        """`valid` is False for any signature that does not verify, malformed ones included."""
        rec, vid, version, alg, digest = self._signing_input(caller, ref, version_id, message, algorithm,
                                                             message_type)
        valid = version.public.verify(alg, digest, _bytes(signature, "signature"))
        return VerifyResult(rec.id, vid, valid, alg.value)

    # -------------------------------------------------- public-key encryption

    def asymmetric_encrypt(
        self,
        caller: Caller,
        ref: str,
        version_id: str,
        plaintext: bytes,
        *,
        algorithm: str | None = None,
    ) -> AsymmetricEncryptResult:
        rec, vid, version = self._asymmetric_version(
            caller, ref, version_id, KeyUsage.ENCRYPT_DECRYPT
        )
        alg = encryption_algorithm(rec.spec, algorithm)
        ciphertext = version.public.encrypt(alg, _bytes(plaintext, "plaintext"))
        return AsymmetricEncryptResult(ciphertext, rec.id, vid, alg.value)

    def _asymmetric_open(
        self, caller: Caller, ref: str, version_id: str, ciphertext: bytes, algorithm: str | None
    ) -> AsymmetricDecryptResult:
        rec, vid, version = self._asymmetric_version(
            caller, ref, version_id, KeyUsage.ENCRYPT_DECRYPT
        )
        alg = encryption_algorithm(rec.spec, algorithm)
        plaintext = self._private(rec, vid, version).decrypt(alg, _bytes(ciphertext, "ciphertext"))
        return AsymmetricDecryptResult(plaintext, rec.id, vid, alg.value)

    def asymmetric_decrypt(
        self,
        caller: Caller,
        ref: str,
        version_id: str,
        ciphertext: bytes,
        *,
        algorithm: str | None = None,
    ) -> AsymmetricDecryptResult:
        """InvalidCiphertext for anything that does not decrypt under this version."""
        return self._asymmetric_open(caller, ref, version_id, ciphertext, algorithm)

    def re_encrypt(
        self,
        caller: Caller,
        ciphertext: bytes,
        dest: KeyRecord,
        source_key: str | None,
        source_version: str,
        source_algorithm: str | None,
        destination_context: Mapping[str, str] | None,
    ) -> ReEncryptResult:
        """reEncrypt whose source is a public-key ciphertext: decrypt with the named version."""
        if not source_key:
            raise InvalidParameter("an asymmetric source ciphertext needs its key and version")
        opened = self._asymmetric_open(
            caller, source_key, source_version, ciphertext, source_algorithm
        )
        sealed = self._crypto.seal(dest, opened.plaintext, destination_context)
        return ReEncryptResult(
            sealed, opened.key_id, opened.version_id, dest.id, dest.primary_version_id or ""
        )

    # --------------------------------------------------------- data key export

    def export_data_key(
        self,
        caller: Caller,
        ciphertext_blob: bytes,
        public_key: bytes | str,
        *,
        algorithm: str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> ExportDataKeyResult:
        """Re-encrypt a sealed data key under the caller's RSA_2048 or SM2 public key (PEM/DER).

        The data key is opened here and only leaves encrypted under that public key.
        """
        wrapping = load_public_key(public_key)
        alg = encryption_algorithm(wrapping.spec, algorithm)
        _rec, opened = self._crypto.open(caller, _bytes(ciphertext_blob, "ciphertext blob"), context)
        exported = wrapping.encrypt(alg, opened.plaintext)
        return ExportDataKeyResult(exported, opened.key_id, opened.version_id, alg.value)

    def generate_and_export_data_key(
        self,
        caller: Caller,
        ref: str,
        public_key: bytes | str,
        *,
        algorithm: str | None = None,
        length: int = 32,
        context: Mapping[str, str] | None = None,
    ) -> ExportDataKeyResult:
        """A new data key, sealed under the CMK and encrypted under the given public key."""
        check_data_key_length(length)
        wrapping = load_public_key(public_key)
        alg = encryption_algorithm(wrapping.spec, algorithm)
        rec = self._crypto.encryption_key(caller, ref)
        data_key = os.urandom(length)
        exported = wrapping.encrypt(alg, data_key)  # fails (too long for RSA) before sealing
        sealed = self._crypto.seal(rec, data_key, context)
        return ExportDataKeyResult(
            exported, rec.id, rec.primary_version_id or "", alg.value, sealed
        )


def _version_info(key: Key, v: KeyVersion) -> KeyVersionInfo:
    return KeyVersionInfo(
        key.id, v.id, v.created_at, key.primary_version_id == v.id, key.spec, key.usage
    )
