"""What the proxy must remember about multipart uploads, kept in the backend (never in memory).

Facts the backend cannot give back about an upload in progress:
- the UploadId we issued (it carries the upload's sealed key and nonce: multipart.py), which
  ListMultipartUploads must show so that a listed upload can go on with its parts;
- the plaintext MD5 of each SSE-S3 part, its ETag (as S3 gives it), which CompleteMultipartUpload
  must check against the part the backend holds;
- the salt each part was sealed with (format v4), which completion binds into the object's
  manifest: S3 cannot read a part of an upload in progress, and reading them back from the
  completed object cost one ranged GET per part (moto reads the whole object for each);
  with it, the part's checksum of its plaintext (checksums.py), which completion checks
  against the client's list and makes the object's checksum of, and the backend's checksum of
  the sealed part (UploadToken.backend_checksum), which completion must repeat to the backend
  (S3 lists it in ListParts; SeaweedFS does not);
- the manifest a completion is about to write, so that a Complete retried after a crash
  between the backend's completion and the manifest's write finishes the job.

Both live in one backend bucket of the gateway's own (`ssegw-state-...`, no tenant owns it or
can create it), so every gateway node sharing the backend sees them:

    uploads/<bucket>/<backend upload id>                     the UploadId (body)
    parts/<bucket>/<backend upload id>/<n>/<sealed ETag>/<plaintext MD5>   (empty; v2 and v3 parts)
    salts/<bucket>/<backend upload id>/<n>/<sealed ETag>/<salt, hex>[~<algorithm>~<checksum>[~<sealed CRC32>
                                                             [~<plaintext MD5>]]]  (empty; any field but the
                                                             salt may be empty; v4 parts only, none of the
                                                             parts/ records then)
    completing/<bucket>/<SHA-256 of key>/<base nonce, hex>   the manifest being written (body)

A part's record names the sealed part it describes (its backend ETag), so a part uploaded
again never borrows the MD5 or salt of the part it replaced. None of it is trusted for
reading: a salt that is not the stored part's makes the object's reads fail (its manifest
binds the salts), never succeed with other bytes. Records are removed when the upload
completes or is aborted; uploads abandoned for good leave a few hundred bytes behind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import xml.etree.ElementTree as ET
from collections import OrderedDict
from typing import NamedTuple
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from gateway.s3 import checksums
from gateway.s3.backend import S3_NS, Backend
from gateway.s3.backend import xml_text as _text
from gateway.s3.checksums import ObjectChecksum
from gateway.s3.errors import S3Error

log = logging.getLogger("ssegw.s3")
_NS = f"{{{S3_NS}}}"
_CACHE = 10_000
_CONCURRENCY = 16


class PartRecord(NamedTuple):
    salt: bytes
    checksum: ObjectChecksum | None  # of the part's plaintext, if the client sent or the upload asked one
    sealed_crc32: str | None = None  # base64, of the sealed part as the backend received it
    md5: str | None = None  # hex, of the part's plaintext: its ETag (SSE-S3)


def default_state_bucket(backend_url: str, access_key_id: str) -> str:
    """One name per backend account, the same on every node (bucket names are global on AWS)."""
    return "ssegw-state-" + hashlib.sha256(f"{backend_url}\n{access_key_id}".encode()).hexdigest()[:16]


def _seg(text: str) -> str:
    return quote(text, safe="")


def part_key(number: int, sealed_etag: str) -> tuple[int, str]:
    """How `part_md5s` and `part_salts` name the record of part `number` stored under the
    backend ETag `sealed_etag` (quoted or not, any case)."""
    return number, _seg(sealed_etag.strip().strip('"').lower())


def _completing(bucket: str, key: str, nonce: bytes) -> str:
    # The key hashed: quoted, a 1,024-byte key would not fit in a state key.
    return f"completing/{_seg(bucket)}/{hashlib.sha256(key.encode()).hexdigest()}/{nonce.hex()}"


class UploadState:
    def __init__(self, backend: Backend, bucket: str) -> None:
        self.backend = backend
        self.bucket = bucket
        self._ready = False
        self._tokens: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def _ensure(self) -> None:
        if self._ready:
            return
        r = await self.backend.send("PUT", self.bucket)
        if r.status_code not in (200, 409):
            raise S3Error("ServiceUnavailable", f"the gateway's state bucket could not be made ({r.status_code})",
                          503)
        self._ready = True

    async def _put(self, key: str, body: bytes) -> None:
        await self._ensure()
        r = await self.backend.send("PUT", self.bucket, key, body=body)
        if r.status_code != 200:
            raise S3Error("ServiceUnavailable", f"the gateway's upload state could not be written ({r.status_code})",
                          503)

    # ------------------------------------------------------------------ upload ids

    async def remember_upload(self, bucket: str, backend_id: str, token: str) -> None:
        await self._put(f"uploads/{_seg(bucket)}/{_seg(backend_id)}", token.encode())
        self._cache(bucket, backend_id, token)

    def _cache(self, bucket: str, backend_id: str, token: str) -> None:
        self._tokens[(bucket, backend_id)] = token
        while len(self._tokens) > _CACHE:
            self._tokens.popitem(last=False)

    async def upload_id(self, bucket: str, backend_id: str) -> str | None:
        """The UploadId we issued for a backend upload (None: not one of ours, or before this)."""
        hit = self._tokens.get((bucket, backend_id))
        if hit is not None:
            return hit
        r = await self.backend.send("GET", self.bucket, f"uploads/{_seg(bucket)}/{_seg(backend_id)}")
        if r.status_code != 200:
            return None
        token = r.content.decode("ascii", "replace")
        self._cache(bucket, backend_id, token)
        return token

    async def upload_ids(self, bucket: str, backend_ids: list[str]) -> dict[str, str]:
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one(backend_id: str) -> tuple[str, str | None]:
            async with sem:
                return backend_id, await self.upload_id(bucket, backend_id)

        return {b: t for b, t in await asyncio.gather(*(one(b) for b in backend_ids)) if t is not None}

    # ------------------------------------------------------------------ part MD5s

    async def remember_part(self, bucket: str, backend_id: str, number: int, sealed_etag: str, md5: str) -> None:
        etag = part_key(number, sealed_etag)[1]
        await self._put(f"parts/{_seg(bucket)}/{_seg(backend_id)}/{number}/{etag}/{md5}", b"")

    async def part_md5s(self, bucket: str, backend_id: str,
                        records: dict[tuple[int, str], PartRecord] | None = None) -> dict[tuple[int, str], str]:
        """`part_key` -> plaintext MD5 of every part recorded for an upload: in its v4 record
        (`records`, when the caller has them already) or, for parts of v2 and v3 uploads and
        of v4 uploads before the MD5 moved there, in a record of its own."""
        listing = self._keys(f"parts/{_seg(bucket)}/{_seg(backend_id)}/")
        if records is None:
            own, v4 = await asyncio.gather(listing, self.part_salts(bucket, backend_id))
        else:
            own, v4 = await listing, records
        out = {key: r.md5 for key, r in v4.items() if r.md5 is not None}
        for key in own:
            number, etag, md5 = key.rsplit("/", 3)[1:]
            if number.isdigit():
                out[(int(number), etag)] = md5
        return out

    # ------------------------------------------------------------------ part salts (v4)

    async def remember_salt(self, bucket: str, backend_id: str, number: int, sealed_etag: str, salt: bytes,
                            checksum: ObjectChecksum | None = None, sealed_crc32: str | None = None,
                            md5: str | None = None) -> None:
        """A v4 part's one record: one small PUT per part (each costs moto ~2 ms of CPU)."""
        etag = part_key(number, sealed_etag)[1]
        fields = [salt.hex(), checksum.algorithm if checksum is not None else "",
                  _seg(checksum.value()) if checksum is not None else "", _seg(sealed_crc32 or ""), md5 or ""]
        record = "~".join(fields).rstrip("~")  # as short as older versions wrote it
        await self._put(f"salts/{_seg(bucket)}/{_seg(backend_id)}/{number}/{etag}/{record}", b"")

    async def part_salts(self, bucket: str, backend_id: str) -> dict[tuple[int, str], PartRecord]:
        """`part_key` -> salt and checksum of every part recorded for an upload."""
        out: dict[tuple[int, str], PartRecord] = {}
        for key in await self._keys(f"salts/{_seg(bucket)}/{_seg(backend_id)}/"):
            number, etag, record = key.rsplit("/", 3)[1:]
            salt, algorithm, value, sealed, md5 = (record.split("~") + ["", "", "", ""])[:5]
            try:
                if not number.isdigit():
                    continue
                checksum = None
                if algorithm in checksums.ALGORITHMS:
                    digest = checksums.decode_value(algorithm, unquote(value))
                    checksum = ObjectChecksum(algorithm, digest) if digest is not None else None
                sealed_crc32 = unquote(sealed) if sealed else None
                if sealed_crc32 is not None and checksums.decode_value("CRC32", sealed_crc32) is None:
                    sealed_crc32 = None
                bytes.fromhex(md5)  # hex, or not one of ours
                out[(int(number), etag)] = PartRecord(bytes.fromhex(salt), checksum, sealed_crc32,
                                                      md5.lower() or None)
            except ValueError:
                continue
        return out

    # ------------------------------------------------------------------ completions in flight

    # Keyed by the object and its upload's base nonce (in its metadata), so that a reader who
    # finds a completed object without its manifest can finish the job as well as a retried
    # Complete can.

    async def remember_completion(self, bucket: str, key: str, nonce: bytes, manifest: str) -> None:
        await self._put(_completing(bucket, key, nonce), manifest.encode())

    async def completion(self, bucket: str, key: str, nonce: bytes) -> str | None:
        """The manifest a Complete of this upload was writing (None: none was begun, or done)."""
        r = await self.backend.send("GET", self.bucket, _completing(bucket, key, nonce))
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise S3Error("ServiceUnavailable", f"the gateway's upload state could not be read ({r.status_code})",
                          503)
        return r.content.decode("ascii", "replace")

    async def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix, **({"continuation-token": token} if token else {})}
            r = await self.backend.send("GET", self.bucket, query=query)
            if r.status_code == 404:
                return keys  # no state bucket yet: nothing recorded
            if r.status_code != 200:
                raise S3Error("ServiceUnavailable", f"the gateway's upload state could not be read ({r.status_code})",
                              503)
            root = ET.fromstring(r.content)
            keys += [k.text or "" for k in root.iter(f"{_NS}Key")]
            token = _text(root, "NextContinuationToken")
            if (_text(root, "IsTruncated") or "false") != "true" or not token:
                return keys

    # ------------------------------------------------------------------ clean-up

    async def forget(self, bucket: str, backend_id: str, done: tuple[str, bytes] | None = None) -> None:
        """Drops an upload's records once it completed (`done`: its key and base nonce) or was
        aborted (best effort)."""
        self._tokens.pop((bucket, backend_id), None)
        try:
            keys = await self._keys(f"parts/{_seg(bucket)}/{_seg(backend_id)}/")
            keys += await self._keys(f"salts/{_seg(bucket)}/{_seg(backend_id)}/")
            keys.append(f"uploads/{_seg(bucket)}/{_seg(backend_id)}")
            if done is not None:
                keys.append(_completing(bucket, *done))
            for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
                items = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys[start:start + 1000])
                body = f'<Delete xmlns="{S3_NS}"><Quiet>true</Quiet>{items}</Delete>'.encode()
                await self.backend.send("POST", self.bucket, query={"delete": ""}, body=body, headers={
                    "content-type": "application/xml",
                    "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()})
        except Exception as e:  # noqa: BLE001 - leftovers are harmless; the operation succeeded
            log.warning("could not drop the state of upload %s: %s", backend_id, e)
