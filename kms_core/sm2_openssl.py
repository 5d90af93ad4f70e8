"""SM2 through OpenSSL's own implementation in the system libcrypto (OpenSSL 3.0+), via ctypes.

Why ctypes: `cryptography` links its own OpenSSL but exposes no SM2, and the pure-Python gmssl
signs ~85/s. The system libcrypto's SM2 (the one the `openssl` binary uses) is vetted, constant-
time where OpenSSL's EC code is, and draws nonces from OpenSSL's DRBG.

The binding is deliberately small: only the EVP_PKEY calls for key generation, DER import and
export, sign/verify of a precomputed digest, encrypt/decrypt and a pairwise key check. Every
call's prototype is declared (ctypes would otherwise truncate pointers to int), every object
is freed on every path, and the thread's OpenSSL error queue is cleared after a failure so it
cannot leak into Python's own ssl/hashlib, which share this libcrypto. ctypes releases the GIL
around each call, so signatures run in parallel across threads.

Signing goes through EVP_PKEY_sign on the digest e = SM3(Z || M), which `kms_core.sm2` computes:
OpenSSL's SM2 signature provider then signs e as it is (no second hash), which is what its
DigestSign does after hashing Z || M itself. The tests check this against `openssl pkeyutl`
with `distid:1234567812345678` and against gmssl.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import weakref
from typing import Any

from kms_core import sm2
from kms_core.errors import InvalidCiphertext, KeyUnavailable, KmsError
from kms_core.sm2_api import Sm2PrivateKey, Sm2PublicKey

_vp = ctypes.c_void_p
_cp = ctypes.c_char_p
_sz = ctypes.c_size_t
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "OpenSSL_version_num": (ctypes.c_ulong, []),
    "ERR_clear_error": (None, []),
    "EVP_PKEY_CTX_new_from_name": (_vp, [_vp, _cp, _cp]),
    "EVP_PKEY_CTX_new_from_pkey": (_vp, [_vp, _vp, _cp]),
    "EVP_PKEY_CTX_free": (None, [_vp]),
    "EVP_PKEY_free": (None, [_vp]),
    "EVP_PKEY_is_a": (ctypes.c_int, [_vp, _cp]),
    "EVP_PKEY_get_size": (ctypes.c_int, [_vp]),
    "EVP_PKEY_keygen_init": (ctypes.c_int, [_vp]),
    "EVP_PKEY_generate": (ctypes.c_int, [_vp, ctypes.POINTER(_vp)]),
    "EVP_PKEY_pairwise_check": (ctypes.c_int, [_vp]),
    "i2d_PrivateKey": (ctypes.c_int, [_vp, ctypes.POINTER(_cp)]),
    "d2i_AutoPrivateKey": (_vp, [_vp, ctypes.POINTER(_cp), ctypes.c_long]),
    "d2i_PUBKEY": (_vp, [_vp, ctypes.POINTER(_cp), ctypes.c_long]),
    "EVP_PKEY_sign_init": (ctypes.c_int, [_vp]),
    "EVP_PKEY_sign": (ctypes.c_int, [_vp, _cp, ctypes.POINTER(_sz), _cp, _sz]),
    "EVP_PKEY_verify_init": (ctypes.c_int, [_vp]),
    "EVP_PKEY_verify": (ctypes.c_int, [_vp, _cp, _sz, _cp, _sz]),
    "EVP_PKEY_encrypt_init": (ctypes.c_int, [_vp]),
    "EVP_PKEY_encrypt": (ctypes.c_int, [_vp, _cp, ctypes.POINTER(_sz), _cp, _sz]),
    "EVP_PKEY_decrypt_init": (ctypes.c_int, [_vp]),
    "EVP_PKEY_decrypt": (ctypes.c_int, [_vp, _cp, ctypes.POINTER(_sz), _cp, _sz]),
}
LIBCRYPTO_ENV = "SSEGW_LIBCRYPTO"
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def libcrypto() -> ctypes.CDLL:
    """The system libcrypto with prototypes declared; KeyUnavailable if it is unusable."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        name = (
            os.environ.get(LIBCRYPTO_ENV) or ctypes.util.find_library("crypto") or "libcrypto.so.3"
        )
        try:
            lib = ctypes.CDLL(name)
            for fn, (restype, argtypes) in _PROTOTYPES.items():
                f = getattr(lib, fn)
                f.restype, f.argtypes = restype, argtypes
        except (OSError, AttributeError) as e:
            raise KeyUnavailable(f"libcrypto with OpenSSL 3 SM2 is not available: {e}") from None
        if lib.OpenSSL_version_num() < 0x30000000:
            raise KeyUnavailable("SM2 through libcrypto needs OpenSSL 3.0 or later")
        _lib = lib
        return lib


