"""The FUSE filesystem: plaintext view of an encrypted backing directory (libfuse3 high-level
API through mfusepy; see `fuselib.py` for why libfuse3).

`EncryptedFS` is the object mfusepy calls; it only composes the parts and hands each request to
the one that handles it:

    fuselib.FuseEdge   requests in, errno out (an `errors.SfsError` answers its `errno`)
    EncryptedFS        this front: mount options, lifecycle
      attrops.AttrOps    getattr, readlink, chmod, chown, utimens, statfs
      dirops.DirOps      opendir, readdir, mkdir, rmdir, mknod, symlink, link, unlink, rename
      fileops.FileOps    create, open, read, write, truncate, flush, fsync, release
        content.Content    block I/O of one open file   (over contentenc: pure format, AEAD)
        nodes.OpenFiles    handles and the per-file nodes and locks they share
      backing.Backing    plaintext paths to backing paths (over names: pure name encryption)
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from typing import Any

from adapters.file.attrops import AttrOps
from adapters.file.backing import Backing
from adapters.file.content import Content
from adapters.file.dirops import DirOps
from adapters.file.fileops import FileOps
from adapters.file.fuselib import FuseEdge, Operations, widen_read_ahead
from adapters.file.names import NameCipher
from adapters.file.nodes import LinkNames, OpenFiles


class EncryptedFS(Operations):  # type: ignore[misc]
    use_ns = True  # mfusepy: times as integer nanoseconds
    flag_nopath = True  # with flag_nullpath_ok: no path computation for requests with a handle
    flag_nullpath_ok = True

    def __init__(self, backing_root: str, master_key: bytes,
                 on_ready: Callable[[], None] | None = None, mountpoint: str | None = None
                 ) -> None:
        self.backing = Backing(backing_root, NameCipher(master_key))
        self.open_files = OpenFiles()
        links = LinkNames()
        root_owner = os.geteuid() == 0
        self.attrs = AttrOps(self.backing, self.open_files, links)
        self.dirs = DirOps(self.backing, self.open_files, links, root_owner)
        self.files = FileOps(self.backing, self.open_files, links, Content(master_key),
                             root_owner)
        self._on_ready = on_ready
        self._mountpoint = mountpoint

    def __repr__(self) -> str:
        return f"EncryptedFS({self.backing.root!r})"

    # lifecycle --------------------------------------------------------------------------

    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            # Report backing inode numbers, so hard links show one inode (tar, git, ls -i).
            config.use_ino = 1
            # Unlinked open files: the kernel sends fstat/fchmod of them by path, without the
            # file handle, so libfuse must keep a path: it renames them to .fuse_hidden*
            # (hidden from listings here) and unlinks them on the last close.
            config.hard_remove = 0
            config.nullpath_ok = 1
            # The high-level API gives each path its own kernel inode, so two hard links of
            # one file have separate attribute caches; `flush` invalidates the other names of
            # a file written through one of them (see `nodes.LinkNames`).
            config.attr_timeout = 1.0
        # The rest needs the mount to answer, which it does only once init has returned.
        threading.Thread(target=self._settle, name="ssegw-fs-settle", daemon=True).start()

    def _settle(self) -> None:
        if self._mountpoint is not None:
            widen_read_ahead(self._mountpoint)
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path: str) -> None:
        self.open_files.close_all()

    # attributes -------------------------------------------------------------------------

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        return self.attrs.getattr(path, fh)

    def readlink(self, path: str) -> str:
        return self.attrs.readlink(path)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        return self.attrs.chmod(path, mode, fh)

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        return self.attrs.chown(path, uid, gid, fh)

    def utimens(self, path: str | None, times: tuple[int, int] | None,
                fh: int | None = None) -> int:
        return self.attrs.utimens(path, times, fh)

    def statfs(self, path: str) -> dict[str, int]:
        return self.attrs.statfs(path)

    # directories and entries ------------------------------------------------------------

    def opendir(self, path: str) -> int:
        return self.dirs.opendir(path)

    def readdir(self, path: str | None, fh: int) -> list[Any]:
        return self.dirs.readdir(path, fh)

    def releasedir(self, path: str | None, fh: int) -> int:
        return self.dirs.releasedir(path, fh)

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        return self.dirs.fsyncdir(path, datasync, fh)

    def mkdir(self, path: str, mode: int) -> int:
        return self.dirs.mkdir(path, mode)

    def rmdir(self, path: str) -> int:
        return self.dirs.rmdir(path)

    def mknod(self, path: str, mode: int, dev: int) -> int:
        return self.dirs.mknod(path, mode, dev)

    def symlink(self, path: str, target: str) -> int:
        return self.dirs.symlink(path, target)

    def link(self, path: str, existing: str) -> int:
        return self.dirs.link(path, existing)

    def unlink(self, path: str) -> int:
        return self.dirs.unlink(path)

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        return self.dirs.rename(old, new, flags)

    # files ------------------------------------------------------------------------------

    def create(self, path: str, mode: int, flags: int) -> int:
        return self.files.create(path, mode, flags)

    def open(self, path: str, flags: int) -> int:
        return self.files.open(path, flags)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.files.read(path, size, offset, fh)

    def read_into(self, buf: int, size: int, offset: int, fh: int) -> int:
        return self.files.read_into(buf, size, offset, fh)

    def write(self, path: str | None, data: bytes | memoryview, offset: int, fh: int) -> int:
        return self.files.write(path, data, offset, fh)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        return self.files.truncate(path, length, fh)

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        return self.files.fallocate(path, mode, offset, size, fh)

    def flush(self, path: str | None, fh: int) -> int:
        return self.files.flush(path, fh)

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        return self.files.fsync(path, datasync, fh)

    def release(self, path: str | None, fh: int) -> int:
        return self.files.release(path, fh)


def serve(backing_root: str, mountpoint: str, master_key: bytes, *, fsname: str,
          allow_other: bool = False, debug: bool = False,
          on_ready: Callable[[], None] | None = None) -> None:
    """Mount and serve until unmounted (fusermount3 -u) or SIGTERM/SIGINT; then return."""
    os.umask(0)  # the kernel already applied the caller's umask to the modes it sends
    # Everything imported so far (the KMS, SQLAlchemy, ...) lives as long as the daemon: keep
    # it out of the collector, or each request's garbage collection walks all of it.
    gc.collect()
    gc.freeze()
    fs = EncryptedFS(backing_root, master_key, on_ready, mountpoint)
    opts: dict[str, Any] = {
        "foreground": True, "fsname": fsname, "subtype": "ssegw-sfs",
        "default_permissions": True,  # the kernel checks modes; we run as the mount owner
        "use_ino": True,
        "debug": debug,
    }
    if allow_other:
        opts["allow_other"] = True
    FuseEdge(fs, mountpoint, **opts)
