"""One error root for the block adapter, and the NBD server answering by the errno an error
carries (not by its class)."""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.block import errors, luks, nbd_protocol, volume_header
from adapters.block import nbd_protocol as p
from adapters.block.errors import BlockError, ReadOnlyError, VolumeError
from adapters.block.nbd_server import NbdServer
from adapters.block.sector_crypto import Buffer
from tests.adapters.block.helpers import RawClient, ServerThread


def test_every_error_of_the_adapter_has_one_root_and_a_wire_errno() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, Exception)]
    assert {c.__name__ for c in classes} >= {"BlockError", "ProtocolError", "LuksError",
                                             "SealRecordError", "VolumeError", "ReadOnlyError"}
    for c in classes:
        assert issubclass(c, BlockError)
        assert c.nbd_errno in set(p.Err) - {p.Err.OK}
        assert c.code and isinstance(c.code, str)
    # The format modules raise the same classes (their old names still work).
    assert luks.LuksError is errors.LuksError
    assert volume_header.SealRecordError is errors.SealRecordError
    assert nbd_protocol.ProtocolError is errors.ProtocolError


class _Unwell(BlockError):
    """Not known to the server by class: only its nbd_errno says what to answer."""

    code = "Unwell"
    nbd_errno = errors.EIO


class FailingExport:
    """An export whose reads and writes fail with the exception the test sets."""

    size = 1 << 20
    read_only = False

    def __init__(self) -> None:
        self.error: Exception = RuntimeError("unset")

    def read(self, offset: int, length: int) -> bytes:
        raise self.error

    def write(self, offset: int, data: Buffer, fua: bool = False) -> None:
        raise self.error

    def write_zeroes(self, offset: int, length: int, fua: bool = False) -> None:
        raise self.error

    def trim(self, offset: int, length: int) -> None:
        raise self.error

    def flush(self) -> None:
        pass


@pytest.fixture
def failing(tmp_path: Path) -> Iterator[tuple[FailingExport, ServerThread]]:
    export = FailingExport()
    t = ServerThread(NbdServer(export), tmp_path / "nbd.sock")
    yield export, t
    t.close()


@pytest.mark.parametrize(("error", "wire"), [
    (ReadOnlyError("the volume is served read-only"), p.Err.EPERM),
    (VolumeError("request beyond the end of the volume"), p.Err.EINVAL),
    (_Unwell("a subclass the server has never heard of"), p.Err.EIO),
    (OSError(errno.ENOSPC, "No space left on device"), p.Err.ENOSPC),
    (OSError(errno.EIO, "Input/output error"), p.Err.EIO),
    (PermissionError(errno.EACCES, "Permission denied"), p.Err.EPERM),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.name)
def test_a_failed_request_is_answered_with_the_errno_its_error_carries(
        failing: tuple[FailingExport, ServerThread], error: Exception, wire: p.Err) -> None:
    export, t = failing
    export.error = error
    c = RawClient(t.sock, structured=True)
    try:
        assert c.request(p.Cmd.WRITE, 0, 512, bytes(512))[0] == wire
        # A structured READ error carries the message too: the error's own for ours.
        c.cookie += 1
        c.s.sendall(p.encode_request(p.Request(0, p.Cmd.READ, c.cookie, 0, 512)))
        magic, _flags, rtype, _cookie, plen = struct.unpack(">IHHQI", c.recv(20))
        assert magic == p.STRUCTURED_REPLY_MAGIC and rtype == p.ReplyType.ERROR
        err, mlen = struct.unpack(">IH", c.recv(6))
        message = c.recv(plen - 6)[:mlen].decode()
        assert err == wire
        assert message == (error.message if isinstance(error, BlockError) else "I/O error")
        # The connection goes on after an error.
        assert c.request(p.Cmd.FLUSH)[0] == 0
    finally:
        c.close()
    assert t.server.stats.errors[wire.name] == 2


def test_an_error_that_is_not_the_exports_ends_only_that_connection(
        failing: tuple[FailingExport, ServerThread]) -> None:
    export, t = failing
    export.error = RuntimeError("a bug")
    c = RawClient(t.sock)
    try:
        with pytest.raises(ConnectionError):
            c.request(p.Cmd.READ, 0, 512)
    finally:
        c.close()
    export.error = VolumeError("still serving")
    c = RawClient(t.sock)
    try:
        assert c.request(p.Cmd.READ, 0, 512)[0] == p.Err.EINVAL
    finally:
        c.close()
