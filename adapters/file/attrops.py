"""FUSE attribute operations: getattr, readlink, chmod, chown, utimens, statfs.

Sizes shown are plaintext sizes, derived from the backing size (`contentenc.plaintext_size`)
or, for symlinks, from the decrypted target.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import Any

from adapters.file import contentenc as ce
from adapters.file.backing import Backing
from adapters.file.fuselib import FuseOSError
from adapters.file.names import BadName
from adapters.file.nodes import LinkNames, OpenFiles


class AttrOps:
    def __init__(self, backing: Backing, files: OpenFiles, links: LinkNames) -> None:
        self.backing = backing
        self.files = files
        self.links = links

    def _attrs(self, st: os.stat_result, cpath: str | None) -> dict[str, Any]:
        size = st.st_size
        if stat.S_ISREG(st.st_mode):
            size = ce.plaintext_size(size)
        elif stat.S_ISLNK(st.st_mode) and cpath is not None:
            try:
                size = len(self.backing.names.decrypt_target(os.readlink(cpath)))
            except (BadName, OSError):
                size = 0
        return {
            "st_mode": st.st_mode, "st_ino": st.st_ino, "st_nlink": st.st_nlink,
            "st_uid": st.st_uid, "st_gid": st.st_gid, "st_size": size, "st_rdev": st.st_rdev,
            "st_blocks": st.st_blocks, "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
        }

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        h = self.files.find(fh)
        if h is not None:
            return self._attrs(os.fstat(h.fd), None)
        if path is None:
            raise FuseOSError(errno.EBADF)
        cpath = self.backing.cpath(path)
        st = os.lstat(cpath)
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            self.links.note(st, path)
        return self._attrs(st, cpath)

    def readlink(self, path: str) -> str:
        stored = os.readlink(self.backing.cpath(path))
        return os.fsdecode(self.backing.names.decrypt_target(stored))  # BadName: EIO

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        h = self.files.find(fh)
        if h is not None:
            os.fchmod(h.fd, mode)
        elif path is not None:
            os.chmod(self.backing.cpath(path), mode, follow_symlinks=False)
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        h = self.files.find(fh)
        if h is not None:
            os.fchown(h.fd, uid, gid)
        elif path is not None:
            os.lchown(self.backing.cpath(path), uid, gid)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None,
                fh: int | None = None) -> int:
        if times is None:
            now = time.time_ns()
            times = (now, now)
        h = self.files.find(fh)
        if h is not None:
            os.utime(h.fd, ns=times)
        elif path is not None:
            os.utime(self.backing.cpath(path), ns=times, follow_symlinks=False)
        else:
            raise FuseOSError(errno.EBADF)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.backing.root)
        return {
            "f_bsize": sv.f_bsize, "f_frsize": sv.f_frsize, "f_blocks": sv.f_blocks,
            "f_bfree": sv.f_bfree, "f_bavail": sv.f_bavail, "f_files": sv.f_files,
            "f_ffree": sv.f_ffree, "f_favail": sv.f_favail, "f_namemax": 255,
        }
