"""Which upload a multipart request names, and what its UploadId carries: shared by the part
operations (uploads.py) and CompleteMultipartUpload (complete.py)."""

from __future__ import annotations

import hashlib

from gateway.s3 import sse_c
from gateway.s3.buckets import Buckets
from gateway.s3.encryption import ObjectEncryption
from gateway.s3.envelope import ObjectMeta
from gateway.s3.errors import S3Error
from gateway.s3.messages import S3Request
from gateway.s3.multipart import UploadToken, backend_upload_id, is_token
from gateway.s3.upload_state import UploadState


def no_such_upload() -> S3Error:
    return S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                   "or the upload may have been aborted or completed.", 404)


def token_meta(token: UploadToken) -> ObjectMeta:
    """The object metadata the upload was started with, as its UploadId records it."""
    return ObjectMeta(token.algorithm, token.sealed_key, token.base_nonce, None, token.kms_key_id,
                      token.sse, None, token.context, multipart=True, bucket_key_salt=token.bucket_key_salt,
                      customer=token.customer, format=token.format)


def etag_md5(token: UploadToken) -> hashlib._Hash | None:
    """The plaintext MD5 a part's ETag needs, if it needs one.

    SSE-S3 (AES256) parts get the plaintext MD5, as S3 gives them (s3cmd checks it).
    SSE-KMS parts do not, in S3 or here: their ETag is opaque, and clients know it (s3cmd
    skips its check when the reply says aws:kms). At ~0.7 GB/s, that MD5 was the largest
    single cost of a part's upload through the proxy. Content-MD5, when sent, is checked
    either way. Completion matches parts by number against the backend's own list, so
    no ETag we hand out has to be kept.
    """
    return hashlib.md5() if token.sse == "AES256" else None


class UploadLookup:
    def __init__(self, buckets: Buckets, sse: ObjectEncryption, upload_state: UploadState) -> None:
        self.buckets = buckets
        self.sse = sse
        self.upload_state = upload_state

    async def upload_ids(self, req: S3Request) -> tuple[str, str]:
        """(the UploadId as given, the backend's upload id) of an upload in the caller's bucket."""
        assert req.bucket is not None and req.key is not None
        await self.buckets.owned(req)
        upload_id = req.query.get("uploadId", "")
        try:
            return upload_id, backend_upload_id(upload_id)
        except ValueError:
            raise no_such_upload() from None

    async def issued_id(self, bucket: str, upload_id: str) -> str:
        """The UploadId we issued, for the backend's id of the same upload (as listings used to
        show it); any other id as it is."""
        if is_token(upload_id) or not upload_id:
            return upload_id
        return await self.upload_state.upload_id(bucket, upload_id) or upload_id

    async def data_key(self, req: S3Request, token: UploadToken, upload_id: str) -> bytes:
        """The upload's data key, once the UploadId's MAC shows it is one we issued."""
        assert req.bucket is not None and req.key is not None
        customer = self.sse.customer_key(req)
        if token.customer is not None:
            # Every part of an SSE-C upload carries the key it was started with.
            data_key = sse_c.unbind(customer, token.sealed_key, token.customer, req.bucket, req.key,
                                    missing=sse_c.part_key_required(), mismatch=sse_c.part_key_mismatch())
        elif customer is not None:
            raise sse_c.not_applicable()
        else:
            data_key = await self.sse.keys.open(req.auth, req.bucket, req.key, token.algorithm,
                                                token.sealed_key, token.bucket_key_salt, token.context)
        if not token.verify(upload_id, data_key):
            raise no_such_upload()
        return data_key
