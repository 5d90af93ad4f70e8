"""The NBD session's native loop for aligned READs and WRITEs up to 1 MiB (nbd_fastpath.c).

Served in Python, a 4 KiB request spent most of the server's CPU in the interpreter around
a few microseconds of system calls and AES (perf: ~60% in libpython for 4 KiB random reads).
The C loop serves a batch of the requests already buffered in one call: header parsing, XTS
decrypt (straight from a read-only mapping of the image for large reads, else after pread) or
XTS encrypt + pwrite under the same sector lock as `Volume`, and the replies; before a large
write it also receives what the client has sent since (nbd_fastpath.c says why both). It
stops, untouched, at every request it is not sure of (another command or flag, unaligned, out
of range, a READ or WRITE over 1 MiB, a payload not yet received, a failed system call, an
image truncated under it), and the Python session serves that one as before; so the bytes on
the wire are the same either way, and the pure path stays what serves everything else.

Like the XTS loop it is loaded with ctypes (sector_crypto says why) from libssegw_nbd.so,
built by `make deps`. SSEGW_NATIVE_NBD=off serves everything in Python (to measure or test
that path); SSEGW_NATIVE_NBD=required, or SSEGW_NATIVE_XTS=required (`make test`), refuses
to fall back when the library is missing or stale.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from adapters.block.sector_crypto import NativeXts
from adapters.native import load_native

log = logging.getLogger("ssegw.nbd")

LIBRARY = Path(__file__).with_name("libssegw_nbd.so")
ENV = "SSEGW_NATIVE_NBD"
_ABI = 4
# Largest WRITE and READ the C loop serves (MAX_FAST_WRITE, MAX_FAST_READ there). A WRITE's
# payload must be whole in the receive buffer (the transport waits for it: ConnectionIO.
# await_native_write).
MAX_FAST_WRITE = 1 << 20
MAX_FAST_READ = 1 << 20
# The reply buffer holds a batch of small replies (up to this) or at least one of the largest.
_SMALL_REPLY = 64 << 10
_REPLY_HEADER = 28


class _Lib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, ci, u64, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_size_t
        lib.ssegw_nbd_abi.restype = ci
        lib.ssegw_nbd_abi.argtypes = []
        if lib.ssegw_nbd_abi() != _ABI:
            raise OSError(f"{LIBRARY.name} is a stale build (run `make deps`)")
        lib.ssegw_nbd_new.restype = vp
        lib.ssegw_nbd_new.argtypes = [ci, u64, u64, ci, vp, vp, vp]
        lib.ssegw_nbd_free.restype = None
        lib.ssegw_nbd_free.argtypes = [vp]
        lib.ssegw_nbd_serve.restype = None
        lib.ssegw_nbd_serve.argtypes = [vp, vp, sz, sz, ci, vp, sz, ci, ci, vp]
        self.new: Callable[[int, int, int, int, int, int, int], int | None] = lib.ssegw_nbd_new
        self.free: Callable[[int], None] = lib.ssegw_nbd_free
        self.serve: Callable[..., None] = lib.ssegw_nbd_serve


@lru_cache(maxsize=1)
def native_library() -> _Lib | None:
    """The built loop, or None (with a warning) where it is missing or unusable."""
    return load_native(LIBRARY, ENV, _Lib, what="native NBD loop", log=log,
                       fallback="small requests are served in Python, ~2x slower",
                       required_by=("SSEGW_NATIVE_XTS",))


class FastPath:
    """One connection's native loop: its own cipher contexts and reply buffer."""

    def __init__(self, lib: _Lib, fd: int, base: int, size: int, cipher: NativeXts,
                 structured: bool, batch: int) -> None:
        self._lib = lib
        self._cipher = cipher
        self._contexts = cipher.private_contexts()
        dec, enc = self._contexts
        handle = lib.new(fd, base, size, int(structured), cipher.library.sectors_address,
                         dec, enc)
        if not handle:
            cipher.release(*self._contexts)
            raise MemoryError("could not set up the native NBD loop")
        self._handle: int | None = handle
        self._cap = max(batch * (_REPLY_HEADER + _SMALL_REPLY), _REPLY_HEADER + MAX_FAST_READ)
        # Replies are handed out as views of the reply buffer, not copies (copying 1 MiB
        # replies was ~9% of the server's CPU under nbdcopy reads, perf): a buffer is filled
        # from its start again only once the transport has let go of every view of it
        # (`recycle`), and meanwhile replies go into another one.
        self._out, self._out_mv, self._out_at = self._new_buffer()
        self._used = 0  # bytes of the current buffer handed out since the last recycle
        self._retired: list[tuple[bytearray, memoryview, int]] = []  # maybe still referenced
        self._spare: list[tuple[bytearray, memoryview, int]] = []  # free
        self._res = (ctypes.c_size_t * 5)()
        self._res_at = ctypes.addressof(self._res)
        self._serve = lib.serve

    def _new_buffer(self) -> tuple[bytearray, memoryview, int]:
        out = bytearray(self._cap)
        # The address stays valid: the bytearray is never resized, and the views pin it.
        return out, memoryview(out), ctypes.addressof((ctypes.c_char * self._cap).from_buffer(out))

    def recycle(self) -> None:
        """Call when no reply handed out so far is referenced any more (sent, or copied by the
        transport): every buffer is reused from its start."""
        self._used = 0
        self._spare.extend(self._retired)
        self._retired.clear()

    def serve(self, at: int, length: int, capacity: int, sock: int, max_requests: int,
              read_only: bool) -> tuple[int, int, memoryview | bytes, int, bool]:
        """Serves what it can of the requests in memory [at, at + length): (bytes received,
        bytes consumed, the replies, requests served, whether any was a write). Before a large
        write it receives from `sock` (-1: never) what the client sent since, appending to
        [at + length, at + capacity). The replies are a view that stays valid until `recycle`
        is called."""
        if self._cap - self._used < _REPLY_HEADER + MAX_FAST_READ:  # room for the largest reply
            self._retired.append((self._out, self._out_mv, self._out_at))
            self._out, self._out_mv, self._out_at = self._spare.pop() if self._spare else self._new_buffer()
            self._used = 0
        start, res = self._used, self._res
        self._serve(self._handle, at, length, capacity, sock, self._out_at + start,
                    self._cap - start, max_requests, read_only, self._res_at)
        served = res[2]
        if not served:
            return res[4], 0, b"", 0, False
        self._used = start + res[1]
        return res[4], res[0], self._out_mv[start:self._used], served, bool(res[3])

    def close(self) -> None:
        if self._handle is not None:
            self._lib.free(self._handle)
            self._cipher.release(*self._contexts)
            self._handle = None

    def __del__(self) -> None:
        self.close()


def fast_path_for(export: object, structured: bool, batch: int) -> FastPath | None:
    """The native loop for a connection to `export`, or None where it cannot serve it (not a
    volume on the native cipher, or the library is not built and not required)."""
    native_io = getattr(export, "native_io", None)
    if native_io is None:
        return None
    io = native_io()
    if io is None:
        return None
    lib = native_library()
    if lib is None:
        return None
    fd, base, size, cipher = io
    return FastPath(lib, fd, base, size, cipher, structured, batch)
