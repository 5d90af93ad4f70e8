"""Load mfusepy on libfuse3, never libfuse2.

mfusepy picks libfuse2 when both are installed (gocryptfs's Debian package pulls libfuse2 in),
and libfuse2 without `big_writes` caps every write at 4 KiB. libfuse3 always negotiates big
writes and max_pages, so the kernel sends writes of up to 1 MiB. FUSE_LIBRARY_NAME must be set
before mfusepy is first imported, hence this module is the only place that imports it.
"""

from __future__ import annotations

import os

os.environ["FUSE_LIBRARY_NAME"] = "fuse3"

import mfusepy  # noqa: E402

if mfusepy.fuse_version_major != 3:  # pragma: no cover - a broken install
    raise ImportError(f"libfuse3 is required, mfusepy loaded {mfusepy._libfuse_path}")

FUSE = mfusepy.FUSE
FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
fuse_get_context = mfusepy.fuse_get_context
time_of_timespec = mfusepy.time_of_timespec


def invalidate_path(path: str) -> int:
    """Drop the kernel's cached attributes and pages of `path` (call from a request handler:
    the `struct fuse` comes from the request context). Returns 0 or -errno."""
    import ctypes

    lib = mfusepy._libfuse
    fuse_ptr = ctypes.c_void_p(lib.fuse_get_context().contents.fuse)
    return int(lib.fuse_invalidate_path(fuse_ptr, os.fsencode(path)))
