"""Helpers for the lifecycle tests (rotation, scheduler, BYOK): an injectable clock, a KMS that
runs on it, the guide's openssl steps, and a look into the HSM token."""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Attribute, ObjectClass

from kms_core.embedded import Kms, KmsConfig, open_kms
from kms_core.keystore.hsm import HsmConfig, HsmKeyStore
from kms_core.keystore.hsm_token import _CALL_LOCK
from kms_core.models import Key, KeyVersion
from kms_core.specs import Protection
from kms_core.types import Caller, ImportParameters

# The guide's commands (3.2.2), with its typesetting slips mended: "out" is `-out`,
# "openss pkeyut" is `openssl pkeyutl`, "openssIrsautl" is `openssl rsautl`, "-keyformder" is
# `-keyform der`, and the stray "AES_OAEP_SHA_1" inside the SHA-1 command is dropped.
GUIDE_RAND = "openssl rand -out KeyMaterial.bin 32"
GUIDE_B64_DECODE = "openssl enc -d -base64 -A -in PublicKey_base64.txt -out PublicKey.bin"
GUIDE_B64_ENCODE = (
    "openssl enc -e -base64 -A -in EncryptedKeyMaterial.bin -out EncryptedKeyMaterial_base64.txt"
)
GUIDE_WRAP = {
    "RSAES_OAEP_SHA_1": "openssl rsautl -encrypt -in KeyMaterial.bin -oaep -inkey PublicKey.bin "
                        "-keyform DER -pubin -out EncryptedKeyMaterial.bin",
    "RSAES_OAEP_SHA_256": "openssl pkeyutl -in PlaintextKeyMaterial.bin -inkey PublicKey.bin "
                          "-out EncryptedKeyMaterial.bin -keyform der -pubin -encrypt "
                          "-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256",
    "RSAES_PKCS1_V1_5": "openssl rsautl -encrypt -in PlaintextKeyMaterial.bin -pkcs "
                        "-inkey PublicKey.bin -keyform der -pubin -out EncryptedKeyMaterial.bin",
}


class FakeClock:
    """The service's clock, moved by the test (no sleeping, no timed assertions)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def open_clocked_kms(data_dir: Path, hsm: HsmConfig, clock: FakeClock,
                     db_url: str | None = None) -> Kms:
    return open_kms(KmsConfig(data_dir=data_dir, hsm=hsm, clock=clock, db_url=db_url))


def close_kms(k: Kms) -> None:
    try:
        k.close()
    except AttributeError:
        # Kms.close is newer than these tests and still moving; the engine is what matters.
        k.engine.dispose()


def new_caller(k: Kms, name: str) -> Caller:
    info, creds = k.accounts.create_account(name)
    return Caller(info.account_id, "cn-east-1", creds.access_key_id)


def sh(cmd: str, cwd: Path) -> None:
    """Run a command line as a user types it (openssl warns on stderr about rsautl; fine)."""
    p = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"{cmd}\n{p.stderr}"


def guide_wrap(
    public_key_b64: str, algorithm: str, workdir: Path, material: bytes | None = None
) -> bytes:
    """Run the guide's openssl steps against a public key we returned (base64 DER, as
    `publicKey` is on the wire); return the encrypted material.

    With `material` None, `openssl rand` makes it (read back from KeyMaterial.bin).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "PublicKey_base64.txt").write_text(public_key_b64)
    if material is None:
        sh(GUIDE_RAND, workdir)
    else:
        (workdir / "KeyMaterial.bin").write_bytes(material)
    (workdir / "PlaintextKeyMaterial.bin").write_bytes((workdir / "KeyMaterial.bin").read_bytes())
    sh(GUIDE_B64_DECODE, workdir)
    sh(GUIDE_WRAP[algorithm], workdir)
    sh(GUIDE_B64_ENCODE, workdir)
    return base64.b64decode((workdir / "EncryptedKeyMaterial_base64.txt").read_text())


def hsm_labels(k: Kms, *, secret_keys_only: bool = True) -> set[str]:
    """Labels of the objects on the token (secret keys, or all), read with python-pkcs11."""
    store = k.service.keystore(Protection.HSM)
    assert isinstance(store, HsmKeyStore)
    session: Any = store.hsm.session()
    query = {Attribute.CLASS: ObjectClass.SECRET_KEY} if secret_keys_only else {}
    # One PKCS#11 call at a time, as the Hsm makes them: the search also meets the session
    # copies other threads (a change-feed listener) may destroy meanwhile.
    with _CALL_LOCK:
        return {o[Attribute.LABEL] for o in session.get_objects(query)}


def version_labels(k: Kms, key_id: str) -> set[str]:
    """HSM labels that the key's versions were generated under (ssegw-key-<version id>)."""
    from sqlmodel import Session, select

    with Session(k.engine) as s:
        ids = s.exec(select(KeyVersion.id).where(KeyVersion.key_id == key_id)).all()
    return {f"ssegw-key-{v}" for v in ids}


def versions(k: Kms, key_id: str) -> list[KeyVersion]:
    from sqlmodel import Session, col, select

    with Session(k.engine) as s:
        q = select(KeyVersion).where(KeyVersion.key_id == key_id)
        return list(s.exec(q.order_by(col(KeyVersion.created_at))).all())


def key_row(k: Kms, key_id: str) -> Key:
    from sqlmodel import Session

    with Session(k.engine) as s:
        row = s.get(Key, key_id)
        assert row is not None
        return row


def wrap_material(params: ImportParameters, material: bytes) -> bytes:
    """Wrap material in-process as openssl would (for tests about rules, not about openssl)."""
    pub = load_der_public_key(params.public_key)
    assert isinstance(pub, rsa.RSAPublicKey)
    pad: padding.AsymmetricPadding
    if params.wrapping_algorithm == "RSAES_PKCS1_V1_5":
        pad = padding.PKCS1v15()
    else:
        h: hashes.HashAlgorithm = (
            hashes.SHA1() if params.wrapping_algorithm == "RSAES_OAEP_SHA_1" else hashes.SHA256()
        )
        pad = padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)
    return pub.encrypt(material, pad)
