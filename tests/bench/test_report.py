"""bench/report.py's judgement and rendering, on recorded rounds (no benchmark is run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import render_markdown, write_report
from bench.results import Results


def _results() -> Results:
    r = Results("demo", ["two rounds"])
    r.metric("read", "MB/s", "peerfs", goal=0.8)
    r.add("read", 90.0, 100.0)
    r.add("read", 70.0, 100.0)
    r.metric("latency", "ms", "peerfs", goal=1.0, higher_is_better=False)
    r.add("latency", 5.0, 10.0)
    r.metric("write", "MB/s", "peerfs")
    r.add("write", 1.0, 2.0)
    return r


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    r = _results()
    assert r.metrics["read"].round_ratios() == [0.9, 0.7]
    assert r.metrics["read"].ratio() == 0.8
    assert r.metrics["read"].met() is True
    assert r.metrics["latency"].ratio() == 2.0  # lower is better: peer/ours
    assert r.metrics["write"].met() is None  # no goal: reported, not judged


def test_a_goal_missed_by_one_round_in_two_is_judged_by_the_median() -> None:
    r = Results("demo")
    r.metric("read", "MB/s", "peerfs", goal=0.8)
    for ours in (50.0, 79.0, 95.0):
        r.add("read", ours, 100.0)
    assert r.metrics["read"].ratio() == 0.79
    assert r.metrics["read"].met() is False


def test_markdown_prints_every_round_and_one_line_per_goal() -> None:
    md = render_markdown([_results()], ["fs"], "header")
    assert "| read | 80.00 MB/s | 100 MB/s (peerfs) | 0.80× | ≥ 0.8× | **met** | 90.00/100, 70.00/100 |" in md
    assert "- MET: demo / read: 0.80× peerfs (goal ≥ 0.8×)" in md
    assert "- MET: demo / latency: 2.00× peerfs (goal ≥ 1×)" in md
    assert "write" in md and "- MET: demo / write" not in md and "NOT MET: demo / write" not in md
    assert "- NOT RUN: fs" in md


def test_report_writes_json_that_reads_back_and_a_png_per_bench(tmp_path: Path) -> None:
    report = write_report([_results()], [], tmp_path, "header")
    assert report.read_text().startswith("# Benchmark report")
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = Results.read(tmp_path / "demo.json")
    assert again.metrics["read"].ours == [90.0, 70.0]
    assert again.metrics["latency"].higher_is_better is False


def test_the_s3_benches_rounds_become_metrics_named_without_their_unit() -> None:
    from bench.results import from_proxy_direct

    rounds = {"PUT 64 MiB (MB/s)": {"proxy": [90.0, 80.0], "direct": [100.0, 100.0]},
              "GET 4 KiB (ops/s)": {"proxy": [5.0], "direct": [10.0]}}
    r = from_proxy_direct("s3_proxy", rounds, "moto direct", {"PUT 64 MiB (MB/s)": 0.9}, [])
    put = r.metrics["PUT 64 MiB"]
    assert (put.unit, put.peer, put.goal) == ("MB/s", "moto direct", 0.9)
    assert put.ratio() == pytest.approx(0.85)
    assert put.met() is False and r.metrics["GET 4 KiB"].unit == "ops/s"
