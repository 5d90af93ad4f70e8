"""The guide's key procedures done in the console, each checked through the API (boto3)."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.kms_core.console.conftest import ConsoleServer, Tenant, sign_in


def test_banner_prints_the_console_url(server: ConsoleServer) -> None:
    assert f"console  {server.kms_url}/console/" in server.banner


def test_sign_in_list_and_sign_out(page: Any, server: ConsoleServer, tenant: Tenant) -> None:
    api = server.kms(tenant)
    made = api.create_key(Description="made by the API")["KeyMetadata"]["KeyId"]
    sign_in(page, server, tenant)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    row = page.get_by_role("row").filter(has_text=made)
    expect(row).to_contain_text("Enabled")
    expect(row).to_contain_text("AES_256")
    expect(row).to_contain_text("Encrypt/Decrypt")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{server.console}/signin")
    page.goto(f"{server.console}/keys")
    page.wait_for_url(f"{server.console}/signin")


def test_wrong_secret_is_refused(page: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page.goto(f"{server.console}/signin")
    page.get_by_label("Access key ID").fill(tenant.access_key_id)
    page.get_by_label("Secret access key").fill("not-the-secret")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong")
    assert "not-the-secret" not in page.content()  # a typed secret is never sent back
    assert page.context.cookies() == [] or all(c["name"] != "ssegw_console" for c in page.context.cookies())


def test_create_key_with_every_item(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page = signed_in
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Key type").select_option("SM4")
    dialog.get_by_label("Alias").fill("orders")
    dialog.get_by_label("Protection level").select_option("HSM")
    dialog.get_by_label("Description").fill("orders table")
    dialog.get_by_label("Rotation period").select_option("90")
    dialog.get_by_label("Enterprise project").fill("proj-a")
    dialog.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url(f"{server.console}/keys/*")
    key_id = page.url.split("/keys/")[1].split("?")[0]
    meta = server.kms(tenant).describe_key(KeyId="alias/orders")["KeyMetadata"]
    assert meta["KeyId"] == key_id
    assert meta["Description"] == "orders table"
    assert meta["KeySpec"] == "SM4"  # boto3 drops our ProtectionLevel field; SM4 is HSM-only
    rotation = server.kms(tenant).get_key_rotation_status(KeyId=key_id)
    assert rotation["KeyRotationEnabled"] is True
    expect(page.get_by_text("Ctyun_SM4")).to_be_visible()
    expect(page.get_by_text("proj-a")).to_be_visible()
    expect(page.get_by_text("Hsm", exact=True)).to_be_visible()


def test_invalid_combination_is_explained_in_the_dialog(signed_in: Any, server: ConsoleServer,
                                                       tenant: Tenant) -> None:
    page = signed_in
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Key type").select_option("RSA_2048")
    dialog.get_by_label("Rotation period").select_option("30")
    dialog.get_by_role("button", name="Create", exact=True).click()
    alert = page.get_by_role("dialog").get_by_role("alert")
    expect(alert).to_contain_text("rotate")
    assert server.kms(tenant).list_keys()["Keys"] == []


def test_disable_and_enable_from_the_detail_page(signed_in: Any, server: ConsoleServer,
                                                 tenant: Tenant) -> None:
    page = signed_in
    api = server.kms(tenant)
    key_id = api.create_key()["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys/{key_id}")
    page.get_by_role("button", name="Disable").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    page.get_by_role("button", name="Enable").click()
    expect(page.get_by_role("button", name="Disable")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_edit_description(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    key_id = api.create_key(Description="old")["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys/{key_id}")
    page.get_by_label("Description").fill("new words")
    page.get_by_role("button", name="Save description").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "new words"
    # Too long for the service: its message, the typed text kept, nothing changed.
    page.get_by_label("Description").fill("x" * 8193)
    page.get_by_role("button", name="Save description").click()
    expect(page.get_by_role("alert")).to_contain_text("8192")
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "new words"


def test_nothing_secret_is_rendered(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    key_id = api.create_key()["KeyMetadata"]["KeyId"]
    for path in ("/keys", f"/keys/{key_id}", "/usage", "/products"):
        page.goto(server.console + path)
        html = page.content()
        assert tenant.secret_access_key not in html, path
        assert "PRIVATE KEY" not in html, path
