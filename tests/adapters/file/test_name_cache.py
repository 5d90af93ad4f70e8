"""NameCipher remembers backing names: the same answers as encrypting afresh, bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.file import names as nm

V = json.loads((Path(__file__).parents[2] / "vectors" / "sfs_v1.json").read_text())
MASTER = bytes.fromhex(V["masterKey"])


def test_remembered_names_match_the_vectors_and_stay_per_directory() -> None:
    names = nm.NameCipher(MASTER)
    iv = bytes.fromhex(V["dirIv"])
    for _ in range(2):  # the second pass answers from the cache
        for n in V["names"]:
            assert names.backing_name(bytes.fromhex(n["name"]), iv) == (n["backing"], n["long"])
    other = bytes(16)
    first = V["names"][0]
    assert names.backing_name(bytes.fromhex(first["name"]), other)[0] != first["backing"]
    assert names.backing_name(bytes.fromhex(first["name"]), other) == \
        nm.NameCipher(MASTER).backing_name(bytes.fromhex(first["name"]), other)


def test_the_cache_is_bounded_and_bad_names_are_never_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nm, "_NAME_CACHE_MAX", 4)
    names = nm.NameCipher(MASTER)
    iv = bytes.fromhex(V["dirIv"])
    got = {i: names.backing_name(b"f%d" % i, iv) for i in range(10)}
    assert len(names._backing_names) <= 4
    assert all(names.backing_name(b"f%d" % i, iv) == got[i] for i in range(10))
    for bad in (b"", b".", b"..", b"a/b", b"a\0b"):
        with pytest.raises(nm.BadName):
            names.backing_name(bad, iv)
    assert all(k[0] not in (b"", b".", b"..", b"a/b", b"a\0b") for k in names._backing_names)
