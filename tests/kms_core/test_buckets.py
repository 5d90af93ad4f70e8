"""Bucket claims in the KMS database: one winner per name, released names held for a while."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kms_core.buckets import Access, BucketClaims, Claim
from kms_core.errors import InvalidParameter, NotFound


def test_claim_lifecycle(kms: Any) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    claims = BucketClaims(kms.engine, clock=lambda: now[0], reuse_delay=timedelta(seconds=30))
    alice = kms.accounts.create_account("alice")[0].account_id
    bob = kms.accounts.create_account("bob")[0].account_id
    assert claims.access(alice, "pics") is Access.NONE
    assert claims.claim(alice, "pics") is Claim.CREATED
    assert claims.claim(alice, "pics") is Claim.YOURS
    assert claims.claim(bob, "pics") is Claim.TAKEN
    assert (claims.access(alice, "pics"), claims.access(bob, "pics")) == (Access.MINE, Access.OTHER)
    assert claims.release(bob, "pics") is False  # not his to give up
    assert claims.release(alice, "pics") is True
    assert claims.access(alice, "pics") is Access.NONE
    assert claims.claim(bob, "pics") is Claim.BUSY
    now[0] += timedelta(seconds=31)
    assert claims.claim(bob, "pics") is Claim.CREATED
    assert claims.owner("pics") == bob
    assert claims.claim(alice, "mistake") is Claim.CREATED
    assert claims.release(alice, "mistake", hold=False) is True  # gone, not held
    assert claims.claim(bob, "mistake") is Claim.CREATED
    claims.assign("pics", alice)
    assert claims.owner("pics") == alice
    with pytest.raises(NotFound):
        claims.assign("pics", "000000000000")
    with pytest.raises(InvalidParameter):
        claims.claim(alice, "x")


def test_racing_claims_have_one_winner(kms: Any) -> None:
    accounts = [kms.accounts.create_account(f"racer-{i}")[0].account_id for i in range(6)]
    for round_ in range(10):
        name = f"race-{round_}"
        barrier = threading.Barrier(len(accounts))
        results: dict[str, Claim] = {}

        def claim(account: str, name: str = name, barrier: threading.Barrier = barrier,
                  results: dict[str, Claim] = results) -> None:
            barrier.wait()
            results[account] = kms.buckets.claim(account, name)

        threads = [threading.Thread(target=claim, args=(a,)) for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [a for a, r in results.items() if r is Claim.CREATED]
        assert len(winners) == 1 and kms.buckets.owner(name) == winners[0]
        assert sorted(r.value for r in results.values()) == ["created"] + ["taken"] * (len(accounts) - 1)
