"""EME-OAEP decoding (RFC 8017, section 7.1.2 step 3) for a raw RSA result. Pure, no I/O.

Why this exists: SoftHSM2 2.6.1 runs CKM_RSA_PKCS_OAEP only with SHA-1 and MGF1-SHA-1, and the
KMS's private keys at the HSM level must never leave the token. So RSAES-OAEP-SHA-256
decryption is split: the token computes the raw RSA private operation (CKM_RSA_X_509, so the
private key stays inside), and this module removes the OAEP encoding from the result. That is
exactly what a PKCS#11 token does internally for CKM_RSA_PKCS_OAEP; the RSA part, the only one
that needs the key, still runs in the HSM.

The decoding is written against Manger's attack, which needs an oracle telling "first byte is
not zero" apart from other failures: every check runs on every input, without early exit or
data-dependent branches, the results are folded into one flag with integer masks, the label
hash is compared with `hmac.compare_digest`, and every failure is the same `OaepDecodeError`
(the KMS turns it into its one opaque InvalidCiphertext). Python gives no hard constant-time
guarantee, but the work done does not depend on where or whether the encoding is wrong. Only
a valid message's length shows, and it is returned anyway. SHA-1 and SHA-256 come from
`cryptography`; the tests check this decoder against `cryptography`'s OAEP encryption.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import hashes


class OaepDecodeError(ValueError):
    """The encoded message is not a valid OAEP encoding (deliberately says nothing more)."""

    def __init__(self) -> None:
        super().__init__("decryption error")


def _hash(algorithm: hashes.HashAlgorithm, *parts: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    for p in parts:
        h.update(p)
    return h.finalize()


def mgf1(seed: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    """MGF1 (RFC 8017 B.2.1): the hash of seed || counter, counters 0, 1, ... concatenated."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += _hash(algorithm, seed, counter.to_bytes(4, "big"))
        counter += 1
    return bytes(out[:length])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def oaep_decode(em: bytes, k: int, algorithm: hashes.HashAlgorithm, label: bytes = b"") -> bytes:
    """The message M inside EM = 0x00 || maskedSeed || maskedDB, or OaepDecodeError.

    `em` is the raw RSA output left-padded to the modulus length `k`; MGF1 uses the same hash
    as the label, as in RSAES-OAEP-SHA-256 (and -SHA-1) everywhere.
    """
    h_len = algorithm.digest_size
    if len(em) != k or k < 2 * h_len + 2:
        raise OaepDecodeError()
    y = em[0]
    masked_seed, masked_db = em[1 : 1 + h_len], em[1 + h_len :]
    seed = _xor(masked_seed, mgf1(masked_db, h_len, algorithm))
    db = _xor(masked_db, mgf1(seed, k - h_len - 1, algorithm))

    good = int(hmac.compare_digest(db[:h_len], _hash(algorithm, label)))
    good &= ((y - 1) >> 8) & 1  # 1 exactly when y == 0 (y is 0..255)

    # Find the 0x01 that ends the zero padding PS, looking at every byte whatever we find.
    looking, index, invalid = 1, 0, 0
    for i in range(h_len, len(db)):
        b = db[i]
        is_zero = ((b - 1) >> 8) & 1
        is_one = (((b ^ 1) - 1) >> 8) & 1
        index |= (looking & is_one) * i
        invalid |= looking & (1 - is_zero) & (1 - is_one)
        looking &= is_zero
    good &= (1 - invalid) & (1 - looking)
    if not good:
        raise OaepDecodeError()
    return db[index + 1 :]
