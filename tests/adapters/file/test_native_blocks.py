"""The C block loop (gcm_blocks.c) against the pure per-block path and the frozen vectors."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.file import contentenc as ce
from adapters.file import native_blocks as nb

V = json.loads((Path(__file__).parents[2] / "vectors" / "sfs_v1.json").read_text())
MASTER = bytes.fromhex(V["masterKey"])
FID = bytes.fromhex(V["fileId"])
B = ce.BLOCK_SIZE


@pytest.fixture(scope="module")
def native() -> nb._Lib:
    lib = nb.native_library()
    if lib is None:
        pytest.skip("native block loop not built (`make deps`); `make test` requires it")
    return lib


@pytest.fixture
def fresh_native(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    nb.native_library.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    nb.native_library.cache_clear()


def both(file_id: bytes = FID, version: int = 1) -> tuple[ce.FileCipher, ce.FileCipher]:
    n = ce.FileCipher(MASTER, file_id, version)
    p = ce.FileCipher(MASTER, file_id, version, native=False)
    assert n.native is not None and p.native is None
    return n, p


def test_known_answer_blocks_through_the_native_loop(native: nb._Lib) -> None:
    cipher, _ = both()
    for b in V["blocks"]:
        plain, rec = bytes.fromhex(b["plaintext"]), bytes.fromhex(b["record"])
        assert cipher.native is not None
        assert cipher.native.encrypt(b["block"], cipher.tails, False, plain, 1,
                                     bytes.fromhex(b["nonce"])) == rec
        assert cipher.decrypt_blocks(b["block"], rec) == plain
        with pytest.raises(ce.BlockAuthError) as e:  # block number is bound
            cipher.decrypt_blocks(b["block"] + 1, rec)
        assert e.value.block == b["block"] + 1
        with pytest.raises(ce.BlockAuthError):  # file id is bound
            ce.FileCipher(MASTER, bytes(16)).decrypt_blocks(b["block"], rec)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5 * B + 100), first=st.integers(0, 2**40),
       seed=st.binary(min_size=16, max_size=16), version=st.sampled_from(ce.READABLE_VERSIONS),
       final=st.booleans())
def test_native_and_pure_give_the_same_records(size: int, first: int, seed: bytes,
                                               version: int, final: bool) -> None:
    if nb.native_library() is None:
        pytest.skip("native block loop not built (`make deps`); `make test` requires it")
    n, p = both(seed, version)
    plain = os.urandom(size)
    blocks = max(-(-size // B), 1 if final and version >= 2 else 0)
    nonces = os.urandom(ce.NONCE_LEN * blocks)
    rec = p.encrypt_blocks(first, plain, nonces, final=final)
    assert n.native is not None
    assert n.native.encrypt(first, n.tails, final and version >= 2, plain, blocks, nonces) == rec
    assert len(rec) == size + blocks * ce.BLOCK_OVERHEAD
    if rec or not (final and version >= 2):
        assert n.decrypt_blocks(first, rec, final) == plain == p.decrypt_blocks(first, rec, final)
    fresh = n.native.encrypt(first, n.tails, final and version >= 2, plain, blocks,
                             os.urandom(ce.NONCE_LEN * blocks))
    if fresh:
        assert p.decrypt_blocks(first, fresh, final) == plain
    if version >= 2 and rec:  # the final flag is bound: the other reading fails
        for c in (n, p):
            with pytest.raises(ce.BlockAuthError):
                c.decrypt_blocks(first, rec, not final)


@pytest.mark.parametrize("version", ce.READABLE_VERSIONS)
@pytest.mark.parametrize("final", [False, True])
@pytest.mark.parametrize("size", [nb._SPLIT_BLOCKS * B - 1, nb._SPLIT_BLOCKS * B,
                                  nb._SPLIT_BLOCKS * B + 1, (1 << 20) + 2 * B + 5])
def test_runs_sealed_in_two_halves_are_the_pure_records(native: nb._Lib, size: int,
                                                        final: bool, version: int) -> None:
    """Long runs are sealed on two threads; the records are the pure path's, byte for byte:
    each half keeps its blocks' numbers and nonces, and only the run's last block is final."""
    n, p = both(os.urandom(16), version)
    plain = os.urandom(size)
    blocks = -(-size // B)
    nonces = os.urandom(ce.NONCE_LEN * blocks)
    rec = p.encrypt_blocks(5, plain, nonces, final=final)
    dst = ctypes.create_string_buffer(len(rec) + 100)
    view = memoryview(bytearray(plain))  # writable: read where it lies, like FUSE's buffer
    assert n.encrypt_blocks_into(5, view, dst, final=final, nonces=nonces) == len(rec)
    assert dst.raw[: len(rec)] == rec
    assert n.decrypt_blocks(5, rec, final) == plain
    with pytest.raises(ValueError):  # no room: refused before any byte is written
        n.encrypt_blocks_into(5, plain, ctypes.create_string_buffer(len(rec) - 1))


def test_holes_tampering_and_short_records(native: nb._Lib) -> None:
    n, p = both()
    plain = os.urandom(3 * B + 10)
    rec = bytearray(n.encrypt_blocks(7, plain))
    hole = bytearray(rec)
    hole[ce.CIPHER_BLOCK_SIZE : 2 * ce.CIPHER_BLOCK_SIZE] = bytes(ce.CIPHER_BLOCK_SIZE)
    want = plain[:B] + bytes(B) + plain[2 * B :]
    assert n.decrypt_blocks(7, bytes(hole)) == want == p.decrypt_blocks(7, bytes(hole))
    for pos in (0, ce.NONCE_LEN, 2 * ce.CIPHER_BLOCK_SIZE + 100, len(rec) - 1):
        bad = bytearray(rec)
        bad[pos] ^= 1
        blk = 7 + pos // ce.CIPHER_BLOCK_SIZE
        for c in (n, p):
            with pytest.raises(ce.BlockAuthError) as e:
                c.decrypt_blocks(7, bytes(bad))
            assert e.value.block == blk
    short = bytes(rec[: 3 * ce.CIPHER_BLOCK_SIZE + ce.BLOCK_OVERHEAD])  # last record: no data
    for c in (n, p):
        with pytest.raises(ce.BlockAuthError) as e:
            c.decrypt_blocks(7, short)
        assert e.value.block == 10


def test_decrypt_into_writes_only_authenticated_plaintext(native: nb._Lib) -> None:
    n, _ = both()
    assert n.native is not None
    plain = os.urandom(2 * B)
    rec = bytearray(n.encrypt_blocks(0, plain))
    dst = ctypes.create_string_buffer(2 * B)
    assert n.native.decrypt_into(0, n.tails, False, bytes(rec), len(rec), dst) == 2 * B
    assert dst.raw == plain
    rec[-1] ^= 1
    dst = ctypes.create_string_buffer(b"\xaa" * (2 * B), 2 * B)
    with pytest.raises(nb.AuthFailed) as e:
        n.native.decrypt_into(0, n.tails, False, bytes(rec), len(rec), dst)
    assert e.value.block == 1
    assert dst.raw[B:] == bytes(B)  # the failed block's output is wiped, not left readable


def test_one_file_cipher_from_many_threads(native: nb._Lib) -> None:
    n, p = both()
    plain = os.urandom(64 * B)
    rec = p.encrypt_blocks(0, plain)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert n.decrypt_blocks(0, rec) == plain
                assert n.native is not None
                fresh = n.native.encrypt(0, n.tails, False, plain, 64, os.urandom(12 * 64))
                assert p.decrypt_blocks(0, fresh) == plain
        except (AssertionError, ce.FormatError, MemoryError) as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_required_native_library_is_loaded() -> None:
    """`make test` sets SSEGW_NATIVE_GCM=required: there the native build must be loaded."""
    if os.environ.get("SSEGW_NATIVE_GCM") != "required":
        pytest.skip("only `make test` (SSEGW_NATIVE_GCM=required) insists on the native build")
    assert nb.native_library() is not None


def test_missing_native_library_falls_back_with_a_warning(
        fresh_native: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fresh_native.setattr(nb, "NATIVE_LIBRARY", tmp_path / "missing.so")
    fresh_native.delenv("SSEGW_NATIVE_GCM", raising=False)
    with caplog.at_level(logging.WARNING, logger="ssegw.fs"):
        assert nb.native_library() is None
    assert "make deps" in caplog.text
    cipher = ce.FileCipher(MASTER, FID, 1)
    assert cipher.native is None
    b = V["blocks"][0]
    rec = cipher.encrypt_blocks(b["block"], bytes.fromhex(b["plaintext"]), bytes.fromhex(b["nonce"]))
    assert rec.hex() == b["record"]


def test_required_native_library_does_not_fall_back(fresh_native: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    fresh_native.setattr(nb, "NATIVE_LIBRARY", tmp_path / "missing.so")
    fresh_native.setenv("SSEGW_NATIVE_GCM", "required")
    with pytest.raises(RuntimeError, match="required"):
        nb.native_library()


def test_native_library_can_be_turned_off(fresh_native: pytest.MonkeyPatch) -> None:
    fresh_native.setenv("SSEGW_NATIVE_GCM", "off")
    assert nb.native_library() is None
    assert ce.FileCipher(MASTER, FID).native is None
