"""mfusepy on libfuse3, and the FUSE edge: what a request answers when an operation raises.

mfusepy picks libfuse2 when both are installed (gocryptfs's Debian package pulls libfuse2 in),
and libfuse2 without `big_writes` caps every write at 4 KiB. libfuse3 always negotiates big
writes and max_pages, so the kernel sends writes of up to 1 MiB. FUSE_LIBRARY_NAME must be set
before mfusepy is first imported, hence this module is the only place that imports it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from errno import EIO
from typing import Any

from adapters.file.errors import SfsError

os.environ["FUSE_LIBRARY_NAME"] = "fuse3"

import mfusepy

if mfusepy.fuse_version_major != 3:  # pragma: no cover - a broken install
    raise ImportError(f"libfuse3 is required, mfusepy loaded {mfusepy._libfuse_path}")

FUSE = mfusepy.FUSE
FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
fuse_get_context = mfusepy.fuse_get_context
time_of_timespec = mfusepy.time_of_timespec

log = logging.getLogger("ssegw.fs")

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


def invalidate_path(path: str) -> int:
    """Drop the kernel's cached attributes and pages of `path` (call from a request handler:
    the `struct fuse` comes from the request context). Returns 0 or -errno."""
    import ctypes

    lib = mfusepy._libfuse
    fuse_ptr = ctypes.c_void_p(lib.fuse_get_context().contents.fuse)
    return int(lib.fuse_invalidate_path(fuse_ptr, os.fsencode(path)))


def give_to_caller(path: str) -> None:
    """Make a new backing entry belong to the user of the current request (call as root, so
    that new entries belong to the calling user, as on a local filesystem)."""
    uid, gid, _ = fuse_get_context()
    os.lchown(path, uid, gid)


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
    """mfusepy's FUSE with two changes: `SfsError`s answer their `errno` (see
    `_answering_errno`), and setattr requests keep what mfusepy drops on libfuse3 (the file
    handle that ftruncate, fchmod and futimens of an unlinked file need, UTIME_NOW/UTIME_OMIT,
    rename flags)."""

    def _wrapper(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return super()._wrapper(_answering_errno(func), *args, **kwargs)

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
