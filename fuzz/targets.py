"""One fuzz target per parser of untrusted bytes: each takes arbitrary bytes, feeds them to the
parser as an attacker could, and lets only the component's own error escape.

`TARGETS` maps a name to (function, the exceptions that count as a clean refusal). Anything
else escaping a target is a bug (a 500 or a traceback in the product). Shared by the
hypothesis properties (tests/fuzz_properties) and the atheris harnesses (fuzz/run.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from adapters.block import luks, nbd_protocol
from adapters.file import contentenc, names
from gateway.s3 import aws_chunked, checksums, envelope, multipart, xml_bodies
from gateway.s3.errors import S3Error
from kms_core import blob, sigv4
from kms_core.errors import KmsError
from kms_core.http.app import _parse_json

Target = Callable[[bytes], object]

_KEY = bytes(range(32))
_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _fields(data: bytes, n: int) -> list[bytes]:
    """`data` cut into n pieces at 0xff bytes (so the fuzzer can grow each independently)."""
    parts = data.split(b"\xff", n - 1)
    return parts + [b""] * (n - len(parts))


def _secret(access_key: str) -> str:
    if access_key != "AKIDFUZZ":
        raise sigv4.UnknownAccessKey(access_key)
    return "fuzz-secret"


def sigv4_header(data: bytes) -> None:
    auth, date, path, query, extra = (_text(p) for p in _fields(data, 5))
    headers = {"authorization": auth, "x-amz-date": date, "host": "h"}
    name, _, value = extra.partition(":")
    if name.strip():
        headers[name.strip().lower()] = value
    sigv4.verify_header(method="GET", raw_path=path or "/", raw_query=query, headers=headers,
                        payload_hash=sigv4.UNSIGNED_PAYLOAD, secret_for=_secret, service="s3", now=_NOW)


def sigv4_presigned(data: bytes) -> None:
    path, raw_query = (_text(p) for p in _fields(data, 2))
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    sigv4.verify_presigned(method="GET", raw_path=path or "/", raw_query=raw_query, query=query,
                           headers={"host": "h"}, secret_for=_secret, service="s3", now=_NOW)


def aws_chunked_body(data: bytes) -> None:
    mode_byte, rest = (data[:1] or b"\0"), data[1:]
    modes = [aws_chunked.UNSIGNED_TRAILER, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", aws_chunked.SIGNED]
    mode = modes[mode_byte[0] % len(modes)]
    signing = None
    if mode == aws_chunked.SIGNED:
        signing = aws_chunked.ChunkSigning(b"k" * 32, "20260102T030405Z", "20260102/r/s3/aws4_request", "0" * 64)
    algorithms = ("crc32", "crc32c", "crc64nvme", "sha256", "xxhash3")
    trailer = f"x-amz-checksum-{algorithms[mode_byte[0] % 5]}" if mode_byte[0] & 0x10 else None

    async def body() -> AsyncIterator[bytes]:
        step = 1 + (mode_byte[0] >> 5)
        for i in range(0, len(rest), step * 7):
            yield rest[i:i + step * 7]

    async def run() -> None:
        async for _ in aws_chunked.decode(body(), mode=mode, decoded_length=len(rest) // 2, signing=signing,
                                          trailer=trailer):
            pass

    asyncio.run(run())


def s3_xml(data: bytes) -> None:
    which, body = (data[:1] or b"\0")[0], data[1:]
    parsers: list[Callable[[bytes], object]] = [
        xml_bodies.delete_objects, xml_bodies.complete_multipart, xml_bodies.bucket_encryption,
        xml_bodies.create_bucket, xml_bodies.versioning, xml_bodies.access_control_policy,
        xml_bodies.object_tagging]
    parsers[which % len(parsers)](body)


def kms_blob(data: bytes) -> None:
    b = blob.decode_blob(data)
    assert b.header.key_id and b.header.version_id


def object_metadata(data: bytes) -> None:
    headers: dict[str, str] = {}
    for line in _text(data).split("\n"):
        k, _, v = line.partition("=")
        headers["x-amz-meta-ssegw" + ("-" + k if k else "")] = v
    meta = envelope.ObjectMeta.decode(headers)
    if meta is not None:
        meta.verify(_KEY[:meta.algorithm.key_len], "b", "k")


_V4_META = envelope.ObjectMeta(envelope.Algorithm.AES_256_GCM, b"k", bytes(12), None, "kid", "aws:kms",
                               multipart=True, format=envelope.FORMAT_VERSION_4).signed(_KEY, "b", "k")


def object_manifest(data: bytes) -> None:
    """A v4 multipart object's `ssegw-manifest` tag value, as an attacker may set it."""
    _V4_META.read_manifest(_text(data)).verify(_KEY, "b", "k")


