"""Usage (metered calls chart, audit log filters and paging) and the encryption of products,
each checked against the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import expect

from tests.kms_core.console.conftest import SECOND_POOL, ConsoleServer, Tenant


def test_metered_calls_chart_and_audit_filters(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    key = api.create_key()["KeyMetadata"]["KeyId"]
    other = api.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(3):
        api.encrypt(KeyId=key, Plaintext=b"x")
    api.generate_data_key(KeyId=other, KeySpec="AES_256")
    page.goto(f"{server.console}/usage")
    month = datetime.now(UTC).strftime("%Y-%m")
    chart = page.get_by_role("img", name="Metered calls per month")
    expect(chart.locator("g title").filter(has_text=f"{month}: 4")).to_have_count(1)
    expect(page.locator("table.meter tr").filter(has_text="generateDataKey")).to_have_text(f"{month}generateDataKey1")

    search = page.get_by_role("search")
    search.get_by_label("Operation").fill("encrypt")
    search.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i)).to_contain_text(key)
    search = page.get_by_role("search")
    search.get_by_label("Operation").fill("")
    search.get_by_label("Key ID").fill(other)
    search.get_by_role("button", name="Filter").click()
    expect(rows.filter(has_text="generateDataKey")).to_have_count(1)
    expect(rows.filter(has_text=key)).to_have_count(0)
    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_role("search").get_by_label("From (UTC)").fill(later)
    page.get_by_role("search").get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No events.")).to_be_visible()


def test_audit_log_pages(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api = signed_in, server.kms(tenant)
    key = api.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(60):
        api.encrypt(KeyId=key, Plaintext=b"x")
    page.goto(f"{server.console}/usage?operation=encrypt")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(50)
    page.get_by_role("link", name="Older").click()
    expect(rows).to_have_count(10)
    assert page.get_by_role("link", name="Older").count() == 0


def test_one_click_bucket_encryption(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page, api, s3 = signed_in, server.kms(tenant), server.s3(tenant)
    key = api.create_key()["KeyMetadata"]["KeyId"]
    api.create_alias(AliasName="alias/photos", TargetKeyId=key)
    bucket = f"photos-{tenant.account_id}"
    s3.create_bucket(Bucket=bucket)
    other = server.tenant("o")
    server.s3(other).create_bucket(Bucket=f"theirs-{other.account_id}")
    page.goto(f"{server.console}/products")
    expect(page.get_by_text(f"theirs-{other.account_id}")).to_have_count(0)
    row = page.get_by_role("row").filter(has_text=bucket)
    row.get_by_label("SSE-KMS").check()
    row.get_by_label("KMS key").select_option(key)
    row.get_by_label("Bucket key").check()
    row.get_by_role("button", name=f"Save {bucket}").click()
    expect(page.get_by_role("status")).to_be_visible()
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    assert rule["BucketKeyEnabled"] is True
    s3.put_object(Bucket=bucket, Key="cat.jpg", Body=b"meow")
    head = s3.head_object(Bucket=bucket, Key="cat.jpg")
    assert head["ServerSideEncryption"] == "aws:kms" and key in head["SSEKMSKeyId"]
    expect(page.get_by_role("row").filter(has_text=bucket)).to_contain_text("SSE-KMS")
    row = page.get_by_role("row").filter(has_text=bucket)
    row.get_by_label("SSE-S3 (product default key)").check()
    row.get_by_role("button", name=f"Save {bucket}").click()
    expect(page.get_by_role("status")).to_be_visible()
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_switching_pools_shows_that_pools_keys(signed_in: Any, server: ConsoleServer, tenant: Tenant) -> None:
    page = signed_in
    here = server.kms(tenant).create_key(Description="east")["KeyMetadata"]["KeyId"]
    there = server.kms(tenant, SECOND_POOL).create_key(Description="beijing")["KeyMetadata"]["KeyId"]
    page.reload()  # the keys were made after the list was shown
    expect(page.get_by_text(here)).to_be_visible()
    page.get_by_label("Resource pool").select_option(SECOND_POOL)
    expect(page.get_by_text(there)).to_be_visible()
    expect(page.get_by_text(here)).to_have_count(0)
