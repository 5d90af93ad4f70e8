"""Every parser of untrusted bytes either parses or raises its component's own error, never
anything else (a 500 or a traceback in the product): hypothesis over fuzz/targets.py, plus the
crash inputs the atheris runs found (fuzz/corpus/<target>/crash-*), kept as regressions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS, run_one

CRASHES = Path(__file__).parents[2] / "fuzz" / "crashes"


def _seeds(name: str) -> list[bytes]:
    d = CRASHES / name
    return [p.read_bytes() for p in sorted(d.glob("*"))] if d.is_dir() else []


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048))
def test_parser_refuses_cleanly(name: str, data: bytes) -> None:
    run_one(name, data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=100, deadline=None)
@given(data=st.text(max_size=512))
def test_parser_refuses_text_cleanly(name: str, data: str) -> None:
    run_one(name, data.encode())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_crashes_found_by_fuzzing_stay_fixed(name: str) -> None:
    for data in _seeds(name):
        run_one(name, data)
