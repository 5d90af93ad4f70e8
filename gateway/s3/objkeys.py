"""Object keys: which data key seals an object, and getting it back from the KMS.

Per-object keys: one generateDataKey per object, sealed with the object's ARN as context, and
one decrypt per read (never cached: disabling the CMK stops reads at once).
Bucket keys: one generateDataKey per bucket, CMK and cache lifetime, sealed with the bucket's
ARN as context; each object's key is HKDF(bucket key, per-object salt) (envelope.derive_key),
so a thousand small PUTs cost one KMS call instead of a thousand. Bucket keys, generated or
opened, are cached for a bounded lifetime (keycache.py), which is also how long a disabled CMK
keeps working for bucket-key objects through this proxy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from gateway.s3 import envelope
from gateway.s3.auth import Authenticated
from gateway.s3.envelope import Algorithm
from gateway.s3.errors import S3Error, from_kms
from gateway.s3.keycache import DEFAULT_TTL, KeyCache
from kms_core.client import DataKey, KmsClient, KmsError, ResealedKey

T = TypeVar("T")

PRODUCT = "oss"
SPEC_TTL = 60.0  # a key's spec never changes; an alias may move to another key


@dataclass(frozen=True)
class ObjectKey:
    """An object's data key with what its envelope records about it."""

    plaintext: bytes = field(repr=False)
    algorithm: Algorithm
    sealed: bytes  # the sealed data key, or for bucket-key objects the sealed bucket key
    kms_key_id: str
    version_id: str
    salt: bytes | None = None  # bucket-key objects
    customer: str | None = None  # SSE-C objects: the key record; `sealed` is wrapped by the customer key


def _ctx_key(ctx: Mapping[str, str] | None) -> str:
    return json.dumps(dict(ctx or {}), sort_keys=True)


class ObjectKeys:
    def __init__(self, kms_for: Callable[[Authenticated], KmsClient], ttl: float = DEFAULT_TTL, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kms_for = kms_for
        self.ttl = ttl
        self._specs: KeyCache[tuple[str, str]] = KeyCache(min(ttl, SPEC_TTL) if ttl > 0 else SPEC_TTL,
                                                          clock=clock, name="s3_key_specs")
        self._bucket_keys: KeyCache[DataKey] = KeyCache(ttl, clock=clock, name="s3_bucket_keys")
        self._opened: KeyCache[bytes] = KeyCache(ttl, clock=clock, name="s3_opened_keys")
        self._resealed: KeyCache[ResealedKey] = KeyCache(ttl, clock=clock, name="s3_resealed_keys")
        self.kms_calls = 0  # for tests and benchmarks: calls this proxy made to the KMS

    def forget_all(self) -> None:
        """Drop every cached key (a key's state changed somewhere in the cluster). Call it on
        the event loop: the caches are not shared with other threads."""
        for cache in (self._specs, self._bucket_keys, self._opened, self._resealed):
            cache.clear()

    async def call(self, auth: Authenticated, fn: Callable[[KmsClient], T]) -> T:
        """One KMS call, off the event loop (an HTTP KMS or a first-use database write block)."""
        client = self.kms_for(auth)
        self.kms_calls += 1
        try:
            return await anyio.to_thread.run_sync(lambda: fn(client))
        except KmsError as e:
            raise from_kms(e) from None

    async def spec(self, auth: Authenticated, key: str) -> tuple[str, str]:
        """(key id, spec) of a user-named key."""

        async def load() -> tuple[str, str]:
            meta = await self.call(auth, lambda c: c.describe_key(key))
            return meta.key_id, meta.spec

        return await self._specs.get_or_load((auth.caller.account_id, key), load)

    async def algorithm(self, auth: Authenticated, cmk: str | None) -> Algorithm:
        if cmk and (await self.spec(auth, cmk))[1] == "SM4":
            return Algorithm.SM4_GCM
        return Algorithm.AES_256_GCM

    async def new_key(self, auth: Authenticated, cmk: str | None, bucket: str, key: str,
                      user_context: Mapping[str, str] | None, bucket_key: bool) -> ObjectKey:
        """A data key for a new object (or upload) of `bucket`/`key` under `cmk` (None: default).

        A request with its own encryption context gets a per-object key: that context must bind
        the object's key, and a bucket key is sealed with the bucket's ARN only.
        """
        algorithm = await self.algorithm(auth, cmk)
        account = auth.caller.account_id
        if bucket_key and not user_context:
            ctx = envelope.bucket_context(bucket)

            async def load() -> DataKey:
                bk = await self.call(auth, lambda c: c.generate_data_key(PRODUCT, cmk, ctx, 32))
                # Reads of the objects it seals need not ask again; the entry's lifetime counts
                # from this call, like the bucket key's own.
                assert bk.plaintext is not None
                self._opened.put((account, bk.sealed, _ctx_key(ctx)), bk.plaintext)
                return bk

            bk = await self._bucket_keys.get_or_load((account, bucket, cmk or "", algorithm), load)
            assert bk.plaintext is not None
            salt = envelope.new_salt()
            return ObjectKey(envelope.derive_key(bk.plaintext, salt, algorithm), algorithm, bk.sealed,
                             bk.key_id, bk.version_id, salt)
        ctx = envelope.object_context(bucket, key, user_context)
        dk = await self.call(auth, lambda c: c.generate_data_key(PRODUCT, cmk, ctx, algorithm.key_len))
        assert dk.plaintext is not None
        return ObjectKey(dk.plaintext, algorithm, dk.sealed, dk.key_id, dk.version_id)

    async def open(self, auth: Authenticated, bucket: str, key: str, algorithm: Algorithm,
                   sealed: bytes, salt: bytes | None, user_context: Mapping[str, str] | None) -> bytes:
        """The data key of a stored object (or upload) from its envelope fields."""
        ctx = envelope.bucket_context(bucket) if salt else envelope.object_context(bucket, key, user_context)

        async def load() -> bytes:
            dk = await self.call(auth, lambda c: c.decrypt_data_key(sealed, ctx))
            assert dk.plaintext is not None
            return dk.plaintext

        if salt is None:
            # Per-object keys are not cached: every read and every part asks the KMS, so a
            # disabled key stops them at once. Bucket keys trade that for fewer KMS calls.
            plain = await load()
        else:
            plain = await self._opened.get_or_load((auth.caller.account_id, sealed, _ctx_key(ctx)), load)
        try:
            if salt is not None:
                return envelope.derive_key(plain, salt, algorithm)
            if len(plain) != algorithm.key_len:
                raise ValueError
        except ValueError:
            raise S3Error("InternalError", "The object's data key does not fit its format", 500) from None
        return plain

    async def reseal(self, auth: Authenticated, sealed: bytes, source_context: Mapping[str, str],
                     cmk: str | None, context: Mapping[str, str]) -> ResealedKey:
        """`sealed` re-sealed under `cmk` (None: the default key) with `context`; no plaintext.

        Cached: the objects of one bucket key share a sealed key, so re-keying a bucket of
        bucket-key objects costs one KMS call per bucket key, not one per object.
        """

        async def load() -> ResealedKey:
            return await self.call(auth, lambda c: c.reseal_data_key(sealed, PRODUCT, cmk, source_context,
                                                                     context))

        ck = (auth.caller.account_id, sealed, _ctx_key(source_context), cmk or "", _ctx_key(context))
        return await self._resealed.get_or_load(ck, load)
