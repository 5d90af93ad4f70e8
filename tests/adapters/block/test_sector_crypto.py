"""XTS-plain64 sector crypto: every batched implementation against `cryptography`'s XTS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.block import sector_crypto as sc
from adapters.block.sector_crypto import EcbXex, NativeXts, OpenSslXts, _libcrypto, sector_cipher


def reference_xts(key: bytes, first: int, data: bytes, encrypt: bool = True) -> bytes:
    """One fresh Cipher per sector: slow, obviously right."""
    out = b""
    for i in range(len(data) // 512):
        c = Cipher(algorithms.AES(key), modes.XTS((first + i).to_bytes(16, "little")))
        ctx = c.encryptor() if encrypt else c.decryptor()
        out += ctx.update(data[i * 512:(i + 1) * 512]) + ctx.finalize()
    return out


def gf_mul_alpha(t: bytes) -> bytes:
    x = int.from_bytes(t, "little") << 1
    if x >> 128:
        x = (x ^ 0x87) & ((1 << 128) - 1)
    return x.to_bytes(16, "little")


def reference_sm4_xts(key: bytes, first: int, data: bytes) -> bytes:
    """IEEE P1619 XEX with SM4, block by block."""
    e1 = Cipher(algorithms.SM4(key[:16]), modes.ECB()).encryptor()
    e2 = Cipher(algorithms.SM4(key[16:]), modes.ECB()).encryptor()
    out = b""
    for i in range(len(data) // 512):
        t = e2.update((first + i).to_bytes(16, "little"))
        for j in range(32):
            blk = data[i * 512 + 16 * j:i * 512 + 16 * j + 16]
            x = bytes(a ^ b for a, b in zip(blk, t, strict=True))
            out += bytes(a ^ b for a, b in zip(e1.update(x), t, strict=True))
            t = gf_mul_alpha(t)
    return out


def native() -> sc._NativeLib:
    lib = sc.native_library()
    if lib is None:
        pytest.skip("native sector loop not built (`make deps`); `make test` requires it")
    return lib


@pytest.fixture
def small_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split batches of a few sectors, so the threaded path runs on small test data."""
    monkeypatch.setattr(sc, "SPLIT_MIN_SECTORS", 4)


@pytest.mark.parametrize("keylen", [32, 64])
@pytest.mark.parametrize("first", [0, 1, 4039, (1 << 40) + 7, (1 << 64) - 37])
def test_aes_implementations_match_reference(keylen: int, first: int, small_split: None) -> None:
    key, data = os.urandom(keylen), os.urandom(512 * 37)
    want = reference_xts(key, first, data)
    lib = _libcrypto()
    assert lib is not None, "libcrypto must load here"
    impls: list[sc.SectorCipher] = [OpenSslXts(key, lib), EcbXex(algorithms.AES, key)]
    # 37 sectors over 1, 2 and 3 threads (uneven parts, the last one shorter), through the
    # provider's XTS functions and through EVP. Without the build the fallbacks still run
    # here; test_native_loop_is_what_make_test_runs is what insists on the build.
    if (lib_native := sc.native_library()) is not None:
        impls += [NativeXts(key, lib_native, split=n, direct=d)
                  for n in (1, 2, 3) for d in (True, False)]
    for impl in impls:
        assert bytes(impl.encrypt(first, data)) == want, type(impl).__name__
        assert bytes(impl.decrypt(first, want)) == data, type(impl).__name__
        # bytearray and memoryview inputs take other paths to the C buffer
        assert bytes(impl.encrypt(first, bytearray(data))) == want
        assert bytes(impl.encrypt(first, memoryview(data))) == want
        assert bytes(impl.encrypt(first, memoryview(bytearray(data))[:512 * 5])) == want[:512 * 5]


def test_native_loop_is_what_make_test_runs() -> None:
    """`make test` sets SSEGW_NATIVE_XTS=required: there the native build must be loaded and
    be what volumes get, or the whole suite would silently test the slow fallback."""
    if os.environ.get("SSEGW_NATIVE_XTS") != "required":
        pytest.skip("only `make test` (SSEGW_NATIVE_XTS=required) insists on the native build")
    assert sc.native_library() is not None
    c = sector_cipher("aes-xts-plain64", os.urandom(64))
    assert isinstance(c, NativeXts)
    assert c.direct, "OpenSSL 3's default provider offers its XTS functions: expected in use"


