"""Asymmetric keys through the KMS service, proven by the other side's tools.

openssl verifies our RSA and SM2 signatures and encrypts to our public keys; openssl decrypts
what exportDataKey encrypts to its public keys; gmssl verifies our SM2 signatures and computes
SM2 digests independently. The HSM cases run against a real SoftHSM2 token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key
from gmssl import sm2 as gm
from sqlmodel import Session, select

from kms_core import sm2, wire
from kms_core.asym_crypto import MessageType, SigningAlgorithm, load_public_key
from kms_core.embedded import Kms
from kms_core.errors import (
    Disabled,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidParameter,
    InvalidState,
    LimitExceeded,
    NotFound,
    UnsupportedOperation,
)
from kms_core.keystore import asymmetric_aad
from kms_core.models import KeyVersion
from kms_core.specs import KeySpec, Protection
from kms_core.types import Caller

LEVELS = [("RSA_2048", "SOFTWARE"), ("RSA_2048", "HSM"), ("SM2", "HSM")]
IDS = ["rsa-software", "rsa-hsm", "sm2-hsm"]
DISTID = "distid:1234567812345678"


def openssl(
    *args: str, data: bytes | None = None, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run(["openssl", *args], input=data, capture_output=True)
    if ok:
        assert p.returncode == 0, p.stderr.decode()
    return p


def other_caller(kms: Kms, region: str = "cn-east-1") -> Caller:
    info, creds = kms.accounts.create_account(f"other-{uuid.uuid4().hex[:8]}")
    return Caller(info.account_id, region, creds.access_key_id)


def first_version(kms: Kms, caller: Caller, key: str) -> str:
    return kms.service.list_key_versions(caller, key).items[0].version_id


def openssl_verifies(alg: str, pub_pem: Path, msg: Path, sig: Path) -> bool:
    if alg == "SM2DSA":
        args = [
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(pub_pem),
            "-rawin",
            "-in",
            str(msg),
            "-digest",
            "sm3",
            "-sigfile",
            str(sig),
            "-pkeyopt",
            DISTID,
        ]
    else:
        args = ["dgst", "-sha256", "-verify", str(pub_pem), "-signature", str(sig)]
        if alg == "RSASSA_PSS_SHA_256":
            args += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
        args.append(str(msg))
    return openssl(*args, ok=False).returncode == 0


def gmssl_digest(pem: str, message: bytes) -> bytes:
    """e = SM3(Z || M) computed by gmssl, independently of kms_core.sm2."""
    point = sm2.parse_public_key_der(load_public_key(pem).der)
    c = gm.CryptSM2(private_key="", public_key="")
    c.public_key = point[1:].hex()
    return bytes.fromhex(c._sm3_z(message))


# ------------------------------------------------------------------ versions


@pytest.mark.parametrize(("spec", "level"), LEVELS, ids=IDS)
def test_versions_have_no_primary_and_are_made_by_hand(
    kms: Kms, caller: Caller, spec: str, level: str
) -> None:
    svc = kms.service
    key = svc.create_key(caller, spec=spec, usage="SIGN_VERIFY", protection=level, alias="signer")
    assert (key.spec, key.protection, key.usage, key.primary_version_id) == (
        spec,
        level,
        "SIGN_VERIFY",
        None,
    )
    (v1,) = svc.list_key_versions(caller, key.key_id).items
    assert v1.primary is False and v1.key_id == key.key_id
    v2 = svc.create_key_version(caller, "alias/signer")
    assert v2.primary is False and v2.version_id != v1.version_id
    listed = svc.list_key_versions(caller, key.key_id)
    assert [v.version_id for v in listed.items] == [v1.version_id, v2.version_id]
    page = svc.list_key_versions(caller, key.key_id, limit=1)
    assert page.truncated and page.items[0].version_id == v1.version_id
    rest = svc.list_key_versions(caller, key.key_id, marker=page.next_marker)
    assert [v.version_id for v in rest.items] == [v2.version_id]
    assert svc.describe_key_version(caller, key.key_id, v2.version_id).version_id == v2.version_id
    assert svc.describe_key(caller, key.key_id).primary_version_id is None
    # Both versions sign, independently.
    sigs = [svc.asymmetric_sign(caller, key.key_id, v.version_id, b"m").signature for v in (v1, v2)]
    assert svc.asymmetric_verify(caller, key.key_id, v2.version_id, b"m", sigs[1]).valid
    assert not svc.asymmetric_verify(caller, key.key_id, v2.version_id, b"m", sigs[0]).valid


def test_symmetric_keys_list_versions_but_do_not_create_them_by_hand(
    kms: Kms, caller: Caller
) -> None:
    svc = kms.service
    key = svc.create_key(caller)
    (v,) = svc.list_key_versions(caller, key.key_id).items
    assert v.primary is True and v.version_id == key.primary_version_id
    with pytest.raises(UnsupportedOperation):
        svc.create_key_version(caller, key.key_id)


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize(("spec", "level"), LEVELS, ids=IDS)
def test_openssl_verifies_our_signatures(
    kms: Kms, caller: Caller, tmp_path: Path, spec: str, level: str
) -> None:
    svc = kms.service
    key = svc.create_key(caller, spec=spec, usage="SIGN_VERIFY", protection=level).key_id
    version = first_version(kms, caller, key)
    pk = svc.get_public_key(caller, key, version)
    pub = tmp_path / "pub.pem"
    pub.write_text(pk.public_key_pem)
    text = openssl("pkey", "-pubin", "-in", str(pub), "-noout", "-text").stdout
    assert (b"ASN1 OID: SM2" in text) if spec == "SM2" else (b"Public-Key: (2048 bit)" in text)
    msg = tmp_path / "msg"
    message = b"the quick brown fox" * 10
    msg.write_bytes(message)
    sig = tmp_path / "sig"
    assert pk.signing_algorithms and not pk.encryption_algorithms
    for alg in pk.signing_algorithms:
        raw = svc.asymmetric_sign(caller, key, version, message, algorithm=alg)
        assert raw.algorithm == alg
        sig.write_bytes(raw.signature)
        assert openssl_verifies(alg, pub, msg, sig), alg
        assert svc.asymmetric_verify(
            caller, key, version, message, raw.signature, algorithm=alg
        ).valid
        # DIGEST input, the digest computed elsewhere (gmssl for SM2's SM3(Z || M)).
        digest = (
            gmssl_digest(pk.public_key_pem, message)
            if spec == "SM2"
            else hashlib.sha256(message).digest()
        )
        pre = svc.asymmetric_sign(
            caller, key, version, digest, algorithm=alg, message_type="DIGEST"
        )
        sig.write_bytes(pre.signature)
        assert openssl_verifies(alg, pub, msg, sig), alg
        assert svc.asymmetric_verify(
            caller, key, version, digest, pre.signature, algorithm=alg, message_type="DIGEST"
        ).valid
        # Tampered: a flipped signature byte, a changed message.
        bad = raw.signature[:-1] + bytes([raw.signature[-1] ^ 1])
        sig.write_bytes(bad)
        assert not openssl_verifies(alg, pub, msg, sig)
        assert not svc.asymmetric_verify(caller, key, version, message, bad, algorithm=alg).valid
        assert not svc.asymmetric_verify(
            caller, key, version, message + b"!", raw.signature, algorithm=alg
        ).valid
        for junk in (b"", b"\x30\x00", b"\x00" * 256, raw.signature + b"\x00"):
            assert not svc.asymmetric_verify(
                caller, key, version, message, junk, algorithm=alg
            ).valid


def test_gmssl_verifies_our_sm2_signatures(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.create_key(caller, spec="SM2", usage="SIGN_VERIFY").key_id
    version = first_version(kms, caller, key)
    point = sm2.parse_public_key_der(
        load_public_key(svc.get_public_key(caller, key, version).public_key_pem).der
    )
    verifier = gm.CryptSM2(private_key="", public_key="")
    verifier.public_key = point[1:].hex()
    for message in (b"a", b"message for gmssl", bytes(range(256)) * 4):
        signature = svc.asymmetric_sign(caller, key, version, message).signature
        raw = sm2.signature_to_raw(signature)
        assert verifier.verify_with_sm3(raw, message)
        assert not verifier.verify_with_sm3(raw, message + b"x")


def test_we_verify_openssl_signatures(tmp_path: Path) -> None:
    """openssl signs with its own keys; our verification code (the service's) accepts them."""
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed by openssl")
    rsa_key, sm2_key = tmp_path / "rsa.pem", tmp_path / "sm2.pem"
    openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(rsa_key)
    )
    openssl("genpkey", "-algorithm", "SM2", "-out", str(sm2_key))
    cases = [
        (rsa_key, "RSASSA_PKCS1_V1_5_SHA_256", ["dgst", "-sha256", "-sign", str(rsa_key)]),
        (
            rsa_key,
            "RSASSA_PSS_SHA_256",
            ["dgst", "-sha256", "-sign", str(rsa_key), "-sigopt", "rsa_padding_mode:pss"],
        ),  # openssl's salt length
        (
            rsa_key,
            "RSASSA_PSS_SHA_256",
            [
                "dgst",
                "-sha256",
                "-sign",
                str(rsa_key),
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        ),
        (
            sm2_key,
            "SM2DSA",
            [
                "pkeyutl",
                "-sign",
                "-inkey",
                str(sm2_key),
                "-rawin",
                "-digest",
                "sm3",
                "-pkeyopt",
                DISTID,
                "-in",
            ],
        ),
    ]
    for key_file, alg, cmd in cases:
        signature = openssl(*cmd, str(msg)).stdout
        pub = load_public_key(openssl("pkey", "-in", str(key_file), "-pubout").stdout)
        a = SigningAlgorithm(alg)
        assert pub.verify(a, pub.digest(a, b"signed by openssl", MessageType.RAW), signature), alg
        assert not pub.verify(
            a, pub.digest(a, b"signed by openssl?", MessageType.RAW), signature
        ), alg


# -------------------------------------------------------- public-key encryption


@pytest.mark.parametrize(("spec", "level"), LEVELS, ids=IDS)
def test_openssl_encrypts_to_our_keys_and_we_decrypt(
    kms: Kms, caller: Caller, tmp_path: Path, spec: str, level: str
) -> None:
    svc = kms.service
    key = svc.create_key(caller, spec=spec, usage="ENCRYPT_DECRYPT", protection=level).key_id
    version = first_version(kms, caller, key)
    pk = svc.get_public_key(caller, key, version)
    assert pk.encryption_algorithms and not pk.signing_algorithms
    pub = tmp_path / "pub.pem"
    pub.write_text(pk.public_key_pem)
    options = {
        "RSAES_OAEP_SHA_256": [
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
        ],
        "RSAES_OAEP_SHA_1": ["-pkeyopt", "rsa_padding_mode:oaep"],
        "SM2PKE": [],
    }
    other_version = svc.create_key_version(caller, key).version_id
    for alg in pk.encryption_algorithms:
        secret = b"openssl to kms " + alg.encode()
        ct = openssl(
            "pkeyutl", "-encrypt", "-pubin", "-inkey", str(pub), *options[alg], data=secret
        ).stdout
        got = svc.asymmetric_decrypt(caller, key, version, ct, algorithm=alg)
        assert (got.plaintext, got.key_id, got.version_id, got.algorithm) == (
            secret,
            key,
            version,
            alg,
        )
        ours = svc.asymmetric_encrypt(caller, key, version, secret, algorithm=alg)
        assert ours.ciphertext != ct
        assert (
            svc.asymmetric_decrypt(caller, key, version, ours.ciphertext, algorithm=alg).plaintext
            == secret
        )
        # Tampered anywhere, truncated, extended, empty, or under the other version: one error.
        bad = [
            ct[:i] + bytes([ct[i] ^ 0x01]) + ct[i + 1 :] for i in (0, 5, len(ct) // 2, len(ct) - 1)
        ]
        bad += [ct[:-1], ct + b"\x00", b"", b"\xff" * 256]
        for b in bad:
            with pytest.raises(InvalidCiphertext):
                svc.asymmetric_decrypt(caller, key, version, b, algorithm=alg)
        with pytest.raises(InvalidCiphertext):
            svc.asymmetric_decrypt(caller, key, other_version, ct, algorithm=alg)
    if spec == "RSA_2048":
        sha1 = svc.asymmetric_encrypt(
            caller, key, version, b"x", algorithm="RSAES_OAEP_SHA_1"
        ).ciphertext
        with pytest.raises(InvalidCiphertext):
            svc.asymmetric_decrypt(caller, key, version, sha1, algorithm="RSAES_OAEP_SHA_256")
        with pytest.raises(InvalidParameter):  # OAEP-SHA-256 with a 2048-bit key fits 190 bytes
            svc.asymmetric_encrypt(caller, key, version, b"x" * 191)
        assert (
            svc.asymmetric_encrypt(caller, key, version, b"x" * 190).algorithm
            == "RSAES_OAEP_SHA_256"
        )


# -------------------------------------------------------------- data key export


@pytest.mark.parametrize("alg", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "SM2PKE"])
def test_export_data_key_to_openssl(kms: Kms, caller: Caller, tmp_path: Path, alg: str) -> None:
    svc = kms.service
    priv = tmp_path / "priv.pem"
    if alg == "SM2PKE":
        openssl("genpkey", "-algorithm", "SM2", "-out", str(priv))
        opts: list[str] = []
    else:
        openssl(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(priv)
        )
        opts = [
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            f"rsa_oaep_md:{'sha256' if alg.endswith('256') else 'sha1'}",
        ]
    pub_pem = openssl("pkey", "-in", str(priv), "-pubout").stdout.decode()
    pub_der = openssl("pkey", "-in", str(priv), "-pubout", "-outform", "DER").stdout
    cmk = svc.create_key(caller, protection="HSM").key_id
    dk = svc.generate_data_key(caller, cmk, context={"app": "x"})
    for public_key in (pub_pem, pub_der):
        out = svc.export_data_key(
            caller, dk.ciphertext_blob, public_key, algorithm=alg, context={"app": "x"}
        )
        assert (out.key_id, out.version_id, out.algorithm) == (cmk, dk.version_id, alg)
        recovered = openssl(
            "pkeyutl", "-decrypt", "-inkey", str(priv), *opts, data=out.exported_data_key
        ).stdout
        assert recovered == dk.plaintext
    with pytest.raises(InvalidCiphertext):  # the sealed data key still needs its context
        svc.export_data_key(caller, dk.ciphertext_blob, pub_pem, algorithm=alg)
    both = svc.generate_and_export_data_key(caller, cmk, pub_pem, algorithm=alg, length=24)
    assert both.ciphertext_blob is not None
    exported = openssl(
        "pkeyutl", "-decrypt", "-inkey", str(priv), *opts, data=both.exported_data_key
    ).stdout
    assert len(exported) == 24 and svc.decrypt(caller, both.ciphertext_blob).plaintext == exported
    shape = wire.export_data_key_result(both)
    assert set(shape) == {
        "exportedDataKey",
        "ciphertextBlob",
        "cmkUuid",
        "keyVersionId",
        "algorithm",
    }


def test_export_data_key_to_our_own_key_and_bad_public_keys(
    kms: Kms, caller: Caller, tmp_path: Path
) -> None:
    svc = kms.service
    cmk = svc.create_key(caller).key_id
    dk = svc.generate_data_key(caller, cmk)
    sm2_key = svc.create_key(caller, spec="SM2").key_id
    v = first_version(kms, caller, sm2_key)
    out = svc.export_data_key(
        caller, dk.ciphertext_blob, svc.get_public_key(caller, sm2_key, v).public_key_pem
    )
    assert out.algorithm == "SM2PKE"
    assert (
        svc.asymmetric_decrypt(caller, sm2_key, v, out.exported_data_key).plaintext == dk.plaintext
    )
    small, ec = tmp_path / "rsa1024.pem", tmp_path / "p256.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", str(small))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(ec))
    for bad in (
        "not a key",
        b"\x30\x03\x02\x01\x00",
        openssl("pkey", "-in", str(small), "-pubout").stdout,
        openssl("pkey", "-in", str(ec), "-pubout").stdout,
        "",
    ):
        with pytest.raises(InvalidParameter):
            svc.export_data_key(caller, dk.ciphertext_blob, bad)
    rsa_key = svc.create_key(caller, spec="RSA_2048").key_id
    rsa_pem = svc.get_public_key(
        caller, rsa_key, first_version(kms, caller, rsa_key)
    ).public_key_pem
    with pytest.raises(InvalidParameter):
        svc.export_data_key(caller, dk.ciphertext_blob, rsa_pem, algorithm="SM2PKE")
    with pytest.raises(InvalidParameter):  # 1024 bytes do not fit RSA-OAEP
        svc.generate_and_export_data_key(caller, cmk, rsa_pem, length=1024)


