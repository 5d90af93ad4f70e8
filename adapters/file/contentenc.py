"""File content format: per-file header, 4 KiB blocks, AES-256-GCM, and the block arithmetic.

Pure: no I/O. gocryptfs's `contentenc` is the model. A backing file is

    header:  version (1 byte: 1 or 2) ‖ file id (16 random bytes)              17 bytes
    block i: nonce (12 random bytes) ‖ AES-256-GCM(plaintext block i) ‖ tag    ≤ 4124 bytes

Every block holds 4096 plaintext bytes except the last, which may be shorter. The key of each
file is HKDF-SHA256(master key, info = purpose ‖ file id): one master key per filesystem, one
derivation per open file, no KMS call per file. Every encryption of a block (a write, and the
re-sealing below) draws a fresh random nonce, so a (key, nonce) pair is never used twice.

Associated data of block i:

    version 1:  i (8 bytes, big-endian) ‖ file id                                  24 bytes
    version 2:  i (8 bytes, big-endian) ‖ file id ‖ final (1 byte: 1 on the last block, else 0)

so blocks cannot be moved within a file or between files. Version 1 does not authenticate where
a file ends: dropping whole blocks from its end reads back as a shorter file (gocryptfs has the
same gap). Version 2 does: exactly the file's last block carries final = 1, and a version-2
file with a header has at least one block (an empty file's is nonce ‖ tag: 28 bytes, no
plaintext). Dropping the last block(s) leaves a last block sealed with final = 0; dropping all
of them leaves a header with no block; appending leaves a block with final = 1 that is not last;
cutting a block short breaks its tag: each fails authentication. Writers keep the rule by
re-sealing (fresh nonce) the old last block when a file grows past it and the new last block
when it shrinks. The two versions' associated data differ in length, so a version-2 block never
authenticates as version 1: rewriting the header's version byte (a downgrade) fails too. New
files are written as version 2; version-1 files are read and written as version 1.

An empty backing file (0 bytes) is an empty plaintext file in both versions: the header is
written with the first byte of content, so a crash between create and write leaves a valid
file. (So the one cut version 2 does not see is to 0 bytes, header included: that reads as an
empty file, as replacing the file by a new empty one would; names and directories are not
authenticated as a whole either, so files can be deleted or rolled back to older versions.)

Holes: a ciphertext block made entirely of zero bytes, other than a version-2 file's last
block, is a hole and reads as zeros (gocryptfs does the same). This is what makes sparse files
stay sparse in the backing store; the price, as in gocryptfs, is that someone who can write the
backing store can zero a whole aligned block and have it read as zeros instead of failing. Any
other change fails authentication.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from adapters.file import native_blocks
from adapters.file.errors import BlockAuthError as BlockAuthError
from adapters.file.errors import FormatError as FormatError

HEADER_VERSION = 2  # what new files get
READABLE_VERSIONS = (1, 2)
FILE_ID_LEN = 16
HEADER_LEN = 1 + FILE_ID_LEN
BLOCK_SIZE = 4096
NONCE_LEN = 12
TAG_LEN = 16
BLOCK_OVERHEAD = NONCE_LEN + TAG_LEN
CIPHER_BLOCK_SIZE = BLOCK_SIZE + BLOCK_OVERHEAD
MASTER_KEY_LEN = 32

_ZEROS = bytes(CIPHER_BLOCK_SIZE)
_AAD = struct.Struct(">Q")
_FINAL, _NOT_FINAL = b"\x01", b"\x00"

# HKDF info prefixes: one per purpose, so no two derived keys can ever coincide.
INFO_CONTENT = b"ssegw-sfs v1 content "
INFO_NAMES = b"ssegw-sfs v1 names"
INFO_SYMLINKS = b"ssegw-sfs v1 symlinks"


def derive_key(master_key: bytes, info: bytes, length: int = 32) -> bytes:
    if len(master_key) != MASTER_KEY_LEN:
        raise FormatError("the filesystem master key must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_key)


# ------------------------------------------------------------------------------------- header


@dataclass(frozen=True, slots=True)
class FileHeader:
    version: int
    file_id: bytes


def new_file_id() -> bytes:
    return os.urandom(FILE_ID_LEN)


def encode_header(file_id: bytes, version: int = HEADER_VERSION) -> bytes:
    if len(file_id) != FILE_ID_LEN:
        raise FormatError("a file id is 16 bytes")
    if version not in READABLE_VERSIONS:
        raise FormatError(f"unknown file format version {version}")
    return bytes([version]) + file_id


def decode_header(data: bytes | memoryview) -> FileHeader:
    """FormatError for a short header or an unknown version."""
    if len(data) < HEADER_LEN:
        raise FormatError("truncated file header")
    if data[0] not in READABLE_VERSIONS:
        raise FormatError(f"unknown file format version {data[0]}")
    return FileHeader(data[0], bytes(data[1:HEADER_LEN]))


# ----------------------------------------------------------------------------- block arithmetic


def plaintext_size(cipher_size: int) -> int:
    """Plaintext size of a backing file of `cipher_size` bytes (header included).

    A trailing fragment too short to hold a block (≤ 28 bytes) counts as nothing; reading or
    checking that block reports it as damaged.
    """
    if cipher_size <= HEADER_LEN:
        return 0
    body = cipher_size - HEADER_LEN
    full, rest = divmod(body, CIPHER_BLOCK_SIZE)
    return full * BLOCK_SIZE + max(0, rest - BLOCK_OVERHEAD)


def cipher_size(plain_size: int) -> int:
    """Backing size of a file holding `plain_size` plaintext bytes (0 → no header yet)."""
    if plain_size == 0:
        return 0
    full, rest = divmod(plain_size, BLOCK_SIZE)
    return HEADER_LEN + full * CIPHER_BLOCK_SIZE + (rest + BLOCK_OVERHEAD if rest else 0)


def cipher_offset(block: int) -> int:
    """Where block `block` starts in the backing file."""
    return HEADER_LEN + block * CIPHER_BLOCK_SIZE


def record_count(cipher_size: int) -> int:
    """Block records in a backing file, a trailing fragment counted (0 for a header alone)."""
    return max(0, -(-(cipher_size - HEADER_LEN) // CIPHER_BLOCK_SIZE))


def plaintext_room(records_len: int) -> int:
    """Plaintext bytes that `records_len` bytes of consecutive records can hold at most."""
    full, rest = divmod(records_len, CIPHER_BLOCK_SIZE)
    return full * BLOCK_SIZE + max(0, rest - BLOCK_OVERHEAD)


def block_aad(block: int, file_id: bytes, version: int = HEADER_VERSION,
              final: bool = False) -> bytes:
    aad = _AAD.pack(block) + file_id
    return aad if version == 1 else aad + (_FINAL if final else _NOT_FINAL)


def is_hole(record: bytes | memoryview) -> bool:
    return len(record) > BLOCK_OVERHEAD and record == _ZEROS[: len(record)]


def split_records(ciphertext: bytes | memoryview) -> Iterator[memoryview]:
    """The block records of a run of consecutive blocks (the last may be short)."""
    mv = memoryview(ciphertext)
    for off in range(0, len(mv), CIPHER_BLOCK_SIZE):
        yield mv[off : off + CIPHER_BLOCK_SIZE]


# ---------------------------------------------------------------------------------- the cipher


class FileCipher:
    """Encrypts and decrypts the blocks of one file. Holds the per-file key; never in a repr.

    `final` (encrypt and decrypt): the run's last block is the file's last block. Version 1
    ignores it; version 2 binds it into each block's associated data (see the module doc).
    """

    __slots__ = ("file_id", "version", "_aead", "_aad", "native")

    def __init__(self, master_key: bytes, file_id: bytes, version: int = HEADER_VERSION, *,
                 native: bool = True) -> None:
        """`native`: use the C block loop (native_blocks.py) when it is built; the pure
        per-block loop otherwise. Both give the same records."""
        if len(file_id) != FILE_ID_LEN:
            raise FormatError("a file id is 16 bytes")
        if version not in READABLE_VERSIONS:
            raise FormatError(f"unknown file format version {version}")
        self.file_id = file_id
        self.version = version
        key = derive_key(master_key, INFO_CONTENT + file_id)
        self._aead = AESGCM(key)
        self._aad = file_id if version == 1 else file_id + _NOT_FINAL
        lib = native_blocks.native_library() if native else None
        self.native = native_blocks.NativeGcm(key, lib) if lib is not None else None

    @classmethod
    def for_header(cls, master_key: bytes, header: FileHeader) -> FileCipher:
        return cls(master_key, header.file_id, header.version)

    def __repr__(self) -> str:
        return f"FileCipher(file_id={self.file_id.hex()}, version={self.version})"

    @property
    def marks_final(self) -> bool:
        """Whether the file's last block is authenticated as last (version 2)."""
        return self.version >= 2

    def _final_aad(self, block: int) -> bytes:
        return _AAD.pack(block) + self.final_tail

    @property
    def final_tail(self) -> bytes:
        """What follows the block number in a version-2 final block's associated data."""
        return self.file_id if self.version == 1 else self.file_id + _FINAL

    @property
    def tails(self) -> tuple[bytes, bytes]:
        """What follows the block number in the associated data: of other blocks, of a final
        block (the two are the same in version 1)."""
        return self._aad, self.final_tail

    def encrypt_blocks(self, first_block: int, plaintext: bytes | memoryview,
                       nonces: bytes | None = None, final: bool = False) -> bytes:
        """Records for consecutive blocks from `first_block`; only the last may be short
        (or, when it is a version-2 file's final block, empty).

        `nonces` (12 bytes per block) is the seam for known-answer vectors; production code
        passes None and gets fresh random nonces.
        """
        mv = memoryview(plaintext)
        n, nonces = self._block_nonces(len(mv), nonces, final)
        # Not through self.native: a fresh output buffer and the copy back to bytes cost as
        # much as the Python loop; `encrypt_blocks_into` is the native path, into a buffer
        # the caller reuses.
        encrypt, tail, pack = self._aead.encrypt, self._aad, _AAD.pack
        out: list[bytes] = []
        for i in range(n):
            nonce = nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN]
            block = first_block + i
            aad = self._final_aad(block) if final and i == n - 1 else pack(block) + tail
            out.append(nonce)
            out.append(encrypt(nonce, mv[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE], aad))
        return b"".join(out)

    def _block_nonces(self, length: int, nonces: bytes | None, final: bool) -> tuple[int, bytes]:
        """How many records `length` bytes of plaintext make, and a nonce for each."""
        n = max(-(-length // BLOCK_SIZE), 1 if final and self.marks_final else 0)
        if nonces is None:
            nonces = os.urandom(NONCE_LEN * n)  # one syscall for all the blocks of a write
        elif len(nonces) != NONCE_LEN * n:
            raise FormatError("one 12-byte nonce per block")
        return n, nonces

    def encrypt_blocks_into(self, first_block: int, plaintext: bytes | memoryview,
                            dst: ctypes.Array[ctypes.c_char], final: bool = False,
                            nonces: bytes | None = None) -> int:
        """`encrypt_blocks` through the native loop, with the records written to `dst`
        (room for `cipher_offset`-many bytes of them); their length. The plaintext is read
        where it lies when it is bytes or a writable buffer (such as FUSE's request buffer).
        Only when `self.native` is set."""
        if self.native is None:
            raise RuntimeError("encrypt_blocks_into needs the native block loop")
        n, nonces = self._block_nonces(len(plaintext), nonces, final)
        if len(dst) < len(plaintext) + n * BLOCK_OVERHEAD:
            raise ValueError("the output buffer is too small for the records")
        src: native_blocks.Pointer
        if isinstance(plaintext, bytes) or not plaintext or plaintext.readonly:
            src = bytes(plaintext)  # bytes stay themselves; a read-only view is copied
        else:
            src = ctypes.addressof(ctypes.c_char.from_buffer(plaintext))
        return self.native.encrypt_into(first_block, self.tails, final and self.marks_final,
                                        src, len(plaintext), n, nonces, dst)

    def decrypt_blocks(self, first_block: int, ciphertext: bytes | memoryview,
                       final: bool = False) -> bytes:
        """Plaintext of consecutive block records; BlockAuthError names the first bad block."""
        final = final and self.marks_final
        if final and not ciphertext:
            raise BlockAuthError(first_block, "is missing: the file has no final block")
        if self.native is not None:
            src = ciphertext if isinstance(ciphertext, bytes) else bytes(ciphertext)
            dst = ctypes.create_string_buffer(max(1, plaintext_room(len(src))))
            try:
                n = self.native.decrypt_into(first_block, self.tails, final, src, len(src), dst)
            except native_blocks.AuthFailed as e:
                raise BlockAuthError(e.block) from None
            return ctypes.string_at(dst, n)
        decrypt, tail, pack = self._aead.decrypt, self._aad, _AAD.pack
        recs = list(split_records(ciphertext))
        out: list[bytes] = []
        for i, rec in enumerate(recs):
            block = first_block + i
            last = final and i == len(recs) - 1
            if len(rec) < BLOCK_OVERHEAD or (len(rec) == BLOCK_OVERHEAD and not last):
                raise BlockAuthError(block)
            aad = self._final_aad(block) if last else pack(block) + tail
            try:
                out.append(decrypt(rec[:NONCE_LEN], rec[NONCE_LEN:], aad))
            except InvalidTag:
                if last or not is_hole(rec):
                    raise BlockAuthError(block) from None
                out.append(bytes(len(rec) - BLOCK_OVERHEAD))
        return b"".join(out)

    def bad_blocks(self, first_block: int, ciphertext: bytes | memoryview,
                   final: bool = False) -> list[int]:
        """Every block of the run that fails authentication (for `fs check`)."""
        recs = list(split_records(ciphertext))
        if final and self.marks_final and not recs:
            return [first_block]
        bad: list[int] = []
        for i, rec in enumerate(recs):
            try:
                self.decrypt_blocks(first_block + i, rec, final and i == len(recs) - 1)
            except BlockAuthError:
                bad.append(first_block + i)
        return bad

    def seals_final(self, block: int, record: bytes | memoryview) -> bool | None:
        """For diagnosis: True if `record` authenticates as block `block` with the final flag,
        False if without, None if neither (or version 1, which has no flag)."""
        if not self.marks_final or is_hole(record):
            return None
        for flag in (True, False):
            try:
                self.decrypt_blocks(block, record, final=flag)
                return flag
            except BlockAuthError:
                pass
        return None
