"""adapters.native: the environment switch every native library shares (pure logic)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

import pytest

from adapters.native import load_native

LOG = logging.getLogger("test.native")
LIBC = Path(ctypes.util.find_library("c") or "libc.so.6")  # a library that loads


def _load(path: Path, bind: object = len) -> object:
    return load_native(path, "TEST_NATIVE", lambda lib: bind(lib) if callable(bind) else bind,
                       what="test library", fallback="the slow path", log=LOG,
                       required_by=("TEST_NATIVE_OTHER",))


def test_off_is_the_pure_path_even_where_the_library_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NATIVE", "off")
    assert _load(LIBC, "bound") is None
    monkeypatch.delenv("TEST_NATIVE")
    assert _load(LIBC, "bound") == "bound"


def test_a_missing_or_stale_library_warns_unless_required(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("TEST_NATIVE", raising=False)
    monkeypatch.delenv("TEST_NATIVE_OTHER", raising=False)

    def stale(lib: ctypes.CDLL) -> object:
        raise OSError("stale build")

    with caplog.at_level(logging.WARNING, logger="test.native"):
        assert _load(Path("/nonexistent/libtest.so")) is None
        assert _load(LIBC, stale) is None
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["test library unusable"] * 2
    assert "the slow path. `make deps` builds it." in caplog.records[1].getMessage()
    for env in ("TEST_NATIVE", "TEST_NATIVE_OTHER"):
        monkeypatch.setenv(env, "required")
        with pytest.raises(RuntimeError, match="test library required but unusable: stale build"):
            _load(LIBC, stale)
        monkeypatch.delenv(env)
