"""The FUSE filesystem: plaintext view of an encrypted backing directory (libfuse3 high-level
API through mfusepy; see `fuselib.py` for why libfuse3).

Concurrency. libfuse runs requests on several threads. Every open backing file maps to one
`Node` keyed by (st_dev, st_ino), shared by all handles and hard links of that file; its lock
serialises reads, writes and truncates of the file, because a write of part of a block is a
read-modify-write of the whole block and a read must never see a block record half-written.
Different files proceed in parallel (pread/pwrite release the GIL).

Crash consistency. Nothing is cached in this process that the backing store lacks: each
request ends with its pwrite done. Each write is one pwrite of whole block records, so a
kill -9 can damage only the records of the writes in flight, never their neighbours; `fs check`
names them. The size of a file is derived from its backing size, never stored separately.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.file import contentenc as ce
from adapters.file.backing import Backing, read_diriv, write_diriv
from adapters.file.fuselib import (
    FUSE,
    FuseOSError,
    Operations,
    fuse_get_context,
    invalidate_path,
)
from adapters.file.names import BadName, NameCipher, is_reserved

log = logging.getLogger("ssegw.fs")

_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_ZERO_BLOCK = bytes(ce.BLOCK_SIZE)
_HIDDEN = b".fuse_hidden"  # libfuse's name for unlinked files that are still open


def _renameat2(old: str, new: str, flags: int) -> None:
    """rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE, which os.rename cannot pass."""
    AT_FDCWD = -100
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass(eq=False)
class Node:
    """One backing file, shared by every open handle (and hard link) of it."""

    key: tuple[int, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    refs: int = 0
    cipher: ce.FileCipher | None = None
    # Written while it had other hard links: their kernel attributes are stale until `flush`.
    links_stale: bool = False


@dataclass(eq=False, slots=True)
class Handle:
    fd: int
    node: Node


class EncryptedFS(Operations):  # type: ignore[misc]
    use_ns = True  # mfusepy: times as integer nanoseconds
    flag_nopath = True  # with flag_nullpath_ok: no path computation for requests with a handle
    flag_nullpath_ok = True

    def __init__(self, backing_root: str, master_key: bytes,
                 on_ready: Callable[[], None] | None = None) -> None:
        self._master = master_key
        self.backing = Backing(backing_root, NameCipher(master_key))
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, tuple[str, bytes]] = {}
        self._nodes: dict[tuple[int, int], Node] = {}
        self._nodes_lock = threading.Lock()
        self._ids = itertools.count(1)
        # Names seen for files with several hard links, by (st_dev, st_ino).
        self._link_names: dict[tuple[int, int], set[str]] = {}
        self._root_owner = os.geteuid() == 0
        self._on_ready = on_ready

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
            # a file written through one of them (see `_note_links`).
            config.attr_timeout = 1.0
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path: str) -> None:
        for h in list(self._handles.values()):
            try:
                os.close(h.fd)
            except OSError:
                pass
        self._handles.clear()

    # helpers ----------------------------------------------------------------------------

    def _own(self, cpath: str) -> None:
        """As root, new entries belong to the calling user, as on a local filesystem."""
        if self._root_owner:
            uid, gid, _ = fuse_get_context()
            os.lchown(cpath, uid, gid)

    def _acquire(self, fd: int) -> Node:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._nodes_lock:
            node = self._nodes.get(key)
            if node is None:
                node = self._nodes[key] = Node(key)
            node.refs += 1
            return node

    def _release(self, node: Node) -> None:
        with self._nodes_lock:
            node.refs -= 1
            if node.refs == 0 and self._nodes.get(node.key) is node:
                del self._nodes[node.key]

    def _open_fd(self, cpath: str, flags: int) -> int:
        # Always read-write if we may: writing part of a block needs to read the block.
        try:
            return os.open(cpath, os.O_RDWR | os.O_NOFOLLOW)
        except PermissionError:
            if flags & os.O_ACCMODE != os.O_RDONLY:
                raise
            return os.open(cpath, os.O_RDONLY | os.O_NOFOLLOW)

    def _new_handle(self, fd: int) -> int:
        node = self._acquire(fd)
        fh = next(self._ids)
        self._handles[fh] = Handle(fd, node)
        return fh

    def _handle(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FuseOSError(errno.EBADF)
        return h

    def _cipher(self, node: Node, fd: int, csize: int, create: bool) -> ce.FileCipher | None:
        """The node's cipher, reading the header or (create=True) writing a new one."""
        if node.cipher is not None and csize >= ce.HEADER_LEN:
            return node.cipher
        if csize == 0:
            node.cipher = None
            if not create:
                return None
            fid = ce.new_file_id()
            os.pwrite(fd, ce.encode_header(fid), 0)
            node.cipher = ce.FileCipher(self._master, fid)
            return node.cipher
        try:
            fid = ce.decode_header(os.pread(fd, ce.HEADER_LEN, 0))
        except ce.FormatError:
            log.error("bad file header in inode %s", node.key[1])
            raise FuseOSError(errno.EIO) from None
        node.cipher = ce.FileCipher(self._master, fid)
        return node.cipher

    @staticmethod
    def _read_blocks(fd: int, cipher: ce.FileCipher, first: int, last: int, csize: int) -> bytes:
        start = ce.cipher_offset(first)
        end = min(csize, ce.cipher_offset(last + 1))
        if end <= start:
            return b""
        try:
            return cipher.decrypt_blocks(first, os.pread(fd, end - start, start))
        except ce.BlockAuthError as e:
            log.error("inode %s: %s", os.fstat(fd).st_ino, e)
            raise FuseOSError(errno.EIO) from None

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

    # metadata ---------------------------------------------------------------------------

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if fh is not None and fh in self._handles:
            return self._attrs(os.fstat(self._handles[fh].fd), None)
        if path is None:
            raise FuseOSError(errno.EBADF)
        cpath = self.backing.cpath(path)
        st = os.lstat(cpath)
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            self._note_links(st, path)
        return self._attrs(st, cpath)

    def _note_links(self, st: os.stat_result, path: str) -> None:
        names = self._link_names.setdefault((st.st_dev, st.st_ino), set())
        if len(names) < 64:  # bounded: stale names (renamed, unlinked) only cost a no-op
            names.add(path)

    def readlink(self, path: str) -> str:
        try:
            stored = os.readlink(self.backing.cpath(path))
            return os.fsdecode(self.backing.names.decrypt_target(stored))
        except BadName:
            raise FuseOSError(errno.EIO) from None

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        if fh is not None and fh in self._handles:
            os.fchmod(self._handles[fh].fd, mode)
        elif path is not None:
            os.chmod(self.backing.cpath(path), mode, follow_symlinks=False)
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        if fh is not None and fh in self._handles:
            os.fchown(self._handles[fh].fd, uid, gid)
        elif path is not None:
            os.lchown(self.backing.cpath(path), uid, gid)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None,
                fh: int | None = None) -> int:
        target: int | str
        if fh is not None and fh in self._handles:
            target = self._handles[fh].fd
        elif path is not None:
            target = self.backing.cpath(path)
        else:
            raise FuseOSError(errno.EBADF)
        if times is None:
            now = time.time_ns()
            times = (now, now)
        if isinstance(target, int):
            os.utime(target, ns=times)
        else:
            os.utime(target, ns=times, follow_symlinks=False)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self.backing.root)
        return {
            "f_bsize": sv.f_bsize, "f_frsize": sv.f_frsize, "f_blocks": sv.f_blocks,
            "f_bfree": sv.f_bfree, "f_bavail": sv.f_bavail, "f_files": sv.f_files,
            "f_ffree": sv.f_ffree, "f_favail": sv.f_favail, "f_namemax": 255,
        }

    # directories ------------------------------------------------------------------------

    def opendir(self, path: str) -> int:
        # Resolve now: readdir gets no path (nullpath_ok), and the backing directory and its
        # IV stay right even if the directory is renamed while open.
        fh = next(self._ids)
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
            os.chmod(e.path, mode)
            self._own(e.path)
        except BaseException:
            self._rmtree_new(e.path)
            raise
        return 0

    @staticmethod
    def _rmtree_new(cdir: str) -> None:
        for n in os.listdir(cdir):
            os.unlink(os.path.join(cdir, n))
        os.rmdir(cdir)

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
            self._note_links(st, existing)
            self._note_links(st, path)
        return 0

    def unlink(self, path: str) -> int:
        e = self.backing.entry(path)
        try:
            os.unlink(e.path)
        except FileNotFoundError:
            # libfuse unlinks a hidden file on its last close; rmdir may have removed it.
            if not path.rpartition("/")[2].startswith(_HIDDEN.decode()):
                raise
        self.backing.drop_longname(e)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        src, dst = self.backing.entry(old), self.backing.entry(new)
        self.backing.add_longname(dst)
        if flags:
            _renameat2(src.path, dst.path, flags)
        else:
            os.rename(src.path, dst.path)
        if not flags & _RENAME_EXCHANGE and src.path != dst.path:
            self.backing.drop_longname(src)
        self.backing.forget(old)
        self.backing.forget(new)
        return 0

    # files ------------------------------------------------------------------------------

    def create(self, path: str, mode: int, flags: int) -> int:
        e = self.backing.entry(path)
        self.backing.add_longname(e)
        fd = os.open(e.path, os.O_RDWR | os.O_CREAT | (flags & os.O_EXCL) | os.O_NOFOLLOW, mode)
        try:
            self._own(e.path)
            fh = self._new_handle(fd)
        except BaseException:
            os.close(fd)
            raise
        if flags & os.O_TRUNC:
            self._truncate_fh(fh, 0)
        return fh

    def open(self, path: str, flags: int) -> int:
        fd = self._open_fd(self.backing.cpath(path), flags)
        try:
            fh = self._new_handle(fd)
        except BaseException:
            os.close(fd)
            raise
        if flags & os.O_TRUNC:
            self._truncate_fh(fh, 0)
        return fh

    def release(self, path: str | None, fh: int) -> int:
        h = self._handles.pop(fh, None)
        if h is not None:
            os.close(h.fd)
            self._release(h.node)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        # Every write is already in the backing file. What close(2) still owes: the other
        # names of a hard-linked file must not keep showing the old size.
        h = self._handles.get(fh)
        if h is not None:
            self._invalidate_links(h.node)
        return 0

    def _invalidate_links(self, node: Node) -> None:
        if node.links_stale:
            node.links_stale = False
            for name in list(self._link_names.get(node.key, ())):
                invalidate_path(name)

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        h = self._handle(fh)
        (os.fdatasync if datasync else os.fsync)(h.fd)
        return 0

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        h = self._handle(fh)
        with h.node.lock:
            csize = os.fstat(h.fd).st_size
            psize = ce.plaintext_size(csize)
            if offset >= psize or size <= 0:
                return b""
            end = min(offset + size, psize)
            first, last = offset // ce.BLOCK_SIZE, (end - 1) // ce.BLOCK_SIZE
            cipher = self._cipher(h.node, h.fd, csize, create=False)
            assert cipher is not None  # psize > 0 implies a header
            plain = self._read_blocks(h.fd, cipher, first, last, csize)
        base = first * ce.BLOCK_SIZE
        return plain[offset - base : end - base]

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        h = self._handle(fh)
        if not data:
            return 0
        with h.node.lock:
            self._write(h, data, offset)
        return len(data)

    def _write(self, h: Handle, data: bytes, offset: int) -> None:
        B = ce.BLOCK_SIZE
        fd = h.fd
        st = os.fstat(fd)
        if st.st_nlink > 1:
            h.node.links_stale = True
        csize = st.st_size
        psize = ce.plaintext_size(csize)
        cipher = self._cipher(h.node, fd, csize, create=True)
        assert cipher is not None
        csize = max(csize, ce.HEADER_LEN)
        end = offset + len(data)
        first, last = offset // B, (end - 1) // B
        if psize % B and (psize - 1) // B < first:
            # Writing past EOF: the old partial last block becomes a full block of zeros-padded
            # data; the blocks between stay holes (all-zero records) in the backing file.
            ob = (psize - 1) // B
            old = self._read_blocks(fd, cipher, ob, ob, csize)
            os.pwrite(fd, cipher.encrypt_blocks(ob, old + bytes(B - len(old))),
                      ce.cipher_offset(ob))
        head = b""
        if offset % B:
            if first * B < psize:
                head = self._read_blocks(fd, cipher, first, first, csize)[: offset % B]
            head += bytes(offset % B - len(head))
        tail = b""
        if end % B and end < psize:
            blk = self._read_blocks(fd, cipher, last, last, csize)
            tail = blk[end % B :]
        plain = head + data + tail if head or tail else data
        os.pwrite(fd, cipher.encrypt_blocks(first, plain), ce.cipher_offset(first))

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None and fh in self._handles:
            self._truncate_fh(fh, length)
            return 0
        if path is None:
            raise FuseOSError(errno.EBADF)
        fd = os.open(self.backing.cpath(path), os.O_RDWR | os.O_NOFOLLOW)
        try:
            fh = self._new_handle(fd)
        except BaseException:
            os.close(fd)
            raise
        try:
            self._truncate_fh(fh, length)
            self._invalidate_links(self._handles[fh].node)
        finally:
            self.release(path, fh)
        return 0

    def _truncate_fh(self, fh: int, length: int) -> None:
        h = self._handle(fh)
        with h.node.lock:
            self._truncate(h, length)

    def _truncate(self, h: Handle, new: int) -> None:
        B = ce.BLOCK_SIZE
        fd = h.fd
        st = os.fstat(fd)
        if st.st_nlink > 1:
            h.node.links_stale = True
        csize = st.st_size
        psize = ce.plaintext_size(csize)
        if new == psize and (new or csize == 0):
            return
        if new == 0:
            os.ftruncate(fd, 0)
            h.node.cipher = None  # the next write starts a new file id
            return
        cipher = self._cipher(h.node, fd, csize, create=True)
        assert cipher is not None
        csize = max(csize, ce.HEADER_LEN)
        if new < psize:
            lb, keep = (new - 1) // B, new - ((new - 1) // B) * B
            if keep == B:
                os.ftruncate(fd, ce.cipher_offset(lb + 1))
                return
            blk = self._read_blocks(fd, cipher, lb, lb, csize)[:keep]
            rec = cipher.encrypt_blocks(lb, blk)
            # Shrink first, then rewrite the new last block: a crash in between damages only
            # that block, never one that stays whole.
            os.ftruncate(fd, ce.cipher_offset(lb) + len(rec))
            os.pwrite(fd, rec, ce.cipher_offset(lb))
            return
        # Grow: pad the old partial last block, then holes up to the new size.
        if psize % B:
            ob = (psize - 1) // B
            old = self._read_blocks(fd, cipher, ob, ob, csize)
            upto = min(B, new - ob * B)
            os.pwrite(fd, cipher.encrypt_blocks(ob, old + bytes(upto - len(old))),
                      ce.cipher_offset(ob))
            if new <= (ob + 1) * B:
                return
        if new % B == 0:
            os.ftruncate(fd, ce.cipher_offset(new // B))  # all-zero records: holes
        else:
            lb = new // B
            os.pwrite(fd, cipher.encrypt_blocks(lb, _ZERO_BLOCK[: new % B]), ce.cipher_offset(lb))


class _Fuse3(FUSE):  # type: ignore[misc]
    """mfusepy drops the file handle of setattr requests on libfuse3 (ftruncate, fchmod,
    futimens on an unlinked file need it), UTIME_NOW/UTIME_OMIT, and rename flags; these
    overrides pass them through."""

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


def serve(backing_root: str, mountpoint: str, master_key: bytes, *, fsname: str,
          allow_other: bool = False, debug: bool = False,
          on_ready: Callable[[], None] | None = None) -> None:
    """Mount and serve until unmounted (fusermount3 -u) or SIGTERM/SIGINT; then return."""
    os.umask(0)  # the kernel already applied the caller's umask to the modes it sends
    # Everything imported so far (the KMS, SQLAlchemy, ...) lives as long as the daemon: keep
    # it out of the collector, or each request's garbage collection walks all of it.
    gc.collect()
    gc.freeze()
    fs = EncryptedFS(backing_root, master_key, on_ready)
    opts: dict[str, Any] = {
        "foreground": True, "fsname": fsname, "subtype": "ssegw-sfs",
        "default_permissions": True,  # the kernel checks modes; we run as the mount owner
        "use_ino": True,
        "debug": debug,
    }
    if allow_other:
        opts["allow_other"] = True
    _Fuse3(fs, mountpoint, **opts)
