"""BYOK: EXTERNAL keys, getParametersForImport, importKeyMaterial with the guide's openssl
commands, token rules, re-import of the same material only, deleteKeyMaterial and expiry."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key
from sqlmodel import Session, select

from kms_core import blob as blobfmt
from kms_core import byok, wire
from kms_core.embedded import Kms
from kms_core.errors import (
    ExpiredImportToken,
    IncorrectKeyMaterial,
    InvalidCiphertext,
    InvalidImportToken,
    InvalidKeyUsage,
    InvalidParameter,
    InvalidState,
    UnsupportedOperation,
)
from kms_core.models import ImportToken
from kms_core.scheduler import Scheduler
from kms_core.types import Caller
from tests.kms_core.lifecycle_support import (
    FakeClock,
    guide_wrap,
    key_row,
    new_caller,
    versions,
    wrap_material,
)

ALGORITHMS = ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSAES_PKCS1_V1_5")


@pytest.fixture
def user(ckms: Kms) -> Caller:
    return new_caller(ckms, "byok-user")


def _external(k: Kms, c: Caller, protection: str = "SOFTWARE", *, alias: str | None = None,
              description: str = "") -> str:
    return k.service.create_key(c, origin="EXTERNAL", protection=protection, alias=alias,
                                description=description).key_id


def _imported(k: Kms, c: Caller, material: bytes, protection: str = "SOFTWARE") -> str:
    key = _external(k, c, protection)
    p = k.service.get_parameters_for_import(c, key, "RSAES_OAEP_SHA_256")
    k.service.import_key_material(c, key, wrap_material(p, material), p.import_token)
    return key


def test_external_key_starts_pending_import_without_material(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    m = svc.create_key(user, origin="EXTERNAL", alias="mine", description="byok")
    assert (m.state, m.origin, m.primary_version_id) == ("PendingImport", "EXTERNAL", None)
    assert versions(ckms, m.key_id) == []
    with pytest.raises(InvalidState):
        svc.encrypt(user, "alias/mine", b"x")
    with pytest.raises(InvalidState):
        svc.enable_key(user, m.key_id)
    # EXTERNAL is for AES_256 only.
    with pytest.raises(InvalidParameter):
        svc.create_key(user, spec="SM4", origin="EXTERNAL")


@pytest.mark.parametrize("protection", ["SOFTWARE", "HSM"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_guide_openssl_commands_import_and_the_key_works(
    ckms: Kms, user: Caller, tmp_path: Path, algorithm: str, protection: str
) -> None:
    svc = ckms.service
    key = _external(ckms, user, protection)
    params = svc.get_parameters_for_import(user, key, algorithm, "RSA_2048")
    assert params.key_id == key and params.wrapping_algorithm == algorithm
    assert load_der_public_key(params.public_key).key_size == 2048  # type: ignore[union-attr]
    assert params.valid_to == ckms.config.clock() + timedelta(hours=24)

    public_b64 = wire.import_parameters(params)["publicKey"]
    encrypted = guide_wrap(public_b64, algorithm, tmp_path / "openssl")
    material = (tmp_path / "openssl" / "KeyMaterial.bin").read_bytes()
    m = svc.import_key_material(user, key, encrypted, params.import_token)
    assert m.state == "Enabled" and m.primary_version_id is not None

    enc = svc.encrypt(user, key, b"bring your own key", {"app": "t"})
    assert svc.decrypt(user, enc.ciphertext_blob, {"app": "t"}).plaintext == b"bring your own key"
    # The imported bytes really are the key: the blob opens with AES-GCM under them.
    b = blobfmt.decode_blob(enc.ciphertext_blob)
    aad = b.header_bytes + blobfmt.encode_context({"app": "t"})
    assert AESGCM(material).decrypt(b.nonce, b.sealed, aad) == b"bring your own key"
    # The material is never stored in the clear, nor is its digest the bare material.
    row = key_row(ckms, key)
    (version,) = versions(ckms, key)
    assert version.stored is not None and material not in version.stored
    assert row.material_digest is not None and material not in row.material_digest
    if protection == "HSM":
        assert version.stored[:1] == b"\x02"  # wrapped by the HSM root key


def test_cli_import_flow_with_openssl(tmp_path: Path) -> None:
    """The terminal path: ssegw writes PublicKey_base64.txt, openssl wraps, ssegw imports."""
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    data = tmp_path / "var"

    def ssegw(*args: str) -> dict[str, object]:
        p = subprocess.run([sys.executable, "-m", "gateway.cli", *args, "--data-dir", str(data)],
                           capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        out: dict[str, object] = json.loads(p.stdout)
        return out

    ssegw("account", "create", "--name", "cli-byok")
    key = ssegw("kms", "create-key", "--origin", "EXTERNAL", "--account", "cli-byok")
    assert key["keyState"] == "PendingImport"
    kid = str(key["cmkUuid"])
    params = ssegw("kms", "get-import-parameters", kid, "--algorithm", "RSAES_OAEP_SHA_1",
                   "--public-key-out", "PublicKey_base64.txt", "--token-out", "ImportToken.txt",
                   "--account", "cli-byok")
    assert (tmp_path / "PublicKey_base64.txt").read_text() == params["publicKey"]
    guide_wrap(str(params["publicKey"]), "RSAES_OAEP_SHA_1", tmp_path)
    done = ssegw("kms", "import-key-material", kid, "--in", "EncryptedKeyMaterial_base64.txt",
                 "--token-file", "ImportToken.txt", "--account", "cli-byok")
    assert done["keyState"] == "Enabled"
    enc = ssegw("kms", "encrypt", kid, "--plaintext", "hi", "--account", "cli-byok")
    dec = ssegw("kms", "decrypt", "--blob", str(enc["ciphertextBlob"]), "--account", "cli-byok")
    assert dec["plaintext"] == base64.b64encode(b"hi").decode()
    gone = ssegw("kms", "delete-key-material", kid, "--account", "cli-byok")
    assert gone["keyState"] == "PendingImport"
    again = ssegw("kms", "import-key-material", kid, "--in", "EncryptedKeyMaterial_base64.txt",
                  "--token-file", "ImportToken.txt", "--account", "cli-byok")
    assert again["keyState"] == "Enabled"


def _state(k: Kms, key: str) -> tuple[str, str | None, bytes | None]:
    row = key_row(k, key)
    return row.state, row.primary_version_id, row.material_digest


def test_token_errors_are_clear_and_change_nothing(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key, other = _external(ckms, user), _external(ckms, user)
    material = os.urandom(32)
    p = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_256")
    p_other = svc.get_parameters_for_import(user, other, "RSAES_OAEP_SHA_256")
    before = _state(ckms, key)

    with pytest.raises(InvalidImportToken, match="not valid"):
        svc.import_key_material(user, key, wrap_material(p, material), b"\x01" + os.urandom(32))
    with pytest.raises(InvalidImportToken, match="malformed"):
        svc.import_key_material(user, key, wrap_material(p, material), b"garbage")
    # A token of another key, even with material wrapped under that token's own public key.
    with pytest.raises(InvalidImportToken, match="another key"):
        svc.import_key_material(user, key, wrap_material(p_other, material), p_other.import_token)
    # Material wrapped under another token's public key does not decrypt.
    with pytest.raises(InvalidCiphertext):
        svc.import_key_material(user, key, wrap_material(p_other, material), p.import_token)
    # Wrong length of the plaintext material (16 and 48 bytes).
    for size in (16, 48):
        with pytest.raises(InvalidParameter, match="256 bits"):
            svc.import_key_material(user, key, wrap_material(p, os.urandom(size)), p.import_token)
    # Not an RSA block at all.
    with pytest.raises(InvalidCiphertext):
        svc.import_key_material(user, key, b"\x00" * 10, p.import_token)
    # The expiry of the material must be in the future.
    with pytest.raises(InvalidParameter, match="future"):
        svc.import_key_material(user, key, wrap_material(p, material), p.import_token,
                                expires_at=clock() - timedelta(seconds=1))
    # 24 hours later the token has expired.
    clock.advance(hours=24)
    with pytest.raises(ExpiredImportToken):
        svc.import_key_material(user, key, wrap_material(p, material), p.import_token)
    assert _state(ckms, key) == before == ("PendingImport", None, None)
    assert versions(ckms, key) == []


def test_token_is_reusable_for_24_hours_and_only_the_same_material_reimports(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = _external(ckms, user, alias="byok", description="kept")
    material = os.urandom(32)
    # OAEP: a PKCS#1 v1.5 token is used up by a failed try (test_pkcs1_v15_...).
    p = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_256")
    svc.import_key_material(user, key, wrap_material(p, material), p.import_token)
    old = svc.encrypt(user, key, b"before")
    (version,) = versions(ckms, key)

    # Already holds material: a second import is refused until the material is deleted.
    with pytest.raises(InvalidState, match="already holds"):
        svc.import_key_material(user, key, wrap_material(p, material), p.import_token)

    m = svc.delete_key_material(user, key)
    assert m.state == "PendingImport" and m.description == "kept" and m.aliases == ("byok",)
    assert versions(ckms, key)[0].stored is None
    with pytest.raises(InvalidState):
        svc.decrypt(user, old.ciphertext_blob)
    with pytest.raises(InvalidState):
        svc.delete_key_material(user, key)

    # Different material: refused, whatever token is used, and nothing changes.
    clock.advance(hours=23, minutes=59)
    digest = key_row(ckms, key).material_digest
    with pytest.raises(IncorrectKeyMaterial):
        svc.import_key_material(user, key, wrap_material(p, os.urandom(32)), p.import_token)
    fresh = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_1")
    with pytest.raises(IncorrectKeyMaterial):
        svc.import_key_material(user, key, wrap_material(fresh, os.urandom(32)), fresh.import_token)
    assert _state(ckms, key) == ("PendingImport", version.id, digest)

    # The same material, with the first token still inside its 24 hours: the key is back,
    # under the same version, and what it encrypted before decrypts again.
    m = svc.import_key_material(user, key, wrap_material(p, material), p.import_token)
    assert m.state == "Enabled" and m.primary_version_id == version.id
    assert [v.id for v in versions(ckms, key)] == [version.id]
    assert svc.decrypt(user, old.ciphertext_blob).plaintext == b"before"


def test_two_keys_with_the_same_material_cannot_open_each_others_ciphertexts(
    ckms: Kms, user: Caller
) -> None:
    svc = ckms.service
    material = os.urandom(32)
    a, b = _imported(ckms, user, material), _imported(ckms, user, material)
    blob_a = svc.encrypt(user, a, b"secret of a").ciphertext_blob
    # Named explicitly, the other key is refused.
    with pytest.raises(InvalidKeyUsage):
        svc.decrypt(user, blob_a, key=b)
    # Re-addressed to b (its key id and version id in the header), it fails authentication:
    # the key id is associated data, so equal material does not make the keys interchangeable.
    hb = blobfmt.decode_blob(blob_a)
    forged = blobfmt.BlobHeader(hb.header.algorithm, b, versions(ckms, b)[0].id).encode()
    with pytest.raises(InvalidCiphertext):
        svc.decrypt(user, forged + blob_a[blobfmt.HEADER_LEN:])
    assert svc.decrypt(user, blob_a).plaintext == b"secret of a"
    # Their stored digests differ too: equal material is not visible in the metadata.
    assert key_row(ckms, a).material_digest != key_row(ckms, b).material_digest


def test_material_expiry_returns_the_key_to_pending_import(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = _external(ckms, user, description="expiring")
    material = os.urandom(32)
    p = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_256")
    expires = clock() + timedelta(days=3)
    m = svc.import_key_material(user, key, wrap_material(p, material), p.import_token,
                                expires_at=expires)
    assert m.material_expires_at == expires
    blob = svc.encrypt(user, key, b"short-lived").ciphertext_blob

    sched = Scheduler(ckms)
    clock.advance(days=3, seconds=-1)
    assert sched.run_once().expired == []
    clock.advance(seconds=1)
    assert sched.run_once().expired == [key]
    assert sched.run_once().expired == []  # once
    m = svc.describe_key(user, key)
    assert (m.state, m.description, m.material_expires_at) == ("PendingImport", "expiring", None)
    with pytest.raises(InvalidState):
        svc.decrypt(user, blob)
    # Re-importing the same material (with a fresh token) brings it back, without expiry.
    fresh = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_1")
    svc.import_key_material(user, key, wrap_material(fresh, material), fresh.import_token)
    assert svc.decrypt(user, blob).plaintext == b"short-lived"
    clock.advance(days=400)
    assert sched.run_once().expired == []


def test_expiry_of_a_disabled_or_pending_deletion_key(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    disabled, deleting = _external(ckms, user), _external(ckms, user)
    for key in (disabled, deleting):
        p = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_256")
        svc.import_key_material(user, key, wrap_material(p, os.urandom(32)), p.import_token,
                                expires_at=clock() + timedelta(days=1))
    svc.disable_key(user, disabled)
    svc.schedule_key_deletion(user, deleting, 7)
    clock.advance(days=2)
    assert sorted(Scheduler(ckms).run_once().expired) == sorted([disabled, deleting])
    assert svc.describe_key(user, disabled).state == "PendingImport"
    # A key pending deletion stays so; cancelling returns it to PendingImport (no material).
    assert svc.describe_key(user, deleting).state == "PendingDeletion"
    assert svc.cancel_key_deletion(user, deleting).state == "PendingImport"


def test_cancel_deletion_of_imported_keys(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    never = _external(ckms, user)
    svc.schedule_key_deletion(user, never, 7)
    assert svc.cancel_key_deletion(user, never).state == "PendingImport"
    has = _imported(ckms, user, os.urandom(32))
    svc.schedule_key_deletion(user, has, 7)
    assert svc.cancel_key_deletion(user, has).state == "Enabled"
    svc.encrypt(user, has, b"usable again")


def test_imported_keys_have_no_rotation_and_kms_keys_no_import(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    key = _imported(ckms, user, os.urandom(32))
    with pytest.raises(UnsupportedOperation, match="imported"):
        svc.enable_key_rotation(user, key, 30)
    with pytest.raises(UnsupportedOperation, match="imported"):
        svc.rotate_key_on_demand(user, key)
    with pytest.raises(UnsupportedOperation):
        svc.create_key(user, origin="EXTERNAL", rotation_period_days=30)
    assert len(versions(ckms, key)) == 1
    kms_key = svc.create_key(user).key_id
    with pytest.raises(UnsupportedOperation, match="EXTERNAL"):
        svc.get_parameters_for_import(user, kms_key, "RSAES_OAEP_SHA_256")
    with pytest.raises(UnsupportedOperation):
        svc.delete_key_material(user, kms_key)
    default = svc.default_key(user, "oss").id
    with pytest.raises(UnsupportedOperation, match="default key"):
        svc.get_parameters_for_import(user, default, "RSAES_OAEP_SHA_256")


def test_parameter_validation(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    key = _external(ckms, user)
    with pytest.raises(InvalidParameter, match="wrapping algorithm"):
        svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_512")
    with pytest.raises(InvalidParameter, match="wrapping key spec"):
        svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_1", "RSA_4096")
    with Session(ckms.engine) as s:
        assert s.exec(select(ImportToken)).all() == []
    # Tokens are stored as their hash, never as the token itself.
    p = svc.get_parameters_for_import(user, key, "RSAES_OAEP_SHA_1")
    with Session(ckms.engine) as s:
        (row,) = s.exec(select(ImportToken)).all()
    assert row.id != p.import_token.hex() and p.import_token not in row.sealed_private_key


def test_destroyed_imported_key_is_gone_with_its_tokens(
    ckms: Kms, user: Caller, clock: FakeClock
) -> None:
    svc = ckms.service
    key = _imported(ckms, user, os.urandom(32))
    svc.schedule_key_deletion(user, key, 7)
    clock.advance(days=7)
    assert Scheduler(ckms).run_once().destroyed == [key]
    with Session(ckms.engine) as s:
        assert s.exec(select(ImportToken).where(ImportToken.key_id == key)).all() == []
    assert all(v.stored is None for v in versions(ckms, key))


def _implicitly_rejected_blobs(private: rsa.RSAPrivateKey, count: int) -> list[bytes]:
    """Random blocks that OpenSSL's PKCS#1 v1.5 decryption answers with 32 bytes instead of
    an error (implicit rejection: bad padding yields pseudo-random output of random length)."""
    found: list[bytes] = []
    n = private.public_key().public_numbers().n
    for _ in range(20_000):
        c = int.from_bytes(os.urandom(256), "big") % n
        blob = c.to_bytes(256, "big")
        try:
            if len(private.decrypt(blob, padding.PKCS1v15())) == 32:
                found.append(blob)
        except ValueError:
            continue  # an OpenSSL without implicit rejection says so itself
        if len(found) == count:
            break
    return found


def test_pkcs1_v15_unwrap_never_takes_wrong_material() -> None:
    pair = byok.new_wrapping_key_pair()
    private = load_der_private_key(pair.private_der, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    material = os.urandom(32)
    good = private.public_key().encrypt(material, padding.PKCS1v15())
    alg = byok.WrappingAlgorithm.RSAES_PKCS1_V1_5
    assert byok.unwrap_material(pair.private_der, alg, good, 32) == material
    # Blocks OpenSSL would have turned into 32 bytes of someone else's "material".
    for blob in _implicitly_rejected_blobs(private, 3):
        with pytest.raises(InvalidCiphertext) as e:
            byok.unwrap_material(pair.private_der, alg, blob, 32)
        assert "could not be decrypted" in str(e.value)
    # One-bit corruptions, and well-padded messages of another length: the same one error.
    for i in range(0, 2048, 97):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InvalidCiphertext) as e:
            byok.unwrap_material(pair.private_der, alg, bytes(bad), 32)
        assert str(e.value) == byok._UNWRAP_FAILED
    for size in (0, 31, 33, 200):
        blob = private.public_key().encrypt(os.urandom(size), padding.PKCS1v15())
        with pytest.raises(InvalidCiphertext) as e:
            byok.unwrap_material(pair.private_der, alg, blob, 32)
        assert str(e.value) == byok._UNWRAP_FAILED


def test_pkcs1_v15_failures_are_one_error_and_use_the_token_up(ckms: Kms, user: Caller) -> None:
    svc = ckms.service
    key = _external(ckms, user)
    material = os.urandom(32)
    p = svc.get_parameters_for_import(user, key, "RSAES_PKCS1_V1_5")
    bad = bytearray(wrap_material(p, material))
    bad[100] ^= 1
    with pytest.raises(InvalidCiphertext, match="used up"):
        svc.import_key_material(user, key, bytes(bad), p.import_token)
    # The token is gone: even the right material needs new parameters.
    with pytest.raises(InvalidImportToken, match="not valid"):
        svc.import_key_material(user, key, wrap_material(p, material), p.import_token)
    assert _state(ckms, key) == ("PendingImport", None, None)
    p = svc.get_parameters_for_import(user, key, "RSAES_PKCS1_V1_5")
    svc.import_key_material(user, key, wrap_material(p, material), p.import_token)
    svc.delete_key_material(user, key)
    # Re-import of other, well-wrapped material: the same error as bad padding (no oracle
    # telling the two apart), and the token is used up.
    with pytest.raises(InvalidCiphertext, match="used up"):
        svc.import_key_material(user, key, wrap_material(p, os.urandom(32)), p.import_token)
    with pytest.raises(InvalidImportToken):
        svc.import_key_material(user, key, wrap_material(p, material), p.import_token)
    p = svc.get_parameters_for_import(user, key, "RSAES_PKCS1_V1_5")
    assert svc.import_key_material(user, key, wrap_material(p, material), p.import_token).state == "Enabled"
