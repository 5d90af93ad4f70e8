"""mfusepy on libfuse3, and the FUSE edge: what a request answers when an operation raises,
and mfusepy's per-request costs trimmed.

mfusepy picks libfuse2 when both are installed (gocryptfs's Debian package pulls libfuse2 in),
and libfuse2 without `big_writes` caps every write at 4 KiB. libfuse3 always negotiates big
writes and max_pages, so the kernel sends writes of up to 1 MiB. FUSE_LIBRARY_NAME must be set
before mfusepy is first imported, hence this module is the only place that imports it.

`FuseEdge` also makes three of mfusepy's request paths cheaper (profiled with py-spy on
`tar -x` and 1 MiB reads; every FUSE request is a ctypes callback into Python, so its fixed
cost is what small-file workloads pay):
- getattr (about two per created file, plus one after every setattr): fills `struct stat`
  field by field instead of mfusepy's generic loop over the attribute dict (~11% of the
  daemon's time under tar went to that loop and its memset);
- create: calls `operations.create(path, mode, flags)` instead of looking up the method's
  signature with `inspect` on every request (~5% under tar);
- read: where the operations define `read_into(buf, size, offset, fh)` the reply buffer
  libfuse allocated is handed over as an address to write the plaintext into, instead of
  returning bytes that mfusepy then copies (`memmove`) into it;
- write: the operations get a memoryview of libfuse's request buffer instead of a copy of it
  in fresh bytes (`string_at`: 1 MiB allocated, faulted in and copied per request). The view
  is valid only during the call; operations that keep data must copy it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from errno import EIO
from typing import Any

from adapters.file.errors import SfsError

os.environ["FUSE_LIBRARY_NAME"] = "fuse3"

import mfusepy

if mfusepy.fuse_version_major != 3:  # pragma: no cover - a broken install
    raise ImportError(f"libfuse3 is required, mfusepy loaded {mfusepy._libfuse_path}")

FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
fuse_get_context = mfusepy.fuse_get_context
time_of_timespec = mfusepy.time_of_timespec

log = logging.getLogger("ssegw.fs")

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_c_void_p = ctypes.c_void_p
_STAT_SIZE = ctypes.sizeof(mfusepy.c_stat)
# A writable memoryview of memory Python does not own (valid while its owner keeps it).
_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.restype = ctypes.py_object
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_PYBUF_WRITE = 0x200


# libfuse's worker threads are not Python's: a ctypes callback on such a thread makes a Python
# thread state for the call and deletes it afterwards (PyGILState_Ensure/Release), and each
# new state maps and unmaps its own 16 KiB frame stack: four syscalls and ~20 us on every
# request (strace -k of 1 MiB reads: one mmap, munmap and gettid per READ). One extra,
# never-released PyGILState_Ensure on a thread's first request keeps its state for the rest.
# Bounded: a thread libfuse lets go leaves a few KiB behind, so only the first few are kept
# (the rest keep the per-request states, which is only slower).
_kept_states: set[int] = set()
_KEEP_STATES_MAX = 64
_get_ident = threading.get_ident


def _keep_thread_state() -> None:
    if len(_kept_states) < _KEEP_STATES_MAX:
        _kept_states.add(_get_ident())
        ctypes.pythonapi.PyGILState_Ensure()


def invalidate_path(path: str) -> int:
    """Drop the kernel's cached attributes and pages of `path` (call from a request handler:
    the `struct fuse` comes from the request context). Returns 0 or -errno."""
    lib = mfusepy._libfuse
    fuse_ptr = ctypes.c_void_p(lib.fuse_get_context().contents.fuse)
    return int(lib.fuse_invalidate_path(fuse_ptr, os.fsencode(path)))


# The kernel reads ahead of a FUSE file 128 KiB at a time (the default of the mount's bdi), so a
# 1 MiB read(2) costs eight requests, each a round trip through libfuse and a ctypes callback.
# Measured on 1 GiB sequential reads (`dd bs=1M`): 796-860 MB/s at 128 KiB, 970-1,100 at 1 MiB.
READ_AHEAD_KIB = 1024


def widen_read_ahead(mountpoint: str, kib: int = READ_AHEAD_KIB) -> None:
    """Set the mount's read-ahead (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb, root only); call
    once the mount answers requests (it stats the mount point)."""
    try:
        dev = os.stat(mountpoint).st_dev
        with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w",
                  encoding="ascii") as f:
            f.write(str(kib))
    except OSError as e:  # not root, or /sys read-only (containers): the kernel's default
        log.info("read-ahead of %s left at the kernel's default: %s", mountpoint, e)


def give_to_caller(path: str) -> None:
    """Make a new backing entry belong to the user of the current request, as on a local
    filesystem (call as root): the caller's user, and the caller's group unless the directory
    is setgid, where the entry keeps the directory's group. The backing directory mirrors the
    mounted one's mode and group, so the kernel has already given the entry that group."""
    uid, gid, _ = fuse_get_context()
    if uid == os.geteuid() and gid == os.getegid():
        # Already so: created by this user, in its group or (setgid directory) the directory's,
        # which is kept anyway. Root mounting for root skips a stat and a chown per entry.
        return
    if os.stat(os.path.dirname(path)).st_mode & stat.S_ISGID:
        gid = -1
    os.lchown(path, uid, gid)


