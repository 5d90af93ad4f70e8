"""Run every benchmark against its peer and write a report people can look at.

    .venv/bin/python bench/report.py [--out bench/report] [--only fs,s3_proxy] [--quick]
    .venv/bin/python bench/report.py --from-json bench/report   # re-render saved results

Each benchmark in BENCHES runs as its own process with `--json`, printing its own table as it
goes (every round). Afterwards this writes, under --out:
  - REPORT.md: one table per benchmark (ours and the peer as medians, the ratio as the median of
    the per-round ratios, the goal, met or not, and every round), then one line per goal;
  - <bench>.png: ours beside the peer for each metric, a dot per round and the median as a bar;
  - <bench>.json: the raw rounds, so the report can be re-rendered without re-measuring.
Rounds alternate A B B A inside each benchmark. --quick shrinks every benchmark to a smoke run
(its figures mean nothing; use it to check the pipeline). A benchmark whose peer is missing
(gocryptfs, nbdkit, wrk) fails alone and is reported as not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import Metric, Results  # noqa: E402


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]


BENCHES: tuple[Bench, ...] = (
    Bench("kms_ops", "kms_ops.py", ("--rounds", "4"), ("--seconds", "0.2", "--rounds", "2")),
    Bench("kms_http", "kms_http.py", ("--rounds", "3"), ("--seconds", "2", "--rounds", "2")),
    Bench("s3_proxy", "s3_proxy.py", ("--rounds", "5"),
          ("--rounds", "2", "--large-mib", "8", "--small", "20", "--large-ops", "1")),
    Bench("s3_multipart", "s3_multipart.py", ("--rounds", "3", "--uploads-only"),
          ("--rounds", "2", "--gib", "0.05", "--uploads-only", "--rewrap", "10", "--small", "20")),
    Bench("volume", "volume.py", ("--rounds", "3"), ("--rounds", "2", "--size", "64M", "--iops-count", "500")),
    Bench("fs", "fs.py", ("--rounds", "4"), ("--rounds", "2", "--size-mib", "32", "--files", "100")),
)


def run_bench(b: Bench, out: Path, quick: bool) -> Results | None:
    path = out / f"{b.name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(ROOT / "bench" / b.script), *(b.quick_args if quick else b.args),
           "--json", str(path)]
    print(f"\n=== {b.name}: {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    # The clients are boto3 as `pip install boto3` gives it: without awscrt (which the gateway
    # depends on for CRC32C/CRC64NVME), whose CRC32 is 2.4x slower than zlib's here and would
    # weigh on both sides' clients differently from what earlier reports measured.
    env = {**os.environ, "BOTO_DISABLE_CRT": os.environ.get("BOTO_DISABLE_CRT", "true")}
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"=== {b.name}: exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
    return Results.read(path) if rc == 0 and path.exists() else None


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def metric_row(m: Metric) -> str:
    ratio = m.ratio()
    met = m.met()
    verdict = "—" if met is None else ("**met**" if met else "not met")
    goal = "—" if m.goal is None else f"≥ {m.goal:g}×"
    rounds = ", ".join(f"{_fmt(o)}/{_fmt(t)}" for o, t in zip(m.ours, m.theirs, strict=False))
    ours = _fmt(statistics.median(m.ours)) if m.ours else "—"
    theirs = _fmt(statistics.median(m.theirs)) if m.theirs else "—"
    shown_ratio = "—" if ratio is None else f"{ratio:.2f}×"
    return (f"| {m.name} | {ours} {m.unit} | {theirs} {m.unit} ({m.peer}) | {shown_ratio} | {goal} | "
            f"{verdict} | {rounds} |")


def render_markdown(results: Sequence[Results], not_run: Sequence[str], header: str) -> str:
    lines = ["# Benchmark report", "", header, ""]
    for r in results:
        lines += [f"## {r.bench}", ""]
        lines += [f"_{n}_" for n in r.notes]
        lines += ["", f"![{r.bench}]({r.bench}.png)", "",
                  "| metric | ours (median) | peer (median) | ratio (median of rounds) | goal | "
                  "| every round, ours/peer |",
                  "|---|---|---|---|---|---|---|"]
        lines += [metric_row(m) for m in r.metrics.values()]
        lines.append("")
    lines += ["## Goals", ""]
    for r in results:
        for m in r.metrics.values():
            if m.goal is None:
                continue
            ratio = m.ratio()
            verdict = "MET" if m.met() else "NOT MET"
            shown = "no rounds" if ratio is None else f"{ratio:.2f}×"
            lines.append(f"- {verdict}: {r.bench} / {m.name}: {shown} {m.peer} (goal ≥ {m.goal:g}×)")
    for name in not_run:
        lines.append(f"- NOT RUN: {name} (the benchmark failed; see its output above)")
    return "\n".join(lines) + "\n"


def render_chart(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(r.metrics.values())
    cols = min(4, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        labels = ["ours", m.peer]
        for i, values in enumerate((m.ours, m.theirs)):
            if not values:
                continue
            ax.bar(i, statistics.median(values), color=("#2b6cb0", "#a0aec0")[i], width=0.6)
            ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks([0, 1], labels, fontsize=7)
        ax.set_ylabel(m.unit, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ratio = m.ratio()
        goal = "" if m.goal is None else f" (goal ≥ {m.goal:g}×)"
        ax.set_title(f"{m.name}\n{'—' if ratio is None else f'{ratio:.2f}×'}{goal}", fontsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"{r.bench}: ours beside the peer (bar: median, dots: every round)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results: Sequence[Results], not_run: Sequence[str], out: Path, header: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        r.write(out / f"{r.bench}.json")
        render_chart(r, out / f"{r.bench}.png")
    report = out / "REPORT.md"
    report.write_text(render_markdown(results, not_run, header))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "report")
    ap.add_argument("--only", default="", help="comma-separated benchmark names: " +
                    ", ".join(b.name for b in BENCHES))
    ap.add_argument("--quick", action="store_true", help="smoke-sized runs; the figures mean nothing")
    ap.add_argument("--from-json", type=Path, default=None, metavar="DIR",
                    help="re-render from the <bench>.json files in DIR instead of running")
    a = ap.parse_args()
    wanted = {n for n in a.only.split(",") if n}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    chosen = [b for b in BENCHES if not wanted or b.name in wanted]
    results: list[Results] = []
    not_run: list[str] = []
    if a.from_json:
        for b in chosen:
            p = a.from_json / f"{b.name}.json"
            if p.exists():
                results.append(Results.read(p))
            else:
                not_run.append(b.name)
    else:
        a.out.mkdir(parents=True, exist_ok=True)
        for b in chosen:
            r = run_bench(b, a.out, a.quick)
            if r is None:
                not_run.append(b.name)
            else:
                results.append(r)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}, "
              f"{platform.machine()}, load average {' '.join(load)} at the end"
              f"{' (--quick: smoke-sized, figures mean nothing)' if a.quick else ''}.")
    report = write_report(results, not_run, a.out, header)
    print()
    print(report.read_text())


if __name__ == "__main__":
    main()
