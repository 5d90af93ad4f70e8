"""FUSE file operations: create, open, read, write, truncate, flush, fsync, release.

Handles and their shared nodes are `nodes.py`'s; the block I/O is `content.py`'s. This module
holds the node lock around each content operation and keeps hard links' attributes fresh.
"""

from __future__ import annotations

import errno
import os

from adapters.file.backing import Backing
from adapters.file.content import FALLOC_FL_KEEP_SIZE, Content
from adapters.file.fuselib import FuseOSError, give_to_caller, truncated_by_caller
from adapters.file.nodes import LinkNames, OpenFiles


def _open_fd(cpath: str, flags: int) -> int:
    # Always read-write if we may: writing part of a block needs to read the block.
    try:
        return os.open(cpath, os.O_RDWR | os.O_NOFOLLOW)
    except PermissionError:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise
        return os.open(cpath, os.O_RDONLY | os.O_NOFOLLOW)


class FileOps:
    def __init__(self, backing: Backing, files: OpenFiles, links: LinkNames, content: Content,
                 root_owner: bool) -> None:
        self.backing = backing
        self.files = files
        self.links = links
        self.content = content
        self._root_owner = root_owner

    def create(self, path: str, mode: int, flags: int) -> int:
        e = self.backing.entry(path)
        self.backing.add_longname(e)
        fd = os.open(e.path, os.O_RDWR | os.O_CREAT | (flags & os.O_EXCL) | os.O_NOFOLLOW, mode)
        try:
            if self._root_owner:
                give_to_caller(e.path)
        except BaseException:
            os.close(fd)
            raise
        return self._opened(self.files.add(fd), flags)

    def open(self, path: str, flags: int) -> int:
        return self._opened(self.files.add(_open_fd(self.backing.cpath(path), flags)), flags)

    def _opened(self, fh: int, flags: int) -> int:
        h = self.files.get(fh)
        try:
            with h.node.lock:
                if flags & os.O_TRUNC:
                    self.content.truncate(h, 0)
                    truncated_by_caller(h.fd)
                else:
                    self.content.check_end(h)
        except BaseException:
            self.files.close(fh)
            raise
        return fh

    def release(self, path: str | None, fh: int) -> int:
        self.files.close(fh)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        # Every write is already in the backing file. What close(2) still owes: the other
        # names of a hard-linked file must not keep showing the old size.
        h = self.files.find(fh)
        if h is not None:
            self.links.invalidate(h.node)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        h = self.files.get(fh)
        (os.fdatasync if datasync else os.fsync)(h.fd)
        return 0

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        h = self.files.get(fh)
        with h.node.lock.shared():
            return self.content.read(h, size, offset)

    def read_into(self, buf: int, size: int, offset: int, fh: int) -> int:
        """`read`, writing the plaintext to the reply buffer at address `buf` (fuselib)."""
        h = self.files.get(fh)
        with h.node.lock.shared():
            return self.content.read_into(h, buf, size, offset)

    def write(self, path: str | None, data: bytes | memoryview, offset: int, fh: int) -> int:
        h = self.files.get(fh)
        if not data:
            return 0
        with h.node.lock:
            self.content.write(h, data, offset)
        return len(data)

    def fallocate(self, path: str | None, mode: int, offset: int, length: int, fh: int) -> int:
        """fallocate(2) and posix_fallocate(3): plain, or keeping the size. Punching holes,
        zeroing, collapsing or inserting ranges answer EOPNOTSUPP, as from a filesystem
        without them (callers fall back)."""
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise FuseOSError(errno.EOPNOTSUPP)
        if offset < 0 or length <= 0:
            raise FuseOSError(errno.EINVAL)
        h = self.files.get(fh)
        with h.node.lock:
            self.content.allocate(h, offset, length, keep_size=bool(mode & FALLOC_FL_KEEP_SIZE))
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        h = self.files.find(fh)
        if h is not None:
            with h.node.lock:
                self.content.truncate(h, length)
            return 0
        if path is None:
            raise FuseOSError(errno.EBADF)
        fh = self.files.add(os.open(self.backing.cpath(path), os.O_RDWR | os.O_NOFOLLOW))
        try:
            self._truncate_fh(fh, length)
            self.links.invalidate(self.files.get(fh).node)
        finally:
            self.files.close(fh)
        return 0

    def _truncate_fh(self, fh: int, length: int) -> None:
        h = self.files.get(fh)
        with h.node.lock:
            self.content.truncate(h, length)
