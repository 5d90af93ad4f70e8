"""Writing one new object to the backend, sealed as a single stream under a fresh data key
(PutObject, and CopyObject when the data must be re-encrypted)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.s3 import checksums, envelope, manifest_tags
from gateway.s3.backend import Backend, BackendResponse
from gateway.s3.checksums import BodyChecksum
from gateway.s3.encryption import Encryption
from gateway.s3.envelope import ObjectCorrupt, ObjectMeta
from gateway.s3.objkeys import ObjectKey
from gateway.s3.reader import damaged
from gateway.s3.streaming import BUFFER_LIMIT, BodyBudget, sealed_stream, sealed_whole


async def write_sealed(backend: Backend, bucket: str, key: str, ok: ObjectKey, enc: Encryption, size: int,
                       plain: AsyncIterator[bytes | memoryview], headers: dict[str, str],
                       expected_md5: bytes | None = None,
                       checksum: BodyChecksum | None = None,
                       checksum_tag: bool = True) -> tuple[ObjectMeta, BackendResponse]:
    """PUT `size` bytes of `plain` as bucket/key sealed under `ok`, with `headers` and the
    envelope's metadata: (that metadata, the backend's answer).

    Objects up to BUFFER_LIMIT are read and verified whole first, so the plaintext MD5 can
    travel as metadata (the ETag) and a bad body never reaches the backend; larger ones stream,
    and a bad body aborts the backend's upload (streaming.sealed_stream). The body's
    `checksum` is kept (sealed) when it is known before the metadata goes out: always for a
    buffered object, for a streamed one when a header declared it; a streamed body's checksum
    that is known only at its end (a trailer's, or computed) goes into the object's manifest tag
    once the backend stored it (envelope.CHECKSUM_IN_TAG), unless `checksum_tag` is False or
    the client's tags leave no room: then it is answered but not kept."""
    nonce = envelope.new_base_nonce()
    sealed = envelope.sealed_size(size)
    # A buffered object is sealed into one buffer of its sealed size, sent as it is.
    sealer = envelope.Sealer(envelope.PackageCipher(ok.algorithm, ok.plaintext, nonce,
                                                    version=envelope.FORMAT_VERSION_3),
                             envelope.Pieces(sealed if size <= BUFFER_LIMIT else envelope.SEALED_PIECE, sealed))
    headers = {**headers, "content-length": str(sealed)}

    def meta_for(md5: str | None, known: checksums.ObjectChecksum | None, in_tag: bool = False) -> ObjectMeta:
        # SSE-C objects keep no plaintext MD5: it would let anyone who reads the backend
        # confirm a guess of the content, and S3's SSE-C ETags are no MD5 either.
        sealed_checksum = checksums.seal(known, ok.plaintext, ok.algorithm) if known else None
        return ObjectMeta(ok.algorithm, ok.sealed, nonce, size, ok.kms_key_id, enc.sse,
                          None if ok.customer else md5, enc.context, bucket_key_salt=ok.salt,
                          customer=ok.customer,
                          checksum=envelope.CHECKSUM_IN_TAG if in_tag else sealed_checksum,
                          ).signed(ok.plaintext, bucket, key)

    try:
        if size <= BUFFER_LIMIT:
            # Twice the sealed size: the sealed body, and what the transport and the hashing hold
            # of it and of the plaintext while it is read and sent (measured: ~2.2x under load).
            async with BodyBudget.of_loop().hold(2 * sealed):
                body, md5 = await sealed_whole(plain, sealer, expected_md5)
                meta = meta_for(md5, checksum.result() if checksum is not None else None)
                r = await backend.send("PUT", bucket, key, headers={**headers, **meta.encode()}, body=body)
                del body  # the budget is for the bytes held; they go when it is given back
        else:
            known = checksum.known() if checksum is not None else None
            later = (checksum_tag and checksum is not None and checksum.algorithm is not None and known is None
                     and manifest_tags.has_room(headers.get("x-amz-tagging")))
            meta = meta_for(None, known, later)
            r = await backend.send("PUT", bucket, key, headers={**headers, **meta.encode()},
                                   body=sealed_stream(plain, sealer, expected_md5))
            found = checksum.result() if later and checksum is not None and r.status_code == 200 else None
            if found is not None:
                await manifest_tags.write(backend, bucket, key, r.headers.get("x-amz-version-id"),
                                          checksums.seal(found, ok.plaintext, ok.algorithm))
    except ObjectCorrupt as e:  # the source of a copy failed authentication
        raise damaged(str(e)) from None
    return meta, r