def _fail(lib: ctypes.CDLL, what: str) -> KmsError:
    lib.ERR_clear_error()
    return KeyUnavailable(f"OpenSSL SM2: {what} failed")


class _PKey:
    """Owns one EVP_PKEY*; freed when the Python object goes."""

    def __init__(self, lib: ctypes.CDLL, ptr: int | None) -> None:
        if not ptr:
            raise _fail(lib, "key import")
        self.lib = lib
        self.ptr = ptr
        weakref.finalize(self, lib.EVP_PKEY_free, ptr)
        if lib.EVP_PKEY_is_a(ptr, b"SM2") != 1:
            raise _fail(lib, "key import (not an SM2 key)")

    def ctx(self) -> int:
        c: int | None = self.lib.EVP_PKEY_CTX_new_from_pkey(None, self.ptr, None)
        if not c:
            raise _fail(self.lib, "context creation")
        return c

    def __repr__(self) -> str:
        return "<SM2 EVP_PKEY>"


def _d2i(lib: ctypes.CDLL, fn: Any, data: bytes) -> _PKey:
    buf = ctypes.create_string_buffer(data, len(data))
    cursor = _cp(ctypes.addressof(buf))
    return _PKey(lib, fn(None, ctypes.byref(cursor), len(data)))


def _two_step(lib: ctypes.CDLL, fn: Any, ctx: int, data: bytes, what: str) -> bytes:
    """EVP_PKEY_encrypt/decrypt: ask for the output size, then run into a buffer that size."""
    n = _sz(0)
    if fn(ctx, None, ctypes.byref(n), data, len(data)) != 1:
        raise _fail(lib, what)
    out = ctypes.create_string_buffer(n.value or 1)
    if fn(ctx, out, ctypes.byref(n), data, len(data)) != 1:
        raise _fail(lib, what)
    return out.raw[: n.value]


class _Private:
    __slots__ = ("_key", "_sig_size", "__weakref__")

    def __init__(self, key: _PKey) -> None:
        self._key = key
        self._sig_size = key.lib.EVP_PKEY_get_size(key.ptr)

    def sign_digest(self, e: bytes) -> bytes:
        if len(e) != sm2.DIGEST_LEN:
            raise ValueError("SM2 signs a 32-byte SM3 digest")
        lib, ctx = self._key.lib, self._key.ctx()
        try:
            out = ctypes.create_string_buffer(self._sig_size)
            n = _sz(self._sig_size)
            if (
                lib.EVP_PKEY_sign_init(ctx) != 1
                or lib.EVP_PKEY_sign(ctx, out, ctypes.byref(n), e, len(e)) != 1
            ):
                raise _fail(lib, "sign")
            return out.raw[: n.value]
        finally:
            lib.EVP_PKEY_CTX_free(ctx)

    def decrypt(self, ciphertext: bytes) -> bytes:
        # Parse first: only well-formed DER with C1 on the curve reaches OpenSSL, and every
        # failure, ours or OpenSSL's (C3 mismatch), is the same opaque InvalidCiphertext.
        try:
            sm2.decode_ciphertext(ciphertext)
        except sm2.Sm2FormatError:
            raise InvalidCiphertext() from None
        lib, ctx = self._key.lib, self._key.ctx()
        try:
            if lib.EVP_PKEY_decrypt_init(ctx) != 1:
                raise _fail(lib, "decrypt init")
            try:
                return _two_step(lib, lib.EVP_PKEY_decrypt, ctx, ciphertext, "decrypt")
            except KeyUnavailable:
                raise InvalidCiphertext() from None
        finally:
            lib.EVP_PKEY_CTX_free(ctx)

    def __repr__(self) -> str:
        return "OpenSslSm2Private(<key hidden>)"


