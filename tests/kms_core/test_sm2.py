"""SM2 formats (pure) and both SM2 engines, checked against openssl and gmssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from gmssl import sm2 as gm
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_core import der, sm2
from kms_core.errors import InvalidCiphertext, KeyUnavailable
from kms_core.sm2_engine import Sm2Engine, engine_named
from kms_core.sm2_gmssl import GmsslSm2
from kms_core.sm2_openssl import OpenSslSm2


def openssl(*args: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], input=data, capture_output=True, check=True)
    return proc.stdout


@pytest.fixture(scope="module")
def openssl_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sm2")
    priv, pub = d / "priv.pem", d / "pub.pem"
    openssl("genpkey", "-algorithm", "SM2", "-out", str(priv))
    openssl("pkey", "-in", str(priv), "-pubout", "-out", str(pub))
    return priv, pub


def gmssl_crypt(d: int | None, point: bytes) -> gm.CryptSM2:
    c = gm.CryptSM2(private_key=f"{d:064x}" if d is not None else "", public_key="", mode=1)
    c.public_key = point[1:].hex()
    return c


ENGINES: list[Sm2Engine] = [OpenSslSm2(), GmsslSm2()]


# ---------------------------------------------------------------- DER codec


def test_der_round_trips_and_is_strict() -> None:
    for v in (0, 1, 127, 128, 255, 256, 2**255, sm2.N - 1):
        assert der.as_integer(der.read_all(der.integer(v), der.INTEGER)) == v
    # Non-minimal INTEGER, negative INTEGER, long-form length for a short value, trailing bytes.
    for bad in (b"\x02\x02\x00\x01", b"\x02\x01\x80", b"\x02\x81\x01\x01", b"\x02\x01\x01\x00"):
        with pytest.raises(der.DerError):
            der.as_integer(der.read_all(bad, der.INTEGER))
    with pytest.raises(der.DerError):
        der.read(b"\x30\x80\x00\x00")  # indefinite length
    assert der.oid("1.2.156.10197.1.301").hex() == "06082a811ccf5501822d"


# ----------------------------------------------------------------- keys


def test_public_key_der_is_what_openssl_writes(openssl_key: tuple[Path, Path]) -> None:
    _, pub = openssl_key
    spki = openssl("pkey", "-pubin", "-in", str(pub), "-outform", "DER")
    point = sm2.parse_public_key_der(spki)
    assert sm2.public_key_der(point) == spki
    assert sm2.is_sm2_public_key_der(spki)
    # And openssl reads our PEM as an SM2 key.
    text = openssl("pkey", "-pubin", "-noout", "-text", data=sm2.pem(spki).encode())
    assert b"ASN1 OID: SM2" in text


def test_private_key_der_is_what_openssl_writes(openssl_key: tuple[Path, Path]) -> None:
    priv, _ = openssl_key
    # openssl writes PKCS#8; its inner ECPrivateKey is the RFC 5915 structure we build.
    ec = openssl("ec", "-in", str(priv), "-outform", "DER")
    d, point = sm2.parse_private_key_der(ec)
    assert sm2.private_key_der(d, point) == ec


def test_points_off_the_curve_and_bad_scalars_are_refused() -> None:
    _, point = OpenSslSm2().generate()
    bad = point[:-1] + bytes([point[-1] ^ 1])
    for p in (bad, point[1:], b"\x02" + point[1:33], b"\x04" + bytes(64)):
        with pytest.raises(sm2.Sm2FormatError):
            sm2.decode_point(p)
    for d in (0, sm2.N - 1, sm2.N):
        with pytest.raises(sm2.Sm2FormatError):
            sm2.private_key_der(d, point)


# ------------------------------------------------------------ Z and signatures


def test_z_value_matches_gmssl() -> None:
    for _ in range(5):
        _, point = OpenSslSm2().generate()
        e = sm2.message_digest(sm2.z_value(point), b"message")
        assert gmssl_crypt(None, point)._sm3_z(b"message") == e.hex()


@given(st.integers(1, sm2.N - 1), st.integers(1, sm2.N - 1))
def test_signature_der_round_trip(r: int, s: int) -> None:
    sig = sm2.encode_signature(r, s)
    assert sm2.decode_signature(sig) == (r, s)
    assert sm2.signature_from_raw(sm2.signature_to_raw(sig)) == sig


def test_signature_decoding_is_strict() -> None:
    good = sm2.encode_signature(5, 7)
    for bad in (
        good + b"\x00",
        good[:-1],
        sm2.encode_signature(0, 7),
        sm2.encode_signature(5, sm2.N),
        b"\x30\x06\x02\x01\x05\x02\x01\x07"[:-1],
        b"\x30\x07\x02\x02\x00\x05\x02\x01\x07",
    ):
        with pytest.raises(sm2.Sm2FormatError):
            sm2.decode_signature(bad)


@given(st.binary(min_size=1, max_size=300))
@settings(max_examples=50)
def test_ciphertext_der_and_raw_c1c3c2_agree(c2: bytes) -> None:
    _, point = GmsslSm2().generate() if len(c2) % 17 == 0 else OpenSslSm2().generate()
    c3 = bytes(range(32))
    d = sm2.encode_ciphertext(point, c3, c2)
    assert sm2.decode_ciphertext(d) == (point, c3, c2)
    raw = sm2.ciphertext_to_c1c3c2(d)
    assert raw == point[1:] + c3 + c2
    assert sm2.ciphertext_from_c1c3c2(raw) == d
    assert sm2.ciphertext_from_c1c3c2(point + c3 + c2) == d


# ------------------------------------------------------------------ engines


@pytest.mark.parametrize("signer", ENGINES, ids=lambda e: e.name)
@pytest.mark.parametrize("verifier", ENGINES, ids=lambda e: e.name)
def test_engines_verify_each_other(signer: Sm2Engine, verifier: Sm2Engine) -> None:
    d, point = signer.generate()
    e = sm2.message_digest(sm2.z_value(point), b"cross-check")
    sig = signer.load_private(d, point).sign_digest(e)
    pub = verifier.load_public(point)
    assert pub.verify_digest(e, sig)
    assert not pub.verify_digest(sm2.message_digest(sm2.z_value(point), b"cross-checK"), sig)
    r, s = sm2.decode_signature(sig)
    assert not pub.verify_digest(e, sm2.encode_signature(r, (s + 1) % sm2.N or 1))
    assert not pub.verify_digest(e, sig[:-1])
    assert not pub.verify_digest(e, b"")


def test_openssl_engine_signatures_verify_in_openssl_and_gmssl(tmp_path: Path) -> None:
    eng = OpenSslSm2()
    d, point = eng.generate()
    msg = b"signed by the KMS"
    sig = eng.load_private(d, point).sign_digest(sm2.message_digest(sm2.z_value(point), msg))
    (tmp_path / "pub.pem").write_text(sm2.pem(sm2.public_key_der(point)))
    (tmp_path / "msg").write_bytes(msg)
    (tmp_path / "sig").write_bytes(sig)
    openssl(
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(tmp_path / "pub.pem"),
        "-rawin",
        "-in",
        str(tmp_path / "msg"),
        "-digest",
        "sm3",
        "-sigfile",
        str(tmp_path / "sig"),
        "-pkeyopt",
        "distid:1234567812345678",
    )
    assert gmssl_crypt(None, point).verify_with_sm3(sm2.signature_to_raw(sig), msg)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_engines_verify_openssl_signatures(
    engine: Sm2Engine, openssl_key: tuple[Path, Path], tmp_path: Path
) -> None:
    priv, pub = openssl_key
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed by openssl")
    sig = openssl(
        "pkeyutl",
        "-sign",
        "-inkey",
        str(priv),
        "-rawin",
        "-in",
        str(msg),
        "-digest",
        "sm3",
        "-pkeyopt",
        "distid:1234567812345678",
    )
    point = sm2.parse_public_key_der(openssl("pkey", "-pubin", "-in", str(pub), "-outform", "DER"))
    e = sm2.message_digest(sm2.z_value(point), b"signed by openssl")
    assert engine.load_public(point).verify_digest(e, sig)


def test_openssl_engine_encryption_interoperates(
    openssl_key: tuple[Path, Path], tmp_path: Path
) -> None:
    eng = OpenSslSm2()
    priv, pub = openssl_key
    point = sm2.parse_public_key_der(openssl("pkey", "-pubin", "-in", str(pub), "-outform", "DER"))
    ct = eng.load_public(point).encrypt(b"to openssl")
    assert openssl("pkeyutl", "-decrypt", "-inkey", str(priv), data=ct) == b"to openssl"
    # And gmssl (raw C1C3C2) both ways with a key of ours.
    d, point = eng.generate()
    key = eng.load_private(d, point)
    ours = eng.load_public(point).encrypt(b"to gmssl")
    assert gmssl_crypt(d, point).decrypt(sm2.ciphertext_to_c1c3c2(ours)) == b"to gmssl"
    theirs = gmssl_crypt(d, point).encrypt(b"from gmssl")
    assert key.decrypt(sm2.ciphertext_from_c1c3c2(theirs)) == b"from gmssl"


def test_openssl_engine_rejects_tampered_ciphertexts() -> None:
    eng = OpenSslSm2()
    d, point = eng.generate()
    key = eng.load_private(d, point)
    ct = eng.load_public(point).encrypt(b"authentic")
    c1, c3, c2 = sm2.decode_ciphertext(ct)
    _, other = eng.generate()
    tampered = [
        sm2.encode_ciphertext(c1, c3, bytes([c2[0] ^ 1]) + c2[1:]),
        sm2.encode_ciphertext(c1, bytes([c3[0] ^ 1]) + c3[1:], c2),
        sm2.encode_ciphertext(other, c3, c2),
        ct[:-1],
        ct + b"\x00",
        b"",
        b"\x30\x00",
    ]
    for bad in tampered:
        with pytest.raises(InvalidCiphertext):
            key.decrypt(bad)


def test_mismatched_key_pairs_are_refused() -> None:
    for eng in ENGINES:
        d, _ = eng.generate()
        _, other = eng.generate()
        with pytest.raises(KeyUnavailable):
            eng.load_private(d, other)


def test_gmssl_engine_refuses_encryption() -> None:
    eng = engine_named("gmssl")
    d, point = eng.generate()
    with pytest.raises(KeyUnavailable):
        eng.load_public(point).encrypt(b"x")
    with pytest.raises(KeyUnavailable):
        eng.load_private(d, point).decrypt(b"x")
