"""The KMS over HTTP: SigV4 authentication, the REST and AWS-compatible dialects, one app."""
