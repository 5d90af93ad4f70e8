"""SM2 formats, pure: curve constants, key encodings, the Z value, DER signatures and ciphertexts.

Nothing here computes on the curve beyond checking that a point satisfies its equation; signing,
verifying, encrypting and decrypting are done by an engine (`kms_core.sm2_openssl`, OpenSSL's
own SM2 in the system libcrypto, or `kms_core.sm2_gmssl`). This module only says what the bytes
are, the way other tools write them:

- Public keys are SubjectPublicKeyInfo with algorithm id-ecPublicKey and the SM2 curve OID
  (1.2.156.10197.1.301) as parameters, an uncompressed point: what `openssl pkey -pubin` reads
  and `openssl genpkey -algorithm SM2` writes.
- Private keys handed to libcrypto are RFC 5915 ECPrivateKey with the curve OID and public key.
- Signatures (GB/T 32918.2 with the digest of GM/T 0009): e = SM3(Z || M) where
  Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), ID = "1234567812345678" by default,
  and the signature is DER SEQUENCE { r INTEGER, s INTEGER } (gmssl returns raw r||s hex).
- Ciphertexts (GM/T 0009 ASN.1, C1C3C2 order): SEQUENCE { x INTEGER, y INTEGER,
  hash OCTET STRING (C3, 32 bytes), ciphertext OCTET STRING (C2) }, what OpenSSL reads and
  writes. gmssl uses the raw concatenation x||y||C3||C2 (mode 1); converters are here.
"""

from __future__ import annotations

import base64
import textwrap

from cryptography.hazmat.primitives import hashes

from kms_core import der

# GB/T 32918.5 recommended curve parameters (sm2p256v1).
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

COORD_LEN = 32
POINT_LEN = 1 + 2 * COORD_LEN  # uncompressed: 04 || x || y
DIGEST_LEN = 32  # SM3
DEFAULT_ID = b"1234567812345678"

ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
SM2_CURVE_OID = "1.2.156.10197.1.301"
_ALGORITHM_ID = der.sequence(der.oid(ID_EC_PUBLIC_KEY), der.oid(SM2_CURVE_OID))
_CURVE_PARAM = der.oid(SM2_CURVE_OID)


class Sm2FormatError(ValueError):
    """Bytes that are not a well-formed SM2 key, signature or ciphertext."""


def _c(v: int) -> bytes:
    return v.to_bytes(COORD_LEN, "big")


def on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def decode_point(point: bytes) -> tuple[int, int]:
    """An uncompressed point 04||x||y that lies on the curve (the point at infinity is refused)."""
    if len(point) != POINT_LEN or point[0] != 4:
        raise Sm2FormatError("an SM2 public key is an uncompressed 65-byte point")
    x = int.from_bytes(point[1 : 1 + COORD_LEN], "big")
    y = int.from_bytes(point[1 + COORD_LEN :], "big")
    if not on_curve(x, y):
        raise Sm2FormatError("the point is not on the SM2 curve")
    return x, y


def encode_point(x: int, y: int) -> bytes:
    return b"\x04" + _c(x) + _c(y)


# ------------------------------------------------------------------------- keys


def public_key_der(point: bytes) -> bytes:
    """SubjectPublicKeyInfo (DER) for an uncompressed point."""
    decode_point(point)
    return der.sequence(_ALGORITHM_ID, der.bit_string(point))


def is_sm2_public_key_der(data: bytes) -> bool:
    try:
        spki = der.children(der.read_all(data, der.SEQUENCE))
        return len(spki) == 2 and spki[0].raw == _ALGORITHM_ID
    except der.DerError:
        return False


def parse_public_key_der(data: bytes) -> bytes:
    """The uncompressed point of an SM2 SubjectPublicKeyInfo (checked to be on the curve)."""
    try:
        spki = der.children(der.read_all(data, der.SEQUENCE))
        if len(spki) != 2 or spki[0].raw != _ALGORITHM_ID:
            raise Sm2FormatError("not an SM2 public key (id-ecPublicKey with the SM2 curve)")
        point = der.as_bit_string(spki[1])
    except der.DerError as e:
        raise Sm2FormatError(f"malformed SM2 public key: {e}") from None
    decode_point(point)
    return point


def private_key_der(d: int, point: bytes) -> bytes:
    """RFC 5915 ECPrivateKey with the SM2 curve and the public key, as OpenSSL writes it."""
    if not 1 <= d <= N - 2:
        # SM2 signing inverts (1 + d) mod n, so d = n - 1 is not a valid key either.
        raise Sm2FormatError("SM2 private key out of range")
    decode_point(point)
    return der.sequence(
        der.integer(1),
        der.octet_string(_c(d)),
        der.tlv(0xA0, _CURVE_PARAM),
        der.tlv(0xA1, der.bit_string(point)),
    )


def parse_private_key_der(data: bytes) -> tuple[int, bytes]:
    """(d, point) from an ECPrivateKey on the SM2 curve that carries its public key."""
    try:
        items = der.children(der.read_all(data, der.SEQUENCE))
        if len(items) != 4 or der.as_integer(items[0]) != 1:
            raise Sm2FormatError("expected ECPrivateKey version 1 with parameters and public key")
        d_bytes = der.as_octet_string(items[1])
        if items[2].tag != 0xA0 or items[2].content != _CURVE_PARAM:
            raise Sm2FormatError("the private key is not on the SM2 curve")
        if items[3].tag != 0xA1:
            raise Sm2FormatError("the private key has no public key")
        point = der.as_bit_string(der.read_all(items[3].content, der.BIT_STRING))
    except der.DerError as e:
        raise Sm2FormatError(f"malformed SM2 private key: {e}") from None
    d = int.from_bytes(d_bytes, "big")
    if len(d_bytes) != COORD_LEN or not 1 <= d <= N - 2:
        raise Sm2FormatError("SM2 private key out of range")
    decode_point(point)
    return d, point


