"""Every error of the file adapter, under one root. Pure: no I/O.

Each class carries the errno a FUSE request answers with when it raises it (`errno`), and a
code for the command line's JSON errors (`code`). The FUSE edge (`fuselib.FuseEdge`) maps an
error by these attributes alone, so a new error needs no new branch anywhere: give it the
errno it means. Damage to the backing store is EIO, as on a local filesystem with a bad disk.
"""

from __future__ import annotations

from errno import EINVAL, EIO, ENAMETOOLONG


class SfsError(Exception):
    """Root of the file adapter's errors."""

    errno: int = EIO
    code: str = "SfsError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FormatError(SfsError):
    """A backing file or record that is not in a format this code reads."""

    code = "FormatError"


class BlockAuthError(FormatError):
    """A ciphertext block failed authentication (or is truncated): the data was changed."""

    code = "BlockAuthError"

    def __init__(self, block: int, why: str = "failed authentication") -> None:
        super().__init__(f"block {block} {why}")
        self.block = block


class BadName(FormatError):
    """A backing name or symlink target that does not decrypt (changed, or not ours)."""

    code = "BadName"


class InvalidName(BadName):
    """A plaintext name no file may have ("", ".", "..", or holding '/' or NUL)."""

    errno = EINVAL
    code = "InvalidName"


class NameTooLong(SfsError):
    """A plaintext name over 255 bytes (FUSE lets up to 1024 through; POSIX says 255)."""

    errno = ENAMETOOLONG
    code = "NameTooLong"


class DamagedDirectory(SfsError):
    """A backing directory whose IV is missing or damaged while it holds entries."""

    code = "DamagedDirectory"


class DamagedFile(SfsError):
    """A backing file that failed to decrypt while serving a request (header or block)."""

    code = "DamagedFile"

    def __init__(self, inode: int, cause: FormatError) -> None:
        super().__init__(f"inode {inode}: {cause.message}")
        self.inode = inode


class ConfigError(SfsError):
    """A config this code cannot read: wrong format, unknown version, missing field."""

    errno = EINVAL
    code = "ConfigError"


class FsError(SfsError):
    """A file-adapter error a user can act on (bad backing dir, bad config, ...)."""

    errno = EINVAL
    code = "FsError"
