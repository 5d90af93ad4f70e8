"""The proxy's client for its backend S3: path-style requests, re-signed with the backend's key.

Bodies stream both ways: a PUT body may be an async iterator of sealed packages with a known
Content-Length, and a GET response is read as it arrives. Bodies we stream are signed as
UNSIGNED-PAYLOAD, as AWS SDKs do over TLS; small bodies carry their SHA-256.

Why aiohttp: its response parser is C (llhttp) and hands the body over in the pieces the socket
delivered. httpx (httpcore + h11) parsed in Python and copied every body byte three times; on a
64 MiB GET that was ~65 ms of CPU against aiohttp's ~17 ms, more than the decryption itself.

Two rules keep ciphertext intact: responses are never decompressed (an object stored with
`Content-Encoding: gzip` describes its plaintext, not what the backend holds), and the URL we
signed is sent byte for byte (yarl must not re-quote it).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import weakref
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.s3 import aws_chunked
from gateway.s3.checksums import Running
from gateway.s3.errors import S3Error, from_backend
from kms_core.sigv4 import UNSIGNED_PAYLOAD, sign_headers

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=300.0)
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def xml_text(el: ET.Element, name: str) -> str | None:
    """The text of `el`'s child `name`, in the S3 namespace or (as some backends answer) none."""
    found = el.find(f"{{{S3_NS}}}{name}")
    if found is None:
        found = el.find(name)
    return found.text if found is not None else None


class BackendError(S3Error):
    """The backend could not be reached, or the exchange with it broke off.

    The client gets S3's ServiceUnavailable; what went wrong (`detail`, also `str()`) is for
    the operator's log, not for the client."""

    def __init__(self, detail: str) -> None:
        super().__init__("ServiceUnavailable", "The storage backend is unavailable. Please try again.", 503)
        self.detail = detail
        self.args = (detail,)


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


class BackendResponse:
    """One backend answer: status and headers at once, the body read whole or streamed."""

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers
        self.content = b""
        self.is_closed = False

    async def aread(self) -> bytes:
        if not self.is_closed:
            try:
                self.content = await self._raw.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise BackendError(f"reading the backend's answer failed: {e!r}") from e
            finally:
                await self.aclose()
        return self.content

    async def aclose(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            self._raw.release()

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces the socket delivered.

        readchunk, not readany: readany joins whatever is buffered into one new bytes object,
        one more copy of every byte."""
        content = self._raw.content
        try:
            while True:
                chunk, boundary = await content.readchunk()
                if chunk:
                    yield chunk
                elif not boundary:  # (b"", False) is the end of the body
                    return
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise BackendError(f"the backend's answer broke off: {e!r}") from e
        finally:
            await self.aclose()


async def backend_error(r: BackendResponse) -> NoReturn:
    """Raises the backend's error answer `r` as an S3Error of ours."""
    body = await r.aread() if not r.is_closed else r.content
    raise from_backend(r.status_code, body, r.headers)


class Backend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._base = config.url.rstrip("/")
        self._host = urlsplit(config.url).netloc
        # A session belongs to the event loop it was made on, and one proxy may serve from
        # several loops (one per uvicorn server thread in tests, one loop after another in CLIs).
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary())

    def _ssl(self) -> ssl.SSLContext | bool:
        verify = self.config.verify_tls
        if verify is False:
            return False
        return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=0, keepalive_timeout=30,
                                             ssl=self._ssl() if self._base.startswith("https") else False)
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=connector, timeout=_TIMEOUT, auto_decompress=False, skip_auto_headers=_SKIP_AUTO)
        return session

    async def close(self) -> None:
        """Closes the running loop's connections (each loop closes its own on shutdown)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()

    def _signed(self, method: str, path: str, query: str, headers: Mapping[str, str],
                payload_hash: str) -> dict[str, str]:
        base = {"host": self._host, **{k.lower(): v for k, v in headers.items()}}
        length = base.pop("content-length", None)  # not signed: it is sent as it is
        auth = sign_headers(method=method, path=path, raw_query=query, headers=base,
                            payload_hash=payload_hash, access_key_id=self.config.access_key_id,
                            secret=self.config.secret_access_key, region=self.config.region,
                            service="s3")
        out = {**base, **auth}
        if length is not None:
            out["content-length"] = length
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
        body: bytes | memoryview | AsyncIterator[bytes | memoryview] | None = None,
        stream: bool = False,
        crc32_trailer: Running | None = None,
    ) -> BackendResponse:
        """One backend request; with `stream=True` the caller must `aclose()` the response.

        With `crc32_trailer`, a streamed body (its content-length given) goes as aws-chunked
        with a CRC32 trailer (computed into it), which the backend verifies and keeps (as SDKs
        send parts).
        An exception raised by a streamed `body` propagates as itself (the backend saw a
        request that broke off and stored nothing); transport failures are BackendError.
        """
        path = object_path(bucket, key) if bucket else "/"
        raw_query = urlencode(list(query.items()) if isinstance(query, Mapping) else (query or []),
                              quote_via=quote, safe="-_.~")
        hdrs = dict(headers or {})
        body_errors: list[BaseException] = []
        data: bytes | memoryview | AsyncIterator[bytes | memoryview] | None = body
        if isinstance(body, bytes | memoryview | type(None)):
            payload_hash = hashlib.sha256(body or b"").hexdigest()
            for name in [n for n in hdrs if n.lower() == "content-length"]:
                del hdrs[name]  # aiohttp sets it from the bytes
            if body is None and method in ("PUT", "POST"):
                data = b""
        elif crc32_trailer is not None:
            length = int(hdrs.pop("content-length"))
            hdrs.update(aws_chunked.encoded_headers(length))
            payload_hash = aws_chunked.UNSIGNED_TRAILER
            data = _recording(aws_chunked.encode_crc32(body, length, crc32_trailer), body_errors)
        else:
            payload_hash = UNSIGNED_PAYLOAD
            data = _recording(body, body_errors)
        signed = self._signed(method, path, raw_query, hdrs, payload_hash)
        url = URL(self._base + path + (f"?{raw_query}" if raw_query else ""), encoded=True)
        try:
            raw = await self._client().request(method, url, headers=signed, data=data)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            if body_errors:
                raise body_errors[0] from None
            raise BackendError(f"the backend failed: {e!r}") from e
        except BaseException:
            if body_errors:
                raise body_errors[0] from None
            raise
        if body_errors:  # the backend answered before our body failed (an early error reply)
            raw.release()
            raise body_errors[0]
        response = BackendResponse(raw)
        if not stream:
            await response.aread()
        return response


async def _recording(body: AsyncIterator[bytes | memoryview],
                     errors: list[BaseException]) -> AsyncIterator[bytes | memoryview]:
    """`body`, remembering what it raised: aiohttp wraps such errors in its own."""
    try:
        async for chunk in body:
            yield chunk
    except BaseException as e:
        errors.append(e)
        raise
