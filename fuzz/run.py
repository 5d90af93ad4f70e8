"""Run every atheris harness for a bounded time and report new crashes.

    PYTHONPATH=. .venv/bin/python fuzz/run.py [--seconds 20] [--only NAME ...]

Each target runs in its own process (`fuzz.harness`) with its corpus under fuzz/corpus/NAME
(grown between runs; not committed) and crash inputs written to fuzz/crashes/NAME/ (committed
once fixed: tests/fuzz_properties replays them). Exit status 1 when a run found a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from fuzz.targets import TARGETS, seeds

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20, help="fuzzing time per target (default 20)")
    ap.add_argument("--only", nargs="*", choices=sorted(TARGETS), help="targets to run (default: all)")
    args = ap.parse_args(argv)
    report = []
    failed = False
    for name in args.only or sorted(TARGETS):
        corpus = HERE / "corpus" / name
        crashes = HERE / "crashes" / name
        corpus.mkdir(parents=True, exist_ok=True)
        crashes.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, seed in enumerate(seeds(name)):
                (corpus / f"seed-{i}").write_bytes(seed)
        before = set(os.listdir(crashes))
        start = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-m", "fuzz.harness", name, f"-max_total_time={args.seconds}",
             f"-artifact_prefix={crashes}/", "-print_final_stats=1", "-rss_limit_mb=2048", str(corpus)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
            timeout=args.seconds * 3 + 60)
        new = sorted(set(os.listdir(crashes)) - before)
        runs = next((line.rsplit(":", 1)[1].strip() for line in p.stderr.splitlines()
                     if line.startswith("stat::number_of_executed_units")), "?")
        entry = {"target": name, "seconds": round(time.monotonic() - start, 1), "executions": runs,
                 "corpus": len(os.listdir(corpus)), "exit": p.returncode, "new_crashes": new}
        if new or p.returncode not in (0,):
            failed = True
            tail = [line for line in p.stderr.splitlines() if "Error" in line or "Traceback" in line
                    or line.startswith("  File")]
            entry["trace"] = tail[-12:]
        report.append(entry)
        print(json.dumps(entry), flush=True)
    print(json.dumps({"targets": len(report), "crashed": [r["target"] for r in report if r["new_crashes"]
                                                          or r["exit"] != 0]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
