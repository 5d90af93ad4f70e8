"""Every round of a benchmark, ours against its peer, in one shape that `bench/report.py` reads.

A benchmark records each round as it measures it (`Results.add`) and, when given `--json PATH`,
writes them all; it keeps printing its own table too. Rounds of ours and the peer are paired in
the order they ran (the benchmarks alternate A B B A or rotate), so the ratio of round i compares
two measurements taken close together on a noisy machine; the median of those ratios is the
figure a goal is judged by.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Metric:
    name: str
    unit: str
    peer: str
    goal: float | None = None  # the ratio ours/peer must reach (None: reported, not judged)
    higher_is_better: bool = True
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    def round_ratios(self) -> list[float]:
        """ours/peer per round (peer/ours where lower is better), for the rounds both ran."""
        pairs = zip(self.ours, self.theirs, strict=False)
        return [(o / t if self.higher_is_better else t / o) for o, t in pairs if o > 0 and t > 0]

    def ratio(self) -> float | None:
        ratios = self.round_ratios()
        return statistics.median(ratios) if ratios else None

    def met(self) -> bool | None:
        r = self.ratio()
        return None if self.goal is None or r is None else r >= self.goal


@dataclass
class Results:
    bench: str
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)

    def metric(self, name: str, unit: str, peer: str, goal: float | None = None,
               higher_is_better: bool = True) -> Metric:
        m = self.metrics.get(name)
        if m is None:
            m = self.metrics[name] = Metric(name, unit, peer, goal, higher_is_better)
        return m

    def add(self, name: str, ours: float, theirs: float) -> None:
        """One round of a metric declared with `metric()`: ours and the peer's figure."""
        m = self.metrics[name]
        m.ours.append(ours)
        m.theirs.append(theirs)

    def to_json(self) -> dict[str, Any]:
        return {"bench": self.bench, "notes": self.notes,
                "metrics": [asdict(m) for m in self.metrics.values()]}

    def write(self, path: str | Path | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        r = cls(str(data["bench"]), [str(n) for n in data.get("notes", [])])
        for m in data["metrics"]:
            r.metrics[m["name"]] = Metric(**m)
        return r

    @classmethod
    def read(cls, path: str | Path) -> Results:
        return cls.from_json(json.loads(Path(path).read_text()))


def from_proxy_direct(bench: str, rounds: dict[str, dict[str, list[float]]], peer: str,
                      goals: dict[str, float], notes: list[str]) -> Results:
    """The S3 benchmarks' {operation: {"proxy": [...], "direct": [...]}} as Results."""
    r = Results(bench, notes)
    for op, by in rounds.items():
        name, _, unit = op.partition(" (")
        r.metric(name, unit.rstrip(")") or "per s", peer, goals.get(op))
        for ours, theirs in zip(by["proxy"], by["direct"], strict=False):
            r.add(name, ours, theirs)
    return r


def add_json_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="also write every round, ours and the peer's, as JSON (read by bench/report.py)")
