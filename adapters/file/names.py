"""File name and symlink target encryption. Pure: no I/O.

Names: AES-SIV (deterministic, so a name can be looked up without listing the directory) with
the directory's 16-byte IV as associated data, so the same name in two directories encrypts
differently and an entry cannot be moved to another directory without the name failing. The
plaintext is padded to a multiple of 16 bytes (PKCS#7) so the backing name shows the length
only to 16 bytes. The backing name is the unpadded base64url of SIV ‖ ciphertext.

Every directory keeps its IV in a file named `sfs.diriv`; a directory rename moves the IV with
it, so the names inside stay valid. Encrypted names never contain '.', so names starting with
`sfs.` can never collide with an encrypted name.

Long names (gocryptfs's scheme): when the encrypted name is longer than 255 bytes (plaintext
names longer than 159 bytes), the backing entry is `sfs.longname.<base64url(sha256(encname))>`
and a sidecar `sfs.longname.<hash>.name` holds the full encrypted name.

Symlink targets: AES-256-GCM with a random nonce (targets need no lookup, so no reason to be
deterministic), stored as base64url(nonce ‖ ciphertext ‖ tag) in the backing symlink.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV

from adapters.file.contentenc import INFO_NAMES, INFO_SYMLINKS, derive_key
from adapters.file.errors import BadName as BadName
from adapters.file.errors import InvalidName

DIRIV_NAME = "sfs.diriv"
DIRIV_LEN = 16
LONGNAME_PREFIX = "sfs.longname."
LONGNAME_SUFFIX = ".name"
RESERVED_PREFIX = "sfs."
NAME_MAX = 255
PAD = 16
_SYMLINK_AAD = b"ssegw-sfs symlink v1"


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    if "=" in text or "." in text:
        raise BadName("not an encrypted name")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise BadName("not an encrypted name") from e


def pad(name: bytes) -> bytes:
    n = PAD - len(name) % PAD
    return name + bytes([n]) * n


def unpad(padded: bytes) -> bytes:
    if not padded or len(padded) % PAD:
        raise BadName("bad name padding")
    n = padded[-1]
    if not 1 <= n <= PAD or padded[-n:] != bytes([n]) * n:
        raise BadName("bad name padding")
    return padded[:-n]


def is_reserved(backing_name: str) -> bool:
    """Backing entries that are ours, not a user's (config, directory IVs, long-name parts)."""
    return backing_name.startswith(RESERVED_PREFIX)


_HASH_CHARS = 43  # base64url of a SHA-256 digest, unpadded


def is_longname(backing_name: str) -> bool:
    """A long-name entry (not its sidecar, not a leftover temp file)."""
    rest = backing_name[len(LONGNAME_PREFIX):]
    return backing_name.startswith(LONGNAME_PREFIX) and len(rest) == _HASH_CHARS and "." not in rest


def longname_for(encrypted: str) -> str:
    return LONGNAME_PREFIX + b64e(hashlib.sha256(encrypted.encode("ascii")).digest())


def sidecar_for(backing_name: str) -> str:
    return backing_name + LONGNAME_SUFFIX


_NAME_CACHE_MAX = 8192


class NameCipher:
    """Name and symlink-target encryption under keys derived from the master key."""

    __slots__ = ("_siv", "_links", "_backing_names")

    def __init__(self, master_key: bytes) -> None:
        self._siv = AESSIV(derive_key(master_key, INFO_NAMES, 64))
        self._links = AESGCM(derive_key(master_key, INFO_SYMLINKS))
        # backing_name is a pure function of (name, IV), and FUSE asks for the same one
        # several times per file (lookup, create, the getattr after it, each setattr by
        # path): remembered, so each name is encrypted once. Bounded by dropping all.
        self._backing_names: dict[tuple[bytes, bytes], tuple[str, str | None]] = {}

    def __repr__(self) -> str:
        return "NameCipher(...)"

    # names ------------------------------------------------------------------------------

    def encrypt_name(self, name: bytes, diriv: bytes) -> str:
        """The full encrypted name (may exceed 255 bytes; see `backing_name`)."""
        if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
            raise InvalidName("not a valid file name")
        return b64e(self._siv.encrypt(pad(name), [diriv]))

    def decrypt_name(self, encrypted: str, diriv: bytes) -> bytes:
        try:
            return unpad(self._siv.decrypt(b64d(encrypted), [diriv]))
        except InvalidTag:
            raise BadName("name failed authentication") from None

    def backing_name(self, name: bytes, diriv: bytes) -> tuple[str, str | None]:
        """(entry name in the backing directory, full encrypted name if it is a long name)."""
        hit = self._backing_names.get((name, diriv))
        if hit is not None:
            return hit
        enc = self.encrypt_name(name, diriv)
        found = (enc, None) if len(enc) <= NAME_MAX else (longname_for(enc), enc)
        if len(self._backing_names) >= _NAME_CACHE_MAX:
            self._backing_names.clear()
        self._backing_names[(name, diriv)] = found
        return found

    def decrypt_longname(self, backing_name: str, sidecar: str, diriv: bytes) -> bytes:
        """Checks that the sidecar belongs to the entry, then decrypts it."""
        # The sidecar is read from the backing store: an encrypted name is base64, so anything
        # else is not one (found by fuzzing: non-ASCII text reached the hash as a 500).
        if not sidecar.isascii() or longname_for(sidecar) != backing_name:
            raise BadName("long-name sidecar does not match its entry")
        return self.decrypt_name(sidecar, diriv)

    # symlinks ---------------------------------------------------------------------------

    def encrypt_target(self, target: bytes, nonce: bytes | None = None) -> str:
        nonce = nonce if nonce is not None else os.urandom(12)
        return b64e(nonce + self._links.encrypt(nonce, target, _SYMLINK_AAD))

    def decrypt_target(self, stored: str) -> bytes:
        raw = b64d(stored)
        if len(raw) < 28:
            raise BadName("symlink target too short")
        try:
            return self._links.decrypt(raw[:12], raw[12:], _SYMLINK_AAD)
        except InvalidTag:
            raise BadName("symlink target failed authentication") from None
