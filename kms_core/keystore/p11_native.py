"""AES-GCM inside the HSM in one foreign call (p11_gcm.c, built by `make deps` into
libssegw_p11.so next to this file), loaded with ctypes.

python-pkcs11 stays the HSM's binding for everything (finding the token, login, sessions,
objects, every other mechanism); this only runs C_EncryptInit + C_Encrypt (or the Decrypt pair)
for AES-GCM on the session and key handles python-pkcs11 opened and found. Measured with SoftHSM2
(`bench/kms_ops.py`, and timeit of the bare call): python-pkcs11's `key.encrypt` of 32 bytes
took 19-21 us, of which SoftHSM2 itself ~14 us; through this call 15-16 us. The KMS makes one
such call per data key under an HSM key.

A failure comes back as python-pkcs11's exception class for its return code, so the HSM token
code treats both paths alike (stale handles found again, busy tokens retried, a bad tag
reported as InvalidCiphertext).

SSEGW_NATIVE_P11: "required" (`make test` sets it) refuses to fall back, "off" uses
python-pkcs11 for the AES-GCM calls too (to measure or test that path), anything else uses the
library if it loads and logs a warning if it does not.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from pkcs11 import exceptions as p11e

log = logging.getLogger("ssegw.kms")

LIBRARY = Path(__file__).with_name("libssegw_p11.so")
ENV = "SSEGW_NATIVE_P11"
_ABI = 1
TAG_LEN = 16

# PKCS#11 return codes (v2.40) and python-pkcs11's exception for each, for the codes an AES-GCM
# call can return; any other code raises a plain PKCS11Error naming it.
_ERRORS: dict[int, type[p11e.PKCS11Error]] = {
    0x005: p11e.GeneralError,
    0x006: p11e.FunctionFailed,
    0x007: p11e.ArgumentsBad,
    0x002: p11e.HostMemory,
    0x020: p11e.DataInvalid,
    0x021: p11e.DataLenRange,
    0x030: p11e.DeviceError,
    0x031: p11e.DeviceMemory,
    0x032: p11e.DeviceRemoved,
    0x040: p11e.EncryptedDataInvalid,
    0x041: p11e.EncryptedDataLenRange,
    0x050: p11e.FunctionCancelled,
    0x054: p11e.FunctionNotSupported,
    0x060: p11e.KeyHandleInvalid,
    0x062: p11e.KeySizeRange,
    0x063: p11e.KeyTypeInconsistent,
    0x070: p11e.MechanismInvalid,
    0x071: p11e.MechanismParamInvalid,
    0x082: p11e.ObjectHandleInvalid,
    0x090: p11e.OperationActive,
    0x091: p11e.OperationNotInitialized,
    0x0B0: p11e.SessionClosed,
    0x0B3: p11e.SessionHandleInvalid,
    0x0E0: p11e.TokenNotPresent,
    0x101: p11e.UserNotLoggedIn,
}


def error_for(rv: int) -> p11e.PKCS11Error:
    """python-pkcs11's exception for the return code `rv` (not CKR_OK)."""
    cls = _ERRORS.get(rv)
    return cls() if cls is not None else p11e.PKCS11Error(f"PKCS#11 call failed: CKR 0x{rv:08X}")


class _Lib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, ul, ci, cp = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_char_p
        lib.ssegw_p11_abi.restype = ci
        lib.ssegw_p11_abi.argtypes = []
        if lib.ssegw_p11_abi() != _ABI:
            raise OSError(f"{LIBRARY.name} is a stale build (run `make deps`)")
        lib.ssegw_p11_functions.restype = vp
        lib.ssegw_p11_functions.argtypes = [cp]
        lib.ssegw_p11_gcm.restype = ul
        lib.ssegw_p11_gcm.argtypes = [vp, ci, ul, ul, cp, ul, cp, ul, cp, ul, vp, vp]
        self.functions: Callable[[bytes], int | None] = lib.ssegw_p11_functions
        self.gcm: Callable[..., int] = lib.ssegw_p11_gcm


@lru_cache(maxsize=1)
def native_library() -> _Lib | None:
    """The built library, or None (with a warning) where it is missing or unusable."""
    # The adapters share adapters.native.load_native for this; the KMS may not import them.
    mode = os.environ.get(ENV, "")
    if mode == "off":
        return None
    try:
        return _Lib(ctypes.CDLL(str(LIBRARY)))
    except (OSError, AttributeError) as e:
        if mode == "required":
            raise RuntimeError(f"native PKCS#11 AES-GCM library required but unusable: {e}") from None
        log.warning("native PKCS#11 AES-GCM library unusable (%s); HSM AES-GCM calls go through "
                    "python-pkcs11, ~25%% slower. `make deps` builds it.", e)
        return None


class NativeGcm:
    """AES-GCM (12-byte nonce, 128-bit tag) through one PKCS#11 module's function list."""

    __slots__ = ("_gcm", "_functions", "_local")

    def __init__(self, lib: _Lib, functions: int) -> None:
        self._gcm = lib.gcm
        self._functions = functions
        self._local = threading.local()

    def _buffers(self, room: int) -> tuple[ctypes.Array[ctypes.c_char], memoryview, ctypes.c_ulong]:
        """This thread's output buffer (at least `room` bytes), a view of it, and length cell."""
        local = self._local
        buf: ctypes.Array[ctypes.c_char] | None = getattr(local, "buf", None)
        if buf is None or len(buf) < room:
            buf = local.buf = ctypes.create_string_buffer(max(room, 4096))
            local.view = memoryview(buf).cast("B")
            local.length = ctypes.c_ulong()
        return buf, local.view, local.length

    def encrypt(self, session: int, key: int, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """ciphertext || tag; raises python-pkcs11's exception for a failed call."""
        return self._run(1, session, key, nonce, data, aad, len(data) + TAG_LEN)

    def decrypt(self, session: int, key: int, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """The plaintext of ciphertext || tag; a tag that does not verify fails as the module
        reports it (SoftHSM2: GeneralError)."""
        return self._run(0, session, key, nonce, data, aad, len(data))

    def _run(self, encrypt: int, session: int, key: int, nonce: bytes, data: bytes, aad: bytes,
             room: int) -> bytes:
        buf, view, length = self._buffers(room)
        length.value = room
        rv = self._gcm(self._functions, encrypt, session, key, nonce, len(nonce), aad, len(aad),
                       data, len(data), buf, ctypes.byref(length))
        if rv:
            if not encrypt:  # a module may have written plaintext before the tag failed
                view[:room] = bytes(room)
            raise error_for(rv)
        n = length.value
        out = bytes(view[:n])
        if not encrypt:
            view[:n] = bytes(n)  # the plaintext was a data key or key material
        return out


def native_gcm(module: str) -> NativeGcm | None:
    """The native AES-GCM call for the PKCS#11 `module`, already loaded and initialised by
    python-pkcs11; None where the library is not built (and not required) or the module's
    function list cannot be used."""
    lib = native_library()
    if lib is None:
        return None
    functions = lib.functions(os.fsencode(module))
    if not functions:
        if os.environ.get(ENV) == "required":
            raise RuntimeError(f"native PKCS#11 AES-GCM: no usable function list in {module}")
        log.warning("native PKCS#11 AES-GCM: no usable function list in %s; using python-pkcs11",
                    module)
        return None
    return NativeGcm(lib, functions)
