"""Offline verification (`ssegw fs check`) and reading of a backing tree without a mount.

Walks the backing tree from the root, decrypting every name, every symlink target and every
block of every file, and reports each failure with the plaintext path when the name still
decrypts (else the backing path) and the block number. For version-2 files (`contentenc`) it
also checks where each file ends: a file cut at a block boundary is reported as "truncated",
one with blocks appended after its last as "extended".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from adapters.file import contentenc as ce
from adapters.file.backing import read_diriv
from adapters.file.errors import SfsError
from adapters.file.names import (
    LONGNAME_SUFFIX,
    BadName,
    NameCipher,
    is_longname,
    is_reserved,
)

_RUN = 256  # blocks verified per read: 1 MiB of plaintext


@dataclass(frozen=True)
class Damage:
    path: str  # plaintext path ("?" components where a name does not decrypt)
    backing: str  # path relative to the backing root
    what: str  # "block", "header", "name", "symlink", "directory"
    block: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "backing": self.backing, "what": self.what}
        if self.block is not None:
            d["block"] = self.block
        if self.detail:
            d["detail"] = self.detail
        return d


@dataclass
class Report:
    directories: int = 0
    files: int = 0
    symlinks: int = 0
    blocks: int = 0
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "directories": self.directories, "files": self.files,
                "symlinks": self.symlinks, "blocks": self.blocks,
                "damage": [d.as_dict() for d in self.damage]}


@dataclass(frozen=True)
class Item:
    path: str  # plaintext path
    backing: str  # absolute backing path
    st: os.stat_result


def walk(root: str, names: NameCipher, report: Report | None = None) -> Iterator[Item]:
    """Every entry under the backing root, depth first, with its plaintext path."""
    root = os.path.abspath(root)
    todo = [("/", root)]
    while todo:
        ppath, cdir = todo.pop()
        rel = os.path.relpath(cdir, root)
        try:
            iv = read_diriv(cdir)
        except (OSError, SfsError) as e:
            if report is not None:
                report.damage.append(Damage(ppath, rel, "directory", detail=str(e)))
            continue
        for bname in sorted(os.listdir(cdir)):
            if is_reserved(bname) and not is_longname(bname):
                continue  # config, directory IVs, long-name sidecars (checked with their entries)
            cpath = os.path.join(cdir, bname)
            try:
                name = _decrypt_entry(names, cdir, iv, bname)
                child = ppath.rstrip("/") + "/" + os.fsdecode(name)
            except BadName as e:
                if report is not None:
                    rel_c = os.path.relpath(cpath, root)
                    report.damage.append(Damage(ppath.rstrip("/") + "/?", rel_c, "name",
                                                detail=str(e)))
                child = ppath.rstrip("/") + "/?" + bname
            st = os.lstat(cpath)
            if stat.S_ISDIR(st.st_mode):
                todo.append((child, cpath))
            yield Item(child, cpath, st)


def _decrypt_entry(names: NameCipher, cdir: str, iv: bytes, bname: str) -> bytes:
    if is_longname(bname):
        try:
            with open(os.path.join(cdir, bname + LONGNAME_SUFFIX), encoding="ascii") as f:
                return names.decrypt_longname(bname, f.read(), iv)
        except (OSError, UnicodeDecodeError) as e:
            raise BadName(f"long-name sidecar unreadable: {e}") from e
    return names.decrypt_name(bname, iv)


def check_file(master_key: bytes, cpath: str) -> tuple[int, list[tuple[str, int | None, str]]]:
    """(blocks verified, [(what, block, detail)]) for one backing file."""
    problems: list[tuple[str, int | None, str]] = []
    with open(cpath, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return 0, problems
        try:
            cipher = ce.FileCipher.for_header(master_key, ce.decode_header(f.read(ce.HEADER_LEN)))
        except ce.FormatError as e:
            return 0, [("header", None, str(e))]
        nblocks = ce.record_count(size)
        if nblocks == 0 and cipher.marks_final:
            return 0, [("truncated", None, "a header and no block: every block was dropped")]
        for first in range(0, nblocks, _RUN):
            f.seek(ce.cipher_offset(first))
            data = f.read(_RUN * ce.CIPHER_BLOCK_SIZE)
            final = first + _RUN >= nblocks
            for b in cipher.bad_blocks(first, data, final):
                rec = data[(b - first) * ce.CIPHER_BLOCK_SIZE :][: ce.CIPHER_BLOCK_SIZE]
                problems.append(_diagnose(cipher, b, rec, last=b == nblocks - 1))
    return nblocks, problems


def _diagnose(cipher: ce.FileCipher, block: int, rec: bytes,
              last: bool) -> tuple[str, int | None, str]:
    """Name a version-2 cut or extension when the block itself is intact."""
    sealed_final = cipher.seals_final(block, rec)
    if last and sealed_final is False:
        return ("truncated", block, "the file ends after this block, which is not its last "
                                    "block: blocks were dropped")
    if not last and sealed_final is True:
        return ("extended", block, "this block is sealed as the file's last, but more "
                                   "follows: blocks were appended")
    return ("block", block, "authentication failed")


def check_tree(root: str, master_key: bytes) -> Report:
    names = NameCipher(master_key)
    report = Report()
    for item in walk(root, names, report):
        rel = os.path.relpath(item.backing, os.path.abspath(root))
        mode = item.st.st_mode
        if stat.S_ISDIR(mode):
            report.directories += 1
        elif stat.S_ISLNK(mode):
            report.symlinks += 1
            try:
                names.decrypt_target(os.readlink(item.backing))
            except BadName as e:
                report.damage.append(Damage(item.path, rel, "symlink", detail=str(e)))
        elif stat.S_ISREG(mode):
            report.files += 1
            n, problems = check_file(master_key, item.backing)
            report.blocks += n
            for what, block, detail in problems:
                report.damage.append(Damage(item.path, rel, what, block, detail))
    return report


def read_tree(root: str, master_key: bytes) -> dict[str, Any]:
    """Plaintext view of a whole tree: {path: bytes | ("symlink", target) | ("dir",)}.

    For tests and recovery without FUSE (e.g. reading the frozen example filesystem)."""
    names = NameCipher(master_key)
    out: dict[str, Any] = {}
    for item in walk(root, names):
        mode = item.st.st_mode
        if stat.S_ISDIR(mode):
            out[item.path] = ("dir",)
        elif stat.S_ISLNK(mode):
            out[item.path] = ("symlink", names.decrypt_target(os.readlink(item.backing)))
        elif stat.S_ISREG(mode):
            with open(item.backing, "rb") as f:
                data = f.read()
            if not data:
                out[item.path] = b""
                continue
            cipher = ce.FileCipher.for_header(master_key, ce.decode_header(data))
            out[item.path] = cipher.decrypt_blocks(0, memoryview(data)[ce.HEADER_LEN :],
                                                   final=True)
    return out
