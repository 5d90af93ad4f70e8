"""The seal record: frozen encoding, torn and stale copies."""

from __future__ import annotations

import pytest

from adapters.block.volume_header import (
    RECORD_SIZE,
    SealRecord,
    SealRecordError,
    decode_seal_record,
    encode_seal_record,
    newest,
)
from tests.adapters.block.vectors import load


def test_frozen_vector() -> None:
    v = load("volume_seal_v1.json")
    rec = SealRecord(v["generation"], v["product"], v["keyId"], v["volumeUuid"],
                     bytes.fromhex(v["sealed"]))
    enc = encode_seal_record(rec)
    assert len(enc) == v["recordSize"] == RECORD_SIZE
    assert enc.hex().startswith(v["encodedPrefix"])
    assert enc[len(v["encodedPrefix"]) // 2:] == bytes(RECORD_SIZE - len(v["encodedPrefix"]) // 2)
    assert decode_seal_record(enc) == rec
    assert rec.context == {"ssegw:volume": v["volumeUuid"]}
    assert "sealed" not in repr(rec) and bytes.fromhex(v["sealed"]).hex() not in repr(rec)


def test_newest_valid_copy_wins_and_torn_copies_are_skipped() -> None:
    old = encode_seal_record(SealRecord(1, "ecs", "k1", "u", b"a" * 100))
    new = encode_seal_record(SealRecord(2, "ecs", "k2", "u", b"b" * 100))
    assert newest([old, new]).key_id == "k2"
    torn = new[:150] + bytes(RECORD_SIZE - 150)
    assert newest([old, torn]).key_id == "k1"
    flipped = bytearray(new)
    flipped[60] ^= 1
    assert newest([bytes(flipped), old]).key_id == "k1"
    with pytest.raises(SealRecordError, match="no valid seal record"):
        newest([torn, bytes(RECORD_SIZE)])


def test_refuses_what_does_not_fit() -> None:
    with pytest.raises(SealRecordError, match="does not fit"):
        encode_seal_record(SealRecord(1, "ecs", "k", "u", b"x" * RECORD_SIZE))
