"""Precision you ask for (`--bench-precision SECONDS`): after the minimum rounds, a scenario
keeps getting interleaved rounds until the 95 % CI half-width of orchestration (Covalent
wall − the tasks' own time, per executor) is at or below the target for every executor, or
the budget (`--bench-max-rounds`, `--bench-time-budget`) runs out. Rounds are generated up to
the maximum at collection; the ones not needed are skipped with the reason.

The CI is bench.analysis.stats.median_ci: exact order statistics, so the rule never stops
before EXACT_CI_MIN_N measured rounds (below that no 95 % interval of a median exists)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis.decompose import in_task_time, orchestration
from bench.analysis.stats import EXACT_CI_MIN_N, median_ci
from bench.records import IN_TASK

PRECISION_JSON = "precision.json"
METRIC = "orchestration_s"


def _in_task_s(phases: list[dict[str, Any]]) -> float:
    return in_task_time([(p["start_s"], p["start_s"] + p["duration_s"]) for p in phases
                         if p.get("phase") == IN_TASK])


@dataclass
class Precision:
    target_s: float
    max_rounds: int
    budget_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    # (scenario id, label) -> round -> orchestration s (Covalent) or wall s (plain)
    values: dict[tuple[str, str], dict[int, float]] = field(
        default_factory=lambda: defaultdict(dict))
    stopped: dict[str, str] = field(default_factory=dict)  # scenario id -> why it stopped
    widths: dict[str, dict[str, float]] = field(default_factory=dict)  # last half-widths

    def record(self, scenario_id: str, label: str, round_: int, warmup: bool, record: Any
               ) -> None:
        if warmup or record.status != "COMPLETED" or not record.probed:
            return
        value = record.wall_s if record.mode == "plain" else orchestration(
            record.wall_s, _in_task_s(record.phases))
        self.values[(scenario_id, label)][round_] = value

    def half_widths(self, scenario_id: str, labels: list[str]) -> dict[str, float]:
        out = {}
        for label in labels:
            values = list(self.values.get((scenario_id, label), {}).values())
            _, low, high = median_ci(values)
            out[label] = (high - low) / 2 if len(values) >= EXACT_CI_MIN_N else float("inf")
        return out

    def skip_reason(self, scenario: Any, round_: int, labels: list[str], starts: bool
                    ) -> str | None:
        """Why this round of `scenario` need not run (None: run it). Judged as a round
        starts (`starts`: its first case), from the rounds before it; later cases of the
        round follow that judgment, so a round runs whole or not at all."""
        if scenario.id in self.stopped or not starts:
            return self.stopped.get(scenario.id)
        measured = round_ - scenario.warmup_rounds
        if measured < max(scenario.rounds, EXACT_CI_MIN_N):
            return None
        widths = self.half_widths(scenario.id, labels)
        self.widths[scenario.id] = widths
        if all(w <= self.target_s for w in widths.values()):
            self.stopped[scenario.id] = (f"precision target ±{self.target_s:g} s met after "
                                         f"{measured} measured rounds")
        elif self.budget_s is not None and time.monotonic() - self.started > self.budget_s:
            self.stopped[scenario.id] = (f"time budget of {self.budget_s / 60:g} min spent "
                                         f"after {measured} measured rounds")
        return self.stopped.get(scenario.id)

    def write(self, out_dir: Path, session_id: str) -> None:
        """precision.json beside the records: the target and how each scenario ended."""
        doc = {"session_id": session_id, "target_s": self.target_s, "metric": METRIC,
               "max_rounds": self.max_rounds, "budget_s": self.budget_s,
               "stopped": self.stopped,
               "half_widths": {k: {label: (None if w == float("inf") else w)
                                   for label, w in v.items()} for k, v in self.widths.items()}}
        (out_dir / PRECISION_JSON).write_text(json.dumps(doc, indent=2))
