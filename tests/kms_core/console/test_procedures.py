"""The rest of the guide's console procedures (3.2.2-3.2.7, 4.5): aliases, rotation, deletion,
asymmetric versions and public keys, importing key material; plus the list's filters, the
language switch and the keyboard. Each effect is checked through the API (boto3)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from playwright.sync_api import expect

from tests.kms_core.console.conftest import ConsoleServer, Tenant


def _aliases(api: Any) -> dict[str, str]:
    return {a["AliasName"]: a.get("TargetKeyId", "") for a in api.list_aliases()["Aliases"]}


def test_aliases_add_rebind_delete(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    first = api.create_key(Description="first")["KeyMetadata"]["KeyId"]
    second = api.create_key(Description="second")["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys/{first}")
    page.get_by_label("Alias", exact=True).fill("payroll")
    page.get_by_role("button", name="Add alias").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert _aliases(api)["alias/payroll"] == first
    page.get_by_label("Rebind to key").select_option(second)
    page.get_by_role("button", name="Rebind payroll").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert _aliases(api)["alias/payroll"] == second
    page.goto(f"{server.console}/keys/{second}")
    page.get_by_role("button", name="Delete alias payroll").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert "alias/payroll" not in _aliases(api)


def test_default_key_is_marked_and_read_only(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page = signed_in
    s3 = server.s3(tenant)
    bucket = f"dflt-{tenant.account_id}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")  # the product default key alias_oss appears
    default = server.kms(tenant).describe_key(KeyId="alias/alias_oss")["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys")
    row = page.get_by_role("row").filter(has_text=default)
    expect(row).to_contain_text("Default key")
    page.goto(f"{server.console}/keys/{default}")
    expect(page.get_by_text("Default-key aliases cannot be changed.")).to_be_visible()
    for name in ("Disable", "Schedule deletion", "Add alias", "Delete alias alias_oss"):
        assert page.get_by_role("button", name=name).count() == 0, name


def test_rotation_policy_set_change_off_and_rotate_now(signed_in: Any, server: ConsoleServer,
                                                       tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    key_id = api.create_key()["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys/{key_id}")
    page.get_by_role("button", name="Set rotation policy").click()
    page.get_by_role("dialog").get_by_label("Rotation period").select_option("30")
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Next rotation")).to_be_visible()
    status = api.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 30
    # Custom period out of range: the service's rule, shown in the dialog; nothing changes.
    page.get_by_role("button", name="Set rotation policy").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Rotation period").select_option("custom")
    dialog.get_by_label("Custom period (days, 7-730)").fill("3")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("dialog").get_by_role("alert")).to_contain_text("7-730")
    assert api.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 30
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Custom period (days, 7-730)").fill("400")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.get_key_rotation_status(KeyId=key_id)["RotationPeriodInDays"] == 400
    page.get_by_role("button", name="Rotate now").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert len(api.list_key_rotations(KeyId=key_id)["Rotations"]) == 1
    expect(page.get_by_role("row")).to_have_count(3)  # header + two versions
    page.get_by_role("button", name="Set rotation policy").click()
    page.get_by_role("dialog").get_by_label("Rotation period").select_option("off")
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Rotation is off.")).to_be_visible()
    assert api.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False


def test_schedule_and_cancel_deletion(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    key_id = api.create_key()["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys/{key_id}")
    page.get_by_role("button", name="Schedule deletion").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Waiting period (days)").fill("5")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("dialog").get_by_role("alert")).to_contain_text("7-30")
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Waiting period (days)").fill("7")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("button", name="Cancel deletion")).to_be_visible()
    meta = api.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert abs(meta["DeletionDate"] - (datetime.now(UTC) + timedelta(days=7))) < timedelta(hours=1)
    page.get_by_role("button", name="Cancel deletion").click()
    expect(page.get_by_role("button", name="Schedule deletion")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] in ("Disabled", "Enabled")


def test_deletion_from_the_lists_operations_column(signed_in: Any, server: ConsoleServer,
                                                   tenant: Tenant) -> None:
    # The guide's 3.2.7: "在右侧操作列选择更多>计划删除密钥", and cancelling there too.
    page, api = signed_in, server.kms(tenant)
    key_id = api.create_key()["KeyMetadata"]["KeyId"]
    page.goto(f"{server.console}/keys")
    page.get_by_role("link", name=f"Schedule deletion {key_id}").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Waiting period (days)").fill("10")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("button", name="Cancel deletion")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    page.goto(f"{server.console}/keys")
    page.get_by_role("button", name=f"Cancel deletion {key_id}").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] != "PendingDeletion"


def _download(page: Any, scope: Any, name: str, tmp: Path) -> bytes:
    with page.expect_download() as info:
        scope.get_by_role("link", name=name).or_(scope.get_by_role("button", name=name)).first.click()
    path: Path = tmp / info.value.suggested_filename
    info.value.save_as(path)
    return path.read_bytes()


def test_asymmetric_versions_and_public_keys(signed_in: Any, server: ConsoleServer, tenant: Tenant,
                                            tmp_path: Path) -> None:
    page, api = signed_in, server.kms(tenant)
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Key type").select_option("RSA_2048")
    dialog.get_by_label("Key usage").select_option("SIGN_VERIFY")
    dialog.get_by_label("Alias").fill("signer")
    dialog.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url(f"{server.console}/keys/*")
    key_id = api.describe_key(KeyId="alias/signer")["KeyMetadata"]["KeyId"]
    assert page.get_by_role("button", name="Set rotation policy").count() == 0
    expect(page.get_by_text("Asymmetric keys do not rotate")).to_be_visible()
    first_pem = _download(page, page, "Download public key", tmp_path)
    page.get_by_role("button", name="Create key version").click()
    expect(page.get_by_role("status")).to_be_visible()
    links = page.get_by_role("link", name="Download public key")
    expect(links).to_have_count(2)
    with page.expect_download() as info:
        links.nth(1).click()
    newest = Path(info.value.path()).read_bytes()
    api_der = api.get_public_key(KeyId=key_id)["PublicKey"]  # AWS's call names the newest version
    newest_der = serialization.load_pem_public_key(newest).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert newest_der == api_der
    assert first_pem != newest and b"PRIVATE" not in first_pem + newest


def test_import_key_material_flow(signed_in: Any, server: ConsoleServer, tenant: Tenant, tmp_path: Path) -> None:
    page, api = signed_in, server.kms(tenant)
    page.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Key material source").select_option("EXTERNAL")
    dialog.get_by_label("Alias").fill("byok")
    dialog.get_by_role("button", name="Create", exact=True).click()
    # The guide's tick box is required; the dialog says so and nothing is made.
    expect(page.get_by_role("dialog").get_by_role("alert")).to_contain_text("I understand")
    assert api.list_keys()["Keys"] == []
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("I understand how external key material is used and what it means").check()
    dialog.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url(f"{server.console}/keys/*")
    key_id = api.describe_key(KeyId="alias/byok")["KeyMetadata"]["KeyId"]
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"

    page.get_by_role("button", name="Get parameters for import").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Wrapping algorithm").select_option("RSAES_OAEP_SHA_1")
    dialog.get_by_role("button", name="Confirm").click()
    dialog = page.get_by_role("dialog")
    public_b64 = _download(page, dialog, "Download wrapping public key", tmp_path)
    token_b64 = _download(page, dialog, "Download import token", tmp_path)
    # The guide's OpenSSL step, done with `cryptography`: wrap 32 random bytes under the key.
    material = os.urandom(32)
    wrapping = serialization.load_der_public_key(base64.b64decode(public_b64))
    wrapped = wrapping.encrypt(material, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))  # type: ignore[union-attr]
    (tmp_path / "EncryptedKeyMaterial_base64.txt").write_bytes(base64.b64encode(wrapped))
    (tmp_path / "token.txt").write_bytes(token_b64)
    dialog.get_by_role("button", name="Import key material").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Encrypted key material").set_input_files(str(tmp_path / "EncryptedKeyMaterial_base64.txt"))
    dialog.get_by_label("Import token").set_input_files(str(tmp_path / "token.txt"))
    expiry = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    dialog.get_by_label("Material expiry (optional, UTC)").fill(expiry)
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    blob = api.encrypt(KeyId=key_id, Plaintext=b"imported")["CiphertextBlob"]
    assert api.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported"
    expect(page.get_by_text(expiry.replace("T", " ") + " UTC")).to_be_visible()
    page.get_by_role("button", name="Delete key material").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"


def test_list_filters_and_search(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    aes = api.create_key()["KeyMetadata"]["KeyId"]
    api.create_alias(AliasName="alias/findme", TargetKeyId=aes)
    rsa = api.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    off = api.create_key()["KeyMetadata"]["KeyId"]
    api.disable_key(KeyId=off)
    page.goto(f"{server.console}/keys")
    search = page.get_by_role("search")
    search.get_by_label("Search by alias or key ID").fill("findme")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text(aes)
    search.get_by_label("Search by alias or key ID").fill("")
    search.get_by_label("Key type").select_option("RSA_2048")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text(rsa)
    search.get_by_label("Key type").select_option("")
    search.get_by_label("Key state").select_option("Disabled")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text(off)
    # The list's own Enable (the guide's 3.2.5 from the operations column).
    page.get_by_role("button", name=f"Enable {off}").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert api.describe_key(KeyId=off)["KeyMetadata"]["KeyState"] == "Enabled"


def test_language_switch_and_chinese_create(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    page.get_by_role("link", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.get_by_role("button", name="创建密钥").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("密钥类型").select_option("RSA_2048")
    dialog.get_by_label("轮转周期").select_option("30")
    dialog.get_by_role("button", name="确定").click()
    # The service's refusal, its kind in the guide's Chinese terms first.
    expect(page.get_by_role("dialog").get_by_role("alert")).to_contain_text("不支持该操作")
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("密钥类型").select_option("AES_256")
    dialog.get_by_label("轮转周期").select_option("off")
    dialog.get_by_label("别名").fill("zh-key")
    dialog.get_by_label("描述").fill("中文描述")
    dialog.get_by_role("button", name="确定").click()
    page.wait_for_url(f"{server.console}/keys/*")
    expect(page.get_by_role("heading", name="基本信息")).to_be_visible()
    assert api.describe_key(KeyId="alias/zh-key")["KeyMetadata"]["Description"] == "中文描述"
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_keyboard_opens_the_create_dialog(signed_in: Any, server: ConsoleServer) -> None:
    page = signed_in
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Create key":
            break
    else:
        pytest.fail("Create key is not reachable with Tab")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    assert page.evaluate("document.activeElement.closest('dialog') !== null")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
