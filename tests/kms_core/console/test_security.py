"""The console's defences: CSRF, cookie flags, headers, tenant isolation, escaping, throttling,
frozen accounts, server-side sign-out."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import urllib3
from playwright.sync_api import expect

from tests.kms_core.console.conftest import ConsoleServer, Tenant, sign_in


def _http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=30)


def _cookie(page: Any, name: str) -> dict[str, Any]:
    return next(c for c in page.context.cookies() if c["name"] == name)


def test_session_cookie_flags(signed_in: Any) -> None:
    c = _cookie(signed_in, "ssegw_console")
    assert c["httpOnly"] is True
    assert c["sameSite"] == "Strict"
    assert c["path"] == "/console"
    assert c["secure"] is False  # plain HTTP here; `ssegw serve --tls-cert` sets Secure (unit test)


def test_headers_on_every_kind_of_response(server: ConsoleServer) -> None:
    http = _http()
    for path in ("/console/signin", "/console/static/console.css", "/console/nope", "/console/keys"):
        r = http.request("GET", server.kms_url + path, redirect=False)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, path
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path


def test_no_inline_script_in_pages(signed_in: Any, server: ConsoleServer) -> None:
    for path in ("/keys", "/usage", "/products"):
        signed_in.goto(server.console + path)
        html = signed_in.content()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), path  # no inline event handlers
        assert not re.search(r"<[^>]+\sstyle\s*=", html), path


def test_state_change_without_csrf_token_is_refused(signed_in: Any, server: ConsoleServer,
                                                    tenant: Tenant) -> None:
    api = server.kms(tenant)
    key_id = api.create_key()["KeyMetadata"]["KeyId"]
    cookie = _cookie(signed_in, "ssegw_console")["value"]
    http = _http()
    headers = {"cookie": f"ssegw_console={cookie}", "content-type": "application/x-www-form-urlencoded"}
    r = http.request("POST", f"{server.console}/keys/{key_id}/disable", body="", headers=headers,
                     redirect=False)
    assert r.status == 403
    r = http.request("POST", f"{server.console}/keys/{key_id}/disable", body="csrf=forged", headers=headers,
                     redirect=False)
    assert r.status == 403
    r = http.request("POST", f"{server.console}/keys", body="spec=AES_256", headers=headers, redirect=False)
    assert r.status == 403
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert len(api.list_keys()["Keys"]) == 1
    # The sign-in form has its own token too.
    r = http.request("POST", f"{server.console}/signin", redirect=False,
                     body=urlencode({"access_key_id": tenant.access_key_id,
                                     "secret_access_key": tenant.secret_access_key}),
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 403 and "set-cookie" not in r.headers


def test_another_tenants_key_is_404(signed_in: Any, server: ConsoleServer) -> None:
    other = server.tenant("other")
    theirs = server.kms(other).create_key(Description="not yours")["KeyMetadata"]["KeyId"]
    for path in (f"/keys/{theirs}", f"/keys/{theirs}?dialog=schedule-deletion"):
        r = signed_in.goto(server.console + path)
        assert r.status == 404
        assert "not yours" not in signed_in.content()
    # A state change aimed at it: 404 too, and nothing changes.
    signed_in.goto(server.console + "/keys")
    csrf = signed_in.locator("input[name=csrf]").first.get_attribute("value")
    r = signed_in.request.post(f"{server.console}/keys/{theirs}/disable", form={"csrf": csrf},
                               max_redirects=0)
    assert r.status == 404
    assert server.kms(other).describe_key(KeyId=theirs)["KeyMetadata"]["KeyState"] == "Enabled"
    # An id that does not exist at all looks the same.
    r = signed_in.goto(f"{server.console}/keys/00000000-0000-4000-8000-000000000000")
    assert r.status == 404


def test_script_in_alias_and_description_is_text(signed_in: Any, server: ConsoleServer,
                                                 tenant: Tenant) -> None:
    api = server.kms(tenant)
    payload = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
    key_id = api.create_key(Description=payload)["KeyMetadata"]["KeyId"]
    dialogs: list[Any] = []

    def on_dialog(d: Any) -> None:
        dialogs.append(d)
        d.dismiss()

    signed_in.on("dialog", on_dialog)
    signed_in.goto(f"{server.console}/keys/{key_id}")
    expect(signed_in.get_by_label("Description")).to_have_value(payload)
    assert signed_in.title() != "pwned" and dialogs == []
    assert "<script>document.title" not in signed_in.content()
    # An alias with markup is refused by the service's rule, shown as text in the page.
    signed_in.get_by_label("Alias", exact=True).fill("<script>alert(1)</script>")
    signed_in.get_by_role("button", name="Add alias").click()
    expect(signed_in.get_by_role("alert")).to_contain_text("alias must be")
    assert dialogs == []


def test_sign_out_ends_the_session_on_the_server(page: Any, server: ConsoleServer, tenant: Tenant) -> None:
    sign_in(page, server, tenant)
    cookie = _cookie(page, "ssegw_console")["value"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.console}/signin")
    # The old cookie, replayed, no longer opens anything.
    r = _http().request("GET", f"{server.console}/keys", headers={"cookie": f"ssegw_console={cookie}"},
                        redirect=False)
    assert r.status == 303 and r.headers["location"].endswith("/console/signin")


def test_repeated_failures_are_slowed_down(server: ConsoleServer) -> None:
    t = server.tenant("guess")
    http = _http()

    def attempt(secret: str) -> tuple[int, str]:
        r = http.request("GET", f"{server.console}/signin")
        token = re.search(r'name="csrf" value="([^"]+)"', r.data.decode()).group(1)  # type: ignore[union-attr]
        pre = r.headers["set-cookie"].split(";")[0]
        r = http.request("POST", f"{server.console}/signin", redirect=False, headers={
            "cookie": pre, "content-type": "application/x-www-form-urlencoded"},
            body=urlencode({"csrf": token, "access_key_id": t.access_key_id, "secret_access_key": secret}))
        return r.status, r.data.decode()

    # Every test signs in from 127.0.0.1: a success first clears what earlier tests left.
    assert attempt(t.secret_access_key)[0] == 303
    first = [attempt("wrong") for _ in range(3)]
    assert [s for s, _ in first] == [401] * 3
    assert all("slowed down" not in body for _, body in first)
    # From here on every attempt from this address waits before it is answered, and says so.
    status, body = attempt("wrong")
    assert status == 401 and "slowed down" in body
    # The right secret still works (after its wait) and clears the count.
    status, _ = attempt(t.secret_access_key)
    assert status == 303


def test_frozen_account_signs_in_and_sees_why(page: Any, server: ConsoleServer) -> None:
    t = server.tenant("frozen")
    server.accounts.accounts.set_frozen(t.account_id, True)
    page.goto(f"{server.console}/signin")
    page.get_by_label("Access key ID").fill(t.access_key_id)
    page.get_by_label("Secret access key").fill(t.secret_access_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Your account is frozen")).to_be_visible()
    expect(page.get_by_text(f"account {t.account_id} is frozen")).to_be_visible()  # the service's reason
    for path in ("/keys", "/usage", "/products"):
        r = page.goto(server.console + path)
        assert r.status == 403
        expect(page.get_by_role("heading", name="Your account is frozen")).to_be_visible()
    assert page.get_by_role("button", name="Create key").count() == 0
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.console}/signin")
