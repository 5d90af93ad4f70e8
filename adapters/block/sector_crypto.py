"""XTS-plain64 over 512-byte sectors, as LUKS1 (and dm-crypt, qemu, nbdkit) lay it out.

Sector n of the payload is one XTS data unit whose tweak is n as a 128-bit little-endian
number. XTS is defined per data unit, so one XTS pass over many sectors is wrong (the tweak
of block j of sector n is E_K2(n) * alpha^j, not a continuation of sector n-1). What is slow
is not the cipher but the per-sector setup: a fresh `cryptography` Cipher per 512-byte sector
costs ~9 us, i.e. ~55 MB/s. Three batched implementations, all checked against each other
and against `cryptography`'s XTS in the tests:

* `NativeXts` (AES, the one we ship): the per-sector loop in C (xts_sectors.c, built by
  `make deps` into libssegw_xts.so next to this file) around OpenSSL's own AES-XTS: per
  sector one re-IV of a context keyed once, and one update. ~4.3 GB/s per core here through
  the provider's functions (~3.1 through EVP), against ~5.3 GB/s for `openssl speed`, which
  never re-IVs.
  It is loaded with ctypes rather than built as a CPython extension: the build needs only a
  C compiler and libssl-dev (not the headers and ABI of whichever interpreter runs the
  venv), and ctypes releases the GIL for the whole foreign call, which is what lets
  sector crypto of one large request run on two cores at once (`split`). A ctypes call
  costs ~1 us, which a batch of sectors amortizes.
* `OpenSslXts` (AES, the fallback when the native library is not built): the same two
  OpenSSL calls per sector, each through ctypes from a Python loop. ~0.35 GB/s, GIL held.
* `EcbXex` (SM4, and AES where libcrypto cannot be loaded): the XEX construction by hand. One
  ECB pass of K2 over all sector numbers gives every sector's first tweak; the 31 further
  tweaks per sector come from multiplying all sectors' tweaks by alpha at once as one Python
  big integer (shift, carry mask, 0x87 reduction), interleaved into sector order with strided
  memoryview copies; then C = E_K1(P ^ T) ^ T with one ECB pass and two big-integer XORs.

SSEGW_NATIVE_XTS picks the AES path: "required" (`make test` sets it) refuses to fall back,
"off" forces the fallback (to measure it), anything else uses the native library if it loads
and logs a warning if it does not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
import logging
import os
import threading
from array import array
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from adapters.native import load_native

log = logging.getLogger("ssegw.block")

SECTOR_SIZE = 512
_BLOCKS_PER_SECTOR = SECTOR_SIZE // 16
NATIVE_LIBRARY = Path(__file__).with_name("libssegw_xts.so")
_NATIVE_ABI = 2

Buffer = bytes | bytearray | memoryview


class SectorCipher(Protocol):
    """Encrypts or decrypts whole sectors; `sector` is the number of the first one."""

    def encrypt(self, sector: int, data: Buffer) -> bytes | bytearray: ...

    def decrypt(self, sector: int, data: Buffer) -> bytes | bytearray: ...


def _count(data: Buffer) -> int:
    n = len(data)
    if n % SECTOR_SIZE:
        raise ValueError(f"sector data must be a multiple of {SECTOR_SIZE} bytes, got {n}")
    return n // SECTOR_SIZE


def _sector_ivs(sector: int, count: int) -> bytearray:
    """`count` consecutive plain64 IVs (16 bytes each, little-endian), built in C speed."""
    if sector < 0 or sector + count > 1 << 64:
        raise ValueError("sector number out of range for plain64")
    ivs = bytearray(16 * count)
    memoryview(ivs).cast("Q")[0::2] = array("Q", range(sector, sector + count))
    return ivs


# ----------------------------------------------------------------- OpenSSL via ctypes


class _LibCrypto:
    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, ci = ctypes.c_void_p, ctypes.c_int
        lib.EVP_CIPHER_CTX_new.restype = vp
        lib.EVP_CIPHER_CTX_new.argtypes = []
        lib.EVP_CIPHER_CTX_free.argtypes = [vp]
        lib.EVP_CIPHER_CTX_free.restype = None
        lib.EVP_aes_128_xts.restype = vp
        lib.EVP_aes_256_xts.restype = vp
        lib.EVP_CipherInit_ex.argtypes = [vp, vp, vp, vp, vp, ci]
        lib.EVP_CipherInit_ex.restype = ci
        lib.EVP_CipherUpdate.argtypes = [vp, vp, vp, vp, ci]
        lib.EVP_CipherUpdate.restype = ci
        self.lib = lib


@lru_cache(maxsize=1)
def _libcrypto() -> _LibCrypto | None:
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3"):
        if not name:
            continue
        try:
            lib = _LibCrypto(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _address(buf: Buffer) -> tuple[int, object]:
    """Address of a buffer's bytes, and the object that keeps them alive."""
    if isinstance(buf, bytes):
        return ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value or 0, buf
    if isinstance(buf, memoryview) and buf.readonly:
        owned = buf.tobytes()
        return ctypes.cast(ctypes.c_char_p(owned), ctypes.c_void_p).value or 0, owned
    arr = (ctypes.c_char * len(buf)).from_buffer(buf)
    return ctypes.addressof(arr), arr


