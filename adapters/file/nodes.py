"""Open files of a mount: nodes (one per backing file), handles (one per open), link names.

Concurrency. libfuse runs requests on several threads. Every open backing file maps to one
`Node` keyed by (st_dev, st_ino), shared by all handles and hard links of that file; its lock
(`rwlock.RWLock`) gives writes and truncates the file to themselves, because a write of part
of a block is a read-modify-write of the whole block and a read must never see a block record
half-written, while reads share it: the kernel's readahead sends several READs of one file at
once, and they decrypt on different cores (the block loop runs without the GIL). Different
files proceed in parallel (pread/pwrite release the GIL).
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from dataclasses import dataclass, field

from adapters.file import contentenc as ce
from adapters.file.fuselib import FuseOSError, invalidate_path
from adapters.file.rwlock import RWLock


@dataclass(eq=False)
class Node:
    """One backing file, shared by every open handle (and hard link) of it."""

    key: tuple[int, int]
    lock: RWLock = field(default_factory=RWLock)
    refs: int = 0
    cipher: ce.FileCipher | None = None
    # Written while it had other hard links: their kernel attributes are stale until `flush`.
    links_stale: bool = False


@dataclass(eq=False, slots=True)
class Handle:
    fd: int
    node: Node


class OpenFiles:
    """File handles by number, and the nodes they share."""

    def __init__(self) -> None:
        self._handles: dict[int, Handle] = {}
        self._nodes: dict[tuple[int, int], Node] = {}
        self._nodes_lock = threading.Lock()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        """A number no other open file or directory of this mount has."""
        return next(self._ids)

    def add(self, fd: int) -> int:
        """A new handle for `fd` (which it now owns); closes `fd` if that fails."""
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            with self._nodes_lock:
                node = self._nodes.get(key)
                if node is None:
                    node = self._nodes[key] = Node(key)
                node.refs += 1
        except BaseException:
            os.close(fd)
            raise
        fh = self.next_id()
        self._handles[fh] = Handle(fd, node)
        return fh

    def get(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FuseOSError(errno.EBADF)
        return h

    def find(self, fh: int | None) -> Handle | None:
        return None if fh is None else self._handles.get(fh)

    def close(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is None:
            return
        os.close(h.fd)
        node = h.node
        with self._nodes_lock:
            node.refs -= 1
            if node.refs == 0 and self._nodes.get(node.key) is node:
                del self._nodes[node.key]

    def close_all(self) -> None:
        for h in list(self._handles.values()):
            try:
                os.close(h.fd)
            except OSError:
                pass
        self._handles.clear()


class LinkNames:
    """Names seen for files with several hard links, by (st_dev, st_ino).

    The high-level FUSE API gives each path its own kernel inode, so two hard links of one file
    have separate attribute caches: a file written through one name has its other names
    invalidated on `flush`."""

    def __init__(self) -> None:
        self._names: dict[tuple[int, int], set[str]] = {}
        self._noted: set[str] = set()  # every name in _names, so unlink need not stat the rest

    def note(self, st: os.stat_result, path: str) -> None:
        names = self._names.setdefault((st.st_dev, st.st_ino), set())
        if len(names) < 64:  # bounded: stale names (renamed, unlinked) only cost a no-op
            names.add(path)
            self._noted.add(path)

    def noted(self, path: str) -> bool:
        """Whether `path` was seen as one name of a file with several links (only such a path
        has other names whose cached attributes its removal changes)."""
        return path in self._noted

    def invalidate(self, node: Node) -> None:
        if node.links_stale:
            node.links_stale = False
            for name in list(self._names.get(node.key, ())):
                invalidate_path(name)

    def relinked(self, st: os.stat_result, gone: str | None = None) -> None:
        """A name of the file `st` describes was added or (`gone`) removed: its link count
        and ctime changed under every other name the kernel may have cached."""
        names = self._names.get((st.st_dev, st.st_ino), set())
        names.discard(gone)
        self._noted.discard(gone)
        for name in list(names):
            invalidate_path(name)
