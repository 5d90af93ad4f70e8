"""The on-disk format, without FUSE: frozen vectors, the frozen example filesystem, tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.file import contentenc as ce
from adapters.file.check import check_tree, read_tree
from adapters.file.config import ConfigError, decode_config, encode_config
from adapters.file.names import BadName, NameCipher, is_longname, longname_for

HERE = Path(__file__).parent
V = json.loads((HERE.parents[1] / "vectors" / "sfs_v1.json").read_text())
MASTER = bytes.fromhex(V["masterKey"])


def test_known_answer_blocks() -> None:
    fid = bytes.fromhex(V["fileId"])
    assert ce.encode_header(fid, version=1).hex() == V["header"]
    assert ce.decode_header(bytes.fromhex(V["header"])) == ce.FileHeader(1, fid)
    cipher = ce.FileCipher(MASTER, fid, version=1)
    for b in V["blocks"]:
        plain, rec = bytes.fromhex(b["plaintext"]), bytes.fromhex(b["record"])
        assert cipher.encrypt_blocks(b["block"], plain, bytes.fromhex(b["nonce"])) == rec
        assert cipher.decrypt_blocks(b["block"], rec) == plain
        with pytest.raises(ce.BlockAuthError):  # block number is bound
            cipher.decrypt_blocks(b["block"] + 1, rec)
        with pytest.raises(ce.BlockAuthError):  # file id is bound
            ce.FileCipher(MASTER, bytes(16), version=1).decrypt_blocks(b["block"], rec)
        with pytest.raises(ce.BlockAuthError):  # a version-1 block never reads as version 2
            ce.FileCipher(MASTER, fid).decrypt_blocks(b["block"], rec)


def test_known_answer_names_sizes_links_and_config() -> None:
    names = NameCipher(MASTER)
    iv = bytes.fromhex(V["dirIv"])
    for n in V["names"]:
        backing, long = names.backing_name(bytes.fromhex(n["name"]), iv)
        assert (backing, long) == (n["backing"], n["long"])
        enc = long if long is not None else backing
        assert names.decrypt_name(enc, iv) == bytes.fromhex(n["name"])
        assert len(backing) <= 255
    assert any(n["long"] for n in V["names"]) and any(not n["long"] for n in V["names"])
    for plain, cipher in V["sizes"]:
        assert ce.cipher_size(plain) == cipher and ce.plaintext_size(cipher) == plain
    s = V["symlink"]
    assert names.encrypt_target(s["target"].encode(), bytes.fromhex(s["nonce"])) == s["stored"]
    assert names.decrypt_target(s["stored"]) == s["target"].encode()
    cfg = decode_config(V["config"].encode())
    assert encode_config(cfg).decode() == V["config"]
    assert cfg.encryption_context() == {"sfs:filesystem": "0123456789abcdef0123456789abcdef"}


def test_frozen_example_filesystem_reads_and_checks(tmp_path: Path) -> None:
    info = json.loads((HERE / "example_fs_v1" / "expected.json").read_text())
    root = tmp_path / "example"
    shutil.copytree(HERE / "example_fs_v1" / "backing", root, symlinks=True)
    key = bytes.fromhex(info["masterKey"])
    tree = read_tree(str(root), key)
    got: dict[str, object] = {}
    for path, v in tree.items():
        if isinstance(v, bytes):
            got[path] = {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()}
        elif v[0] == "symlink":
            got[path] = {"symlink": v[1].decode()}
        else:
            got[path] = {"dir": True}
    assert got == info["entries"]
    report = check_tree(str(root), key)
    assert report.ok and report.files == 7 and report.symlinks == 1


def test_config_rejects_other_versions_and_garbage() -> None:
    doc = json.loads(V["config"])
    for bad in ({**doc, "version": 2}, {**doc, "format": "gocryptfs"}, {**doc, "fsId": "x"},
                {k: v for k, v in doc.items() if k != "sealedMasterKey"}):
        with pytest.raises(ConfigError):
            decode_config(json.dumps(bad).encode())
    with pytest.raises(ConfigError):
        decode_config(b"\x00not json")


def test_header_versions_and_short_records() -> None:
    with pytest.raises(ce.FormatError):
        ce.decode_header(b"\x03" + bytes(16))
    with pytest.raises(ce.FormatError):
        ce.decode_header(b"\x00" + bytes(16))
    with pytest.raises(ce.FormatError):
        ce.decode_header(b"\x01" + bytes(5))
    c = ce.FileCipher(MASTER, bytes(16))
    with pytest.raises(ce.BlockAuthError) as e:
        c.decrypt_blocks(4, bytes(20))  # shorter than nonce + tag
    assert e.value.block == 4
    assert c.decrypt_blocks(0, bytes(ce.CIPHER_BLOCK_SIZE)) == bytes(ce.BLOCK_SIZE)  # a hole


@given(data=st.binary(min_size=1, max_size=3 * ce.BLOCK_SIZE + 5), first=st.integers(0, 1 << 40),
       flip=st.integers(min_value=0))
def test_any_changed_byte_is_caught(data: bytes, first: int, flip: int) -> None:
    c = ce.FileCipher(MASTER, bytes(range(16)))
    rec = bytearray(c.encrypt_blocks(first, data))
    assert c.decrypt_blocks(first, bytes(rec)) == data
    i = flip % len(rec)
    rec[i] ^= 0x80
    with pytest.raises(ce.BlockAuthError) as e:
        c.decrypt_blocks(first, bytes(rec))
    assert e.value.block == first + i // ce.CIPHER_BLOCK_SIZE
    assert c.bad_blocks(first, bytes(rec)) == [first + i // ce.CIPHER_BLOCK_SIZE]


@given(size=st.integers(0, 1 << 50))
def test_size_arithmetic_round_trips(size: int) -> None:
    assert ce.plaintext_size(ce.cipher_size(size)) == size


@given(name=st.binary(min_size=1, max_size=255).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")))
def test_names_round_trip_and_fit(name: bytes) -> None:
    names = NameCipher(MASTER)
    backing, long = names.backing_name(name, bytes(16))
    assert len(backing) <= 255 and "." not in backing or is_longname(backing)
    enc = long or backing
    assert names.decrypt_name(enc, bytes(16)) == name
    if long:
        assert backing == longname_for(long)
        assert names.decrypt_longname(backing, long, bytes(16)) == name
    with pytest.raises(BadName):  # another directory's IV
        names.decrypt_name(enc, bytes([1]) + bytes(15))
