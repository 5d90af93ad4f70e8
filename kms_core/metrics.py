"""Prometheus metrics of the KMS in this process (served at /metrics by `ssegw serve`, both ports,
beside the gateway's own in gateway.metrics and the shared cache counter in kms_core.client.metrics).

Counters are per process: with `--kms-workers N`, each worker counts what it served and a scrape
reaches whichever worker the kernel hands the connection to, so scrape each node with one
worker, or sum over several scrapes (Prometheus' rate() is unaffected by which one answers).
"""

from __future__ import annotations

from prometheus_client import Counter

from kms_core.client.metrics import CACHE

KMS_CALLS = Counter("ssegw_kms_calls_total", "KMS operations by result (Success or error code)",
                    ["operation", "result"])
HSM_CALLS = Counter("ssegw_hsm_calls_total", "PKCS#11 operations on key objects", ["operation"])
HSM_ERRORS = Counter("ssegw_hsm_errors_total", "PKCS#11 failures (not bad ciphertexts)",
                     ["error"])

HSM_ENCRYPT = HSM_CALLS.labels("encrypt")
HSM_DECRYPT = HSM_CALLS.labels("decrypt")
KEY_CACHE_HIT = CACHE.labels("kms_key_state", "hit")
KEY_CACHE_MISS = CACHE.labels("kms_key_state", "miss")