class OpenSslXts:
    def __init__(self, key: bytes, lib: _LibCrypto) -> None:
        if len(key) not in (32, 64):
            raise ValueError("AES-XTS needs a 32- or 64-byte key")
        self._lib = lib.lib
        evp = self._lib.EVP_aes_256_xts() if len(key) == 64 else self._lib.EVP_aes_128_xts()
        self._ctx: list[int] = []
        for enc in (0, 1):
            ctx = self._lib.EVP_CIPHER_CTX_new()
            if not ctx or self._lib.EVP_CipherInit_ex(ctx, evp, None, key, bytes(16), enc) != 1:
                raise ValueError("OpenSSL refused the XTS key (the two halves must differ)")
            self._ctx.append(ctx)
        # EVP contexts are not thread-safe; one call holds it for a whole batch.
        self._lock = threading.Lock()

    def __del__(self) -> None:
        for ctx in getattr(self, "_ctx", ()):
            self._lib.EVP_CIPHER_CTX_free(ctx)

    def _run(self, enc: int, sector: int, data: Buffer) -> bytearray:
        count = _count(data)
        out = bytearray(len(data))
        if not count:
            return out
        ivs = _sector_ivs(sector, count)
        src, keep_src = _address(data)
        dst, keep_dst = _address(out)
        ivp, keep_iv = _address(ivs)
        outl = ctypes.c_int()
        poutl = ctypes.byref(outl)
        init, update = self._lib.EVP_CipherInit_ex, self._lib.EVP_CipherUpdate
        ok = 1
        with self._lock:
            ctx = self._ctx[enc]
            # The hot loop: re-IV the keyed context, then one sector. Nothing else per sector.
            for off in range(0, count * SECTOR_SIZE, SECTOR_SIZE):
                ok &= init(ctx, None, None, None, ivp + (off >> 5), -1)
                ok &= update(ctx, dst + off, poutl, src + off, SECTOR_SIZE)
        del keep_src, keep_dst, keep_iv
        if ok != 1:
            raise RuntimeError("OpenSSL XTS failed")
        return out

    def encrypt(self, sector: int, data: Buffer) -> bytearray:
        return self._run(1, sector, data)

    def decrypt(self, sector: int, data: Buffer) -> bytearray:
        return self._run(0, sector, data)


# ------------------------------------------------------------- the native sector loop


# What ctypes passes as a `void *`: bytes (their buffer, not a copy), a ctypes array, or an
# address.
_Pointer = bytes | ctypes.Array[ctypes.c_char] | int


