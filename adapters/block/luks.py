"""LUKS1 on-disk format: the phdr, keyslots, AF-splitter and master-key digest.

Pure: functions take and return bytes and never do I/O, so the format is testable against
frozen vectors and against images made by qemu-img and cryptsetup. Written from the LUKS1
on-disk format specification (version 1.2.3):

    offset  field            size
    0       magic            6     "LUKS\\xba\\xbe"
    6       version          2     1 (big-endian, like every integer here)
    8       cipher-name      32    "aes" | "sm4"
    40      cipher-mode      32    "xts-plain64"
    72      hash-spec        32    "sha256"
    104     payload-offset   4     in 512-byte sectors
    108     key-bytes        4     64 for aes-xts (two 256-bit keys), 32 for sm4-xts
    112     mk-digest        20    PBKDF2(master key, mk-digest-salt, mk-digest-iter)[:20]
    132     mk-digest-salt   32
    164     mk-digest-iter   4
    168     uuid             40    text, NUL-padded
    208     keyslots         8 x 48: active, iterations, salt[32], key-material-offset, stripes

A keyslot stores the master key AF-split into `stripes` pieces and encrypted with the volume's
cipher under PBKDF2(passphrase, slot salt, slot iterations), sector by sector from IV 0.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from adapters.block.errors import LuksError as LuksError  # re-exported: luks.LuksError
from adapters.block.sector_crypto import SECTOR_SIZE, sector_cipher

MAGIC = b"LUKS\xba\xbe"
VERSION = 1
PHDR_SIZE = 592
NUM_KEYSLOTS = 8
KEYSLOT_ACTIVE = 0x00AC71F3
KEYSLOT_DISABLED = 0x0000DEAD
DIGEST_SIZE = 20
SALT_SIZE = 32
STRIPES = 4000
# cryptsetup aligns keyslot material to 4 KiB and the payload to 1 MiB; we do the same, which
# also leaves the gap between the last keyslot and the payload that holds our seal records.
KEYSLOT_ALIGN_SECTORS = 8
PAYLOAD_ALIGN_SECTORS = 2048
# The passphrase is 256 bits from the KMS, so PBKDF2 stretching adds nothing against guessing;
# 1000 is the floor the LUKS1 spec and cryptsetup use, and it keeps every open fast.
DEFAULT_ITERATIONS = 1000

CIPHERS: dict[str, tuple[str, str, int]] = {
    # --cipher value: (cipher-name, cipher-mode, key-bytes)
    "aes-xts-plain64": ("aes", "xts-plain64", 64),
    "sm4-xts-plain64": ("sm4", "xts-plain64", 32),
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha1": hashes.SHA1, "sha512": hashes.SHA512,
}

_PHDR = struct.Struct(">6sH32s32s32sII20s32sI40s")
_SLOT = struct.Struct(">II32sII")
assert _PHDR.size + NUM_KEYSLOTS * _SLOT.size == PHDR_SIZE


@dataclass(frozen=True)
class KeySlot:
    active: bool
    iterations: int
    salt: bytes
    key_material_offset: int  # sectors from the start of the image
    stripes: int


@dataclass(frozen=True)
class LuksHeader:
    cipher_name: str
    cipher_mode: str
    hash_spec: str
    payload_offset: int  # sectors
    key_bytes: int
    mk_digest: bytes
    mk_digest_salt: bytes
    mk_digest_iter: int
    uuid: str
    keyslots: tuple[KeySlot, ...] = field(default=())

    @property
    def cipher(self) -> str:
        return f"{self.cipher_name}-{self.cipher_mode}"

    @property
    def payload_bytes(self) -> int:
        return self.payload_offset * SECTOR_SIZE

    def material_sectors(self, slot: KeySlot) -> int:
        return _ceil_div(self.key_bytes * slot.stripes, SECTOR_SIZE)

    @property
    def keyslot_area_end(self) -> int:
        """First byte after the material of every keyslot, active or not (bytes)."""
        end = PHDR_SIZE
        for s in self.keyslots:
            end = max(end, (s.key_material_offset + self.material_sectors(s)) * SECTOR_SIZE)
        return end


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _align(n: int, to: int) -> int:
    return _ceil_div(n, to) * to


def _text(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


def encode_header(h: LuksHeader) -> bytes:
    if len(h.keyslots) != NUM_KEYSLOTS:
        raise LuksError(f"a LUKS1 header has {NUM_KEYSLOTS} keyslots")
    out = _PHDR.pack(
        MAGIC, VERSION, h.cipher_name.encode(), h.cipher_mode.encode(), h.hash_spec.encode(),
        h.payload_offset, h.key_bytes, h.mk_digest, h.mk_digest_salt, h.mk_digest_iter,
        h.uuid.encode(),
    )
    for s in h.keyslots:
        out += _SLOT.pack(KEYSLOT_ACTIVE if s.active else KEYSLOT_DISABLED, s.iterations, s.salt,
                          s.key_material_offset, s.stripes)
    return out


def decode_header(data: bytes) -> LuksHeader:
    if len(data) < PHDR_SIZE:
        raise LuksError("too short for a LUKS1 header")
    (magic, version, cname, cmode, hspec, payload, key_bytes, digest, dsalt, diter,
     uuid) = _PHDR.unpack_from(data)
    if magic != MAGIC:
        raise LuksError("not a LUKS image (bad magic)")
    if version != VERSION:
        raise LuksError(f"LUKS version {version} is not supported (only LUKS1)")
    slots = []
    for i in range(NUM_KEYSLOTS):
        active, iters, salt, km_off, stripes = _SLOT.unpack_from(data, _PHDR.size + i * _SLOT.size)
        if active not in (KEYSLOT_ACTIVE, KEYSLOT_DISABLED):
            raise LuksError(f"keyslot {i} has a corrupt state word {active:#x}")
        slots.append(KeySlot(active == KEYSLOT_ACTIVE, iters, salt, km_off, stripes))
    h = LuksHeader(_text(cname), _text(cmode), _text(hspec), payload, key_bytes, digest, dsalt,
                   diter, _text(uuid), tuple(slots))
    if not 0 < key_bytes <= 128 or payload * SECTOR_SIZE < PHDR_SIZE:
        raise LuksError("LUKS header has impossible key size or payload offset")
    for i, s in enumerate(h.keyslots):
        if s.active and (s.stripes < 1 or s.stripes > 1 << 20 or s.iterations < 1
                         or (s.key_material_offset + h.material_sectors(s)) > payload):
            raise LuksError(f"keyslot {i} is corrupt")
    return h


# ------------------------------------------------------------------ primitives


def pbkdf2(hash_spec: str, secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    try:
        algo = _HASHES[hash_spec]()
    except KeyError:
        raise LuksError(f"hash {hash_spec!r} is not supported") from None
    return PBKDF2HMAC(algo, length, salt, iterations).derive(secret)


def _diffuse(block: bytes, hash_spec: str) -> bytes:
    """The AF diffusion: hash each digest-sized piece with its big-endian index in front."""
    hname = hash_spec
    size = hashlib.new(hname).digest_size
    out = bytearray()
    for i in range(_ceil_div(len(block), size)):
        piece = block[i * size:(i + 1) * size]
        out += hashlib.new(hname, struct.pack(">I", i) + piece).digest()[:len(piece)]
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def af_split(material: bytes, stripes: int, hash_spec: str,
             rand: Callable[[int], bytes] = os.urandom) -> bytes:
    n = len(material)
    d = bytes(n)
    out = bytearray()
    for _ in range(stripes - 1):
        s = rand(n)
        out += s
        d = _diffuse(_xor(d, s), hash_spec)
    out += _xor(d, material)
    return bytes(out)


def af_merge(split: bytes, key_bytes: int, stripes: int, hash_spec: str) -> bytes:
    if len(split) < key_bytes * stripes:
        raise LuksError("AF-split material is truncated")
    d = bytes(key_bytes)
    for i in range(stripes - 1):
        d = _diffuse(_xor(d, split[i * key_bytes:(i + 1) * key_bytes]), hash_spec)
    return _xor(d, split[(stripes - 1) * key_bytes:stripes * key_bytes])


def mk_digest(h: LuksHeader, master_key: bytes) -> bytes:
    return pbkdf2(h.hash_spec, master_key, h.mk_digest_salt, h.mk_digest_iter, DIGEST_SIZE)


# ------------------------------------------------------------------ format / unlock


@dataclass(frozen=True)
class Formatted:
    header: LuksHeader
    # The image bytes from offset 0 up to `header.keyslot_area_end`: phdr, then zero padding
    # and the material of keyslot 0 (the inactive slots' areas are zero).
    region: bytes = field(repr=False)


def default_layout(key_bytes: int, reserved_sectors: int) -> tuple[list[int], int, int]:
    """cryptsetup's LUKS1 layout: (keyslot offsets, reserved area start, payload offset).

    `reserved_sectors` are kept free after the last keyslot and before the payload; LUKS
    readers never look there, which is where the volume's seal records live.
    """
    slot_sectors = _align(_ceil_div(key_bytes * STRIPES, SECTOR_SIZE), KEYSLOT_ALIGN_SECTORS)
    first = _align(_ceil_div(PHDR_SIZE, SECTOR_SIZE), KEYSLOT_ALIGN_SECTORS)
    offsets = [first + i * slot_sectors for i in range(NUM_KEYSLOTS)]
    reserved = offsets[-1] + slot_sectors
    payload = _align(reserved + reserved_sectors, PAYLOAD_ALIGN_SECTORS)
    return offsets, reserved, payload


def format_luks(
    master_key: bytes,
    passphrase: bytes,
    cipher: str,
    uuid: str,
    *,
    reserved_sectors: int = 0,
    iterations: int = DEFAULT_ITERATIONS,
    rand: Callable[[int], bytes] = os.urandom,
) -> Formatted:
    """A LUKS1 header with `passphrase` in keyslot 0. `rand` is the seam for frozen vectors."""
    try:
        cname, cmode, key_bytes = CIPHERS[cipher]
    except KeyError:
        raise LuksError(f"cipher {cipher!r} is not supported; use one of {sorted(CIPHERS)}"
                        ) from None
    if len(master_key) != key_bytes:
        raise LuksError(f"{cipher} needs a {key_bytes}-byte master key")
    hash_spec = "sha256"
    offsets, _, payload = default_layout(key_bytes, reserved_sectors)
    slot_salt, digest_salt = rand(SALT_SIZE), rand(SALT_SIZE)
    slots = [KeySlot(i == 0, iterations if i == 0 else 0, slot_salt if i == 0 else bytes(SALT_SIZE),
                     off, STRIPES) for i, off in enumerate(offsets)]
    h = LuksHeader(cname, cmode, hash_spec, payload, key_bytes, b"", digest_salt, iterations,
                   uuid, tuple(slots))
    h = LuksHeader(**{**h.__dict__, "mk_digest": mk_digest(h, master_key)})
    split = af_split(master_key, STRIPES, hash_spec, rand)
    split += bytes(h.material_sectors(slots[0]) * SECTOR_SIZE - len(split))
    slot_key = pbkdf2(hash_spec, passphrase, slot_salt, iterations, key_bytes)
    material = sector_cipher(h.cipher, slot_key).encrypt(0, split)
    region = bytearray(h.keyslot_area_end)
    region[:PHDR_SIZE] = encode_header(h)
    start = offsets[0] * SECTOR_SIZE
    region[start:start + len(material)] = material
    return Formatted(h, bytes(region))


def unlock(h: LuksHeader, read: Callable[[int, int], bytes], passphrase: bytes) -> bytes:
    """The master key, from the first active keyslot that `passphrase` opens.

    `read(offset, length)` returns image bytes; the keyslot material is read through it.
    """
    for slot in h.keyslots:
        if not slot.active:
            continue
        sectors = h.material_sectors(slot)
        material = read(slot.key_material_offset * SECTOR_SIZE, sectors * SECTOR_SIZE)
        if len(material) != sectors * SECTOR_SIZE:
            raise LuksError("the image ends inside a keyslot")
        slot_key = pbkdf2(h.hash_spec, passphrase, slot.salt, slot.iterations, h.key_bytes)
        split = sector_cipher(h.cipher, slot_key).decrypt(0, material)
        candidate = af_merge(bytes(split), h.key_bytes, slot.stripes, h.hash_spec)
        if hmac.compare_digest(mk_digest(h, candidate), h.mk_digest):
            return candidate
    raise LuksError("no keyslot opens with this passphrase")

