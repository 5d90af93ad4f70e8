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

    async def run() -> dict[tuple[int, str], PartRecord]:
        backend = Backend(BackendConfig(moto_url, *BACKEND_KEY))
        state = UploadState(backend, bucket_name())
        try:
            await state.remember_salt("b", "up", 1, '"E1"', salt)
            await state.remember_salt("b", "up", 2, "e2", salt, plain)
            await state.remember_salt("b", "up", 3, "e3", salt, None, crc)
            await state.remember_salt("b", "up", 4, "e4", salt, plain, crc)
            await state.remember_salt("b", "other", 1, "e1", os.urandom(16))
            # Damaged or foreign records are passed over, not fatal.
            await state._put(f"salts/b/up/5/e5/{salt.hex()}~~~not-base64!", b"")
            await state._put("salts/b/up/x/e6/00", b"")
            return await state.part_salts("b", "up")
        finally:
            await backend.close()

    got = asyncio.run(run())
    assert got == {
        (1, "e1"): PartRecord(salt, None, None),
        (2, "e2"): PartRecord(salt, plain, None),
        (3, "e3"): PartRecord(salt, None, crc),
        (4, "e4"): PartRecord(salt, plain, crc),
        (5, "e5"): PartRecord(salt, None, None),
    }