class _NativeLib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, ci = ctypes.c_void_p, ctypes.c_int
        lib.ssegw_xts_abi.restype = ci
        lib.ssegw_xts_abi.argtypes = []
        if lib.ssegw_xts_abi() != _NATIVE_ABI:
            raise OSError(f"{NATIVE_LIBRARY.name} is a stale build (run `make deps`)")
        lib.ssegw_xts_new.restype = vp
        lib.ssegw_xts_new.argtypes = [ctypes.c_char_p, ci, ci, ci]
        lib.ssegw_xts_direct.restype = ci
        lib.ssegw_xts_direct.argtypes = [vp]
        lib.ssegw_xts_dup.restype = vp
        lib.ssegw_xts_dup.argtypes = [vp]
        lib.ssegw_xts_free.restype = None
        lib.ssegw_xts_free.argtypes = [vp]
        lib.ssegw_xts_sectors.restype = ci
        lib.ssegw_xts_sectors.argtypes = [vp, ctypes.c_uint64, ctypes.c_size_t, vp, vp]
        self.new: Callable[[bytes, int, int, int], int | None] = lib.ssegw_xts_new
        self.is_direct: Callable[[int], int] = lib.ssegw_xts_direct
        self.dup: Callable[[int], int | None] = lib.ssegw_xts_dup
        self.free: Callable[[int], None] = lib.ssegw_xts_free
        self.sectors: Callable[[int, int, int, _Pointer, _Pointer], int] = lib.ssegw_xts_sectors
        # For native callers (nbd_fastpath.c) that run this loop on contexts made here.
        self.sectors_address = ctypes.cast(lib.ssegw_xts_sectors, ctypes.c_void_p).value or 0


@lru_cache(maxsize=1)
def native_library() -> _NativeLib | None:
    """The built sector loop, or None (with a warning) where it is missing or unusable."""
    return load_native(NATIVE_LIBRARY, "SSEGW_NATIVE_XTS", _NativeLib, what="native AES-XTS library",
                       log=log, fallback="falling back to the per-sector ctypes loop, ~10x slower")


