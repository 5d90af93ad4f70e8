"""Every page in both languages at desktop and phone width: rendered, nothing wider than the
screen, nothing unlabelled. Screenshots go to $SSEGW_CONSOLE_SCREENSHOTS when set (the README's
come from there, taken with SSEGW_CONSOLE_SCREENSHOT_SCALE=0.6 to keep them small), else to a
temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.kms_core.console.conftest import ConsoleServer, Tenant, sign_in

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    out = os.environ.get("SSEGW_CONSOLE_SCREENSHOTS")
    return Path(out) if out else tmp_path


def _unlabelled(page: Any) -> list[str]:
    """Inputs without an accessible name and buttons/links without text (as a screen reader sees)."""
    bad: list[str] = page.evaluate("""() => {
        const bad = [];
        for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
            const id = el.id && document.querySelector(`label[for="${el.id}"]`);
            if (!id && !el.getAttribute('aria-label') && !el.closest('label')) bad.push(el.outerHTML.slice(0, 80));
        }
        for (const el of document.querySelectorAll('button, a[href], [role=button]')) {
            if (!(el.getAttribute('aria-label') || el.textContent.trim())) bad.push(el.outerHTML.slice(0, 80));
        }
        return bad;
    }""")
    return bad


def _populate(server: ConsoleServer, t: Tenant) -> str:
    api = server.kms(t)
    key: str = api.create_key(Description="customer records")["KeyMetadata"]["KeyId"]
    api.create_alias(AliasName="alias/customers", TargetKeyId=key)
    api.enable_key_rotation(KeyId=key)
    signing = api.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    api.create_alias(AliasName="alias/signing", TargetKeyId=signing)
    for _ in range(3):
        api.encrypt(KeyId=key, Plaintext=b"x")
    s3 = server.s3(t)
    s3.create_bucket(Bucket=f"photos-{t.account_id}")
    s3.put_object(Bucket=f"photos-{t.account_id}", Key="a", Body=b"a")  # uses alias_oss
    return key


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_page_renders(browser: Any, server: ConsoleServer, shots: Path, lang: str, size: str) -> None:
    t = server.tenant("shots")
    key = _populate(server, t)
    viewport = DESKTOP if size == "desktop" else PHONE
    accept = "zh-CN,zh;q=0.9" if lang == "zh" else "en-US,en;q=0.9"
    scale = float(os.environ.get("SSEGW_CONSOLE_SCREENSHOT_SCALE", "1"))
    ctx = browser.new_context(viewport=viewport, device_scale_factor=scale,
                              extra_http_headers={"Accept-Language": accept})
    try:
        page = ctx.new_page()
        page.goto(f"{server.console}/signin")
        assert page.locator("html").get_attribute("lang") == ("zh-CN" if lang == "zh" else "en")
        page.screenshot(path=str(shots / f"signin-{lang}-{size}.png"))
        if lang == "en":
            sign_in(page, server, t)
        else:
            page.get_by_label("访问密钥 ID").fill(t.access_key_id)
            page.get_by_label("私有访问密钥").fill(t.secret_access_key)
            page.get_by_role("button", name="登录").click()
            page.wait_for_url(f"{server.console}/keys")
        urls = {
            "keys": "/keys",
            "create": "/keys?dialog=create",
            "key": f"/keys/{key}",
            "delete": f"/keys/{key}?dialog=schedule-deletion",
            "usage": "/usage",
            "products": "/products",
        }
        for name, url in urls.items():
            page.goto(server.console + url)
            assert page.locator("main h1").first.is_visible()
            assert _unlabelled(page) == [], name
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{name} is {width}px wide at {viewport['width']}px"
            page.screenshot(path=str(shots / f"{name}-{lang}-{size}.png"), full_page=size == "desktop")
    finally:
        ctx.close()
