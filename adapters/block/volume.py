"""Encrypted volumes: a LUKS1 image whose random passphrase is sealed by the KMS.

Create: the KMS makes a 256-bit data key under the volume's CMK (`alias_ecs` or the user's
key) with the LUKS UUID as encryption context; its hex form is the LUKS passphrase of keyslot
0, and the sealed copy goes into the seal record (`volume_header`). Open: the KMS unseals the
passphrase (an audited decrypt), the passphrase opens keyslot 0, the master key drives the
sector cipher. Standard tools open the same image with the passphrase from `passphrase()`.

`Volume` is the byte-addressed view of the payload that the NBD server exports. Writes are
encrypted and `pwrite`n before they are acknowledged; `flush` is `fdatasync` of the image, so
a flush on any connection (or any worker process) covers every write acknowledged before it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import uuid as uuidlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from adapters.block import luks
from adapters.block.errors import LuksError, ReadOnlyError, SealRecordError, TruncatedImageError, VolumeError
from adapters.block.sector_crypto import SECTOR_SIZE, Buffer, NativeXts, SectorCipher, sector_cipher
from adapters.block.volume_header import (
    COPIES,
    RECORD_SIZE,
    RESERVED_SECTORS,
    SealRecord,
    context_for,
    decode_seal_record,
    encode_seal_record,
    newest,
)
from kms_core.client import KmsClient, KmsError

PRODUCT = "ecs"
DEFAULT_CIPHER = "aes-xts-plain64"
# Large requests are processed in pieces so a 32 MiB write or a 1 TiB write-zeroes never
# holds more than a few MiB of plaintext and ciphertext at once.
CHUNK = 4 << 20


class VolumeKeyError(VolumeError):
    """The KMS refused to unseal (or seal) the volume's passphrase: the volume stays closed."""

    def __init__(self, message: str, kms_error: KmsError) -> None:
        super().__init__(message)
        self.code = kms_error.code
        self.kms_error = kms_error


def passphrase_from_data_key(data_key: bytes) -> bytes:
    """The LUKS passphrase for a data key: hex, so it is safe on any command line or prompt."""
    return data_key.hex().encode("ascii")


