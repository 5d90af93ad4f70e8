"""The web console at /console/ on the KMS port: `kms_core.console.app.create_console`.

Kept free of imports so the metadata schema can load the session table (`sessions`) without the
web stack."""
