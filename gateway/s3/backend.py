"""The proxy's client for its backend S3: path-style requests, re-signed with the backend's key.

Bodies stream both ways (httpx): a PUT body may be an async iterator of sealed packages with a
known Content-Length, and a GET response is read as it arrives. Bodies we stream are signed as
UNSIGNED-PAYLOAD, as AWS SDKs do over TLS; small bodies carry their SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

import httpcore
import httpx

from kms_core.sigv4 import UNSIGNED_PAYLOAD, sign_headers

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

# httpcore reads response bodies 64 KiB at a time, each read a trip through anyio, h11 and a
# timeout scope: for multi-megabyte objects those trips cost more than the decryption. Larger
# reads return whatever has arrived (up to this), so small replies are not delayed.
READ_SIZE = 1024 * 1024
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_SIZE


@dataclass(frozen=True)
class BackendConfig:
    url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"
    verify_tls: bool | str = True


def object_path(bucket: str, key: str | None = None) -> str:
    path = "/" + quote(bucket, safe="")
    if key is not None:
        path += "/" + quote(key, safe="-_.~/")
    return path


class Backend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._host = urlsplit(config.url).netloc
        self._client = httpx.AsyncClient(
            base_url=config.url.rstrip("/"),
            timeout=httpx.Timeout(300.0, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            verify=config.verify_tls,
        )

    async def close(self) -> None:
        await self._client.aclose()

    def _signed(self, method: str, path: str, query: str, headers: Mapping[str, str],
                payload_hash: str) -> dict[str, str]:
        base = {"host": self._host, **{k.lower(): v for k, v in headers.items()}}
        base.pop("content-length", None)  # not signed: httpx sets it as sent
        auth = sign_headers(method=method, path=path, raw_query=query, headers=base,
                            payload_hash=payload_hash, access_key_id=self.config.access_key_id,
                            secret=self.config.secret_access_key, region=self.config.region,
                            service="s3")
        out = {**base, **auth}
        if "content-length" in {k.lower() for k in headers}:
            out["content-length"] = next(v for k, v in headers.items() if k.lower() == "content-length")
        out.pop("host")
        return out

    async def send(
        self,
        method: str,
        bucket: str | None = None,
        key: str | None = None,
        *,
        query: Mapping[str, str] | list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | AsyncIterator[bytes] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One backend request; with `stream=True` the caller must `aclose()` the response."""
        path = object_path(bucket, key) if bucket else "/"
        raw_query = urlencode(list(query.items()) if isinstance(query, Mapping) else (query or []),
                              quote_via=quote, safe="-_.~")
        hdrs = dict(headers or {})
        if isinstance(body, bytes | type(None)):
            payload_hash = hashlib.sha256(body or b"").hexdigest()
        else:
            payload_hash = UNSIGNED_PAYLOAD
        signed = self._signed(method, path, raw_query, hdrs, payload_hash)
        url = path + (f"?{raw_query}" if raw_query else "")
        request = self._client.build_request(method, url, headers=signed, content=body)
        return await self._client.send(request, stream=stream)
