"""The web console: `create_console()` is a Starlette app mounted at /console/ on the KMS port.

Server-rendered pages on the same service layer as the HTTP API: every rule (key specs, states,
alias names, rotation periods...) is the service's, and its errors are shown in the page.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from kms_core.client.products import ProductEncryption
from kms_core.console import keys, pages
from kms_core.console.i18n import LANGUAGES
from kms_core.console.sessions import DEFAULT_IDLE_TIMEOUT, SessionStore, SignedIn, same_token
from kms_core.console.web import (
    LANG_COOKIE,
    PREFIX,
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    Console,
    SecurityHeaders,
    csrf_ok,
    form_data,
    in_thread,
    new_token,
    redirect,
)
from kms_core.embedded import Kms
from kms_core.errors import AccessDenied
from kms_core.regions import ResourcePool, is_pool, pool

PageHandler = Callable[[Console, Request, SignedIn, dict[str, Any]], Awaitable[Response]]


def create_console(kms: Kms, *, pools: tuple[str, ...] | None = None,
                   products: ProductEncryption | None = None, secure_cookies: bool = False,
                   idle_timeout: timedelta = DEFAULT_IDLE_TIMEOUT) -> SecurityHeaders:
    served = tuple(_pools(pools or (kms.config.region,)))
    console = Console(kms, served, products, SessionStore(kms.engine, idle_timeout),
                      secure_cookies=secure_cookies)

    def page(handler: PageHandler, *, allow_frozen: bool = False) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            session = await in_thread(console.session, request)
            form: dict[str, Any] = {}
            if request.method == "POST":
                form = await form_data(request)
                if session is None or not csrf_ok(session, form):
                    return console.page(request, "error.html", 403, None, title="Forbidden",
                                        message="Your session has expired or the form is stale; please try again.")
            elif session is None:
                return redirect(f"{PREFIX}/signin")
            assert session is not None
            if not allow_frozen:
                reason = await in_thread(console.frozen, session)
                if reason is not None:
                    return console.page(request, "frozen.html", 403, session, reason=reason)
            return await handler(console, request, session, form)

        return endpoint

    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/signin", functools.partial(_signin, console), methods=["GET", "POST"]),
        Route("/signout", page(_signout, allow_frozen=True), methods=["POST"]),
        Route("/pool", page(_switch_pool), methods=["POST"]),
        Route("/language/{lang}", _language, methods=["GET"]),
        Route("/keys", page(keys.key_list), methods=["GET", "POST"]),
        Route("/keys/{key_id}", page(keys.key_detail), methods=["GET"]),
        Route("/keys/{key_id}/public-key/{version_id}", page(keys.public_key), methods=["GET"]),
        Route("/keys/{key_id}/{action}", page(keys.key_action), methods=["POST"]),
        Route("/usage", page(pages.usage), methods=["GET"]),
        Route("/products", page(pages.products), methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        session = await in_thread(console.session, request)
        return console.not_found(request, session)

    app = Starlette(routes=routes, exception_handlers={404: not_found})
    return SecurityHeaders(app)


def _pools(ids: tuple[str, ...]) -> list[ResourcePool]:
    out = []
    for pool_id in ids:
        # A deployment may name a region outside the guide's catalog (tests, private pools).
        out.append(pool(pool_id) if is_pool(pool_id) else ResourcePool(pool_id, pool_id, pool_id))
    return out


async def _index(request: Request) -> Response:
    return redirect(f"{PREFIX}/keys")


async def _language(request: Request) -> Response:
    lang = request.path_params["lang"]
    back = request.query_params.get("next", "")
    # Only a path of this console: never an open redirect.
    if not back.startswith(f"{PREFIX}/") or back.startswith("//") or "\\" in back:
        back = f"{PREFIX}/keys"
    response = RedirectResponse(back, status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, path=PREFIX, samesite="strict", max_age=365 * 86400)
    return response


async def _signin(console: Console, request: Request) -> Response:
    if request.method == "GET":
        session = await in_thread(console.session, request)
        if session is not None:
            return redirect(f"{PREFIX}/keys")
        return _signin_page(console, request)
    form = await form_data(request)
    if not same_token(form.get("csrf") if isinstance(form.get("csrf"), str) else None,
                      request.cookies.get(PRESESSION_COOKIE)):
        return console.page(request, "error.html", 403, None, title="Forbidden",
                            message="Your session has expired or the form is stale; please try again.")
    address = request.client.host if request.client else "-"
    delay = console.throttle.delay(address)
    if delay:
        await asyncio.sleep(delay)
    access_key_id = str(form.get("access_key_id", "")).strip()
    secret = str(form.get("secret_access_key", ""))
    account_id = await in_thread(_check_credentials, console, access_key_id, secret)
    if account_id is None:
        console.throttle.failed(address)
        return _signin_page(console, request, 401, error="The access key ID or secret access key is wrong.",
                            slowed=bool(delay), access_key_id=access_key_id)
    console.throttle.succeeded(address)
    await in_thread(console.sessions.sweep)  # sessions abandoned without signing out
    token, _ = await in_thread(console.sessions.create, account_id, access_key_id, console.default_pool())
    response = redirect(f"{PREFIX}/keys")
    console.set_session_cookie(response, token)
    response.delete_cookie(PRESESSION_COOKIE, path=PREFIX)
    return response


def _signin_page(console: Console, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    token = new_token()
    response = console.page(request, "signin.html", status, None, signin_csrf=token, **context)
    console.set_presession(response, token)
    return response


def _check_credentials(console: Console, access_key_id: str, secret: str) -> str | None:
    if not access_key_id or not secret or len(access_key_id) > 128 or len(secret) > 256:
        return None
    try:
        creds = console.kms.accounts.credentials(access_key_id)
    except AccessDenied:
        return None
    if not same_token(creds.secret_access_key, secret):
        return None
    return creds.account_id


async def _signout(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    await in_thread(console.sessions.end, session.token_hash)
    response = redirect(f"{PREFIX}/signin")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


async def _switch_pool(console: Console, request: Request, session: SignedIn, form: dict[str, Any]) -> Response:
    wanted = str(form.get("pool", ""))
    if any(p.id == wanted for p in console.pools):
        await in_thread(console.sessions.set_pool, session.token_hash, wanted)
    return redirect(f"{PREFIX}/keys")
