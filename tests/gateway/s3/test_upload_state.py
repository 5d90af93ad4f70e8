"""The multipart records the proxy keeps in the backend, read back as written, old and new."""

from __future__ import annotations

import asyncio
import base64
import os
import zlib

from gateway.s3.backend import Backend, BackendConfig
from gateway.s3.checksums import ObjectChecksum
from gateway.s3.upload_state import PartRecord, UploadState
from tests.gateway.s3.conftest import BACKEND_KEY, bucket_name


def test_part_records_round_trip_and_records_of_older_versions_still_read(moto_url: str) -> None:
    salt = os.urandom(16)
    crc = base64.b64encode(zlib.crc32(b"sealed").to_bytes(4, "big")).decode()
    plain = ObjectChecksum("CRC32C", os.urandom(4))

    md5 = os.urandom(16).hex()

    async def run() -> tuple[dict[tuple[int, str], PartRecord], dict[tuple[int, str], str]]:
        backend = Backend(BackendConfig(moto_url, *BACKEND_KEY))
        state = UploadState(backend, bucket_name())
        try:
            await state.remember_salt("b", "up", 1, '"E1"', salt)
            await state.remember_salt("b", "up", 2, "e2", salt, plain)
            await state.remember_salt("b", "up", 3, "e3", salt, None, crc)
            await state.remember_salt("b", "up", 4, "e4", salt, plain, crc)
            await state.remember_salt("b", "up", 6, "e6", salt, None, None, md5)
            await state.remember_salt("b", "up", 7, "e7", salt, plain, crc, md5)
            # A part of a v2/v3 upload (or of a v4 upload before its MD5 moved into its record).
            await state.remember_part("b", "up", 8, "e8", md5)
            await state.remember_salt("b", "other", 1, "e1", os.urandom(16))
            # Damaged or foreign records are passed over, not fatal.
            await state._put(f"salts/b/up/5/e5/{salt.hex()}~~~not-base64!", b"")
            await state._put("salts/b/up/x/e9/00", b"")
            await state._put(f"salts/b/up/9/e9/{salt.hex()}~~~~not-hex", b"")
            records = await state.part_salts("b", "up")
            assert await state.part_md5s("b", "up") == await state.part_md5s("b", "up", records)
            return records, await state.part_md5s("b", "up")
        finally:
            await backend.close()

    got, md5s = asyncio.run(run())
    assert md5s == {(6, "e6"): md5, (7, "e7"): md5, (8, "e8"): md5}
    assert got == {
        (1, "e1"): PartRecord(salt, None, None),
        (2, "e2"): PartRecord(salt, plain, None),
        (3, "e3"): PartRecord(salt, None, crc),
        (4, "e4"): PartRecord(salt, plain, crc),
        (5, "e5"): PartRecord(salt, None, None),
        (6, "e6"): PartRecord(salt, None, None, md5),
        (7, "e7"): PartRecord(salt, plain, crc, md5),
    }
