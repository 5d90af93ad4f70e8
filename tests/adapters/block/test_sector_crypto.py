"""XTS-plain64 sector crypto: both batched implementations against `cryptography`'s XTS."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from adapters.block.sector_crypto import EcbXex, OpenSslXts, _libcrypto, sector_cipher


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


@pytest.mark.parametrize("keylen", [32, 64])
@pytest.mark.parametrize("first", [0, 1, 4039, (1 << 40) + 7])
def test_aes_implementations_match_reference(keylen: int, first: int) -> None:
    key, data = os.urandom(keylen), os.urandom(512 * 37)
    want = reference_xts(key, first, data)
    lib = _libcrypto()
    assert lib is not None, "libcrypto must load here: the fast path is what we ship"
    for impl in (OpenSslXts(key, lib), EcbXex(algorithms.AES, key)):
        assert bytes(impl.encrypt(first, data)) == want, type(impl).__name__
        assert bytes(impl.decrypt(first, want)) == data, type(impl).__name__
        # bytearray and memoryview inputs take other paths to the C buffer
        assert bytes(impl.encrypt(first, bytearray(data))) == want
        assert bytes(impl.encrypt(first, memoryview(data))) == want


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
