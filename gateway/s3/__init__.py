"""The S3-compatible proxy: SigV4 from clients, envelope encryption, re-signed backend requests."""