def object_checksum(data: bytes) -> None:
    """A sealed checksum (`ssegw-cks`, or a manifest's fourth field) as storage access may set it."""
    algorithm = (envelope.Algorithm.AES_256_GCM, envelope.Algorithm.SM4_GCM)[(data[:1] or b"\0")[0] & 1]
    checksums.open_sealed(_text(data[1:]), _KEY[:algorithm.key_len], algorithm)


def object_packages(data: bytes) -> None:
    """Sealed bytes of a 3-package object fed to the streaming opener in odd pieces."""
    cipher = envelope.PackageCipher(envelope.Algorithm.AES_256_GCM, _KEY, bytes(12), 0,
                                    version=envelope.FORMAT_VERSION_3)
    size = len(data)
    try:
        plain = envelope.plain_size(size)
    except envelope.ObjectCorrupt:
        plain = 1
    layout = multipart.Layout((envelope.sealed_size(plain),), first=0)
    _, _, segs = multipart.plan(layout, 0, plain) if plain else multipart.plan(layout, 0, 0)
    opener = multipart.SegmentOpener(segs, lambda part: cipher)
    for i in range(0, len(data), 4093):
        for _ in opener.feed(data[i:i + 4093]):
            pass
    opener.finish()


def upload_token(data: bytes) -> None:
    token = multipart.decode_token(multipart.TOKEN_PREFIX + _text(data))
    token.verify(multipart.TOKEN_PREFIX + _text(data), _KEY)


def object_layout(data: bytes) -> None:
    sizes = envelope.decode_layout(_text(data))
    multipart.Layout(sizes, header=envelope.PART_HEADER)


def nbd_messages(data: bytes) -> None:
    """Fixed-size messages get exactly their size (the server reads that many bytes first);
    option data (GO, meta context) any length, as the client declares it."""
    which, body = (data[:1] or b"\0")[0], data[1:]

    def fixed(n: int) -> bytes:
        return body[:n].ljust(n, b"\0")

    choice = which % 5
    if choice == 0:
        nbd_protocol.decode_request(fixed(nbd_protocol.REQUEST_STRUCT.size))
    elif choice == 1:
        nbd_protocol.decode_option_header(fixed(16))
    elif choice == 2:
        nbd_protocol.decode_client_flags(fixed(4))
    elif choice == 3:
        nbd_protocol.decode_go(body)
    else:
        nbd_protocol.decode_meta_context_query(body)


def luks_header(data: bytes) -> None:
    luks.decode_header(data.ljust(luks.PHDR_SIZE, b"\0") if len(data) > 6 else data)


_NAMES = names.NameCipher(_KEY)
_FILE = contentenc.FileCipher(_KEY, bytes(16))
_FILE_V1 = contentenc.FileCipher(_KEY, bytes(16), version=1)


def file_names(data: bytes) -> None:
    which, body = (data[:1] or b"\0")[0], data[1:]
    if which % 3 == 0:
        _NAMES.decrypt_name(_text(body), bytes(16))
    elif which % 3 == 1:
        _NAMES.decrypt_target(_text(body))
    else:
        _NAMES.decrypt_longname(_text(body[:40]), _text(body[40:]), bytes(16))


def file_blocks(data: bytes) -> None:
    header = contentenc.decode_header(data)
    cipher = _FILE_V1 if header.version == 1 else _FILE
    body = data[contentenc.HEADER_LEN:]
    cipher.decrypt_blocks(0, body, final=True)
    cipher.bad_blocks(0, body, final=True)


def kms_json(data: bytes) -> None:
    _parse_json(data)


TARGETS: dict[str, tuple[Target, tuple[type[BaseException], ...]]] = {
    "sigv4_header": (sigv4_header, (sigv4.SigV4Error, sigv4.UnknownAccessKey)),
    "sigv4_presigned": (sigv4_presigned, (sigv4.SigV4Error, sigv4.UnknownAccessKey)),
    "aws_chunked": (aws_chunked_body, (aws_chunked.ChunkedError,)),
    "s3_xml": (s3_xml, (S3Error,)),
    "kms_blob": (kms_blob, (KmsError,)),
    "object_metadata": (object_metadata, (envelope.ObjectCorrupt,)),
    "object_packages": (object_packages, (envelope.ObjectCorrupt,)),
    "object_manifest": (object_manifest, (envelope.ObjectCorrupt,)),
    "object_checksum": (object_checksum, (envelope.ObjectCorrupt,)),
    "upload_token": (upload_token, (ValueError,)),
    "object_layout": (object_layout, (ValueError, envelope.ObjectCorrupt)),
    # decode_go and decode_meta_context_query say ValueError (the server answers NBD_EINVAL).
    "nbd": (nbd_messages, (nbd_protocol.ProtocolError, ValueError)),
    "luks_header": (luks_header, (luks.LuksError,)),
    "file_names": (file_names, (contentenc.FormatError,)),
    "file_blocks": (file_blocks, (contentenc.FormatError,)),
    "kms_json": (kms_json, (KmsError,)),
}


