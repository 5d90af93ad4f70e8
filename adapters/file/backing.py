"""The backing directory tree: plaintext paths to backing paths, directory IVs, long names.

This is the I/O side of `names.py`, shared by the FUSE filesystem and `fs check`. A plaintext
path "/a/b/c" maps to a backing path component by component, each name encrypted under its
parent's directory IV. Directories (IV and backing path) and entries are cached by plaintext
path because every operation starts with this translation, most FUSE requests twice (libfuse
answers each create and setattr with a getattr by path); a rename or rmdir of a directory
drops the cached subtree. Encrypted names are a pure function of (IV, name), so an entry stays
right as long as its directory's IV does.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from dataclasses import dataclass
from typing import TypeVar

from adapters.file.errors import DamagedDirectory, NameTooLong
from adapters.file.names import (
    DIRIV_LEN,
    DIRIV_NAME,
    NAME_MAX,
    BadName,
    NameCipher,
    is_longname,
    is_reserved,
    sidecar_for,
)

_T = TypeVar("_T")
_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Entry:
    """Where a plaintext path lives in the backing tree."""

    path: str  # backing path of the entry
    parent: str  # backing path of its directory
    name: str  # backing entry name
    long: str | None  # the full encrypted name when `name` is a long-name entry


def write_diriv(cdir: str, diriv: bytes | None = None) -> bytes:
    """Create the directory IV file atomically (temp file + rename): never half-written."""
    diriv = diriv if diriv is not None else secrets.token_bytes(DIRIV_LEN)
    tmp = os.path.join(cdir, f"{DIRIV_NAME}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, diriv)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(cdir, DIRIV_NAME))
    return diriv


def read_diriv(cdir: str) -> bytes:
    """The IV of a backing directory. A directory left without one by a crash between mkdir
    and the IV write is necessarily empty, and gets a new IV; a non-empty one is damage."""
    try:
        with open(os.path.join(cdir, DIRIV_NAME), "rb") as f:
            iv = f.read(DIRIV_LEN + 1)
        if len(iv) == DIRIV_LEN:
            return iv
    except FileNotFoundError:
        pass
    if any(not n.startswith(DIRIV_NAME) for n in os.listdir(cdir)):
        raise DamagedDirectory(f"directory IV missing or damaged in {cdir}")
    return write_diriv(cdir)


class Backing:
    def __init__(self, root: str, names: NameCipher) -> None:
        self.root = os.path.abspath(root)
        self.names = names
        self._dirs: dict[str, tuple[str, bytes]] = {}
        self._entries: dict[str, Entry] = {}
        # Bumped by every `forget`: a translation computed across one is not cached, as it
        # may hold the IV of a directory that was just removed or moved.
        self._generation = 0
        self._lock = threading.Lock()

    # translation ------------------------------------------------------------------------

    def dir(self, path: str) -> tuple[str, bytes]:
        """(backing path, IV) of the plaintext directory `path`."""
        hit = self._dirs.get(path)
        if hit is not None:
            return hit
        generation = self._generation
        if path == "/":
            cdir = self.root
        else:
            cdir = self.entry(path).path
        found = (cdir, read_diriv(cdir))
        self._remember(self._dirs, path, found, generation)
        return found

    def entry(self, path: str) -> Entry:
        hit = self._entries.get(path)
        if hit is not None:
            return hit
        generation = self._generation
        parent, _, name = path.rpartition("/")
        raw = os.fsencode(name)
        if len(raw) > NAME_MAX:  # FUSE lets names up to 1024 bytes through; POSIX says 255
            raise NameTooLong("file name too long")
        cparent, iv = self.dir(parent or "/")
        bname, long = self.names.backing_name(raw, iv)  # InvalidName (EINVAL) for "", "..", ...
        found = Entry(os.path.join(cparent, bname), cparent, bname, long)
        self._remember(self._entries, path, found, generation)
        return found

    def _remember(self, cache: dict[str, _T], path: str, found: _T, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            if len(cache) >= _CACHE_MAX:
                cache.clear()  # bounded the simple way: everything is cheap to find again
            cache[path] = found

    def cpath(self, path: str) -> str:
        return self.root if path == "/" else self.entry(path).path

    def forget(self, path: str) -> None:
        """Drop cached directories at and under `path` (after rename or rmdir)."""
        prefix = path.rstrip("/") + "/"
        with self._lock:
            self._generation += 1
            for cache in (self._dirs, self._entries):
                for p in [p for p in cache if p == path or p.startswith(prefix)]:
                    del cache[p]

    # long names -------------------------------------------------------------------------

    def add_longname(self, e: Entry) -> None:
        """Write the sidecar before the entry exists, so an entry never lacks its name."""
        if e.long is None:
            return
        side = os.path.join(e.parent, sidecar_for(e.name))
        tmp = f"{side}.tmp-{secrets.token_hex(6)}"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(e.long)
        os.rename(tmp, side)

    def drop_longname(self, e: Entry) -> None:
        if e.long is None:
            return
        try:
            os.unlink(os.path.join(e.parent, sidecar_for(e.name)))
        except FileNotFoundError:
            pass

    # listing ----------------------------------------------------------------------------

    def decrypt_entry(self, cdir: str, iv: bytes, bname: str) -> bytes:
        """Plaintext name of a backing entry; BadName when it does not decrypt."""
        if is_longname(bname):
            try:
                with open(os.path.join(cdir, sidecar_for(bname)), encoding="ascii") as f:
                    enc = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise BadName(f"long-name sidecar unreadable: {e}") from e
            return self.names.decrypt_longname(bname, enc, iv)
        return self.names.decrypt_name(bname, iv)

    def list_dir(self, cdir: str, iv: bytes) -> list[tuple[bytes, str, int, int]]:
        """(plaintext name, backing name, inode, file type bits) of every user entry.

        Undecryptable entries are skipped here (the mount cannot show them) and reported by
        `fs check`. The inode matters: readdir(3) drops entries whose d_ino is 0."""
        out: list[tuple[bytes, str, int, int]] = []
        with os.scandir(cdir) as it:
            for de in it:
                bname = de.name
                if is_reserved(bname) and not is_longname(bname):
                    continue
                try:
                    name = self.decrypt_entry(cdir, iv, bname)
                except BadName:
                    continue
                if de.is_symlink():
                    kind = stat.S_IFLNK
                elif de.is_dir(follow_symlinks=False):
                    kind = stat.S_IFDIR
                elif de.is_file(follow_symlinks=False):
                    kind = stat.S_IFREG
                else:
                    kind = stat.S_IFMT(de.stat(follow_symlinks=False).st_mode)
                out.append((name, bname, de.inode(), kind))
        return out
