"""`kms_core.client` is the light seam products import: the interface only, so a gateway node
that talks to a remote KMS loads neither the service nor the database stack."""

from __future__ import annotations

import subprocess
import sys

import kms_core.client
import kms_core.errors

HEAVY = ("sqlalchemy", "sqlmodel", "kms_core.service", "kms_core.db", "kms_core.models", "kms_core.keystore")


def _loaded_after(statement: str) -> list[str]:
    # A fresh interpreter: this test process has long since loaded the service.
    probe = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return out.split()


def test_the_interface_loads_only_types_and_errors() -> None:
    loaded = _loaded_after("import kms_core.client")
    assert not [m for m in loaded if m.startswith(HEAVY)]
    ours = {m for m in loaded if m.startswith("kms_core")}
    assert ours == {"kms_core", "kms_core.client", "kms_core.errors", "kms_core.types"}


def test_the_http_client_loads_no_service_either() -> None:
    loaded = _loaded_after("import kms_core.client.http")
    assert not [m for m in loaded if m.startswith(HEAVY)]


def test_every_kms_error_is_re_exported() -> None:
    # Products catch the client's errors; an HTTP reply can name any of them.
    errors = {name: value for name, value in vars(kms_core.errors).items()
              if isinstance(value, type) and issubclass(value, kms_core.errors.KmsError)}
    assert "KeyUnavailable" in errors and "AccountFrozen" in errors
    for name, error in errors.items():
        assert getattr(kms_core.client, name) is error
        assert name in kms_core.client.__all__