def pem(der_bytes: bytes, label: str = "PUBLIC KEY") -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der_bytes).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


# ------------------------------------------------------------------- signatures


def _sm3(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    for p in parts:
        h.update(p)
    return h.finalize()


def z_value(point: bytes, user_id: bytes = DEFAULT_ID) -> bytes:
    """Z_A = SM3(ENTL || ID || a || b || xG || yG || xA || yA); ENTL is ID's length in bits."""
    if len(user_id) >= 8192:
        raise Sm2FormatError("the SM2 user id is limited to 8191 bytes")
    decode_point(point)
    entl = (8 * len(user_id)).to_bytes(2, "big")
    return _sm3(entl, user_id, _c(A), _c(B), _c(GX), _c(GY), point[1:])


def message_digest(z: bytes, message: bytes) -> bytes:
    """e = SM3(Z || M): what is signed, and what a DIGEST-type sign request must carry."""
    return _sm3(z, message)


def encode_signature(r: int, s: int) -> bytes:
    return der.sequence(der.integer(r), der.integer(s))


def decode_signature(sig: bytes) -> tuple[int, int]:
    """(r, s) from a strict DER signature with both in [1, n-1]."""
    try:
        items = der.children(der.read_all(sig, der.SEQUENCE))
        if len(items) != 2:
            raise Sm2FormatError("an SM2 signature is SEQUENCE { r, s }")
        r, s = der.as_integer(items[0]), der.as_integer(items[1])
    except der.DerError as e:
        raise Sm2FormatError(f"malformed SM2 signature: {e}") from None
    if not (1 <= r < N and 1 <= s < N):
        raise Sm2FormatError("SM2 signature values out of range")
    return r, s


def signature_from_raw(raw_hex: str) -> bytes:
    """DER from gmssl's `sign_with_sm3` output (r || s as 128 hex digits)."""
    if len(raw_hex) != 4 * COORD_LEN:
        raise Sm2FormatError("raw SM2 signatures are 64 bytes r || s")
    return encode_signature(int(raw_hex[: 2 * COORD_LEN], 16), int(raw_hex[2 * COORD_LEN :], 16))


def signature_to_raw(sig: bytes) -> str:
    r, s = decode_signature(sig)
    return f"{r:064x}{s:064x}"


# ------------------------------------------------------------------ ciphertexts


def encode_ciphertext(c1: bytes, c3: bytes, c2: bytes) -> bytes:
    """GM/T 0009 SM2 ciphertext DER from C1 (uncompressed point), C3 (SM3 hash) and C2."""
    x, y = decode_point(c1)
    if len(c3) != DIGEST_LEN:
        raise Sm2FormatError("C3 is a 32-byte SM3 hash")
    return der.sequence(der.integer(x), der.integer(y), der.octet_string(c3), der.octet_string(c2))


def decode_ciphertext(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(C1 as 04||x||y, C3, C2) from strict GM/T 0009 DER; C1 must be on the curve."""
    try:
        items = der.children(der.read_all(data, der.SEQUENCE))
        if len(items) != 4:
            raise Sm2FormatError("an SM2 ciphertext is SEQUENCE { x, y, hash, ciphertext }")
        x, y = der.as_integer(items[0]), der.as_integer(items[1])
        c3, c2 = der.as_octet_string(items[2]), der.as_octet_string(items[3])
    except der.DerError as e:
        raise Sm2FormatError(f"malformed SM2 ciphertext: {e}") from None
    if not on_curve(x, y) or len(c3) != DIGEST_LEN or not c2:
        raise Sm2FormatError("malformed SM2 ciphertext")
    return encode_point(x, y), c3, c2


def ciphertext_to_c1c3c2(data: bytes) -> bytes:
    """Raw x||y||C3||C2 (no 04 prefix), the layout of gmssl's CryptSM2 in mode 1."""
    c1, c3, c2 = decode_ciphertext(data)
    return c1[1:] + c3 + c2


def ciphertext_from_c1c3c2(raw: bytes) -> bytes:
    """DER from raw x||y||C3||C2, with or without the 04 prefix on C1."""
    if raw[:1] == b"\x04" and (len(raw) - POINT_LEN - DIGEST_LEN) >= 1:
        # 04 is also a possible first byte of x, so only a valid point decides.
        try:
            decode_point(raw[:POINT_LEN])
            raw = raw[1:]
        except Sm2FormatError:
            pass
    if len(raw) <= 2 * COORD_LEN + DIGEST_LEN:
        raise Sm2FormatError("raw SM2 ciphertext too short")
    c1 = b"\x04" + raw[: 2 * COORD_LEN]
    c3 = raw[2 * COORD_LEN : 2 * COORD_LEN + DIGEST_LEN]
    return encode_ciphertext(c1, c3, raw[2 * COORD_LEN + DIGEST_LEN :])