@pytest.fixture
def fresh_native(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    sc.native_library.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    sc.native_library.cache_clear()


def test_missing_native_library_falls_back_with_a_warning(
        fresh_native: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fresh_native.setattr(sc, "NATIVE_LIBRARY", sc.NATIVE_LIBRARY.with_name("missing.so"))
    fresh_native.delenv("SSEGW_NATIVE_XTS", raising=False)
    key, data = os.urandom(64), os.urandom(512 * 3)
    with caplog.at_level("WARNING", logger="ssegw.block"):
        c = sector_cipher("aes-xts-plain64", key)
    assert isinstance(c, OpenSslXts)
    assert "make deps" in caplog.text
    assert bytes(c.encrypt(5, data)) == reference_xts(key, 5, data)


def test_required_native_library_does_not_fall_back(fresh_native: pytest.MonkeyPatch) -> None:
    fresh_native.setattr(sc, "NATIVE_LIBRARY", sc.NATIVE_LIBRARY.with_name("missing.so"))
    fresh_native.setenv("SSEGW_NATIVE_XTS", "required")
    with pytest.raises(RuntimeError, match="required"):
        sector_cipher("aes-xts-plain64", os.urandom(64))


def test_native_library_can_be_turned_off(fresh_native: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    fresh_native.setenv("SSEGW_NATIVE_XTS", "off")
    with caplog.at_level("WARNING", logger="ssegw.block"):
        assert isinstance(sector_cipher("aes-xts-plain64", os.urandom(64)), OpenSslXts)
    assert not caplog.text


def test_native_refuses_bad_keys_and_sector_ranges() -> None:
    lib = native()
    with pytest.raises(ValueError, match="32- or 64-byte"):
        NativeXts(os.urandom(48), lib)
    for direct in (True, False):
        with pytest.raises(ValueError, match="halves must differ"):
            NativeXts(bytes(32) * 2, lib, direct=direct)
    c = NativeXts(os.urandom(64), lib)
    with pytest.raises(ValueError, match="out of range"):
        c.encrypt((1 << 64) - 1, bytes(1024))  # the second sector would wrap plain64
    with pytest.raises(ValueError, match="out of range"):
        c.encrypt(-1, bytes(512))


@pytest.mark.parametrize("direct", [True, False])
def test_native_threads_each_use_their_own_context(direct: bool, small_split: None) -> None:
    """Many threads on one cipher at once, split batches included: OpenSSL contexts are not
    thread-safe, so a shared one would mix tweaks between calls."""
    from concurrent.futures import ThreadPoolExecutor

    key = os.urandom(64)
    c = NativeXts(key, native(), split=2, direct=direct)
    jobs = [(i * 1000, os.urandom(512 * (1 + i % 24))) for i in range(64)]
    want = [reference_xts(key, first, data) for first, data in jobs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: bytes(c.encrypt(*job)), jobs))
        back = list(pool.map(lambda i: bytes(c.decrypt(jobs[i][0], want[i])), range(len(jobs))))
    assert got == want
    assert back == [data for _, data in jobs]


def test_split_after_fork(small_split: None) -> None:
    """workers.py forks after the volume is open; a helper pool made before the fork has no
    threads in the child, which must make its own instead of waiting forever."""
    import time

    key, data = os.urandom(64), os.urandom(512 * 16)
    c = NativeXts(key, native(), split=2)
    want = bytes(c.encrypt(3, data))  # the parent's pool exists from here on
    pid = os.fork()
    if pid == 0:
        os._exit(0 if bytes(c.encrypt(3, data)) == want else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child never finished a split batch")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_sm4_xts_matches_blockwise_reference() -> None:
    key, data = os.urandom(32), os.urandom(512 * 5)
    c = sector_cipher("sm4-xts-plain64", key)
    ct = c.encrypt(9, data)
    assert ct == reference_sm4_xts(key, 9, data)
    assert c.decrypt(9, ct) == data


def test_each_sector_has_its_own_tweak() -> None:
    c = sector_cipher("aes-xts-plain64", os.urandom(64))
    ct = c.encrypt(0, bytes(1024))
    assert ct[:512] != ct[512:]  # same plaintext, different sectors
    assert c.encrypt(1, bytes(512)) == ct[512:]


def test_refuses_partial_sectors_and_bad_specs() -> None:
    c = sector_cipher("aes-xts-plain64", os.urandom(64))
    with pytest.raises(ValueError, match="multiple of 512"):
        c.encrypt(0, b"x" * 100)
    with pytest.raises(ValueError, match="unsupported"):
        sector_cipher("aes-cbc-essiv:sha256", os.urandom(32))
    assert c.encrypt(5, b"") == b""


# ------------------------------------------------------------------ the frozen vectors


def aes_implementations(key: bytes) -> dict[str, sc.SectorCipher]:
    lib = _libcrypto()
    assert lib is not None
    return {"native": NativeXts(key, native()), "native-split": NativeXts(key, native(), split=2),
            "native-evp": NativeXts(key, native(), direct=False),
            "ctypes-loop": OpenSslXts(key, lib), "ecb-xex": EcbXex(algorithms.AES, key)}


@pytest.mark.parametrize("impl", ["native", "native-split", "native-evp", "ctypes-loop", "ecb-xex"])
def test_frozen_luks_vector_with_each_aes_implementation(
        impl: str, small_split: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keyslot material of luks1_v1.json is AES-XTS-plain64 output (500 sectors under
    the PBKDF2 slot key): every implementation must rebuild the region byte for byte."""
    import hashlib

    from adapters.block import luks
    from tests.adapters.block.vectors import det_rand, load

    case = next(c for c in load("luks1_v1.json")["cases"] if c["cipher"] == "aes-xts-plain64")
    monkeypatch.setattr(luks, "sector_cipher", lambda _spec, key: aes_implementations(key)[impl])
    f = luks.format_luks(bytes.fromhex(case["masterKey"]), case["passphrase"].encode(),
                         case["cipher"], case["uuid"], reserved_sectors=case["reservedSectors"],
                         iterations=case["iterations"],
                         rand=det_rand(bytes.fromhex(case["randSeed"])))
    assert hashlib.sha256(f.region).hexdigest() == case["regionSha256"]
    h = luks.decode_header(f.region)
    mk = luks.unlock(h, lambda off, n: f.region[off:off + n], case["passphrase"].encode())
    assert mk.hex() == case["masterKey"]


def test_volume_from_both_frozen_vectors_through_the_native_loop(tmp_path: Path) -> None:
    """An image put together from luks1_v1.json (AES case) and volume_seal_v1.json (they share
    the volume UUID): `volume info` reads it, and what `Volume` writes through the native
    loop, split across threads for the big write, is `cryptography`'s XTS-plain64 on disk."""
    from adapters.block import luks
    from adapters.block.volume import Volume, _seal_area, volume_info
    from adapters.block.volume_header import COPIES, RECORD_SIZE, SealRecord, encode_seal_record
    from tests.adapters.block.vectors import det_rand, load

    case = next(c for c in load("luks1_v1.json")["cases"] if c["cipher"] == "aes-xts-plain64")
    seal = load("volume_seal_v1.json")
    f = luks.format_luks(bytes.fromhex(case["masterKey"]), case["passphrase"].encode(),
                         case["cipher"], case["uuid"], reserved_sectors=case["reservedSectors"],
                         iterations=case["iterations"],
                         rand=det_rand(bytes.fromhex(case["randSeed"])))
    record = encode_seal_record(SealRecord(seal["generation"], seal["product"], seal["keyId"],
                                           seal["volumeUuid"], bytes.fromhex(seal["sealed"])))
    payload_size = 4 << 20
    image = tmp_path / "vectors.img"
    with open(image, "wb") as out:
        out.write(f.region)
        for i in range(COPIES):
            out.seek(_seal_area(f.header) + i * RECORD_SIZE)
            out.write(record)
        out.truncate(f.header.payload_bytes + payload_size)
    info = volume_info(image)
    assert (info.uuid, info.key_id, info.generation) == (seal["volumeUuid"], seal["keyId"], 7)
    assert info.payload_offset == case["payloadOffset"] * 512 and info.size == payload_size

    mk = bytes.fromhex(case["masterKey"])
    fd = os.open(image, os.O_RDWR)
    vol = Volume(image, fd, f.header, NativeXts(mk, native(), split=2), read_only=False)
    try:
        big = os.urandom(2 << 20)  # 4096 sectors: above SPLIT_MIN_SECTORS, so split
        vol.write(1 << 20, big)
        vol.write(512 * 3 + 100, b"partial sector")  # read-modify-write of one sector
        raw = image.read_bytes()[info.payload_offset:]
        assert raw[1 << 20:3 << 20] == reference_xts(mk, 2048, big)
        # The sector was a hole: its plaintext is the decryption of zeros, patched.
        sector3 = bytearray(reference_xts(mk, 3, bytes(512), encrypt=False))
        sector3[100:114] = b"partial sector"
        assert raw[512 * 3:512 * 4] == reference_xts(mk, 3, bytes(sector3))
        assert vol.read(512 * 3 + 100, 14) == b"partial sector"
        assert bytes(vol.read(1 << 20, 2 << 20)) == big
    finally:
        vol.close()


@pytest.mark.parametrize("spec,size", [("sm4-xts-plain64", 32), ("aes-xts-plain64", 64), ("aes-xts-plain64", 32)])
def test_every_xts_refuses_a_key_with_equal_halves(spec: str, size: int) -> None:
    half = os.urandom(size // 2)
    for prefer_openssl in (True, False):
        with pytest.raises(ValueError, match="halves must differ"):
            sector_cipher(spec, half + half, prefer_openssl=prefer_openssl)
    with pytest.raises(ValueError, match="halves must differ"):
        EcbXex(algorithms.SM4 if spec.startswith("sm4") else algorithms.AES, half + half)
    sector_cipher(spec, half + os.urandom(size // 2))  # one differing half is enough
