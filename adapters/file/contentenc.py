"""File content format: per-file header, 4 KiB blocks, AES-256-GCM, and the block arithmetic.

Pure: no I/O. gocryptfs's `contentenc` is the model. A backing file is

    header:  version (1 byte, = 1) ‖ file id (16 random bytes)                 17 bytes
    block i: nonce (12 random bytes) ‖ AES-256-GCM(plaintext block i) ‖ tag    ≤ 4124 bytes

Every block holds 4096 plaintext bytes except the last, which may be shorter. The associated
data of block i is i (8 bytes, big-endian) ‖ file id, so blocks cannot be moved within a file
or between files. The key of each file is HKDF-SHA256(master key, info = purpose ‖ file id):
one master key per filesystem, one derivation per open file, no KMS call per file.

An empty backing file (0 bytes) is an empty plaintext file: the header is written with the
first byte of content, so a crash between create and write leaves a valid file.

Holes: a ciphertext block made entirely of zero bytes is a hole and reads as zeros (gocryptfs
does the same). This is what makes sparse files stay sparse in the backing store; the price,
as in gocryptfs, is that someone who can write the backing store can zero a whole aligned block
and have it read as zeros instead of failing. Any other change fails authentication.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from adapters.file.errors import BlockAuthError as BlockAuthError
from adapters.file.errors import FormatError as FormatError

HEADER_VERSION = 1
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

# HKDF info prefixes: one per purpose, so no two derived keys can ever coincide.
INFO_CONTENT = b"ssegw-sfs v1 content "
INFO_NAMES = b"ssegw-sfs v1 names"
INFO_SYMLINKS = b"ssegw-sfs v1 symlinks"


def derive_key(master_key: bytes, info: bytes, length: int = 32) -> bytes:
    if len(master_key) != MASTER_KEY_LEN:
        raise FormatError("the filesystem master key must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master_key)


# ------------------------------------------------------------------------------------- header


def new_file_id() -> bytes:
    return os.urandom(FILE_ID_LEN)


def encode_header(file_id: bytes) -> bytes:
    if len(file_id) != FILE_ID_LEN:
        raise FormatError("a file id is 16 bytes")
    return bytes([HEADER_VERSION]) + file_id


def decode_header(data: bytes) -> bytes:
    """The file id of a header; FormatError for a short header or an unknown version."""
    if len(data) < HEADER_LEN:
        raise FormatError("truncated file header")
    if data[0] != HEADER_VERSION:
        raise FormatError(f"unknown file format version {data[0]}")
    return bytes(data[1:HEADER_LEN])


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


def block_aad(block: int, file_id: bytes) -> bytes:
    return _AAD.pack(block) + file_id


def is_hole(record: bytes | memoryview) -> bool:
    return len(record) > BLOCK_OVERHEAD and record == _ZEROS[: len(record)]


def split_records(ciphertext: bytes | memoryview) -> Iterator[memoryview]:
    """The block records of a run of consecutive blocks (the last may be short)."""
    mv = memoryview(ciphertext)
    for off in range(0, len(mv), CIPHER_BLOCK_SIZE):
        yield mv[off : off + CIPHER_BLOCK_SIZE]


# ---------------------------------------------------------------------------------- the cipher


class FileCipher:
    """Encrypts and decrypts the blocks of one file. Holds the per-file key; never in a repr."""

    __slots__ = ("file_id", "_aead")

    def __init__(self, master_key: bytes, file_id: bytes) -> None:
        if len(file_id) != FILE_ID_LEN:
            raise FormatError("a file id is 16 bytes")
        self.file_id = file_id
        self._aead = AESGCM(derive_key(master_key, INFO_CONTENT + file_id))

    def __repr__(self) -> str:
        return f"FileCipher(file_id={self.file_id.hex()})"

    def encrypt_blocks(
        self, first_block: int, plaintext: bytes | memoryview, nonces: bytes | None = None
    ) -> bytes:
        """Records for consecutive blocks from `first_block`; only the last may be short.

        `nonces` (12 bytes per block) is the seam for known-answer vectors; production code
        passes None and gets fresh random nonces.
        """
        mv = memoryview(plaintext)
        n = -(-len(mv) // BLOCK_SIZE)
        if nonces is None:
            nonces = os.urandom(NONCE_LEN * n)  # one syscall for all the blocks of a write
        elif len(nonces) != NONCE_LEN * n:
            raise FormatError("one 12-byte nonce per block")
        encrypt, fid, pack = self._aead.encrypt, self.file_id, _AAD.pack
        out: list[bytes] = []
        for i in range(n):
            nonce = nonces[i * NONCE_LEN : (i + 1) * NONCE_LEN]
            out.append(nonce)
            out.append(encrypt(nonce, mv[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE],
                               pack(first_block + i) + fid))
        return b"".join(out)

    def decrypt_blocks(self, first_block: int, ciphertext: bytes | memoryview) -> bytes:
        """Plaintext of consecutive block records; BlockAuthError names the first bad block."""
        decrypt, fid, pack = self._aead.decrypt, self.file_id, _AAD.pack
        out: list[bytes] = []
        for i, rec in enumerate(split_records(ciphertext)):
            block = first_block + i
            if len(rec) <= BLOCK_OVERHEAD:
                raise BlockAuthError(block)
            try:
                out.append(decrypt(rec[:NONCE_LEN], rec[NONCE_LEN:], pack(block) + fid))
            except InvalidTag:
                if not is_hole(rec):
                    raise BlockAuthError(block) from None
                out.append(bytes(len(rec) - BLOCK_OVERHEAD))
        return b"".join(out)

    def bad_blocks(self, first_block: int, ciphertext: bytes | memoryview) -> list[int]:
        """Every block of the run that fails authentication (for `fs check`)."""
        bad: list[int] = []
        for i, rec in enumerate(split_records(ciphertext)):
            try:
                self.decrypt_blocks(first_block + i, rec)
            except BlockAuthError:
                bad.append(first_block + i)
        return bad
