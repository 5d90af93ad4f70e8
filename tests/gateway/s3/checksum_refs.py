"""Independent references for S3's checksums (zlib, hashlib, awscrt, the system's libxxhash,
and plain-Python CRCs), and what S3 shows of them: shared by the checksum tests."""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import zlib
from collections.abc import Callable
from typing import Any

from awscrt import checksums as crt


class _XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


def _libxxhash() -> Any:
    """The system's libxxhash (the reference xxHash, not awscrt's), or None."""
    name = ctypes.util.find_library("xxhash")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.XXH64.restype, lib.XXH64.argtypes = ctypes.c_uint64, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    lib.XXH3_64bits.restype, lib.XXH3_64bits.argtypes = ctypes.c_uint64, [ctypes.c_char_p, ctypes.c_size_t]
    lib.XXH3_128bits.restype, lib.XXH3_128bits.argtypes = _XXH128, [ctypes.c_char_p, ctypes.c_size_t]
    return lib


XXH = _libxxhash()


def xxh128(d: bytes) -> bytes:
    h = XXH.XXH3_128bits(d, len(d))
    return int(h.high64).to_bytes(8, "big") + int(h.low64).to_bytes(8, "big")


def reflected_crc(width: int, poly: int) -> Callable[[bytes], bytes]:
    """A table-driven reflected CRC (init and xorout all ones), in plain Python: the
    reference for CRC32C and CRC64NVME independent of awscrt, for small inputs."""
    mask = (1 << width) - 1
    rpoly = int(f"{poly:0{width}b}"[::-1], 2)
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ rpoly if c & 1 else c >> 1
        table.append(c)

    def crc(data: bytes) -> bytes:
        c = mask
        for byte in data:
            c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
        return (c ^ mask).to_bytes(width // 8, "big")

    return crc


# CRC-32/ISCSI and CRC-64/NVME as the CRC catalogue defines them.
PLAIN_PYTHON = {"CRC32C": reflected_crc(32, 0x1EDC6F41), "CRC64NVME": reflected_crc(64, 0xAD93D23594C93659)}

# Each algorithm's raw digest by an implementation other than the one checksums.py uses
# where there is one (zlib for CRC32, hashlib, libxxhash); for CRC32C and CRC64NVME awscrt
# (fast, for megabytes), itself checked against PLAIN_PYTHON in the unit tests.
REFERENCE: dict[str, Callable[[bytes], bytes]] = {
    "CRC32": lambda d: zlib.crc32(d).to_bytes(4, "big"),
    "CRC32C": lambda d: crt.crc32c(d).to_bytes(4, "big"),
    "CRC64NVME": lambda d: crt.crc64nvme(d).to_bytes(8, "big"),
    "SHA1": lambda d: hashlib.sha1(d).digest(),
    "SHA256": lambda d: hashlib.sha256(d).digest(),
    "SHA512": lambda d: hashlib.sha512(d).digest(),
    "MD5": lambda d: hashlib.md5(d).digest(),
    "XXHASH64": lambda d: int(XXH.XXH64(d, len(d), 0)).to_bytes(8, "big"),
    "XXHASH3": lambda d: int(XXH.XXH3_64bits(d, len(d))).to_bytes(8, "big"),
    "XXHASH128": xxh128,
}
ALL = tuple(REFERENCE)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def value_of(algorithm: str, data: bytes) -> str:
    """The base64 checksum S3 shows for `data`."""
    return b64(REFERENCE[algorithm](data))


def composite_of(algorithm: str, parts: list[bytes]) -> str:
    """S3's COMPOSITE checksum of `parts`: the checksum of the parts' raw checksums, `-<n>`."""
    return b64(REFERENCE[algorithm](b"".join(REFERENCE[algorithm](p) for p in parts))) + f"-{len(parts)}"


def shown(answer: dict[str, Any]) -> dict[str, str]:
    """The Checksum<ALGORITHM> fields of a boto3 answer (not ChecksumType/-Algorithm)."""
    return {k: v for k, v in answer.items()
            if k.startswith("Checksum") and k not in ("ChecksumType", "ChecksumAlgorithm")}


def assert_kept(c: Any, b: str, key: str, want: dict[str, str], body: bytes, **version: str) -> None:
    """HEAD, GET (botocore checks the body against what it is shown) and GetObjectAttributes
    give back `want`, as FULL_OBJECT."""
    head = c.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED", **version)
    assert (shown(head), head.get("ChecksumType")) == (want, "FULL_OBJECT")
    got = c.get_object(Bucket=b, Key=key, ChecksumMode="ENABLED", **version)
    assert shown(got) == want and got["Body"].read() == body
    attrs = c.get_object_attributes(Bucket=b, Key=key, ObjectAttributes=["Checksum"], **version)
    assert shown(attrs["Checksum"]) == want and attrs["Checksum"]["ChecksumType"] == "FULL_OBJECT"