# --------------------------------------------------------------- reEncrypt


@pytest.mark.parametrize(("spec", "level"), LEVELS, ids=IDS)
def test_re_encrypt_from_an_asymmetric_source(
    kms: Kms, caller: Caller, spec: str, level: str
) -> None:
    svc = kms.service
    src = svc.create_key(caller, spec=spec, protection=level).key_id
    version = first_version(kms, caller, src)
    dest = svc.create_key(caller, protection="HSM")
    ct = svc.asymmetric_encrypt(caller, src, version, b"move me").ciphertext
    r = svc.re_encrypt(
        caller,
        ct,
        dest.key_id,
        source_key=src,
        source_key_version=version,
        destination_context={"to": "aes"},
    )
    assert (r.source_key_id, r.source_version_id, r.key_id) == (src, version, dest.key_id)
    assert svc.decrypt(caller, r.ciphertext_blob, {"to": "aes"}).plaintext == b"move me"
    with pytest.raises(InvalidCiphertext):
        svc.re_encrypt(
            caller,
            ct[:-1] + bytes([ct[-1] ^ 1]),
            dest.key_id,
            source_key=src,
            source_key_version=version,
        )
    with pytest.raises(NotFound):
        svc.re_encrypt(
            caller, ct, dest.key_id, source_key=src, source_key_version=str(uuid.uuid4())
        )
    with pytest.raises(InvalidParameter):
        svc.re_encrypt(caller, ct, dest.key_id, source_key_version=version)
    with pytest.raises(InvalidKeyUsage):  # the destination must be a symmetric key
        svc.re_encrypt(caller, ct, src, source_key=src, source_key_version=version)


