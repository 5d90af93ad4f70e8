"""Backing's path translation caches: the same answers as a fresh translation, dropped when a
directory's IV may have changed, never filled across a `forget`, bounded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from adapters.file import backing as bk
from adapters.file.names import NameCipher

MASTER = bytes(range(32))


def _tree(root: Path) -> bk.Backing:
    bk.write_diriv(str(root))
    return bk.Backing(str(root), NameCipher(MASTER))


def _mkdir(b: bk.Backing, path: str) -> str:
    cdir = b.entry(path).path
    os.mkdir(cdir)
    bk.write_diriv(cdir)
    return cdir


def test_cached_entries_are_what_a_fresh_translation_gives(tmp_path: Path) -> None:
    b = _tree(tmp_path)
    _mkdir(b, "/d")
    first = [b.entry(p) for p in ("/d", "/d/f", "/g")]
    assert [b.entry(p) for p in ("/d", "/d/f", "/g")] == first  # from the caches
    fresh = bk.Backing(str(tmp_path), NameCipher(MASTER))
    assert [fresh.entry(p) for p in ("/d", "/d/f", "/g")] == first
    assert b.cpath("/d/f") == first[1].path and b.cpath("/") == str(tmp_path)


def test_a_recreated_directory_gets_entries_under_its_new_iv(tmp_path: Path) -> None:
    b = _tree(tmp_path)
    cdir = _mkdir(b, "/d")
    old = b.entry("/d/f")
    shutil.rmtree(cdir)  # what rmdir then mkdir of the same name do to the backing tree
    _mkdir(b, "/d")
    b.forget("/d")
    new = b.entry("/d/f")
    assert new != old  # the new IV encrypts the name differently
    assert new == bk.Backing(str(tmp_path), NameCipher(MASTER)).entry("/d/f")


def test_nothing_is_cached_across_a_forget(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    b = _tree(tmp_path)
    _mkdir(b, "/d")
    real = NameCipher.backing_name

    def racing(self: NameCipher, name: bytes, iv: bytes) -> tuple[str, str | None]:
        b.forget("/d")  # another request removes or moves /d meanwhile
        return real(self, name, iv)

    monkeypatch.setattr(NameCipher, "backing_name", racing)
    b.entry("/d/f")
    assert "/d/f" not in b._entries and "/d" not in b._dirs
    monkeypatch.setattr(NameCipher, "backing_name", real)
    b.entry("/d/f")
    assert "/d/f" in b._entries and "/d" in b._dirs


def test_the_caches_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bk, "_CACHE_MAX", 5)
    b = _tree(tmp_path)
    got = {i: b.entry(f"/f{i}") for i in range(20)}
    assert len(b._entries) <= 5
    assert all(b.entry(f"/f{i}") == got[i] for i in range(20))