# Below this many sectors (1 MiB) a batch stays on the calling thread. Handing part of a
# batch to a helper thread and waiting for it costs ~100 us of wake-ups on this kind of VM,
# as much as 400 KiB of crypto: measured, two threads lose to one at 256 and 512 KiB (2.3
# and 3.5 against 4.0 GB/s) and win from 1 MiB on (5.2 against 4.1; 6.3 at 2 MiB).
# nbdcopy's 256 KiB requests are never split; qemu's and the kernel's larger ones are.
SPLIT_MIN_SECTORS = 2048
# Batches smaller than this, given as bytes, take NativeXts's short path (never split).
_SMALL_BATCH = 64 << 10
_SMALL_LAST_SECTOR = (1 << 64) - _SMALL_BATCH // SECTOR_SIZE  # plain64 never wraps there
_c_char, _byref = ctypes.c_char, ctypes.byref

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    # A pool made before a fork (workers.py forks after the volume is open) has no threads in
    # the child, and a lock held by a parent's thread would never be released there.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _helpers() -> ThreadPoolExecutor:
    """This process's crypto helper threads: one per core beside the calling thread. A caller
    that splits wider just queues parts; helpers never wait on each other, so that is safe."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, default_split() - 1), thread_name_prefix="xts")
        return _pool


def default_split() -> int:
    """How many threads one large batch is spread over: one per usable core."""
    return len(os.sched_getaffinity(0))


class NativeXts:
    """AES-XTS-plain64 through the native loop. A batch of at least SPLIT_MIN_SECTORS is cut
    into `split` parts, one per thread, all but one on a shared helper pool: ctypes drops
    the GIL for the foreign call, so the parts really run at once.

    `direct`: let the loop call the OpenSSL provider's XTS functions without the EVP layer
    (~25% less time per sector; xts_sectors.c says why that is still OpenSSL's XTS). Where
    the provider does not offer them the loop uses EVP; `self.direct` says which it got."""

    def __init__(self, key: bytes, lib: _NativeLib, *, split: int = 1, direct: bool = True) -> None:
        self._lib = lib
        self._sectors: Callable[..., int] = lib.sectors  # also given byref()s, below
        self.split = max(1, split)
        self._template: list[int] = []
        # EVP contexts are not thread-safe: each call takes an idle one from here, and a new
        # one is copied from the template only when every existing one is busy, so there are
        # never more than the threads that ever ran crypto at once.
        self._idle: tuple[list[int], list[int]] = ([], [])
        self._lock = threading.Lock()
        if len(key) not in (32, 64):
            raise ValueError("AES-XTS needs a 32- or 64-byte key")
        for enc in (0, 1):
            ctx = lib.new(key, len(key), enc, int(direct))
            if not ctx:
                raise ValueError("OpenSSL refused the XTS key (the two halves must differ)")
            self._template.append(ctx)
        self.direct = all(lib.is_direct(ctx) for ctx in self._template)

    def __del__(self) -> None:
        for ctx in [*self._template, *self._idle[0], *self._idle[1]]:
            self._lib.free(ctx)

    def _another(self, enc: int) -> int:
        with self._lock:  # copying reads the template; one copy at a time keeps that simple
            ctx = self._lib.dup(self._template[enc])
        if not ctx:
            raise MemoryError("OpenSSL could not copy an XTS context")
        return ctx

    def private_contexts(self) -> tuple[int, int]:
        """(decrypt, encrypt) contexts for one native caller's own use (nbd_fastpath); it
        gives them back with `release`."""
        return self._another(0), self._another(1)

    def release(self, *contexts: int) -> None:
        for ctx in contexts:
            self._lib.free(ctx)

    @property
    def library(self) -> _NativeLib:
        return self._lib

    def _crypt(self, enc: int, sector: int, count: int, src: _Pointer, dst: _Pointer) -> None:
        idle = self._idle[enc]
        try:
            ctx = idle.pop()  # list.pop and list.append are atomic under the GIL
        except IndexError:
            ctx = self._another(enc)
        try:
            ok = self._lib.sectors(ctx, sector, count, src, dst)
        finally:
            idle.append(ctx)
        if ok != 1:
            raise RuntimeError("OpenSSL XTS failed")

    def _run(self, enc: int, sector: int, data: Buffer) -> bytearray:
        n = len(data)
        if (type(data) is bytes and 0 < n < _SMALL_BATCH and not n % SECTOR_SIZE
                and 0 <= sector <= _SMALL_LAST_SECTOR):
            # The per-request path of small I/O (a 4 KiB read decrypts the bytes pread gave,
            # a 4 KiB write encrypts the bytes it was received as): the general path below
            # spent ~3 us per call in Python and ctypes around ~1 us of AES.
            out = bytearray(n)
            idle = self._idle[enc]
            try:
                ctx = idle.pop()
            except IndexError:
                ctx = self._another(enc)
            try:
                ok = self._sectors(ctx, sector, n // SECTOR_SIZE, data,
                                   _byref(_c_char.from_buffer(out)))
            finally:
                idle.append(ctx)
            if ok != 1:
                raise RuntimeError("OpenSSL XTS failed")
            return out
        count = _count(data)
        out = bytearray(len(data))
        if not count:
            return out
        if sector < 0 or sector + count > 1 << 64:
            raise ValueError("sector number out of range for plain64")
        # What ctypes passes as a pointer without copying: bytes as they are, anything
        # writable through a ctypes array over it (a 4 KiB request spends more time in these
        # conversions than in AES, so no address arithmetic unless the batch is split).
        src: bytes | ctypes.Array[ctypes.c_char]
        if isinstance(data, bytes):
            src = data
        elif isinstance(data, memoryview) and data.readonly:
            src = data.tobytes()
        else:
            src = (ctypes.c_char * len(data)).from_buffer(data)
        dst = (ctypes.c_char * len(out)).from_buffer(out)
        parts = min(self.split, count // (SPLIT_MIN_SECTORS // 2))
        if count < SPLIT_MIN_SECTORS or parts < 2:
            self._crypt(enc, sector, count, src, dst)
            return out
        self._split(enc, sector, count, parts, src, dst)
        return out

    def _split(self, enc: int, sector: int, count: int, parts: int,
               src: bytes | ctypes.Array[ctypes.c_char], dst: ctypes.Array[ctypes.c_char]) -> None:
        """One batch in `parts` parts, all but the first on the helper threads."""
        if isinstance(src, bytes):
            src_at = ctypes.cast(ctypes.c_char_p(src), ctypes.c_void_p).value or 0
        else:
            src_at = ctypes.addressof(src)
        dst_at = ctypes.addressof(dst)
        step = -(-count // parts)
        pool = _helpers()
        futures: list[Future[None]] = []
        try:
            for first in range(step, count, step):
                n, off = min(step, count - first), first * SECTOR_SIZE
                futures.append(pool.submit(self._crypt, enc, sector + first, n, src_at + off,
                                           dst_at + off))
            self._crypt(enc, sector, step, src_at, dst_at)
        finally:
            # `src` and `dst` keep the buffers alive: every part must be done with them first.
            for f in futures:
                f.exception()
        for f in futures:
            f.result()

    def encrypt(self, sector: int, data: Buffer) -> bytearray:
        return self._run(1, sector, data)

    def decrypt(self, sector: int, data: Buffer) -> bytearray:
        return self._run(0, sector, data)


# ------------------------------------------------------------------ ECB + XEX by hand


@lru_cache(maxsize=64)
def _lane_masks(count: int) -> tuple[int, int]:
    """(bit 0 of every 128-bit lane, every bit except those) for `count` sectors' tweaks."""
    lows = int.from_bytes((b"\x01" + bytes(15)) * count, "little")
    return lows, ((1 << (128 * count)) - 1) ^ lows


class EcbXex:
    def __init__(self, algorithm: type[CipherAlgorithm], key: bytes) -> None:
        half = len(key) // 2
        k1, k2 = key[:half], key[half:]
        refuse_equal_halves(key)
        data_cipher = Cipher(algorithm(k1), modes.ECB())  # type: ignore[call-arg]
        # ECB contexts are stateless between update() calls, so they are made once and reused.
        self._e1 = data_cipher.encryptor()
        self._d1 = data_cipher.decryptor()
        self._e2 = Cipher(algorithm(k2), modes.ECB()).encryptor()  # type: ignore[call-arg]
        self._lock = threading.Lock()

    def _tweaks(self, sector: int, count: int) -> int:
        """Every block's tweak, in sector order, as one little-endian big integer."""
        first = self._e2.update(bytes(_sector_ivs(sector, count)))
        x = int.from_bytes(first, "little")
        lows, keep = _lane_masks(count)
        out = bytearray(SECTOR_SIZE * count)
        mo = memoryview(out).cast("Q")
        size = 16 * count
        stride = 2 * _BLOCKS_PER_SECTOR
        for j in range(_BLOCKS_PER_SECTOR):
            m = memoryview(x.to_bytes(size, "little")).cast("Q")
            mo[2 * j::stride] = m[0::2]
            mo[2 * j + 1::stride] = m[1::2]
            # x *= alpha in GF(2^128), in every lane at once.
            x = ((x << 1) & keep) ^ (((x >> 127) & lows) * 0x87)
        return int.from_bytes(out, "little")

    def _run(self, encrypt: bool, sector: int, data: Buffer) -> bytes:
        count = _count(data)
        if not count:
            return b""
        n = len(data)
        with self._lock:
            t = self._tweaks(sector, count)
            x = (int.from_bytes(data, "little") ^ t).to_bytes(n, "little")
            y = (self._e1 if encrypt else self._d1).update(x)
        return (int.from_bytes(y, "little") ^ t).to_bytes(n, "little")

    def encrypt(self, sector: int, data: Buffer) -> bytes:
        return self._run(True, sector, data)

    def decrypt(self, sector: int, data: Buffer) -> bytes:
        return self._run(False, sector, data)


def refuse_equal_halves(key: bytes) -> None:
    """XTS with equal halves makes the tweak key the data key (IEEE 1619 forbids it; OpenSSL's
    AES-XTS refuses it): refused here for every implementation, SM4 included."""
    half = len(key) // 2
    if len(key) % 2 or hmac.compare_digest(key[:half], key[half:]):
        raise ValueError("an XTS key's two halves must differ")


def sector_cipher(spec: str, key: bytes, *, prefer_openssl: bool = True,
                  split: int | None = None) -> SectorCipher:
    """The sector cipher for a LUKS cipher spec ("aes-xts-plain64", "sm4-xts-plain64").
    `split`: threads one large AES batch may use (default: one per usable core)."""
    refuse_equal_halves(key)
    if spec == "aes-xts-plain64":
        if prefer_openssl:
            native = native_library()
            if native is not None:
                return NativeXts(key, native, split=default_split() if split is None else split)
        lib = _libcrypto() if prefer_openssl else None
        if lib is not None:
            return OpenSslXts(key, lib)
        return EcbXex(algorithms.AES, key)
    if spec == "sm4-xts-plain64":
        if len(key) != 32:
            raise ValueError("SM4-XTS needs a 32-byte key")
        return EcbXex(algorithms.SM4, key)
    raise ValueError(f"unsupported cipher {spec!r}")