def parse_size(text: str) -> int:
    """'64M', '1G', '512K', '1T' (powers of 1024) or plain bytes; a multiple of 512."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        size = int(t) * mult
    except ValueError:
        raise VolumeError(f"cannot read size {text!r}; use e.g. 64M, 10G or bytes") from None
    if size <= 0 or size % SECTOR_SIZE:
        raise VolumeError(f"volume size must be a positive multiple of {SECTOR_SIZE} bytes")
    return size


@dataclass(frozen=True)
class VolumeInfo:
    image: str
    uuid: str
    cipher: str
    key_bytes: int
    payload_offset: int  # bytes
    size: int  # bytes of payload
    key_id: str
    product: str
    generation: int
    active_keyslots: tuple[int, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "image": self.image, "uuid": self.uuid, "format": "LUKS1", "cipher": self.cipher,
            "keyBits": self.key_bytes * 8, "payloadOffset": self.payload_offset,
            "size": self.size, "cmkUuid": self.key_id, "product": self.product,
            "sealGeneration": self.generation, "activeKeyslots": list(self.active_keyslots),
        }


def _seal_area(h: luks.LuksHeader) -> int:
    """Byte offset of the seal records: after the last keyslot, 4 KiB aligned."""
    start = -(-h.keyslot_area_end // RECORD_SIZE) * RECORD_SIZE
    if start + COPIES * RECORD_SIZE > h.payload_bytes:
        raise VolumeError("this LUKS image has no reserved area: it was not made by ssegw volume")
    return start


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise TruncatedImageError("the image is truncated")
    return data


def _read_header(fd: int) -> tuple[luks.LuksHeader, int, list[bytes]]:
    try:
        h = luks.decode_header(_pread_exact(fd, luks.PHDR_SIZE, 0))
    except LuksError as e:
        raise VolumeError(str(e)) from None
    area = _seal_area(h)
    copies = [_pread_exact(fd, RECORD_SIZE, area + i * RECORD_SIZE) for i in range(COPIES)]
    return h, area, copies


def _record(h: luks.LuksHeader, copies: list[bytes]) -> SealRecord:
    try:
        rec = newest(copies)
    except SealRecordError as e:
        raise VolumeError(str(e)) from None
    if rec.volume_uuid != h.uuid:
        raise VolumeError("the seal record belongs to another volume (UUID mismatch)")
    return rec


def _kms_call_failed(image: Path, what: str, e: KmsError) -> VolumeKeyError:
    return VolumeKeyError(f"volume {image} {what}: {e.message} ({e.code})", e)


def create_volume(
    image: Path,
    size: int,
    client: KmsClient,
    *,
    key: str | None = None,
    cipher: str = DEFAULT_CIPHER,
    iterations: int = luks.DEFAULT_ITERATIONS,
) -> VolumeInfo:
    """A new sparse image; refuses to overwrite. Asks the KMS first, so a refused key writes
    nothing."""
    if cipher not in luks.CIPHERS:
        raise VolumeError(f"cipher {cipher!r} is not supported; use one of {sorted(luks.CIPHERS)}")
    if size <= 0 or size % SECTOR_SIZE:
        raise VolumeError(f"volume size must be a positive multiple of {SECTOR_SIZE} bytes")
    if image.exists():
        raise VolumeError(f"{image} exists; refusing to overwrite it")
    vol_uuid = str(uuidlib.uuid4())
    try:
        dk = client.generate_data_key(PRODUCT, key, context_for(vol_uuid), 32)
    except KmsError as e:
        raise _kms_call_failed(image, "cannot be created", e) from None
    assert dk.plaintext is not None
    key_bytes = luks.CIPHERS[cipher][2]
    formatted = luks.format_luks(os.urandom(key_bytes), passphrase_from_data_key(dk.plaintext),
                                 cipher, vol_uuid, reserved_sectors=RESERVED_SECTORS,
                                 iterations=iterations)
    h = formatted.header
    area = _seal_area(h)
    record = encode_seal_record(SealRecord(1, PRODUCT, dk.key_id, vol_uuid, dk.sealed))
    fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.pwrite(fd, formatted.region, 0)
        for i in range(COPIES):
            os.pwrite(fd, record, area + i * RECORD_SIZE)
        os.ftruncate(fd, h.payload_bytes + size)  # sparse: the payload costs nothing yet
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        image.unlink(missing_ok=True)
        raise
    os.close(fd)
    return _info(image, h, newest([record]), h.payload_bytes + size)


def _info(image: Path, h: luks.LuksHeader, rec: SealRecord, file_size: int) -> VolumeInfo:
    size = (file_size - h.payload_bytes) // SECTOR_SIZE * SECTOR_SIZE
    return VolumeInfo(str(image), h.uuid, h.cipher, h.key_bytes, h.payload_bytes, max(size, 0),
                      rec.key_id, rec.product, rec.generation,
                      tuple(i for i, s in enumerate(h.keyslots) if s.active))


def volume_info(image: Path) -> VolumeInfo:
    """What the image says about itself; needs no KMS."""
    fd = _open_fd(image, os.O_RDONLY)
    try:
        h, _, copies = _read_header(fd)
        return _info(image, h, _record(h, copies), os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _open_fd(image: Path, flags: int) -> int:
    try:
        return os.open(image, flags)
    except FileNotFoundError:
        raise VolumeError(f"{image} does not exist") from None
    except IsADirectoryError:
        raise VolumeError(f"{image} is a directory") from None


def unseal_passphrase(image: Path, client: KmsClient) -> bytes:
    """The LUKS passphrase, unsealed by the KMS (an audited decrypt)."""
    fd = _open_fd(image, os.O_RDONLY)
    try:
        h, _, copies = _read_header(fd)
        rec = _record(h, copies)
    finally:
        os.close(fd)
    return _unseal(image, client, rec)


def _unseal(image: Path, client: KmsClient, rec: SealRecord) -> bytes:
    try:
        dk = client.decrypt_data_key(rec.sealed, rec.context)
    except KmsError as e:
        raise _kms_call_failed(image, f"cannot be opened: its key {rec.key_id} refused",
                               e) from None
    assert dk.plaintext is not None
    return passphrase_from_data_key(dk.plaintext)


def rekey_volume(image: Path, client: KmsClient, to_key: str | None) -> VolumeInfo:
    """Re-seal the passphrase under `to_key` (None: the product default key). The LUKS
    header, the passphrase and the data are untouched; no plaintext leaves the KMS."""
    fd = _open_fd(image, os.O_RDWR)
    try:
        h, area, copies = _read_header(fd)
        rec = _record(h, copies)
        try:
            dk = client.reseal_data_key(rec.sealed, rec.product, to_key,
                                        source_context=rec.context, context=rec.context)
        except KmsError as e:
            raise _kms_call_failed(image, "cannot be re-keyed", e) from None
        new = SealRecord(rec.generation + 1, rec.product, dk.key_id, rec.volume_uuid, dk.sealed)
        blob = encode_seal_record(new)

        def generation(i: int) -> int:
            try:
                return decode_seal_record(copies[i]).generation
            except SealRecordError:
                return -1

        # Older (or torn) copy first, synced, then the other: one valid copy at every instant.
        for i in sorted(range(COPIES), key=generation):
            os.pwrite(fd, blob, area + i * RECORD_SIZE)
            os.fdatasync(fd)
        return _info(image, h, new, os.fstat(fd).st_size)
    finally:
        os.close(fd)


class _SectorLock:
    """A POSIX byte-range lock held for a `with` block. A class, not @contextmanager: every
    write takes one, and the generator machinery cost ~1 us of the ~20 us a 4 KiB write takes."""

    __slots__ = ("_fd", "_start", "_length")

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd, self._start, self._length = fd, start, length

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, self._length, self._start, os.SEEK_SET)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, self._length, self._start, os.SEEK_SET)


class Volume:
    """The decrypted payload of an open volume, addressed in bytes."""

    def __init__(self, image: Path, fd: int, header: luks.LuksHeader, cipher: SectorCipher,
                 read_only: bool) -> None:
        self.image = image
        self.uuid = header.uuid
        self.cipher_name = header.cipher
        self.read_only = read_only
        self._fd = fd
        self._base = header.payload_bytes
        self._cipher = cipher
        self.size = max(0, (os.fstat(fd).st_size - self._base) // SECTOR_SIZE * SECTOR_SIZE)

    def __repr__(self) -> str:
        return f"Volume({str(self.image)!r}, uuid={self.uuid!r}, size={self.size})"

    def native_io(self) -> tuple[int, int, int, NativeXts] | None:
        """(image fd, payload offset, size, cipher) for the NBD server's native loop, which
        reads and writes aligned sectors exactly as `read` and `write` do; None when the
        cipher is not the native one."""
        if not isinstance(self._cipher, NativeXts):
            return None
        return self._fd, self._base, self.size, self._cipher

    # -- ranges

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise VolumeError("request beyond the end of the volume")

    def _locked(self, first: int, count: int) -> _SectorLock:
        """Exclusive over whole sectors, for writers in other worker processes: a partial
        sector is read, patched and written back, and two of those must not interleave."""
        return _SectorLock(self._fd, self._base + first * SECTOR_SIZE, count * SECTOR_SIZE)

    def _read_sectors(self, first: int, count: int) -> bytes | bytearray:
        return self._cipher.decrypt(first, _pread_exact(self._fd, count * SECTOR_SIZE,
                                                        self._base + first * SECTOR_SIZE))

    def _write_sectors(self, first: int, plain: Buffer, fua: bool) -> None:
        ct = self._cipher.encrypt(first, plain)
        pos = self._base + first * SECTOR_SIZE
        if fua:
            # RWF_DSYNC makes this one write durable before it returns: FUA without a
            # flush of everything else.
            n = os.pwritev(self._fd, [ct], pos, os.RWF_DSYNC)
        else:
            n = os.pwrite(self._fd, ct, pos)
        if n != len(ct):
            raise OSError("short write to the image")

    # -- the export

    def read(self, offset: int, length: int) -> bytes | bytearray:
        self._check(offset, length)
        if length == 0:
            return b""
        first, end = offset // SECTOR_SIZE, -(-(offset + length) // SECTOR_SIZE)
        if end - first <= CHUNK // SECTOR_SIZE:
            plain = self._read_sectors(first, end - first)
        else:
            plain = bytearray()
            for s in range(first, end, CHUNK // SECTOR_SIZE):
                plain += self._read_sectors(s, min(CHUNK // SECTOR_SIZE, end - s))
        skip = offset - first * SECTOR_SIZE
        if skip == 0 and len(plain) == length:
            return plain
        return plain[skip:skip + length]

    def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        self._guard_write(offset, len(data))
        if not data:
            return
        if len(data) <= CHUNK:
            self._write_span(offset, data, fua)  # the common case: no slicing, no copy
            return
        mv = memoryview(data)
        for pos in range(0, len(mv), CHUNK):
            self._write_span(offset + pos, mv[pos:pos + CHUNK], fua)

    def _write_span(self, offset: int, data: Buffer, fua: bool) -> None:
        first, end = offset // SECTOR_SIZE, -(-(offset + len(data)) // SECTOR_SIZE)
        head = offset - first * SECTOR_SIZE
        with self._locked(first, end - first):
            if head == 0 and len(data) % SECTOR_SIZE == 0:
                self._write_sectors(first, data, fua)
                return
            # Partial first or last sector: read-modify-write the covering sectors.
            buf = bytearray(self._read_sectors(first, end - first))
            buf[head:head + len(data)] = data
            self._write_sectors(first, buf, fua)

    def write_zeroes(self, offset: int, length: int, fua: bool = False) -> None:
        """Zeros that read back as zeros: encrypted zeros, never a hole (a hole would
        decrypt to noise, here and in every other LUKS reader)."""
        self._guard_write(offset, length)
        zeros = bytearray(CHUNK)  # writable: the cipher reads slices of it in place, uncopied
        pos, end = offset, offset + length
        while pos < end:
            n = min(CHUNK - pos % SECTOR_SIZE, end - pos)
            self._write_span(pos, memoryview(zeros)[:n], fua)
            pos += n

    def trim(self, offset: int, length: int) -> None:
        """Punch out the whole sectors inside the range. NBD leaves trimmed contents
        undefined, and a hole keeps the image sparse and holds no ciphertext at all."""
        self._guard_write(offset, length)
        first, end = -(-offset // SECTOR_SIZE), (offset + length) // SECTOR_SIZE
        if end <= first:
            return
        with self._locked(first, end - first):
            _punch_hole(self._fd, self._base + first * SECTOR_SIZE, (end - first) * SECTOR_SIZE)

    def flush(self) -> None:
        os.fdatasync(self._fd)

    def _guard_write(self, offset: int, length: int) -> None:
        if self.read_only:
            raise ReadOnlyError("the volume is served read-only")
        self._check(offset, length)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _punch_hole(fd: int, offset: int, length: int) -> None:
    # os.posix_fallocate cannot punch; fallocate(2) with PUNCH_HOLE|KEEP_SIZE can.
    mode = ctypes.c_int(_FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE)
    r = _libc().fallocate(ctypes.c_int(fd), mode, ctypes.c_long(offset), ctypes.c_long(length))
    if r != 0:
        err = ctypes.get_errno()
        if err != errno.EOPNOTSUPP:  # the filesystem cannot punch: trim is advisory anyway
            raise OSError(err, os.strerror(err))


def open_volume(image: Path, client: KmsClient, *, read_only: bool = False) -> Volume:
    """Open for serving: needs the KMS to unseal the passphrase; a disabled, pending-deletion
    or deleted key (or a frozen account) keeps the volume closed with VolumeKeyError."""
    fd = _open_fd(image, os.O_RDONLY if read_only else os.O_RDWR)
    try:
        h, _, copies = _read_header(fd)
        rec = _record(h, copies)
        passphrase = _unseal(image, client, rec)
        try:
            master = luks.unlock(h, lambda off, n: os.pread(fd, n, off), passphrase)
        except LuksError as e:
            raise VolumeError(f"volume {image}: {e}") from None
        return Volume(image, fd, h, sector_cipher(h.cipher, master), read_only)
    except BaseException:
        os.close(fd)
        raise
