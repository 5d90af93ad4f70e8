"""Deterministic inputs for the frozen LUKS1 and seal-record vectors in tests/vectors/."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parents[2] / "vectors"


def det_rand(seed: bytes) -> Callable[[int], bytes]:
    """A reproducible stand-in for os.urandom: SHA-256 in counter mode over `seed`."""
    counter = 0

    def rand(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rand


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())
