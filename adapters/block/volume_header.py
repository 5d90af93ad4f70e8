"""The seal record: the KMS-sealed LUKS passphrase, kept inside the image where LUKS ignores it.

Where: LUKS1 readers (cryptsetup, qemu, nbdkit) read the 592-byte phdr and the material of
active keyslots and never anything else before the payload offset. Our images reserve
`RESERVED_SECTORS` right after the eighth keyslot's area (cryptsetup would leave that gap for
payload alignment anyway) and put two copies of this record there, A at the start of the area
and B 4 KiB later. Keeping the record inside the image (not in a sidecar) means copying,
moving or snapshotting the image can never separate a volume from the key that opens it.

Two copies make re-sealing crash-safe: `rekey` writes the copy holding the older generation
first and syncs, then the other one; a torn write leaves one valid copy, and readers take the
valid copy with the highest generation.

Layout (big-endian), padded with zeros to RECORD_SIZE:

    magic "SSEGWVOL" | version u8 = 1 | generation u64 | product (u8 len + ascii)
    | key id (u16 len + utf-8) | volume uuid (u8 len + ascii) | sealed blob (u32 len + bytes)
    | SHA-256 of everything before it (32)
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from adapters.block.errors import SealRecordError as SealRecordError  # re-exported

MAGIC = b"SSEGWVOL"
VERSION = 1
RECORD_SIZE = 4096
COPIES = 2
RESERVED_SECTORS = RECORD_SIZE * COPIES // 512


@dataclass(frozen=True)
class SealRecord:
    generation: int
    product: str
    key_id: str
    volume_uuid: str
    sealed: bytes = field(repr=False)

    @property
    def context(self) -> dict[str, str]:
        """The encryption context that binds the sealed passphrase to this one volume."""
        return context_for(self.volume_uuid)


def context_for(volume_uuid: str) -> dict[str, str]:
    return {"ssegw:volume": volume_uuid}


def encode_seal_record(r: SealRecord) -> bytes:
    product, key_id, uuid = r.product.encode(), r.key_id.encode(), r.volume_uuid.encode()
    if len(product) > 255 or len(uuid) > 255 or len(key_id) > 0xFFFF:
        raise SealRecordError("seal record field too long")
    body = (MAGIC + struct.pack(">BQ", VERSION, r.generation)
            + struct.pack(">B", len(product)) + product
            + struct.pack(">H", len(key_id)) + key_id
            + struct.pack(">B", len(uuid)) + uuid
            + struct.pack(">I", len(r.sealed)) + r.sealed)
    body += hashlib.sha256(body).digest()
    if len(body) > RECORD_SIZE:
        raise SealRecordError("sealed passphrase does not fit the seal record")
    return body + bytes(RECORD_SIZE - len(body))


def decode_seal_record(data: bytes) -> SealRecord:
    """One copy; raises SealRecordError when it is absent, torn or of another version."""
    if data[:len(MAGIC)] != MAGIC:
        raise SealRecordError("no seal record")
    try:
        pos = len(MAGIC)
        version, generation = struct.unpack_from(">BQ", data, pos)
        pos += 9
        if version != VERSION:
            raise SealRecordError(f"seal record version {version} is not supported")
        fields: list[bytes] = []
        for fmt in (">B", ">H", ">B", ">I"):
            (n,) = struct.unpack_from(fmt, data, pos)
            pos += struct.calcsize(fmt)
            if pos + n > len(data):
                raise SealRecordError("seal record is truncated")
            fields.append(data[pos:pos + n])
            pos += n
        digest = data[pos:pos + 32]
    except struct.error:
        raise SealRecordError("seal record is truncated") from None
    if not hmac.compare_digest(hashlib.sha256(data[:pos]).digest(), digest):
        raise SealRecordError("seal record checksum mismatch (torn or corrupt)")
    product, key_id, uuid, sealed = fields
    return SealRecord(generation, product.decode(), key_id.decode(), uuid.decode(), bytes(sealed))


def newest(copies: list[bytes]) -> SealRecord:
    """The valid copy with the highest generation among the stored copies."""
    found = []
    for c in copies:
        try:
            found.append(decode_seal_record(c))
        except SealRecordError:
            continue
    if not found:
        raise SealRecordError("the image has no valid seal record (not an ssegw volume?)")
    return max(found, key=lambda r: r.generation)
