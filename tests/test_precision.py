"""--bench-precision: rounds stop when every executor's orchestration CI is narrow enough,
never before the exact CI exists, and the summary says how it ended."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from bench.analysis.stats import EXACT_CI_MIN_N, median_ci
from bench.precision import Precision
from bench.report.tables import with_precision


@dataclass
class _Record:  # what Precision.record reads of a RunRecord
    mode: str
    wall_s: float
    phases: list = field(default_factory=list)
    status: str = "COMPLETED"
    probed: bool = True


@dataclass
class _Scenario:
    id: str = "c"
    rounds: int = 3
    warmup_rounds: int = 1


def _feed(p: Precision, rounds: range, spread: float) -> None:
    for r in rounds:
        wall = 10.0 + spread * ((r * 7) % 5)
        task = {"phase": "in_task", "start_s": 0.5, "duration_s": 5.0}
        p.record("c", "local", r, r < 1, _Record("covalent", wall, [task]))


def test_stops_when_the_target_is_met_and_not_before_the_exact_ci() -> None:
    p, s = Precision(target_s=0.5, max_rounds=20), _Scenario()
    _feed(p, range(0, 1 + EXACT_CI_MIN_N - 1), spread=0.01)
    # 5 measured rounds: no exact 95 % CI of a median yet, so the rounds go on.
    assert p.skip_reason(s, 1 + EXACT_CI_MIN_N - 1, ["local"], starts=True) is None
    _feed(p, range(1 + EXACT_CI_MIN_N - 1, 1 + EXACT_CI_MIN_N), spread=0.01)
    reason = p.skip_reason(s, 1 + EXACT_CI_MIN_N, ["local"], starts=True)
    assert reason == f"precision target ±0.5 s met after {EXACT_CI_MIN_N} measured rounds"
    # Later cases of that round and every later round follow the judgment.
    assert p.skip_reason(s, 1 + EXACT_CI_MIN_N, ["local"], starts=False) == reason
    assert p.skip_reason(s, 12, ["local"], starts=True) == reason


def test_wide_rounds_go_on_until_the_time_budget() -> None:
    p, s = Precision(target_s=0.01, max_rounds=20, budget_s=0.0), _Scenario()
    _feed(p, range(0, 1 + EXACT_CI_MIN_N), spread=1.0)
    reason = p.skip_reason(s, 1 + EXACT_CI_MIN_N, ["local"], starts=True)
    assert reason is not None and reason.startswith("time budget of 0 min spent after 6")
    widths = p.widths["c"]["local"]
    values = list(p.values[("c", "local")].values())
    _, low, high = median_ci(values)
    assert widths == (high - low) / 2 > 0.01


def test_summary_says_per_row_whether_the_target_was_met(tmp_path) -> None:
    summary = pd.DataFrame({"session_id": ["s", "s"], "config_id": ["c", "c"],
                            "executor": ["local", "dask"], "covalent_rounds": [8, 8],
                            "orchestration_s_ci_low": [4.0, 3.0],
                            "orchestration_s_ci_high": [4.6, 5.0]})
    (tmp_path / "precision.json").write_text(json.dumps(
        {"session_id": "s", "target_s": 0.5, "metric": "orchestration_s",
         "stopped": {"c": "time budget of 10 min spent after 8 measured rounds"}}))
    out = with_precision(summary, tmp_path)
    assert list(out["precision_met"]) == [True, False]
    assert list(out["precision_halfwidth_s"].round(6)) == [0.3, 1.0]
    assert set(out["precision_stop"]) == {"time budget of 10 min spent after 8 measured rounds"}
    other = summary.assign(session_id="t")  # a target of another session judges nothing
    assert "precision_met" not in with_precision(other, tmp_path)
