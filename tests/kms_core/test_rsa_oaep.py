"""The OAEP decoder used after the HSM's raw RSA, against `cryptography`'s OAEP encryption."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_core.rsa_oaep import OaepDecodeError, mgf1, oaep_decode

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
N = KEY.public_key().public_numbers().n
D = KEY.private_numbers().d
K = 256


def raw_decrypt(ciphertext: bytes) -> bytes:
    """What CKM_RSA_X_509 returns: c^d mod n, left-padded to the modulus length."""
    return pow(int.from_bytes(ciphertext, "big"), D, N).to_bytes(K, "big")


def raw_encrypt(em: bytes) -> bytes:
    return pow(int.from_bytes(em, "big"), 65537, N).to_bytes(K, "big")


def oaep(h: hashes.HashAlgorithm) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(h), algorithm=h, label=None)


@pytest.mark.parametrize("h", [hashes.SHA256(), hashes.SHA1()], ids=lambda h: h.name)
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_decodes_what_cryptography_encrypts(h: hashes.HashAlgorithm, data: st.DataObject) -> None:
    message = data.draw(st.binary(min_size=0, max_size=K - 2 * h.digest_size - 2))
    em = raw_decrypt(KEY.public_key().encrypt(message, oaep(h)))
    assert oaep_decode(em, K, h) == message


def test_empty_message_and_mgf1_lengths() -> None:
    em = raw_decrypt(KEY.public_key().encrypt(b"", oaep(hashes.SHA256())))
    assert oaep_decode(em, K, hashes.SHA256()) == b""
    assert len(mgf1(b"seed", 100, hashes.SHA256())) == 100
    assert mgf1(b"seed", 32, hashes.SHA256()) == mgf1(b"seed", 64, hashes.SHA256())[:32]


def test_every_kind_of_bad_encoding_is_the_same_error() -> None:
    h = hashes.SHA256()
    good = raw_decrypt(KEY.public_key().encrypt(b"secret", oaep(h)))
    variants = [
        b"\x01" + good[1:],  # Y != 0 (what Manger's attack distinguishes)
        good[:1] + bytes([good[1] ^ 1]) + good[2:],  # masked seed
        good[:40] + bytes([good[40] ^ 1]) + good[41:],  # label hash inside DB
        good[:-1] + bytes([good[-1] ^ 1]),  # message byte: decodes differently or fails
        bytes(K),  # all zero: no 0x01 separator
        good[:-1],  # wrong length
    ]
    # The wrong-hash decode must fail too (SHA-1 decoding of a SHA-256 encoding).
    with pytest.raises(OaepDecodeError) as sha1_err:
        oaep_decode(good, K, hashes.SHA1())
    messages = {str(sha1_err.value)}
    for em in variants:
        try:
            out = oaep_decode(em, K, h)
        except OaepDecodeError as e:
            messages.add(str(e))
        else:
            assert out != b"secret"  # only a flipped message byte can still decode
            assert em is variants[3]
    assert messages == {"decryption error"}


def test_separator_search_rejects_nonzero_padding() -> None:
    # Build an encoding by hand whose PS contains a 0x02 before the 0x01 separator.
    h = hashes.SHA256()
    h_len = h.digest_size
    digest = hashes.Hash(h)
    lhash = digest.finalize()
    db = lhash + b"\x00" * 10 + b"\x02" + b"\x00" * (K - 2 * h_len - 2 - 11 - 3) + b"\x01" + b"abc"
    assert len(db) == K - h_len - 1
    seed = bytes(range(h_len))
    masked_db = bytes(a ^ b for a, b in zip(db, mgf1(seed, len(db), h), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, mgf1(masked_db, h_len, h), strict=True))
    em = b"\x00" + masked_seed + masked_db
    with pytest.raises(OaepDecodeError):
        oaep_decode(em, K, h)
    # The same with clean padding decodes, so the failure above is the 0x02.
    db_ok = lhash + b"\x00" * (K - 2 * h_len - 2 - 3) + b"\x01" + b"abc"
    masked_db = bytes(a ^ b for a, b in zip(db_ok, mgf1(seed, len(db_ok), h), strict=True))
    masked_seed = bytes(a ^ b for a, b in zip(seed, mgf1(masked_db, h_len, h), strict=True))
    em_ok = b"\x00" + masked_seed + masked_db
    assert oaep_decode(em_ok, K, h) == b"abc"
    # And it is a valid RSA-OAEP ciphertext for cryptography as well.
    assert KEY.decrypt(raw_encrypt(em_ok), oaep(h)) == b"abc"