def truncated_by_caller(fd: int) -> None:
    """What truncating a setuid or setgid file does on a local filesystem when the caller is not
    root (call after an open with O_TRUNC): S_ISUID goes, and S_ISGID where group execute is
    set. The kernel does this itself for truncate(2), ftruncate(2) and writes through FUSE, but
    not for the truncation an open carries; the daemon truncates as root, which keeps both."""
    mode = os.fstat(fd).st_mode
    kill = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
    if mode & kill and fuse_get_context()[0] != 0:
        os.fchmod(fd, stat.S_IMODE(mode) & ~kill)


def _answering_errno(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func`, with the file adapter's errors turned into the errno they carry (one log line
    each, no traceback: EIO means damage an operator should see; the rest is a caller's
    mistake). OSErrors already carry theirs, and mfusepy answers them."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SfsError as e:
            log.log(logging.ERROR if e.errno == EIO else logging.DEBUG, "%s: %s",
                    func.__name__, e.message)
            raise FuseOSError(e.errno) from None

    call.__name__ = func.__name__  # mfusepy treats init and getattr by name
    return call


class FuseEdge(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE with these changes: `SfsError`s answer their `errno` (see
    `_answering_errno`), setattr requests keep what mfusepy drops on libfuse3 (the file
    handle that ftruncate, fchmod and futimens of an unlinked file need, UTIME_NOW/UTIME_OMIT,
    rename flags), and the cheaper getattr, create and read paths the module doc describes
    (they assume `raw_fi` off and `use_ns` on, as our operations set; else mfusepy's own)."""

    def _wrapper(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if _get_ident() not in _kept_states:
            _keep_thread_state()
        answering = self._answering.get(func)
        if answering is None:  # one per operation (mfusepy binds each once), made on first use
            answering = self._answering[func] = _answering_errno(func)
        return super()._wrapper(answering, *args, **kwargs)

    def __init__(self, operations: Any, mountpoint: str, **kwargs: Any) -> None:
        # Set before mfusepy's __init__, which runs the whole request loop.
        self._fast = not kwargs.get("raw_fi") and getattr(operations, "use_ns", False)
        self._read_into = getattr(operations, "read_into", None) if self._fast else None
        self._answering: dict[Callable[..., Any], Callable[..., Any]] = {}
        super().__init__(operations, mountpoint, **kwargs)

    def fgetattr(self, path: bytes | None, buf: Any, fip: Any) -> int:
        if not self._fast:
            return int(super().fgetattr(path, buf, fip))
        a = self.operations.getattr(
            None if path is None else path.decode(self.encoding, self.errors),
            fip.contents.fh if fip else None)
        ctypes.memset(buf, 0, _STAT_SIZE)
        st = buf.contents
        st.st_mode = a["st_mode"]
        st.st_ino = a.get("st_ino", 0)
        st.st_nlink = a.get("st_nlink", 0)
        st.st_uid = a.get("st_uid", 0)
        st.st_gid = a.get("st_gid", 0)
        st.st_size = a.get("st_size", 0)
        st.st_rdev = a.get("st_rdev", 0)
        st.st_blocks = a.get("st_blocks", 0)
        st.st_blksize = a.get("st_blksize", 0)
        for key, ts in (("st_atime", st.st_atimespec), ("st_mtime", st.st_mtimespec),
                        ("st_ctime", st.st_ctimespec)):
            if key in a:
                ts.tv_sec, ts.tv_nsec = divmod(int(a[key]), 1_000_000_000)
        return 0

    def create(self, path: bytes, mode: int, fip: Any) -> int:
        if not self._fast:
            return int(super().create(path, mode, fip))
        fi = fip.contents
        fi.fh = self.operations.create(path.decode(self.encoding, self.errors), mode, fi.flags)
        return 0

    def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        if self._read_into is None:
            return int(super().read(path, buf, size, offset, fip))
        return int(self._read_into(ctypes.cast(buf, _c_void_p).value, size, offset,
                                   fip.contents.fh))

    def write(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
        if not self._fast:
            return int(super().write(path, buf, size, offset, fip))
        if not size:
            return 0
        # Not (c_char * size).from_address: ctypes keeps every array type it makes, one per
        # distinct request size. (ctypes.cast costs 1 us more than addressof.)
        view = _memory_view(ctypes.addressof(buf.contents), size, _PYBUF_WRITE)
        return int(self.operations.write(self._path(path), view, offset, fip.contents.fh))

    def _fh(self, fip: Any) -> int | None:
        return fip.contents.fh if fip else None

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        return int(self.operations.truncate(self._path(path), length, self._fh(fip)))

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        return int(self.operations.chmod(self._path(path), mode, self._fh(fip)))

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        uid = -1 if uid == 0xFFFFFFFF else uid
        gid = -1 if gid == 0xFFFFFFFF else gid
        return int(self.operations.chown(self._path(path), uid, gid, self._fh(fip)))

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        p, fh = self._path(path), self._fh(fip)
        if not buf:
            return int(self.operations.utimens(p, None, fh))
        specs = (buf.contents.actime, buf.contents.modtime)
        if any(ts.tv_nsec == _UTIME_OMIT for ts in specs):
            cur = self.operations.getattr(p, fh)
        now = time.time_ns()
        ns: list[int] = []
        for ts, key in zip(specs, ("st_atime", "st_mtime"), strict=True):
            if ts.tv_nsec == _UTIME_NOW:
                ns.append(now)
            elif ts.tv_nsec == _UTIME_OMIT:
                ns.append(int(cur[key]))
            else:
                ns.append(ts.tv_sec * 10**9 + ts.tv_nsec)
        return int(self.operations.utimens(p, (ns[0], ns[1]), fh))

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return int(self.operations.rename(self._path(old), self._path(new), flags))
