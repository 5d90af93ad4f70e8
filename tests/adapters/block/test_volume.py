"""Volumes on a real KMS (SoftHSM2 token): create, open, I/O, keys that refuse, re-keying."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from adapters.block import luks
from adapters.block.errors import VolumeError
from adapters.block.volume import (
    Volume,
    VolumeKeyError,
    create_volume,
    open_volume,
    parse_size,
    rekey_volume,
    unseal_passphrase,
    volume_info,
)
from adapters.block.volume_header import RECORD_SIZE
from kms_core.client.inprocess import InProcessKmsClient
from tests.adapters.block.helpers import make_foreign_luks1

MiB = 1 << 20


def test_create_is_sparse_luks1_under_the_ecs_default_key(tmp_path: Path, kms: Any, caller: Any,
                                                          client: InProcessKmsClient) -> None:
    image = tmp_path / "v.img"
    info = create_volume(image, 1 << 30, client)
    assert info.size == 1 << 30 and info.cipher == "aes-xts-plain64" and info.key_bytes == 64
    assert info.key_id == kms.service.describe_key(caller, "alias_ecs").key_id
    assert image.stat().st_size == info.payload_offset + (1 << 30)
    assert image.stat().st_blocks * 512 < 4 * MiB  # sparse: only the header region is written
    assert volume_info(image) == info
    with pytest.raises(VolumeError, match="exists"):
        create_volume(image, MiB, client)


def test_read_write_aligned_and_unaligned(volume: Volume) -> None:
    data = os.urandom(3 * MiB)
    volume.write(MiB, data)
    assert volume.read(MiB, len(data)) == data
    volume.write(MiB + 1000, b"hello, world", fua=True)  # partial sectors: read-modify-write
    want = bytearray(data)
    want[1000:1012] = b"hello, world"
    assert volume.read(MiB, len(data)) == want
    assert volume.read(MiB + 999, 14) == bytes(want[999:1013])
    volume.write_zeroes(MiB + 100, 5000)
    want[100:5100] = bytes(5000)
    assert volume.read(MiB, len(data)) == want
    volume.trim(0, MiB)  # contents undefined afterwards; must not touch the next sector
    assert volume.read(MiB, 512) == want[:512]
    volume.flush()
    with pytest.raises(VolumeError, match="beyond"):
        volume.read(volume.size - 512, 1024)
    with pytest.raises(VolumeError, match="beyond"):
        volume.write(volume.size, b"x")


def test_large_requests_are_chunked(volume: Volume) -> None:
    data = os.urandom(9 * MiB + 512)
    volume.write(512, data)
    assert volume.read(512, len(data)) == data
    volume.write_zeroes(0, 10 * MiB)
    assert volume.read(0, 10 * MiB) == bytes(10 * MiB)


def test_image_holds_no_plaintext(tmp_path: Path, client: InProcessKmsClient) -> None:
    image = tmp_path / "v.img"
    create_volume(image, 8 * MiB, client)
    v = open_volume(image, client)
    marker = b"PLAINTEXT-MARKER-" * 64
    v.write(0, marker * 8)
    v.write(4 * MiB, bytes(MiB))  # zeros, too, must not show as zeros
    v.flush()
    v.close()
    raw = image.read_bytes()
    assert b"PLAINTEXT-MARKER" not in raw
    pw = unseal_passphrase(image, client)
    assert pw not in raw and bytes.fromhex(pw.decode()) not in raw
    payload = raw[volume_info(image).payload_offset:]
    assert payload[4 * MiB:4 * MiB + 4096] != bytes(4096)


def test_disabled_or_deleted_key_means_the_volume_does_not_open(
        tmp_path: Path, kms: Any, caller: Any, client: InProcessKmsClient) -> None:
    key = kms.service.create_key(caller, alias="disk-key").key_id
    image = tmp_path / "v.img"
    create_volume(image, MiB, client, key="disk-key")
    open_volume(image, client).close()
    kms.service.disable_key(caller, key)
    with pytest.raises(VolumeKeyError, match="disabled") as e:
        open_volume(image, client)
    assert e.value.code == "Disabled" and str(image) in e.value.message
    with pytest.raises(VolumeKeyError):
        unseal_passphrase(image, client)
    kms.service.enable_key(caller, key)
    kms.service.schedule_key_deletion(caller, key, 7)
    with pytest.raises(VolumeKeyError) as e:
        open_volume(image, client)
    assert e.value.code == "InvalidState" and "PendingDeletion" in e.value.message
    # Creating on a refused key writes nothing.
    with pytest.raises(VolumeKeyError):
        create_volume(tmp_path / "w.img", MiB, client, key=key)
    assert not (tmp_path / "w.img").exists()


def test_rekey_moves_the_seal_to_another_key(tmp_path: Path, kms: Any, caller: Any,
                                              client: InProcessKmsClient) -> None:
    image = tmp_path / "v.img"
    create_volume(image, MiB, client)
    v = open_volume(image, client)
    v.write(0, b"k" * 4096)
    v.close()
    before = unseal_passphrase(image, client)
    header_before = image.read_bytes()[:luks.PHDR_SIZE]
    new_key = kms.service.create_key(caller, alias="new").key_id
    info = rekey_volume(image, client, "new")
    assert info.key_id == new_key and info.generation == 2
    assert unseal_passphrase(image, client) == before  # same passphrase, new seal
    assert image.read_bytes()[:luks.PHDR_SIZE] == header_before  # LUKS untouched
    # The default key no longer matters: disabling the new one closes the volume.
    kms.service.disable_key(caller, new_key)
    with pytest.raises(VolumeKeyError, match="disabled"):
        open_volume(image, client)
    kms.service.enable_key(caller, new_key)
    back = rekey_volume(image, client, None)
    assert back.key_id == kms.service.describe_key(caller, "alias_ecs").key_id
    assert back.generation == 3
    v = open_volume(image, client)
    assert v.read(0, 4096) == b"k" * 4096
    v.close()


def test_seal_is_bound_to_the_volume_uuid(tmp_path: Path, client: InProcessKmsClient) -> None:
    """Pasting one volume's seal record into another volume must not open it."""
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    create_volume(a, MiB, client)
    create_volume(b, MiB, client)
    area = -(-luks.default_layout(64, 16)[1] * 512 // RECORD_SIZE) * RECORD_SIZE
    with open(a, "rb") as fa, open(b, "r+b") as fb:
        fa.seek(area)
        fb.seek(area)
        fb.write(fa.read(2 * RECORD_SIZE))
    with pytest.raises(VolumeError, match="another volume"):
        open_volume(b, client)


def test_torn_seal_copy_still_opens(tmp_path: Path, client: InProcessKmsClient) -> None:
    image = tmp_path / "v.img"
    create_volume(image, MiB, client)
    area = luks.default_layout(64, 16)[1] * 512
    with open(image, "r+b") as f:
        f.seek(area + 100)
        f.write(b"\xff" * 50)  # copy A corrupt; copy B intact
    open_volume(image, client).close()
    with open(image, "r+b") as f:
        f.seek(area + RECORD_SIZE + 100)
        f.write(b"\xff" * 50)
    with pytest.raises(VolumeError, match="no valid seal record"):
        open_volume(image, client)


def test_sm4_volume(tmp_path: Path, client: InProcessKmsClient) -> None:
    image = tmp_path / "v.img"
    info = create_volume(image, MiB, client, cipher="sm4-xts-plain64")
    assert info.cipher == "sm4-xts-plain64" and info.key_bytes == 32
    v = open_volume(image, client)
    v.write(512, b"s" * 8192)
    v.close()
    v = open_volume(image, client)
    assert v.read(512, 8192) == b"s" * 8192
    v.close()


def test_foreign_or_broken_images_are_refused(tmp_path: Path, client: InProcessKmsClient) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(MiB))
    with pytest.raises(VolumeError, match="not a LUKS"):
        open_volume(plain, client)
    with pytest.raises(VolumeError, match="does not exist"):
        volume_info(tmp_path / "nope.img")
    q = tmp_path / "q.img"
    make_foreign_luks1(q, b"P")  # a LUKS1 image, but not ours: no seal record
    with pytest.raises(VolumeError, match="not an ssegw volume"):
        volume_info(q)
    # A header whose keyslots reach the payload (qemu-img's layout) has no room for one.
    h = luks.decode_header(q.read_bytes()[:luks.PHDR_SIZE])
    tight = luks.LuksHeader(**{**h.__dict__, "payload_offset": 4040})
    q.write_bytes(luks.encode_header(tight) + bytes(4 << 20))
    with pytest.raises(VolumeError, match="not made by ssegw"):
        volume_info(q)


@pytest.mark.parametrize("text,size", [("64M", 64 * MiB), ("1G", 1 << 30), ("1GiB", 1 << 30),
                                       ("4096", 4096), ("2t", 2 << 40)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "100", "-1M", "0"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(VolumeError):
        parse_size(text)
