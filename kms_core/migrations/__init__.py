"""Alembic migrations of the metadata database; run by `kms_core.schema.upgrade` at start-up."""
