"""LUKS1 encode/decode: frozen vectors, round trips, and images made by qemu-img."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from adapters.block import luks
from adapters.block.sector_crypto import sector_cipher
from tests.adapters.block.helpers import make_foreign_luks1
from tests.adapters.block.vectors import det_rand, load


@pytest.mark.parametrize("case", load("luks1_v1.json")["cases"], ids=lambda c: c["cipher"])
def test_frozen_vectors(case: dict[str, Any]) -> None:
    f = luks.format_luks(bytes.fromhex(case["masterKey"]), case["passphrase"].encode(),
                         case["cipher"], case["uuid"], reserved_sectors=case["reservedSectors"],
                         iterations=case["iterations"],
                         rand=det_rand(bytes.fromhex(case["randSeed"])))
    assert f.region[:luks.PHDR_SIZE].hex() == case["phdr"]
    assert len(f.region) == case["regionLength"]
    assert hashlib.sha256(f.region).hexdigest() == case["regionSha256"]
    h = luks.decode_header(bytes.fromhex(case["phdr"]))
    assert h.payload_offset == case["payloadOffset"] and h.uuid == case["uuid"]
    assert luks.encode_header(h).hex() == case["phdr"]
    read = lambda off, n: f.region[off:off + n]  # noqa: E731
    assert luks.unlock(h, read, case["passphrase"].encode()).hex() == case["masterKey"]
    with pytest.raises(luks.LuksError, match="no keyslot"):
        luks.unlock(h, read, b"wrong")


def test_af_split_merge_round_trip() -> None:
    key = os.urandom(64)
    split = luks.af_split(key, 40, "sha256")
    assert len(split) == 64 * 40
    assert luks.af_merge(split, 64, 40, "sha256") == key
    # One flipped bit anywhere in any stripe destroys the key: that is the AF's purpose.
    broken = bytearray(split)
    broken[3] ^= 1
    assert luks.af_merge(bytes(broken), 64, 40, "sha256") != key


def test_layout_matches_cryptsetup_and_leaves_the_seal_area() -> None:
    offsets, reserved, payload = luks.default_layout(64, 16)
    assert offsets == [8 + 504 * i for i in range(8)]
    assert reserved == 4040 and payload == 4096  # 1 MiB-aligned payload, as cryptsetup
    assert luks.default_layout(32, 16) == ([8 + 256 * i for i in range(8)], 2056, 4096)


@pytest.mark.parametrize("bad,match", [
    (b"x" * 592, "bad magic"),
    (b"LUKS\xba\xbe\x00\x02" + bytes(584), "version 2"),
    (b"LUKS", "too short"),
])
def test_decode_rejects_garbage(bad: bytes, match: str) -> None:
    with pytest.raises(luks.LuksError, match=match):
        luks.decode_header(bad)


def test_decode_rejects_corrupt_keyslot() -> None:
    f = luks.format_luks(os.urandom(64), b"pw", "aes-xts-plain64", "u", iterations=1000)
    hdr = bytearray(f.region[:luks.PHDR_SIZE])
    hdr[208:212] = b"\x12\x34\x56\x78"  # keyslot 0 state word
    with pytest.raises(luks.LuksError, match="keyslot 0"):
        luks.decode_header(bytes(hdr))


def test_reads_an_image_made_by_cryptsetup_and_written_by_qemu(tmp_path: Path) -> None:
    """Our decoder and sector cipher against other writers, not against ourselves."""
    img = tmp_path / "q.img"
    make_foreign_luks1(img, b"PASS")
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 4096", "--object",
                    "secret,id=s0,data=PASS", "--image-opts",
                    f"driver=luks,key-secret=s0,file.filename={img}"], check=True,
                   capture_output=True)
    raw = img.read_bytes()
    h = luks.decode_header(raw)
    assert (h.cipher, h.key_bytes, h.hash_spec) == ("aes-xts-plain64", 64, "sha256")
    mk = luks.unlock(h, lambda off, n: raw[off:off + n], b"PASS")
    plain = sector_cipher(h.cipher, mk).decrypt(0, raw[h.payload_bytes:h.payload_bytes + 4096])
    assert bytes(plain) == b"\x5a" * 4096