# ------------------------------------------------------------------- rules


def test_usage_and_spec_rules(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    with pytest.raises(InvalidParameter):
        svc.create_key(caller, spec="AES_256", usage="SIGN_VERIFY")
    with pytest.raises(InvalidParameter):
        svc.create_key(caller, spec="SM4", usage="SIGN_VERIFY")
    with pytest.raises(InvalidParameter):
        svc.create_key(caller, spec="SM2", protection="SOFTWARE")
    sm2_key = svc.create_key(caller, spec="Ctyun_SM2", usage="SIGN_VERIFY")
    assert (sm2_key.spec, sm2_key.protection) == ("SM2", "HSM")
    aes = svc.create_key(caller).key_id
    aes_version = first_version(kms, caller, aes)
    with pytest.raises(InvalidKeyUsage):
        svc.asymmetric_sign(caller, aes, aes_version, b"m")
    with pytest.raises(InvalidKeyUsage):
        svc.get_public_key(caller, aes, aes_version)
    enc = svc.create_key(caller, spec="RSA_2048", usage="ENCRYPT_DECRYPT").key_id
    enc_v = first_version(kms, caller, enc)
    sig_v = first_version(kms, caller, sm2_key.key_id)
    with pytest.raises(InvalidKeyUsage):
        svc.asymmetric_sign(caller, enc, enc_v, b"m")
    with pytest.raises(InvalidKeyUsage):
        svc.asymmetric_encrypt(caller, sm2_key.key_id, sig_v, b"m")
    for call in (
        lambda: svc.encrypt(caller, enc, b"m"),
        lambda: svc.generate_data_key(caller, enc),
    ):
        with pytest.raises(InvalidKeyUsage):
            call()
    with pytest.raises(InvalidParameter):
        svc.asymmetric_sign(caller, sm2_key.key_id, sig_v, b"m", algorithm="RSASSA_PSS_SHA_256")
    with pytest.raises(InvalidParameter):
        svc.asymmetric_encrypt(caller, enc, enc_v, b"m", algorithm="SM2PKE")
    with pytest.raises(InvalidParameter):
        svc.asymmetric_sign(caller, sm2_key.key_id, sig_v, b"short", message_type="DIGEST")
    with pytest.raises(InvalidParameter):
        svc.asymmetric_sign(caller, sm2_key.key_id, sig_v, b"x" * 4097)
    with pytest.raises(InvalidParameter):
        svc.asymmetric_sign(caller, sm2_key.key_id, sig_v, b"m", message_type="HASH")
    with pytest.raises(InvalidParameter):
        svc.asymmetric_sign(caller, sm2_key.key_id, "", b"m")
    with pytest.raises(NotFound):
        svc.asymmetric_sign(caller, sm2_key.key_id, "not-a-version", b"m")
    # Only Enabled keys work.
    svc.disable_key(caller, sm2_key.key_id)
    with pytest.raises(Disabled):
        svc.asymmetric_sign(caller, sm2_key.key_id, sig_v, b"m")
    with pytest.raises(Disabled):
        svc.create_key_version(caller, sm2_key.key_id)
    svc.enable_key(caller, sm2_key.key_id)
    svc.schedule_key_deletion(caller, enc, 7)
    with pytest.raises(InvalidState):
        svc.asymmetric_decrypt(caller, enc, enc_v, b"\x00" * 256)
    svc.cancel_key_deletion(caller, enc)
    assert svc.asymmetric_sign(caller, sm2_key.key_id, sig_v, b"m").signature


def test_a_version_of_another_key_fails(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    a = svc.create_key(caller, spec="SM2", usage="SIGN_VERIFY").key_id
    b = svc.create_key(caller, spec="SM2", usage="SIGN_VERIFY").key_id
    vb = first_version(kms, caller, b)
    for call in (
        lambda: svc.asymmetric_sign(caller, a, vb, b"m"),
        lambda: svc.asymmetric_verify(caller, a, vb, b"m", b"sig"),
        lambda: svc.get_public_key(caller, a, vb),
        lambda: svc.describe_key_version(caller, a, vb),
    ):
        with pytest.raises(NotFound):
            call()
    # Another account sees neither the key nor the version.
    with pytest.raises(NotFound):
        svc.asymmetric_sign(other_caller(kms), b, vb, b"m")


def test_at_most_50_asymmetric_versions_per_account_and_region(kms: Kms, caller: Caller) -> None:
    svc = kms.service
    key = svc.create_key(caller, spec="SM2", usage="SIGN_VERIFY").key_id
    for _ in range(48):
        svc.create_key_version(caller, key)
    svc.create_key(caller, spec="SM2", usage="ENCRYPT_DECRYPT")  # the 50th version
    keys_before = len(svc.list_keys(caller).items)
    with pytest.raises(LimitExceeded):
        svc.create_key_version(caller, key)
    for spec, level in (("SM2", "HSM"), ("RSA_2048", "SOFTWARE"), ("RSA_2048", "HSM")):
        with pytest.raises(LimitExceeded):
            svc.create_key(caller, spec=spec, protection=level)
    assert len(svc.list_keys(caller).items) == keys_before
    assert len(svc.list_key_versions(caller, key).items) == 49
    # Symmetric keys, other accounts and other regions are not limited by it.
    svc.create_key(caller)
    svc.create_key(other_caller(kms), spec="SM2")
    svc.create_key(Caller(caller.account_id, "cn-north-1", caller.principal), spec="SM2")


def test_no_call_returns_private_key_material(kms: Kms, caller: Caller, tmp_path: Path) -> None:
    svc = kms.service
    outputs: list[object] = []
    secrets: list[bytes] = []
    cmk = svc.create_key(caller).key_id
    dk = svc.generate_data_key(caller, cmk)
    for spec, level in LEVELS:
        for usage in ("SIGN_VERIFY", "ENCRYPT_DECRYPT"):
            meta = svc.create_key(caller, spec=spec, protection=level, usage=usage)
            outputs.append(wire.key_metadata(meta))
            outputs.append(wire.key_version_info(svc.create_key_version(caller, meta.key_id)))
            versions = svc.list_key_versions(caller, meta.key_id).items
            outputs += [wire.key_version_info(v) for v in versions]
            v = versions[0].version_id
            outputs.append(wire.key_version_info(svc.describe_key_version(caller, meta.key_id, v)))
            pk = svc.get_public_key(caller, meta.key_id, v)
            outputs.append(wire.public_key_result(pk))
            if usage == "SIGN_VERIFY":
                s = svc.asymmetric_sign(caller, meta.key_id, v, b"m")
                outputs += [
                    wire.sign_result(s),
                    wire.verify_result(
                        svc.asymmetric_verify(caller, meta.key_id, v, b"m", s.signature)
                    ),
                ]
            else:
                c = svc.asymmetric_encrypt(caller, meta.key_id, v, b"m")
                outputs += [
                    wire.asymmetric_encrypt_result(c),
                    wire.asymmetric_decrypt_result(
                        svc.asymmetric_decrypt(caller, meta.key_id, v, c.ciphertext)
                    ),
                ]
                outputs.append(
                    wire.export_data_key_result(
                        svc.export_data_key(caller, dk.ciphertext_blob, pk.public_key_pem)
                    )
                )
            outputs.append(wire.key_metadata(svc.describe_key(caller, meta.key_id)))
            secrets += _private_material(kms, meta.key_id, KeySpec(spec), Protection(level))
    assert secrets  # software RSA and SM2 (HSM RSA keys cannot be read at all)
    dump = json.dumps(outputs) + "".join(repr(o) for o in outputs)
    for secret in secrets:
        for form in (secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()):
            assert form not in dump


def _private_material(kms: Kms, key_id: str, spec: KeySpec, level: Protection) -> list[bytes]:
    """The private key bytes of every version, read behind the service's back."""
    out: list[bytes] = []
    with Session(kms.engine) as s:
        rows = s.exec(select(KeyVersion).where(KeyVersion.key_id == key_id)).all()
    store = kms.service.keystore(level)
    for v in rows:
        assert v.stored is not None and v.public_key is not None
        aad = asymmetric_aad(v.id, spec, v.public_key)
        if level is Protection.SOFTWARE:
            pkcs8 = store._sealer.unseal(v.stored, aad)  # type: ignore[attr-defined]
            key = load_der_private_key(pkcs8, None)
            assert isinstance(key, rsa.RSAPrivateKey)
            numbers = key.private_numbers()
            out.append(pkcs8)
            out += [
                n.to_bytes((n.bit_length() + 7) // 8, "big")
                for n in (numbers.d, numbers.p, numbers.q)
            ]
        elif spec is KeySpec.SM2:
            out.append(store.sealer.unseal(v.stored[1:], aad))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize(("spec", "level"), LEVELS, ids=IDS)
def test_threads_share_keys_safely(kms: Kms, caller: Caller, spec: str, level: str) -> None:
    """Per-thread HSM sessions and per-call OpenSSL contexts: concurrent signing stays correct."""
    svc = kms.service
    key = svc.create_key(caller, spec=spec, usage="SIGN_VERIFY", protection=level).key_id
    version = first_version(kms, caller, key)
    pk = svc.get_public_key(caller, key, version)
    assert load_public_key(pk.public_key_der).pem == pk.public_key_pem
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                m = f"{n}-{i}".encode()
                s = svc.asymmetric_sign(caller, key, version, m).signature
                assert svc.asymmetric_verify(caller, key, version, m, s).valid
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
