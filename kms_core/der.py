"""A minimal, strict DER codec for the few ASN.1 structures the KMS builds itself. Pure, no I/O.

`cryptography` parses and writes everything RSA and the DSS-style signature `SEQUENCE {r, s}`;
what it cannot handle is anything on the SM2 curve (SubjectPublicKeyInfo, ECPrivateKey) and the
GM/T 0009 SM2 ciphertext. Those are a handful of SEQUENCEs of INTEGER, OCTET STRING, BIT STRING
and OBJECT IDENTIFIER, so this module covers exactly those types.

Decoding is strict DER (definite, minimal lengths; minimal non-negative INTEGERs; no trailing
bytes), because a lenient parser lets two encodings of one value through, and ciphertexts and
signatures must have exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30


class DerError(ValueError):
    """The bytes are not the strict DER encoding of the expected structure."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("only non-negative INTEGERs are used here")
    # One extra byte when the top bit is set, so the value does not read as negative.
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return tlv(INTEGER, body)


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    return tlv(BIT_STRING, b"\x00" + value)  # no unused bits


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"bad object identifier {dotted!r}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(out))


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


@dataclass(frozen=True, slots=True)
class Element:
    tag: int
    content: bytes
    raw: bytes  # the whole TLV, for comparing against a known encoding


def read(data: bytes, offset: int = 0) -> tuple[Element, int]:
    """One TLV at `offset`; returns it and the offset just past it."""
    if offset + 2 > len(data):
        raise DerError("truncated")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used here")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise DerError("indefinite or oversized length")
        if pos + count > len(data):
            raise DerError("truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
        if length < 0x80 or data[pos - count] == 0:
            raise DerError("length is not minimally encoded")
    end = pos + length
    if end > len(data):
        raise DerError("truncated content")
    return Element(tag, data[pos:end], data[offset:end]), end


def read_all(data: bytes, tag: int) -> Element:
    """Exactly one element of type `tag` and nothing after it."""
    el, end = read(data)
    if el.tag != tag or end != len(data):
        raise DerError(f"expected a single element with tag {tag:#x}")
    return el


def children(el: Element) -> list[Element]:
    if el.tag & 0x20 == 0:
        raise DerError("not a constructed element")
    out: list[Element] = []
    pos = 0
    while pos < len(el.content):
        child, pos = read(el.content, pos)
        out.append(child)
    return out


def as_integer(el: Element) -> int:
    c = el.content
    if el.tag != INTEGER or not c:
        raise DerError("expected an INTEGER")
    if c[0] & 0x80:
        raise DerError("negative INTEGER")
    if len(c) > 1 and c[0] == 0 and not c[1] & 0x80:
        raise DerError("INTEGER is not minimally encoded")
    return int.from_bytes(c, "big")


def as_octet_string(el: Element) -> bytes:
    if el.tag != OCTET_STRING:
        raise DerError("expected an OCTET STRING")
    return el.content


def as_bit_string(el: Element) -> bytes:
    if el.tag != BIT_STRING or not el.content or el.content[0] != 0:
        raise DerError("expected a BIT STRING with no unused bits")
    return el.content[1:]
