"""Content format version 2: where a file ends is authenticated (issue #16 item 8).

The attacks are made as someone with write access to the backing directory would make them:
on the backing files' bytes, between writes by the filesystem code. Here the filesystem code is
`content.Content` on real files without FUSE (fast, exact); `test_integrity.py`-style checks
through a real mount are at the end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.file import contentenc as ce
from adapters.file.check import check_file, check_tree, read_tree
from adapters.file.content import Content
from adapters.file.errors import DamagedFile, SfsError
from adapters.file.nodes import Handle, Node
from tests.adapters.file.conftest import SfsCli, make_mount

HERE = Path(__file__).parent
MASTER = bytes(range(32))
B = ce.BLOCK_SIZE


class Backed:
    """One backing file written and read through `Content`, as the mount does."""

    def __init__(self, path: Path, master: bytes = MASTER) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        self.h = Handle(fd, Node((st.st_dev, st.st_ino)))
        self.content = Content(master)

    def close(self) -> None:
        os.close(self.h.fd)

    def reopen(self) -> Backed:
        """A fresh handle and node, as after a remount (nothing cached)."""
        self.close()
        return Backed(self.path)

    def write(self, data: bytes, offset: int) -> None:
        self.content.write(self.h, data, offset)

    def truncate(self, n: int) -> None:
        self.content.truncate(self.h, n)

    def read(self, size: int = 1 << 30, offset: int = 0) -> bytes:
        return self.content.read(self.h, size, offset)

    def open_check(self) -> None:
        self.content.check_end(self.h)

    def size(self) -> int:
        return ce.plaintext_size(os.fstat(self.h.fd).st_size)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[list[Backed]]:
    made: list[Backed] = []
    yield made
    for f in made:
        try:
            os.close(f.h.fd)
        except OSError:
            pass


def make(files: list[Backed], path: Path, data: bytes) -> Backed:
    f = Backed(path)
    files.append(f)
    if data:
        f.write(data, 0)
    return f


def final_flags(path: Path) -> list[bool | None]:
    """For each record of a version-2 backing file: sealed final (True), not (False), neither."""
    raw = path.read_bytes()
    cipher = ce.FileCipher.for_header(MASTER, ce.decode_header(raw))
    recs = list(ce.split_records(raw[ce.HEADER_LEN :]))
    return [cipher.seals_final(i, r) for i, r in enumerate(recs)]


def assert_eio(fn: Callable[..., object], *args: object) -> None:
    with pytest.raises(DamagedFile) as e:
        fn(*args)
    assert e.value.errno == errno.EIO


# ------------------------------------------------------------------------ the writer's rule


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(
    st.sampled_from(["write", "truncate"]),
    st.one_of(st.integers(0, 5 * B + 100), st.sampled_from([0, B - 1, B, B + 1, 2 * B, 3 * B])),
    st.integers(0, 2 * B + 10)), min_size=1, max_size=12))
def test_every_write_and_truncate_keeps_exactly_the_last_block_final(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("rule") / "f"
    f = Backed(path)
    model = bytearray()
    try:
        for op, pos, n in ops:
            if op == "write" and n:
                data = hashlib.sha256(b"%d %d" % (pos, n)).digest() * (n // 32 + 1)
                data = data[:n]
                f.write(data, pos)
                if pos > len(model):
                    model.extend(bytes(pos - len(model)))
                model[pos : pos + n] = data
            elif op == "truncate":
                f.truncate(pos)
                del model[pos:]
                model.extend(bytes(pos - len(model)))
            assert f.size() == len(model)
            assert f.read() == bytes(model)
            f = f.reopen()
            f.open_check()
            assert f.read() == bytes(model)
            if model:
                flags = final_flags(path)
                assert flags[-1] is True and all(x is not True for x in flags[:-1]), flags
                n_, problems = check_file(MASTER, str(path))
                assert problems == []
    finally:
        f.close()


def test_new_files_are_version_2_and_empty_files_stay_zero_bytes(
    tmp_path: Path, files: list[Backed]
) -> None:
    f = make(files, tmp_path / "a", b"x")
    assert (tmp_path / "a").read_bytes()[0] == 2
    f.truncate(0)
    assert (tmp_path / "a").stat().st_size == 0
    f.truncate(10)  # grows from nothing: header and final block in one file
    assert f.read() == bytes(10) and final_flags(tmp_path / "a") == [True]
    g = make(files, tmp_path / "b", b"")
    g.write(b"late", 3 * B)  # first write past 0: holes, then the final block
    assert g.read() == bytes(3 * B) + b"late"
    assert final_flags(tmp_path / "b") == [None, None, None, True]


def test_resealing_uses_a_fresh_nonce(tmp_path: Path, files: list[Backed]) -> None:
    f = make(files, tmp_path / "a", b"a" * 100)
    first = (tmp_path / "a").read_bytes()[ce.HEADER_LEN :][: ce.NONCE_LEN]
    f.write(b"b", 2 * B)  # block 0 re-sealed as not final, same plaintext
    again = (tmp_path / "a").read_bytes()[ce.HEADER_LEN :][: ce.NONCE_LEN]
    assert again != first
    f.truncate(100)  # and re-sealed as final again
    third = (tmp_path / "a").read_bytes()[ce.HEADER_LEN :][: ce.NONCE_LEN]
    assert len({first, again, third}) == 3


# ------------------------------------------------------------------------------ the attacks

SIZES = [3 * B + 100, 4 * B, B + 1, 5]


def cut(path: Path, size: int) -> None:
    os.truncate(path, size)


def attacked(tmp_path: Path, files: list[Backed], size: int) -> tuple[Backed, bytes]:
    data = os.urandom(size)
    return make(files, tmp_path / f"victim{size}", data), data


@pytest.mark.parametrize(("size", "dropped"), [
    (s, d) for s in SIZES for d in (1, 2, "all")
    if not isinstance(d, int) or ce.cipher_size(s) > ce.cipher_offset(d)
])
def test_dropping_whole_blocks_from_the_end_is_eio(
    tmp_path: Path, files: list[Backed], size: int, dropped: int | str
) -> None:
    f, data = attacked(tmp_path, files, size)
    nrec = ce.record_count(f.path.stat().st_size)
    keep = 0 if dropped == "all" else nrec - int(dropped)
    cut(f.path, ce.cipher_offset(keep))
    f = f.reopen()
    files.append(f)
    if keep == 0:
        assert f.size() == 0
        assert_eio(f.open_check)  # the kernel sends no read for a 0-byte file: open fails
        assert_eio(f.write, b"x", 0)  # and nothing is written over it silently
    else:
        assert_eio(f.read)  # reading to the (new) end
        assert_eio(f.read, 1, f.size() - 1)
        # blocks before the cut still read, and only those: nothing past the damage
        assert f.read(B * (keep - 1)) == data[: B * (keep - 1)]
        assert_eio(f.write, b"x", f.size() + 10)  # an append must not seal over the cut
    n, problems = check_file(MASTER, str(f.path))
    assert problems and problems[0][0] == "truncated", problems
    assert problems[0][1] == (None if keep == 0 else keep - 1)


@pytest.mark.parametrize("size", SIZES)
def test_cutting_inside_a_block_is_eio(tmp_path: Path, files: list[Backed], size: int) -> None:
    f, data = attacked(tmp_path, files, size)
    csize = f.path.stat().st_size
    last = ce.cipher_offset(ce.record_count(csize) - 1)
    for at in sorted({last + 1, last + 12, last + 27, last + 28, last + 29, csize - 1}):
        if not ce.HEADER_LEN < at < csize:
            continue
        shutil.copy(f.path, tmp_path / "cut")
        cut(tmp_path / "cut", at)
        g = Backed(tmp_path / "cut")
        files.append(g)
        if g.size() == 0:
            assert_eio(g.open_check)
        else:
            assert_eio(g.read)
        assert check_file(MASTER, str(g.path))[1], at
        g.close()
        files.remove(g)


def test_swapping_blocks_between_files_is_eio(tmp_path: Path, files: list[Backed]) -> None:
    a, da = attacked(tmp_path, files, 3 * B + 7)
    b = make(files, tmp_path / "other", os.urandom(3 * B + 7))
    raw_a, raw_b = bytearray(a.path.read_bytes()), b.path.read_bytes()
    for blk in (1, 3):  # a middle block, and the final one
        off = ce.cipher_offset(blk)
        swapped = raw_a[:off] + raw_b[off : off + ce.CIPHER_BLOCK_SIZE] + raw_a[
            off + ce.CIPHER_BLOCK_SIZE :]
        (tmp_path / "swapped").write_bytes(swapped)
        s = Backed(tmp_path / "swapped")
        files.append(s)
        assert_eio(s.read)
        assert [p[1] for p in check_file(MASTER, str(s.path))[1]] == [blk]
        s.close()
        files.remove(s)


@pytest.mark.parametrize("source", ["own", "other"])
def test_appending_a_block_from_elsewhere_is_eio(
    tmp_path: Path, files: list[Backed], source: str
) -> None:
    a, da = attacked(tmp_path, files, 2 * B)  # ends on a block boundary: no padding needed
    other = a if source == "own" else make(files, tmp_path / "o", os.urandom(4 * B))
    extra = other.path.read_bytes()[ce.cipher_offset(1) : ce.cipher_offset(2)]
    with open(a.path, "ab") as fh:
        fh.write(extra)
    a = a.reopen()
    files.append(a)
    assert a.size() == 3 * B
    assert_eio(a.read)
    assert_eio(a.read, 10, 2 * B + 5)
    problems = check_file(MASTER, str(a.path))[1]
    assert ("extended", 1) in [(p[0], p[1]) for p in problems], problems


def test_a_zeroed_or_forged_last_block_is_not_a_hole(tmp_path: Path, files: list[Backed]) -> None:
    a, _ = attacked(tmp_path, files, 2 * B)
    with open(a.path, "ab") as fh:  # an appended all-zero record would read as zeros in v1
        fh.write(bytes(ce.CIPHER_BLOCK_SIZE))
    a = a.reopen()
    files.append(a)
    assert_eio(a.read)
    b, _ = attacked(tmp_path, files, 3 * B)
    with open(b.path, "r+b") as fh:
        fh.seek(ce.cipher_offset(2))
        fh.write(bytes(ce.CIPHER_BLOCK_SIZE))
    b = b.reopen()
    files.append(b)
    assert_eio(b.read)


def test_rewriting_the_version_byte_to_1_is_eio(tmp_path: Path, files: list[Backed]) -> None:
    a, _ = attacked(tmp_path, files, 2 * B + 3)
    with open(a.path, "r+b") as fh:
        fh.write(b"\x01")
    a = a.reopen()
    files.append(a)
    assert_eio(a.read)
    assert_eio(a.read, 10, 0)
    assert len(check_file(MASTER, str(a.path))[1]) == 3


# --------------------------------------------------------------- version 1 stays version 1


def test_version_1_files_read_and_write_as_version_1(tmp_path: Path, files: list[Backed]) -> None:
    info = json.loads((HERE / "example_fs_v1" / "expected.json").read_text())
    root = tmp_path / "v1"
    shutil.copytree(HERE / "example_fs_v1" / "backing", root, symlinks=True)
    key = bytes.fromhex(info["masterKey"])
    assert key == MASTER
    tree = read_tree(str(root), key)
    path = next(p for p, v in tree.items() if p == "/docs/readme.txt")
    backing = next(i for i in _walk(root) if i[0] == path)[1]
    plain = tree[path]
    f = Backed(Path(backing))
    files.append(f)
    assert f.read() == plain
    f.write(b"appended", len(plain) + 5000)
    f.truncate(len(plain) + 3 * B)
    f.write(b"mid", 7)
    expect = bytearray(plain + bytes(5000) + b"appended")
    expect.extend(bytes(len(plain) + 3 * B - len(expect)))
    expect[7:10] = b"mid"
    f = f.reopen()
    files.append(f)
    assert f.read() == bytes(expect)
    assert Path(backing).read_bytes()[0] == 1  # still version 1
    assert check_tree(str(root), key).ok
    f.truncate(0)
    f.write(b"new", 0)  # a file emptied and written again starts over as version 2
    assert Path(backing).read_bytes()[0] == 2 and f.read() == b"new"


def _walk(root: Path) -> list[tuple[str, str]]:
    from adapters.file.check import walk
    from adapters.file.names import NameCipher

    return [(i.path, i.backing) for i in walk(str(root), NameCipher(MASTER))]


# ------------------------------------------------------- known answers and frozen example fs

def test_known_answer_blocks_v2() -> None:
    V2 = json.loads((HERE.parents[1] / "vectors" / "sfs_v2.json").read_text())
    fid = bytes.fromhex(V2["fileId"])
    assert V2["version"] == 2
    assert ce.encode_header(fid).hex() == V2["header"]
    assert ce.decode_header(bytes.fromhex(V2["header"])) == ce.FileHeader(2, fid)
    cipher = ce.FileCipher(bytes.fromhex(V2["masterKey"]), fid)
    for b in V2["blocks"]:
        plain, rec = bytes.fromhex(b["plaintext"]), bytes.fromhex(b["record"])
        nonce = bytes.fromhex(b["nonce"])
        assert cipher.encrypt_blocks(b["block"], plain, nonce, final=b["final"]) == rec
        assert cipher.decrypt_blocks(b["block"], rec, final=b["final"]) == plain
        with pytest.raises(ce.BlockAuthError):  # the final flag is bound
            cipher.decrypt_blocks(b["block"], rec, final=not b["final"])
        with pytest.raises(ce.BlockAuthError):  # and the block number
            cipher.decrypt_blocks(b["block"] + 1, rec, final=b["final"])
        with pytest.raises(ce.BlockAuthError):  # a version-2 block never reads as version 1
            ce.FileCipher(bytes.fromhex(V2["masterKey"]), fid, 1).decrypt_blocks(b["block"], rec)
    whole = V2["file"]
    backing = bytes.fromhex(whole["backing"])
    assert (ce.encode_header(fid) + cipher.encrypt_blocks(
        0, bytes.fromhex(whole["plaintext"]), bytes.fromhex(whole["nonces"]), final=True)
        == backing)
    body = backing[ce.HEADER_LEN :]
    assert cipher.decrypt_blocks(0, body, final=True).hex() == whole["plaintext"]
    for cut_at in (ce.CIPHER_BLOCK_SIZE, 2 * ce.CIPHER_BLOCK_SIZE, 0):
        with pytest.raises(ce.BlockAuthError):
            cipher.decrypt_blocks(0, body[:cut_at], final=True)
    for plain, size in V2["sizes"]:
        assert ce.cipher_size(plain) == size and ce.plaintext_size(size) == plain


def test_frozen_example_filesystem_v2_reads_and_checks(tmp_path: Path) -> None:
    info = json.loads((HERE / "example_fs_v2" / "expected.json").read_text())
    root = tmp_path / "example"
    shutil.copytree(HERE / "example_fs_v2" / "backing", root, symlinks=True)
    key = bytes.fromhex(info["masterKey"])
    got: dict[str, object] = {}
    for path, v in read_tree(str(root), key).items():
        if isinstance(v, bytes):
            got[path] = {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()}
        elif v[0] == "symlink":
            got[path] = {"symlink": v[1].decode()}
        else:
            got[path] = {"dir": True}
    assert got == info["entries"]
    report = check_tree(str(root), key)
    assert report.ok, report.as_dict()
    versions = {p.read_bytes()[0] for p in root.rglob("*")
                if p.is_file() and not p.is_symlink() and not p.name.startswith("sfs.")
                and p.stat().st_size}
    assert versions == {2}


# --------------------------------------------------------------------- through a real mount


def test_attacks_through_the_mount_give_eio_and_check_names_them(
    sfs_cli: SfsCli, tmp_path: Path
) -> None:
    m = make_mount(sfs_cli, tmp_path)
    sizes = {"drop1": 3 * B + 50, "drop2": 4 * B, "dropall": 2 * B + 1, "midcut": 2 * B + 900,
             "appended": 2 * B, "swapped": 2 * B + 10, "fine": 3 * B + 1}
    content = {n: os.urandom(s) for n, s in sizes.items()}
    for n, data in content.items():
        (m.mnt / n).write_bytes(data)
    (m.mnt / "donor").write_bytes(os.urandom(3 * B))
    m.unmount()
    by_name = _backing_by_size(m.backing, {**sizes, "donor": 3 * B})
    rec = ce.CIPHER_BLOCK_SIZE
    os.truncate(by_name["drop1"], ce.cipher_offset(3))
    os.truncate(by_name["drop2"], ce.cipher_offset(2))
    os.truncate(by_name["dropall"], ce.HEADER_LEN)
    os.truncate(by_name["midcut"], ce.cipher_offset(2) + 500)
    donor = by_name["donor"].read_bytes()
    with open(by_name["appended"], "ab") as fh:
        fh.write(donor[ce.cipher_offset(2) : ce.cipher_offset(2) + rec])
    with open(by_name["swapped"], "r+b") as fh:
        fh.seek(ce.cipher_offset(1))
        fh.write(donor[ce.cipher_offset(1) : ce.cipher_offset(1) + rec])

    m = make_mount(sfs_cli, tmp_path)
    try:
        for n in sizes:
            if n == "fine":
                assert (m.mnt / n).read_bytes() == content[n]
                continue
            with pytest.raises(OSError) as e:
                (m.mnt / n).read_bytes()
            assert e.value.errno == errno.EIO, n
        with open(m.mnt / "drop1", "rb", buffering=0) as fh:  # before the cut: still served
            assert fh.read(2 * B) == content["drop1"][: 2 * B]
    finally:
        m.unmount()
    assert "Traceback" not in m.log.read_text()
    p = sfs_cli.run("fs", "check", str(m.backing), ok=False)
    assert p.returncode == 2, p.stderr
    found = {(d["path"], d["what"]) for d in json.loads(p.stdout)["damage"]}
    # The appended block is another file's: it fails too, and the old last block is "extended".
    assert found == {("/drop1", "truncated"), ("/drop2", "truncated"), ("/dropall", "truncated"),
                     ("/midcut", "block"), ("/appended", "extended"), ("/appended", "block"),
                     ("/swapped", "block")}


def _backing_by_size(backing: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """Backing file of each plaintext file, found by its size (the sizes are all different)."""
    found = {p.stat().st_size: p for p in backing.rglob("*")
             if p.is_file() and not p.name.startswith("sfs.")}
    assert len(set(sizes.values())) == len(sizes)
    return {n: found[ce.cipher_size(s)] for n, s in sizes.items()}


def test_errors_carry_their_errno() -> None:
    assert issubclass(DamagedFile, SfsError)
    assert DamagedFile(1, ce.BlockAuthError(0)).errno == errno.EIO
