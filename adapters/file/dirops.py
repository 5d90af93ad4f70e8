"""FUSE directory operations (opendir, readdir, mkdir, rmdir, ...) and entry operations (mknod,
symlink, link, unlink, rename): everything that changes or lists names, over `backing.py`."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any

from adapters.file.backing import Backing, read_diriv, write_diriv
from adapters.file.fuselib import FuseOSError, give_to_caller
from adapters.file.names import BadName, is_reserved
from adapters.file.nodes import LinkNames, OpenFiles

_RENAME_EXCHANGE = 2
_HIDDEN = b".fuse_hidden"  # libfuse's name for unlinked files that are still open
_libc = ctypes.CDLL(None, use_errno=True)


def _renameat2(old: str, new: str, flags: int) -> None:
    """rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE, which os.rename cannot pass."""
    AT_FDCWD = -100
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _rmtree_new(cdir: str) -> None:
    for n in os.listdir(cdir):
        os.unlink(os.path.join(cdir, n))
    os.rmdir(cdir)


class DirOps:
    def __init__(self, backing: Backing, files: OpenFiles, links: LinkNames,
                 root_owner: bool) -> None:
        self.backing = backing
        self.files = files  # directory handles take their numbers from the same counter
        self.links = links
        self._root_owner = root_owner
        self._dirs: dict[int, tuple[str, bytes]] = {}

    def _own(self, cpath: str) -> None:
        if self._root_owner:
            give_to_caller(cpath)

    # directories ------------------------------------------------------------------------

    def opendir(self, path: str) -> int:
        # Resolve now: readdir gets no path (nullpath_ok), and the backing directory and its
        # IV stay right even if the directory is renamed while open.
        fh = self.files.next_id()
        self._dirs[fh] = self.backing.dir(path)
        return fh

    def readdir(self, path: str | None, fh: int) -> list[Any]:
        found = self._dirs.get(fh)
        if found is None:
            if path is None:
                raise FuseOSError(errno.EBADF)
            found = self.backing.dir(path)
        cdir, iv = found
        dot = {"st_ino": os.lstat(cdir).st_ino, "st_mode": stat.S_IFDIR}
        dotdot = {"st_ino": os.lstat(os.path.dirname(cdir)).st_ino, "st_mode": stat.S_IFDIR}
        entries: list[Any] = [(".", dot, 0), ("..", dotdot, 0)]
        for name, _, ino, kind in self.backing.list_dir(cdir, iv):
            if not name.startswith(_HIDDEN):
                entries.append((os.fsdecode(name), {"st_ino": ino, "st_mode": kind}, 0))
        return entries

    def releasedir(self, path: str | None, fh: int) -> int:
        self._dirs.pop(fh, None)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        e = self.backing.entry(path)
        self.backing.add_longname(e)
        # 0700 until the IV is in, so the IV can be written even for mode 0555.
        os.mkdir(e.path, 0o700)
        try:
            write_diriv(e.path)
            # In a setgid directory the kernel made the new one setgid too (so its entries
            # keep the group, as on a local filesystem); the mode asked for does not say so.
            os.chmod(e.path, mode | (os.lstat(e.path).st_mode & stat.S_ISGID))
            self._own(e.path)
        except BaseException:
            _rmtree_new(e.path)
            raise
        return 0

    def rmdir(self, path: str) -> int:
        e = self.backing.entry(path)
        iv = read_diriv(e.path)
        # Files unlinked while open (libfuse's .fuse_hidden*) do not count, as on a local
        # filesystem; their release may still be in flight after close(2) returned. (Reads
        # and writes through such a file's handle keep working once its directory is gone;
        # fstat of it then fails with ESTALE, a limit of libfuse's path-based API.)
        if any(not name.startswith(_HIDDEN) for name, *_ in self.backing.list_dir(e.path, iv)):
            raise FuseOSError(errno.ENOTEMPTY)
        if any(not is_reserved(n) and not self._decrypts(e.path, iv, n)
               for n in os.listdir(e.path)):
            raise FuseOSError(errno.ENOTEMPTY)  # undecryptable entries: never delete blindly
        for n in os.listdir(e.path):
            os.unlink(os.path.join(e.path, n))
        try:
            os.rmdir(e.path)
        except OSError:
            write_diriv(e.path, iv)  # a create raced us: the directory lives on with its IV
            raise
        self.backing.forget(path)
        self.backing.drop_longname(e)
        return 0

    def _decrypts(self, cdir: str, iv: bytes, bname: str) -> bool:
        try:
            self.backing.decrypt_entry(cdir, iv, bname)
            return True
        except BadName:
            return False

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        if path is not None:
            fd = os.open(self.backing.cpath(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return 0

    # entries ----------------------------------------------------------------------------

    def mknod(self, path: str, mode: int, dev: int) -> int:
        e = self.backing.entry(path)
        self.backing.add_longname(e)
        os.mknod(e.path, mode, dev)
        self._own(e.path)
        return 0

    def symlink(self, path: str, target: str) -> int:
        e = self.backing.entry(path)
        self.backing.add_longname(e)
        os.symlink(self.backing.names.encrypt_target(os.fsencode(target)), e.path)
        self._own(e.path)
        return 0

    def link(self, path: str, existing: str) -> int:
        e = self.backing.entry(path)
        self.backing.add_longname(e)
        os.link(self.backing.cpath(existing), e.path, follow_symlinks=False)
        st = os.lstat(e.path)
        if stat.S_ISREG(st.st_mode):
            self.links.note(st, existing)
            self.links.note(st, path)
            self.links.relinked(st)
        return 0

    def unlink(self, path: str) -> int:
        e = self.backing.entry(path)
        try:
            st = os.lstat(e.path) if self.links.noted(path) else None
            os.unlink(e.path)
        except FileNotFoundError:
            # libfuse unlinks a hidden file on its last close; rmdir may have removed it.
            if not path.rpartition("/")[2].startswith(_HIDDEN.decode()):
                raise
            st = None
        self.backing.drop_longname(e)
        if st is not None and st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            self.links.relinked(st, gone=path)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        src, dst = self.backing.entry(old), self.backing.entry(new)
        replaced = None
        if self.links.noted(new):
            try:
                replaced = os.lstat(dst.path)
            except FileNotFoundError:
                pass
        self.backing.add_longname(dst)
        if flags:
            _renameat2(src.path, dst.path, flags)
        else:
            os.rename(src.path, dst.path)
        if not flags & _RENAME_EXCHANGE and src.path != dst.path:
            self.backing.drop_longname(src)
        self.backing.forget(old)
        self.backing.forget(new)
        if (replaced is not None and replaced.st_nlink > 1 and stat.S_ISREG(replaced.st_mode)
                and not flags & _RENAME_EXCHANGE):
            self.links.relinked(replaced, gone=new)  # one name fewer for the file replaced
        return 0
