"""Counters the KMS and the products in one process share, whichever side counts.

A cache's lookups are one metric for every cache in the process (label `cache`: the KMS's key
state cache, the S3 proxy's data-key and bucket caches), so it is registered once, here, where
both sides may import it: this module loads prometheus_client and nothing of kms_core.
"""

from __future__ import annotations

from prometheus_client import Counter

CACHE = Counter("ssegw_cache_lookups_total", "cache lookups by cache and outcome",
                ["cache", "outcome"])
