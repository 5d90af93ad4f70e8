"""The NBD protocol (fixed newstyle): constants, and pure encoders/decoders for its messages.

From the NBD protocol document (doc/proto.md of the NBD project). Every integer on the wire is
big-endian. No I/O here: the server reads and writes bytes, this module gives them meaning.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import NamedTuple

from adapters.block.errors import ProtocolError as ProtocolError  # re-exported: p.ProtocolError

# ---------------------------------------------------------------------------- handshake
NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OPT_REPLY_MAGIC = 0x0003E889045565A9

FLAG_FIXED_NEWSTYLE = 1 << 0  # handshake flags (server)
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0  # client flags
FLAG_C_NO_ZEROES = 1 << 1
KNOWN_CLIENT_FLAGS = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES


class Opt(IntEnum):
    EXPORT_NAME = 1
    ABORT = 2
    LIST = 3
    STARTTLS = 5
    INFO = 6
    GO = 7
    STRUCTURED_REPLY = 8
    LIST_META_CONTEXT = 9
    SET_META_CONTEXT = 10


class Rep(IntEnum):
    ACK = 1
    SERVER = 2
    INFO = 3
    META_CONTEXT = 4
    ERR_UNSUP = (1 << 31) + 1
    ERR_POLICY = (1 << 31) + 2
    ERR_INVALID = (1 << 31) + 3
    ERR_PLATFORM = (1 << 31) + 4
    ERR_TLS_REQD = (1 << 31) + 5
    ERR_UNKNOWN = (1 << 31) + 6
    ERR_SHUTDOWN = (1 << 31) + 7
    ERR_BLOCK_SIZE_REQD = (1 << 31) + 8
    ERR_TOO_BIG = (1 << 31) + 9


class Info(IntEnum):
    EXPORT = 0
    NAME = 1
    DESCRIPTION = 2
    BLOCK_SIZE = 3


class TxFlag(IntFlag):
    """Transmission flags of an export."""

    HAS_FLAGS = 1 << 0
    READ_ONLY = 1 << 1
    SEND_FLUSH = 1 << 2
    SEND_FUA = 1 << 3
    ROTATIONAL = 1 << 4
    SEND_TRIM = 1 << 5
    SEND_WRITE_ZEROES = 1 << 6
    SEND_DF = 1 << 7
    CAN_MULTI_CONN = 1 << 8
    SEND_RESIZE = 1 << 9
    SEND_CACHE = 1 << 10
    SEND_FAST_ZERO = 1 << 11


# -------------------------------------------------------------------------- transmission
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF


class Cmd(IntEnum):
    READ = 0
    WRITE = 1
    DISC = 2
    FLUSH = 3
    TRIM = 4
    CACHE = 5
    WRITE_ZEROES = 6
    BLOCK_STATUS = 7
    RESIZE = 8


class CmdFlag(IntFlag):
    FUA = 1 << 0
    NO_HOLE = 1 << 1
    DF = 1 << 2
    REQ_ONE = 1 << 3
    FAST_ZERO = 1 << 4


class ReplyType(IntEnum):
    NONE = 0
    OFFSET_DATA = 1
    OFFSET_HOLE = 2
    BLOCK_STATUS = 5
    ERROR = (1 << 15) + 1
    ERROR_OFFSET = (1 << 15) + 2


REPLY_FLAG_DONE = 1 << 0


class Err(IntEnum):
    """Errors of the transmission phase (errno values on the wire)."""

    OK = 0
    EPERM = 1
    EIO = 5
    ENOMEM = 12
    EINVAL = 22
    ENOSPC = 28
    EOVERFLOW = 75
    ENOTSUP = 95
    ESHUTDOWN = 108


# --------------------------------------------------------------------------- messages
_SERVER_GREETING = struct.Struct(">QQH")
_OPTION_HEADER = struct.Struct(">QII")
_OPTION_REPLY = struct.Struct(">QIII")
REQUEST_STRUCT = struct.Struct(">IHHQQI")  # magic, flags, type, cookie, offset, length
_SIMPLE_REPLY = struct.Struct(">IIQ")
_STRUCTURED_REPLY = struct.Struct(">IHHQI")

CLIENT_FLAGS_SIZE = 4
OPTION_HEADER_SIZE = _OPTION_HEADER.size
REQUEST_SIZE = REQUEST_STRUCT.size


def server_greeting() -> bytes:
    return _SERVER_GREETING.pack(NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)


def decode_client_flags(data: bytes) -> int:
    (flags,) = struct.unpack(">I", data)
    if flags & ~KNOWN_CLIENT_FLAGS or not flags & FLAG_C_FIXED_NEWSTYLE:
        raise ProtocolError(f"client flags {flags:#x} are not fixed newstyle")
    return int(flags)


def decode_option_header(data: bytes) -> tuple[int, int]:
    """(option, length of its data)."""
    magic, option, length = _OPTION_HEADER.unpack(data)
    if magic != IHAVEOPT:
        raise ProtocolError("option without IHAVEOPT magic")
    return int(option), int(length)


def option_reply(option: int, reply: int, data: bytes = b"") -> bytes:
    return _OPTION_REPLY.pack(OPT_REPLY_MAGIC, option, reply, len(data)) + data


def rep_server(name: str, description: str = "") -> bytes:
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw + description.encode()


def info_export(size: int, flags: int) -> bytes:
    return struct.pack(">HQH", Info.EXPORT, size, flags)


def info_block_size(minimum: int, preferred: int, maximum: int) -> bytes:
    return struct.pack(">HIII", Info.BLOCK_SIZE, minimum, preferred, maximum)


def info_name(name: str) -> bytes:
    return struct.pack(">H", Info.NAME) + name.encode()


def info_description(text: str) -> bytes:
    return struct.pack(">H", Info.DESCRIPTION) + text.encode()


def export_name_reply(size: int, flags: int, no_zeroes: bool) -> bytes:
    """The reply to NBD_OPT_EXPORT_NAME (no option-reply framing)."""
    return struct.pack(">QH", size, flags) + (b"" if no_zeroes else bytes(124))


@dataclass(frozen=True)
class GoRequest:
    name: str
    info_requests: tuple[int, ...]


def decode_go(data: bytes) -> GoRequest:
    """The data of NBD_OPT_INFO / NBD_OPT_GO; ValueError when malformed."""
    if len(data) < 6:
        raise ValueError("NBD_OPT_GO data too short")
    (nlen,) = struct.unpack_from(">I", data)
    if 4 + nlen + 2 > len(data):
        raise ValueError("NBD_OPT_GO name length overruns the option")
    name = data[4:4 + nlen].decode("utf-8")
    (count,) = struct.unpack_from(">H", data, 4 + nlen)
    rest = data[6 + nlen:]
    if len(rest) != 2 * count:
        raise ValueError("NBD_OPT_GO information request count does not match")
    return GoRequest(name, struct.unpack(f">{count}H", rest))


def decode_meta_context_query(data: bytes) -> tuple[str, tuple[str, ...]]:
    """(export name, queries) of NBD_OPT_LIST/SET_META_CONTEXT; ValueError when malformed."""
    if len(data) < 8:
        raise ValueError("meta context option too short")
    (nlen,) = struct.unpack_from(">I", data)
    pos = 4 + nlen
    if pos + 4 > len(data):
        raise ValueError("meta context export name overruns the option")
    name = data[4:pos].decode("utf-8")
    (count,) = struct.unpack_from(">I", data, pos)
    pos += 4
    queries = []
    for _ in range(count):
        if pos + 4 > len(data):
            raise ValueError("meta context query overruns the option")
        (qlen,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + qlen > len(data):
            raise ValueError("meta context query overruns the option")
        queries.append(data[pos:pos + qlen].decode("utf-8"))
        pos += qlen
    if pos != len(data):
        raise ValueError("trailing bytes after meta context queries")
    return name, tuple(queries)


class Request(NamedTuple):
    """A tuple, not a frozen dataclass: one is made per request, and building a frozen
    dataclass costs ~1 us (a setattr per field), a tuple a fraction of that."""

    flags: int
    type: int
    cookie: int
    offset: int
    length: int


def decode_request(data: bytes) -> Request:
    return decode_request_from(data, 0)


def decode_request_from(buf: bytes | bytearray | memoryview, pos: int) -> Request:
    """The request header at buf[pos:pos + REQUEST_SIZE] (no copy of it made first)."""
    magic, flags, typ, cookie, offset, length = REQUEST_STRUCT.unpack_from(buf, pos)
    if magic != REQUEST_MAGIC:
        # Nothing after a bad magic can be trusted to line up: the connection must end.
        raise ProtocolError(f"bad request magic {magic:#x}")
    return Request(flags, typ, cookie, offset, length)


def encode_request(r: Request) -> bytes:
    return REQUEST_STRUCT.pack(REQUEST_MAGIC, r.flags, r.type, r.cookie, r.offset, r.length)


def simple_reply(cookie: int, error: int = 0) -> bytes:
    return _SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, cookie)


def structured_chunk(cookie: int, reply_type: int, payload_length: int, done: bool) -> bytes:
    """The header of one structured reply chunk; the payload follows it."""
    return _STRUCTURED_REPLY.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE if done else 0,
                                  reply_type, cookie, payload_length)


_READ_HEADER = struct.Struct(">IHHQIQ")  # a structured chunk header, then the data's offset
_OFFSET_DATA = int(ReplyType.OFFSET_DATA)


def structured_read_header(cookie: int, offset: int, length: int) -> bytes:
    """An NBD_REPLY_TYPE_OFFSET_DATA chunk (the final one) carrying `length` bytes."""
    return _READ_HEADER.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, _OFFSET_DATA, cookie,
                             8 + length, offset)


def structured_error(cookie: int, error: int, message: str = "") -> bytes:
    msg = message.encode()[:4096]
    body = struct.pack(">IH", error, len(msg)) + msg
    return structured_chunk(cookie, ReplyType.ERROR, len(body), True) + body
