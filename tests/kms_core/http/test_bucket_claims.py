"""The bucket-claim operations over HTTP, as a gateway with --kms-url calls them."""

from __future__ import annotations

import pytest

from kms_core.client.http import HttpKmsClient
from kms_core.errors import AccountFrozen, InvalidParameter
from tests.kms_server import KmsServer


def test_claims_over_http(kms_server: KmsServer) -> None:
    alice, bob = kms_server.tenant("alice"), kms_server.tenant("bob")
    a = HttpKmsClient(kms_server.url, alice.access_key_id, alice.secret_access_key, kms_server.region)
    b = HttpKmsClient(kms_server.url, bob.access_key_id, bob.secret_access_key, kms_server.region)
    assert a.bucket_access("shared-name") == "none" and a.owned_buckets() == []
    assert a.claim_bucket("shared-name") == "created"
    assert b.claim_bucket("shared-name") == "taken" and a.owned_buckets() == ["shared-name"]
    assert (a.bucket_access("shared-name"), b.bucket_access("shared-name")) == ("mine", "other")
    assert b.release_bucket("shared-name") is False
    assert a.release_bucket("shared-name") is True
    assert b.claim_bucket("shared-name") == "busy"
    with pytest.raises(InvalidParameter):
        a.claim_bucket("")
    kms_server.kms.accounts.set_frozen(alice.account_id, True)
    with pytest.raises(AccountFrozen):
        a.claim_bucket("other-name")
