"""Server-side sessions: idle expiry, sign-out, and the Secure flag over TLS (in-process app)."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from kms_core.console.app import create_console
from kms_core.console.sessions import SessionStore
from kms_core.db import make_engine
from kms_core.embedded import Kms
from kms_core.http.app import create_app


def test_idle_sessions_expire_and_ended_ones_are_gone(tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = SessionStore(make_engine(f"sqlite:///{tmp_path / 's.db'}"), timedelta(minutes=30),
                         clock=lambda: now[0])
    token, s = store.create("111111111111", "SSEGKEY", "cn-east-1")
    now[0] += timedelta(minutes=29)
    assert store.get(token) == s  # used: the idle clock restarts
    now[0] += timedelta(minutes=29)
    assert store.get(token) is not None
    now[0] += timedelta(minutes=31)
    assert store.get(token) is None  # idle too long
    token2, s2 = store.create("111111111111", "SSEGKEY", "cn-east-1")
    store.end(s2.token_hash)
    assert store.get(token2) is None
    assert store.get("") is None and store.get("x" * 500) is None


def test_cookie_is_secure_over_tls(kms: Kms) -> None:
    info, creds = kms.accounts.create_account("tls")
    app = create_app(kms, create_console(kms, secure_cookies=True))

    async def sign_in() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as client:
            r = await client.get("/console/signin")
            assert "secure" in r.headers["set-cookie"].lower()
            token = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
            return await client.post("/console/signin", data={
                "csrf": token, "access_key_id": creds.access_key_id,
                "secret_access_key": creds.secret_access_key})

    # In a thread of its own: the session's Playwright keeps an event loop on this one.
    with ThreadPoolExecutor(1) as pool:
        r = pool.submit(asyncio.run, sign_in()).result()
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("ssegw_console="))
    flags = {f.strip().lower() for f in cookie.split(";")}
    assert {"httponly", "secure", "samesite=strict", "path=/console"} <= flags
