"""Every parser of untrusted bytes either parses or raises its component's own error, never
anything else (a 500 or a traceback in the product): hypothesis over fuzz/targets.py, plus the
crash inputs the atheris runs found (fuzz/corpus/<target>/crash-*), kept as regressions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS, run_one, seeds

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


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_mutated_seeds_refuse_cleanly(name: str, data: st.DataObject) -> None:
    """Well-formed inputs with bytes flipped, cut or inserted reach the parsers' deeper paths."""
    base = seeds(name)
    if not base:
        return
    raw = bytearray(data.draw(st.sampled_from(base)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.integers(0, 2))
        at = data.draw(st.integers(0, len(raw)))
        if op == 0 and at < len(raw):
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == 1:
            del raw[at:at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    run_one(name, bytes(raw))
