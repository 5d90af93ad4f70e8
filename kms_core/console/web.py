"""What every console page shares: templates, security headers, the signed-in session, CSRF."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kms_core.client.products import ProductEncryption
from kms_core.console.i18n import negotiate, translator
from kms_core.console.sessions import SessionStore, SignedIn, SignInThrottle, same_token
from kms_core.embedded import Kms
from kms_core.errors import AccountFrozen
from kms_core.regions import ResourcePool, is_pool, pool
from kms_core.specs import KeySpec, KeyUsage, Protection
from kms_core.types import Caller

PREFIX = "/console"
SESSION_COOKIE = "ssegw_console"
PRESESSION_COOKIE = "ssegw_console_pre"  # CSRF token of the sign-in form (double submit)
LANG_COOKIE = "ssegw_console_lang"
MAX_FORM = 256 * 1024  # a form post; the largest is an upload of wrapped material and a token

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

T = TypeVar("T")


class SecurityHeaders:
    """Adds the console's headers to every response it sends, errors and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass
class Console:
    kms: Kms
    pools: tuple[ResourcePool, ...]
    products: ProductEncryption | None
    sessions: SessionStore
    throttle: SignInThrottle = field(default_factory=SignInThrottle)
    secure_cookies: bool = False
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True, lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["spec_name"] = lambda v: _guide(KeySpec, v)
        self.env.filters["usage_name"] = lambda v: _guide(KeyUsage, v)
        self.env.filters["protection_name"] = lambda v: _guide(Protection, v)

    # ------------------------------------------------------------------ pages

    def lang(self, request: Request) -> str:
        return negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE))

    def page(self, request: Request, template: str, status: int = 200,
             session: SignedIn | None = None, **context: Any) -> HTMLResponse:
        lang = self.lang(request)
        current = pool(session.pool) if session and is_pool(session.pool) else None
        html = self.env.get_template(template).render(
            _=translator(lang), lang=lang, session=session, pools=self.pools,
            current_pool=current, pool_name=lambda p: p.name_zh if lang == "zh" else p.name_en,
            path=request.url.path, query=request.url.query, prefix=PREFIX,
            csrf=session.csrf if session else "", products_on=self.products is not None,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def not_found(self, request: Request, session: SignedIn | None) -> HTMLResponse:
        return self.page(request, "error.html", 404, session, title="Not found",
                         message="The page or key does not exist.")

    # ---------------------------------------------------------------- session

    def session(self, request: Request) -> SignedIn | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def caller(self, session: SignedIn) -> Caller:
        return Caller(session.account_id, session.pool, session.access_key_id)

    def frozen(self, session: SignedIn) -> str | None:
        """Why the account is frozen, in the service's words (None: it is not)."""
        try:
            self.kms.observer.admit(self.caller(session))
        except AccountFrozen as e:
            return e.message
        return None

    def set_session_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(SESSION_COOKIE, token, path=PREFIX, httponly=True, samesite="strict",
                            secure=self.secure_cookies)

    def set_presession(self, response: Response, token: str) -> None:
        response.set_cookie(PRESESSION_COOKIE, token, path=PREFIX, httponly=True, samesite="strict",
                            secure=self.secure_cookies, max_age=3600)

    def default_pool(self) -> str:
        return self.pools[0].id


def _guide(enum: Any, value: str) -> str:
    try:
        return str(enum(value).guide_name)
    except ValueError:
        return value


def _when(ts: datetime | None) -> str:
    if ts is None:
        return ""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def form_data(request: Request) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM):
        return {}
    form = await request.form(max_files=4, max_fields=64)
    return {k: v for k, v in form.multi_items()}


def csrf_ok(session: SignedIn, form: dict[str, Any]) -> bool:
    value = form.get("csrf")
    return isinstance(value, str) and same_token(value, session.csrf)


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)
