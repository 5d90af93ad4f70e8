"""Pure NBD message encoding and parsing."""

from __future__ import annotations

import struct

import pytest

from adapters.block import nbd_protocol as p


def test_greeting_and_client_flags() -> None:
    g = p.server_greeting()
    assert g[:8] == b"NBDMAGIC" and g[8:16] == b"IHAVEOPT" and struct.unpack(">H", g[16:])[0] == 3
    assert p.decode_client_flags(struct.pack(">I", 3)) == 3
    for bad in (0, 2, 1 | 4):
        with pytest.raises(p.ProtocolError):
            p.decode_client_flags(struct.pack(">I", bad))


def test_options() -> None:
    assert p.decode_option_header(struct.pack(">QII", p.IHAVEOPT, 7, 10)) == (7, 10)
    with pytest.raises(p.ProtocolError):
        p.decode_option_header(struct.pack(">QII", 1, 7, 10))
    go = p.decode_go(struct.pack(">I", 3) + b"vol" + struct.pack(">HHH", 2, 3, 1))
    assert go == p.GoRequest("vol", (3, 1))
    short_name = struct.pack(">I", 9) + b"vol\0\0"
    bad_count = struct.pack(">I", 0) + struct.pack(">HH", 2, 3)
    for bad in (b"", short_name, bad_count):
        with pytest.raises(ValueError):
            p.decode_go(bad)
    q = struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation"
    assert p.decode_meta_context_query(q) == ("", ("base:allocation",))
    with pytest.raises(ValueError):
        p.decode_meta_context_query(q + b"x")


def test_replies_and_requests() -> None:
    r = p.option_reply(7, p.Rep.ACK)
    assert struct.unpack(">QIII", r) == (p.OPT_REPLY_MAGIC, 7, 1, 0)
    assert struct.unpack(">HQH", p.info_export(1 << 30, 0x1ED)) == (0, 1 << 30, 0x1ED)
    assert struct.unpack(">HIII", p.info_block_size(512, 4096, 1 << 25)) == (3, 512, 4096, 1 << 25)
    req = p.Request(1, p.Cmd.WRITE, 99, 4096, 512)
    assert p.decode_request(p.encode_request(req)) == req
    bad = bytearray(p.encode_request(req))
    bad[0] ^= 0xFF
    with pytest.raises(p.ProtocolError, match="magic"):
        p.decode_request(bytes(bad))
    assert struct.unpack(">IIQ", p.simple_reply(5, 22)) == (p.SIMPLE_REPLY_MAGIC, 22, 5)
    hdr = p.structured_read_header(5, 4096, 100)
    assert struct.unpack(">IHHQIQ", hdr) == (p.STRUCTURED_REPLY_MAGIC, 1, 1, 5, 108, 4096)
    err = p.structured_error(5, 22, "bad")
    assert struct.unpack(">IHHQIIH", err[:26]) == (
        p.STRUCTURED_REPLY_MAGIC, 1, p.ReplyType.ERROR, 5, 9, 22, 3)
    assert len(p.export_name_reply(10, 1, no_zeroes=False)) == 134
