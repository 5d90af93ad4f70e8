"""The atheris harness of one target: `python -m fuzz.harness <target> [libFuzzer flags...]`.

The product's modules are imported under atheris's instrumentation, so the fuzzer is guided by
the coverage of the parsers themselves. An exception other than the target's own error is a
crash: libFuzzer writes the input to -artifact_prefix and exits non-zero.
"""

from __future__ import annotations

import sys

import atheris

# The product's modules are imported (first) under instrumentation, and only they are
# instrumented: the fuzzer follows the coverage of our parsers, not of their dependencies.
with atheris.instrument_imports(include=["gateway", "kms_core", "adapters", "fuzz"]):
    from fuzz.targets import TARGETS, run_one


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.harness <{'|'.join(sorted(TARGETS))}> [libFuzzer flags]")
    name = sys.argv[1]

    def one(data: bytes) -> None:
        run_one(name, data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