class _Public:
    __slots__ = ("_key", "__weakref__")

    def __init__(self, key: _PKey) -> None:
        self._key = key

    def verify_digest(self, e: bytes, signature: bytes) -> bool:
        if len(e) != sm2.DIGEST_LEN:
            return False
        lib, ctx = self._key.lib, self._key.ctx()
        try:
            if lib.EVP_PKEY_verify_init(ctx) != 1:
                raise _fail(lib, "verify init")
            ok: bool = lib.EVP_PKEY_verify(ctx, signature, len(signature), e, len(e)) == 1
            if not ok:
                lib.ERR_clear_error()  # a bad signature leaves a reason on the queue
            return ok
        finally:
            lib.EVP_PKEY_CTX_free(ctx)

    def encrypt(self, plaintext: bytes) -> bytes:
        lib, ctx = self._key.lib, self._key.ctx()
        try:
            if lib.EVP_PKEY_encrypt_init(ctx) != 1:
                raise _fail(lib, "encrypt init")
            return _two_step(lib, lib.EVP_PKEY_encrypt, ctx, plaintext, "encrypt")
        finally:
            lib.EVP_PKEY_CTX_free(ctx)


class OpenSslSm2:
    name = "openssl"

    def __init__(self) -> None:
        self._lib = libcrypto()
        probe = self._lib.EVP_PKEY_CTX_new_from_name(None, b"SM2", None)
        if not probe:
            raise _fail(self._lib, "this libcrypto has no SM2;")
        self._lib.EVP_PKEY_CTX_free(probe)

    def generate(self) -> tuple[int, bytes]:
        lib = self._lib
        ctx = lib.EVP_PKEY_CTX_new_from_name(None, b"SM2", None)
        if not ctx:
            raise _fail(lib, "key generation")
        out = _vp()
        try:
            if (
                lib.EVP_PKEY_keygen_init(ctx) != 1
                or lib.EVP_PKEY_generate(ctx, ctypes.byref(out)) != 1
            ):
                raise _fail(lib, "key generation")
        finally:
            lib.EVP_PKEY_CTX_free(ctx)
        key = _PKey(lib, out.value)
        n = lib.i2d_PrivateKey(key.ptr, None)
        buf = ctypes.create_string_buffer(max(n, 1))
        cursor = _cp(ctypes.addressof(buf))
        if n <= 0 or lib.i2d_PrivateKey(key.ptr, ctypes.byref(cursor)) != n:
            raise _fail(lib, "key export")
        # OpenSSL writes RFC 5915 ECPrivateKey with the curve and public key; parse it strictly.
        return sm2.parse_private_key_der(buf.raw[:n])

    def load_private(self, d: int, point: bytes) -> Sm2PrivateKey:
        key = _d2i(self._lib, self._lib.d2i_AutoPrivateKey, sm2.private_key_der(d, point))
        ctx = key.ctx()
        try:
            # The stored public key must belong to d (a swapped public key column would make
            # verification disagree with signing).
            if self._lib.EVP_PKEY_pairwise_check(ctx) != 1:
                raise _fail(self._lib, "pairwise key check")
        finally:
            self._lib.EVP_PKEY_CTX_free(ctx)
        return _Private(key)

    def load_public(self, point: bytes) -> Sm2PublicKey:
        return _Public(_d2i(self._lib, self._lib.d2i_PUBKEY, sm2.public_key_der(point)))
