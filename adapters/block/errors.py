"""The block adapter's one error root, each error carrying the NBD errno it is sent as.

The NBD server turns a failed request into an error reply by reading `nbd_errno` off the
exception (as the KMS reads `KmsError.code`), not by an `isinstance` chain; the CLI prints
`code` and `message`. An `OSError` from the image itself (EIO, ENOSPC) is the one foreign
exception the server still maps, by its own errno. Pure: no I/O, no imports of ours.
"""

from __future__ import annotations

# errno values as NBD sends them (the NBD protocol fixes these numbers on the wire,
# whatever the host's errno.h says; nbd_protocol.Err names the same values).
EPERM, EIO, EINVAL, ENOSPC = 1, 5, 22, 28


class BlockError(Exception):
    """Root of every error the block adapter raises on purpose."""

    code = "BlockError"
    nbd_errno = EINVAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(BlockError):
    """The peer broke the NBD protocol in a way that leaves no safe way to continue: the
    connection ends (there is nothing to send the errno on)."""

    code = "ProtocolError"


class LuksError(BlockError):
    """A LUKS1 header or keyslot that cannot be read or opened."""

    code = "LuksError"


class SealRecordError(BlockError):
    """A seal record that is absent, torn, of another version or too long to encode."""

    code = "SealRecordError"


class VolumeError(BlockError):
    """The image is not a volume we can open, or a request on it is invalid."""

    code = "VolumeError"


class TruncatedImageError(VolumeError):
    """The image file ends before what is read from it: shortened under us. For a client
    that is an I/O error, not an invalid request."""

    nbd_errno = EIO


class ReadOnlyError(VolumeError):
    """A write to a volume served read-only."""

    nbd_errno = EPERM
