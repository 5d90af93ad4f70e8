"""Loading the small C libraries `make deps` builds next to the adapter modules that use them
(ctypes). The KMS's own (kms_core/keystore/p11_native.py) keeps its copy: the KMS never imports
the products.

Each library has an environment switch: "off" keeps the pure path (to measure or test it),
"required" (`make test` sets it) makes a missing or stale build an error, anything else uses the
library if it loads and logs a warning naming the slower path if it does not.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


def load_native(library: Path, env: str, bind: Callable[[ctypes.CDLL], _T], *, what: str,
                fallback: str, log: logging.Logger, required_by: tuple[str, ...] = ()) -> _T | None:
    """`bind` (which declares the signatures and checks the ABI, raising OSError or
    AttributeError for a stale build) applied to `library`; None where the switch `env` is
    "off", or the library is unusable and not required (by `env` or any of `required_by`)."""
    mode = os.environ.get(env, "")
    if mode == "off":
        return None
    try:
        return bind(ctypes.CDLL(str(library)))
    except (OSError, AttributeError) as e:
        if mode == "required" or any(os.environ.get(v) == "required" for v in required_by):
            raise RuntimeError(f"{what} required but unusable: {e}") from None
        log.warning("%s unusable (%s); %s. `make deps` builds it.", what, e, fallback)
        return None
