"""Prometheus metrics of the gateway's own code, in the process's one registry (served at
/metrics by gateway.ops on both ports, beside the KMS's own in kms_core.metrics).

The request counters are the ops middleware's, which wraps both servers (label `server`: "kms"
or "s3"); the byte counter is the S3 proxy's. Counters are per process (see kms_core.metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("ssegw_requests_total", "HTTP requests answered",
                   ["server", "operation", "status"])
LATENCY = Histogram("ssegw_request_seconds", "HTTP request latency (to the end of the reply)",
                    ["server", "operation"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BYTES = Counter("ssegw_s3_bytes_total", "object bytes through the S3 proxy: sealed (into the "
                "backend) and opened (out of it)", ["direction"])
