"""Prometheus metrics of this process (served at /metrics by `ssegw serve`, both ports).

Counters are per process: with `--kms-workers N`, each worker counts what it served and a scrape
reaches whichever worker the kernel hands the connection to, so scrape each node with one
worker, or sum over several scrapes (Prometheus' rate() is unaffected by which one answers).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("ssegw_requests_total", "HTTP requests answered",
                   ["server", "operation", "status"])
LATENCY = Histogram("ssegw_request_seconds", "HTTP request latency (to the end of the reply)",
                    ["server", "operation"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
KMS_CALLS = Counter("ssegw_kms_calls_total", "KMS operations by result (Success or error code)",
                    ["operation", "result"])
HSM_CALLS = Counter("ssegw_hsm_calls_total", "PKCS#11 operations on key objects", ["operation"])
HSM_ERRORS = Counter("ssegw_hsm_errors_total", "PKCS#11 failures (not bad ciphertexts)",
                     ["error"])
BYTES = Counter("ssegw_s3_bytes_total", "object bytes through the S3 proxy: sealed (into the "
                "backend) and opened (out of it)", ["direction"])
CACHE = Counter("ssegw_cache_lookups_total", "cache lookups by cache and outcome",
                ["cache", "outcome"])

HSM_ENCRYPT = HSM_CALLS.labels("encrypt")
HSM_DECRYPT = HSM_CALLS.labels("decrypt")
KEY_CACHE_HIT = CACHE.labels("kms_key_state", "hit")
KEY_CACHE_MISS = CACHE.labels("kms_key_state", "miss")
