"""The block-record loop of `contentenc` in C (gcm_blocks.c, built by `make deps` into
libssegw_gcm.so next to this file), loaded with ctypes.

Same records, same bytes as the pure path (`cryptography`'s AESGCM, one call per block):
the tests run both against each other and against the frozen vectors. What differs is the
cost around the cipher: one foreign call per run of blocks instead of a Python loop, the GIL
released for the whole run (ctypes drops it for every foreign call; `cryptography` holds it),
and plaintext written straight into a caller's buffer, such as the FUSE reply buffer.

ctypes rather than a CPython extension for the reasons adapters/block/sector_crypto.py gives:
the build needs only a C compiler and libssl-dev.

SSEGW_NATIVE_GCM: "required" (`make test` sets it) refuses to fall back, "off" forces the
pure path (to measure it), anything else uses the library if it loads and logs a warning if
it does not.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from adapters.native import load_native

log = logging.getLogger("ssegw.fs")

NATIVE_LIBRARY = Path(__file__).with_name("libssegw_gcm.so")
_NATIVE_ABI = 2
_NONCE_LEN, _TAG_LEN = 12, 16

# What ctypes passes as a `void *`: bytes (their buffer, not a copy), a ctypes array, or an
# address.
Pointer = bytes | ctypes.Array[ctypes.c_char] | int


_BLOCK_SIZE = 4096
_RECORD_SIZE = _BLOCK_SIZE + _NONCE_LEN + _TAG_LEN

# A run of this many blocks or more is sealed in two halves on two threads at once (the GIL is
# released in the C loop): a write(2) waits for its FUSE request, so while the daemon
# encrypts, the writer's core has little to do. Measured (1 MiB writes, `dd conv=fsync` of
# 1 GiB): the cipher 0.52 -> 0.32 ms per MiB, the writes 461 -> 479 MB/s (mean of 6 each).
# Not for reads: the kernel's read-ahead already keeps several requests in flight, and
# splitting them made sequential reads slower (900-1000 -> 770-830 MB/s).
_SPLIT_BLOCKS = 64


@lru_cache(maxsize=1)
def _helpers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="ssegw-gcm")


def _address(p: Pointer) -> int:
    """The address a Pointer stands for (bytes: their buffer, which the caller keeps alive)."""
    if isinstance(p, int):
        return p
    if isinstance(p, bytes):
        addr = ctypes.cast(ctypes.c_char_p(p), ctypes.c_void_p).value
    else:
        addr = ctypes.addressof(p)
    assert addr is not None
    return addr


class AuthFailed(Exception):
    """A record failed authentication; `block` is its number."""

    def __init__(self, block: int) -> None:
        super().__init__(block)
        self.block = block


class _Lib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, ci, u64, sz, ll = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_size_t,
                               ctypes.c_longlong)
        lib.ssegw_gcm_abi.restype = ci
        lib.ssegw_gcm_abi.argtypes = []
        if lib.ssegw_gcm_abi() != _NATIVE_ABI:
            raise OSError(f"{NATIVE_LIBRARY.name} is a stale build (run `make deps`)")
        lib.ssegw_gcm_new.restype = vp
        lib.ssegw_gcm_new.argtypes = [ctypes.c_char_p, ci]
        lib.ssegw_gcm_free.restype = None
        lib.ssegw_gcm_free.argtypes = [vp]
        lib.ssegw_gcm_decrypt.restype = ll
        cp = ctypes.c_char_p
        lib.ssegw_gcm_decrypt.argtypes = [vp, u64, cp, cp, sz, ci, vp, sz, vp,
                                          ctypes.POINTER(u64)]
        lib.ssegw_gcm_encrypt.restype = ll
        lib.ssegw_gcm_encrypt.argtypes = [vp, u64, cp, cp, sz, ci, vp, sz, sz, cp, vp]
        self.new: Callable[[bytes, int], int | None] = lib.ssegw_gcm_new
        self.free: Callable[[int], None] = lib.ssegw_gcm_free
        self.decrypt: Callable[..., int] = lib.ssegw_gcm_decrypt
        self.encrypt: Callable[..., int] = lib.ssegw_gcm_encrypt


@lru_cache(maxsize=1)
def native_library() -> _Lib | None:
    """The built block loop, or None (with a warning) where it is missing or unusable."""
    return load_native(NATIVE_LIBRARY, "SSEGW_NATIVE_GCM", _Lib, what="native AES-GCM block library",
                       log=log, fallback="falling back to the pure per-block loop, ~3x slower")


class NativeGcm:
    """AES-256-GCM block records of one file, keyed once. Safe to call from many threads:
    each call copies the keyed template into a context of its own."""

    __slots__ = ("_lib", "_ctx")

    def __init__(self, key: bytes, lib: _Lib) -> None:
        self._lib = lib
        ctx = lib.new(key, len(key))
        if not ctx:
            raise ValueError("OpenSSL refused the AES-256-GCM key")
        self._ctx = ctx

    def __del__(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx:
            self._lib.free(ctx)

    def __repr__(self) -> str:
        return "NativeGcm(...)"

    def decrypt_into(self, first_block: int, tails: tuple[bytes, bytes], final: bool,
                     src: Pointer, src_len: int, dst: Pointer) -> int:
        """Plaintext of the records at `src` written to `dst`; its length. `tails`: what
        follows the block number in the associated data, for other blocks and for a final
        one (contentenc.FileCipher.tails); `final`: the last record is the file's final block.
        AuthFailed names the first block that failed (or was too short); `dst` then holds no
        plaintext of it."""
        bad = ctypes.c_uint64()
        tail, final_tail = tails
        n = self._lib.decrypt(self._ctx, first_block, tail, final_tail, len(tail), int(final),
                              src, src_len, dst, ctypes.byref(bad))
        if n == -1:
            raise AuthFailed(bad.value)
        if n < 0:
            raise MemoryError("OpenSSL failed in the AES-GCM block loop")
        return n

    def encrypt_into(self, first_block: int, tails: tuple[bytes, bytes], final: bool,
                     src: Pointer, src_len: int, blocks: int, nonces: bytes,
                     dst: Pointer) -> int:
        """`blocks` records for the plaintext at `src` (the last may be short, or empty when
        `final`) written to `dst` (room for `src_len` + 28 per block); their length."""
        if blocks < _SPLIT_BLOCKS:
            return self._encrypt(first_block, tails, final, src, src_len, blocks, nonces, dst)
        half = blocks // 2
        head_len = half * _BLOCK_SIZE
        s, d = _address(src), _address(dst)
        head = _helpers().submit(self._encrypt, first_block, tails, False, s, head_len, half,
                                 nonces[: half * _NONCE_LEN], d)
        try:
            n = self._encrypt(first_block + half, tails, final, s + head_len, src_len - head_len,
                              blocks - half, nonces[half * _NONCE_LEN :], d + half * _RECORD_SIZE)
        finally:
            first_n = head.result()
        return first_n + n

    def _encrypt(self, first_block: int, tails: tuple[bytes, bytes], final: bool,
                 src: Pointer, src_len: int, blocks: int, nonces: bytes, dst: Pointer) -> int:
        tail, final_tail = tails
        n = self._lib.encrypt(self._ctx, first_block, tail, final_tail, len(tail), int(final),
                              src, src_len, blocks, nonces, dst)
        if n != src_len + blocks * (_NONCE_LEN + _TAG_LEN):
            raise MemoryError("OpenSSL failed in the AES-GCM block loop")
        return n

    def encrypt(self, first_block: int, tails: tuple[bytes, bytes], final: bool,
                plaintext: bytes, blocks: int, nonces: bytes) -> bytes:
        """`blocks` records for `plaintext` (the last may be short, or empty when `final`)."""
        out = ctypes.create_string_buffer(max(1, len(plaintext) + blocks * (_NONCE_LEN + _TAG_LEN)))
        n = self.encrypt_into(first_block, tails, final, plaintext, len(plaintext), blocks,
                              nonces, out)
        return ctypes.string_at(out, n)
