"""The S3 proxy, put together: one object per group of S3 operations, each handed the
collaborators it uses (the backend, the bucket registry, the reader, object encryption).

Following a PutObject: app.py (HTTP → `S3Request`, routing.py picks the operation) →
objects.py `Objects.put_object` (bucket ownership: buckets.py; the new object's encryption and
data key: encryption.py, objkeys.py; the body: bodies.py) → writer.py (sealed with envelope.py
through streaming.py) → backend.py. Reads go through reader.py; CopyObject and re-keying are in
copy.py, multipart uploads in uploads.py (CompleteMultipartUpload in complete.py), listings in
listing.py and versions.py, bucket settings in bucket_ops.py and acl.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from gateway.s3.acl import Acl
from gateway.s3.auth import Authenticated
from gateway.s3.backend import Backend
from gateway.s3.bucket_ops import BucketOps
from gateway.s3.buckets import Buckets
from gateway.s3.copy import Copier
from gateway.s3.encryption import ObjectEncryption
from gateway.s3.keycache import DEFAULT_TTL
from gateway.s3.listing import Listing
from gateway.s3.object_tagging import ObjectTagging
from gateway.s3.objects import Objects
from gateway.s3.objkeys import ObjectKeys
from gateway.s3.reader import Reader
from gateway.s3.upload_state import UploadState, default_state_bucket
from gateway.s3.uploads import Uploads
from gateway.s3.versions import Versions
from kms_core.client import KmsClient


class S3Proxy:
    def __init__(self, backend: Backend, kms_for: Callable[[Authenticated], KmsClient], *,
                 key_cache_ttl: float | None = None, allow_sse_c_over_http: bool = False,
                 state_bucket: str | None = None, serve_plaintext: bool = False,
                 upgrading: bool | None = None) -> None:
        if upgrading is None:
            upgrading = os.environ.get("SSEGW_UPGRADING", "").lower() in ("1", "true", "yes")
        if key_cache_ttl is None:
            key_cache_ttl = float(os.environ.get("SSEGW_KEY_CACHE_SECONDS", DEFAULT_TTL))
        self.backend = backend
        self.buckets = Buckets(backend, kms_for)
        self.sse = ObjectEncryption(ObjectKeys(kms_for, key_cache_ttl), allow_sse_c_over_http=allow_sse_c_over_http,
                                    serve_plaintext=serve_plaintext)
        self.reader = Reader(backend)
        self.sse.on_damaged = self.reader.distrust
        # Upload state every node must see (upload_state.py): a backend bucket no tenant owns.
        self.state_bucket = (state_bucket or os.environ.get("SSEGW_STATE_BUCKET")
                             or default_state_bucket(backend.config.url, backend.config.access_key_id))
        self.upload_state = UploadState(backend, self.state_bucket)
        self.bucket_ops = BucketOps(backend, self.buckets, self.sse, self.state_bucket)
        self.listing = Listing(backend, self.buckets, self.reader, self.sse)
        self.objects = Objects(backend, self.buckets, self.reader, self.sse, upgrading=upgrading)
        self.copier = Copier(backend, self.buckets, self.reader, self.sse, upgrading=upgrading)
        self.uploads = Uploads(backend, self.buckets, self.reader, self.sse, self.upload_state, self.copier,
                               upgrading=upgrading)
        self.versions = Versions(backend, self.buckets, self.listing)
        self.acl = Acl(self.buckets, self.reader)
        self.tagging = ObjectTagging(backend, self.buckets)

    @property
    def keys(self) -> ObjectKeys:
        """Data keys from the KMS (objkeys.py): one for every operation, held by `sse`."""
        return self.sse.keys

    @keys.setter
    def keys(self, keys: ObjectKeys) -> None:
        self.sse.keys = keys

    @property
    def serve_plaintext(self) -> bool:
        """ssegw serve --serve-plaintext-objects (encryption.py)."""
        return self.sse.serve_plaintext

    @serve_plaintext.setter
    def serve_plaintext(self, on: bool) -> None:
        self.sse.serve_plaintext = on

    @property
    def allow_sse_c_over_http(self) -> bool:
        """SSE-C keys accepted over plain HTTP (a test rig on loopback; never in production)."""
        return self.sse.allow_sse_c_over_http

    @allow_sse_c_over_http.setter
    def allow_sse_c_over_http(self, on: bool) -> None:
        self.sse.allow_sse_c_over_http = on