def run_one(name: str, data: bytes) -> None:
    """Run target `name` on `data`; an exception other than its allowed ones propagates."""
    fn, allowed = TARGETS[name]
    try:
        fn(data)
    except allowed:
        pass



def seeds(name: str) -> list[bytes]:
    """Well-formed inputs a target starts from (the fuzzer mutates them): without them it would
    first have to guess magic strings such as AWS4-HMAC-SHA256 before reaching the parser's
    deeper paths."""
    if name == "sigv4_header":
        auth = ("AWS4-HMAC-SHA256 Credential=AKIDFUZZ/20260102/r/s3/aws4_request, "
                "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)
        return [b"\xff".join([auth.encode(), b"20260102T030405Z", b"/b/k", b"a=1&b=2", b"x-amz-meta-a:1"])]
    if name == "sigv4_presigned":
        q = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDFUZZ%2F20260102%2Fr%2Fs3%2Faws4_request"
             "&X-Amz-Date=20260102T030405Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "0" * 64)
        return [b"/b/k\xff" + q.encode()]
    if name == "aws_chunked":
        return [b"\x00" + b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n",
                b"\x02" + b"5;chunk-signature=" + b"0" * 64 + b"\r\nhello\r\n0;chunk-signature="
                + b"0" * 64 + b"\r\n\r\n"]
    if name == "s3_xml":
        return [bytes([i]) + body for i, body in enumerate([
            b"<Delete><Object><Key>a</Key></Object><Quiet>true</Quiet></Delete>",
            b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part>"
            b"</CompleteMultipartUpload>",
            b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>"
            b"aws:kms</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",
            b"<CreateBucketConfiguration><LocationConstraint>r</LocationConstraint></CreateBucketConfiguration>",
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
            b"<AccessControlPolicy><Owner><ID>1</ID></Owner><AccessControlList></AccessControlList>"
            b"</AccessControlPolicy>",
            b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>"])]
    if name == "kms_json":
        return [b'{"KeyId": "alias/x", "Plaintext": "aGVsbG8=", "EncryptionContext": {"a": "b"}}']
    if name == "object_metadata":
        meta = envelope.ObjectMeta(envelope.Algorithm.AES_256_GCM, b"k", bytes(12), 5242900, "kid", "AES256",
                                   None, {"a": "b"}, multipart=True, layout=(5242880 + 1296, 52),
                                   parts_digest=bytes(32))
        enc = meta.signed(_KEY, "b", "k").encode()
        return ["\n".join(f"{k.removeprefix('x-amz-meta-ssegw').lstrip('-')}={v}"
                          for k, v in enc.items()).encode()]
    if name == "object_manifest":
        sealed = checksums.seal(checksums.ObjectChecksum("SHA256", bytes(32), checksums.COMPOSITE, 2), _KEY,
                                envelope.Algorithm.AES_256_GCM)
        return [_V4_META.with_manifest(_KEY, 5242900, (5242880 + 1296, 52), bytes(32)).manifest().encode(),
                _V4_META.with_manifest(_KEY, 5242900, (5242880 + 1296, 52), bytes(32), sealed).manifest().encode()]
    if name == "object_checksum":
        return [bytes([i]) + checksums.seal(checksums.ObjectChecksum("CRC32", bytes(4)), _KEY[:alg.key_len],
                                            alg).encode()
                for i, alg in enumerate((envelope.Algorithm.AES_256_GCM, envelope.Algorithm.SM4_GCM))]
    if name == "object_packages":
        cipher = envelope.PackageCipher(envelope.Algorithm.AES_256_GCM, _KEY, bytes(12), 0,
                                        version=envelope.FORMAT_VERSION_3)
        s = envelope.Sealer(cipher)
        return [b"".join(s.feed(bytes(70000)) + s.finish())]
    if name == "upload_token":
        t = multipart.UploadToken("id", "b", "k", envelope.Algorithm.AES_256_GCM, bytes(12), b"s", "kid",
                                  "AES256", {"a": "b"})
        return [t.encode(_KEY)[len(multipart.TOKEN_PREFIX):].encode()]
    if name == "object_layout":
        return [b"5243232*3,100*1"]
    if name == "luks_header":
        return [b"LUKS\xba\xbe\x00\x01aes" + bytes(29) + b"xts-plain64" + bytes(21) + b"sha256" + bytes(26)]
    if name == "file_names":
        name_enc = _NAMES.encrypt_name(b"hello.txt", bytes(16))
        return [b"\x00" + name_enc.encode(), b"\x01" + _NAMES.encrypt_target(b"/etc/x").encode()]
    if name == "file_blocks":
        return [contentenc.encode_header(bytes(16)) + _FILE.encrypt_blocks(0, bytes(5000), final=True),
                contentenc.encode_header(bytes(16), 1) + _FILE_V1.encrypt_blocks(0, bytes(5000))]
    if name == "nbd":
        return [b"\x00\x25\x60\x95\x13" + bytes(23), b"\x03" + b"\x00\x00\x00\x01a\x00\x00"]
    return []
