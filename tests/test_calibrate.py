"""The gate's calibration: error rates from A/A sessions, and planted delays."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.analysis.gate import (
    confirmed_table,
    detection_table,
    false_positive_table,
    smallest_detected,
)
from bench.calibrate import planted
from bench.gate import Session


def _verdicts(flags: dict[float, list[bool]]) -> pd.DataFrame:
    """Per planted delay, one local orchestration verdict per session (True: regression)."""
    return pd.DataFrame([
        {"session": f"aa-{i:02d}", "threshold_pct": 25.0, "planted_s": delay,
         "config_id": "c", "executor": "local", "metric": "orchestration_s",
         "verdict": "regression" if hit else "ok", "reference_median": 4.0,
         "change_pct": 0.0, "p_value": 0.5, "new_median": 4.0}
        for delay, hits in flags.items() for i, hit in enumerate(hits)])


def test_false_positive_rate_counts_sessions_with_a_clopper_pearson_interval() -> None:
    frame = _verdicts({0.0: [False] * 9 + [True]})
    (row,) = false_positive_table(frame).to_dict("records")
    assert (row["sessions"], row["false_positives"]) == (10, 1)
    assert row["rate"] == pytest.approx(0.1)
    assert row["ci_low"] == pytest.approx(0.00253, abs=1e-4)  # exact binomial, 1 of 10
    assert row["ci_high"] == pytest.approx(0.445, abs=1e-3)


def test_smallest_detected_is_where_detection_stays_above_the_goal() -> None:
    frame = _verdicts({0.0: [False] * 10, 0.5: [True] * 3 + [False] * 7,
                       1.0: [True] * 9 + [False], 1.5: [True] * 7 + [False] * 3,
                       2.0: [True] * 10})
    detection = detection_table(frame)
    assert detection.set_index("planted_s").loc[1.0, "planted_pct"] == pytest.approx(25)
    (row,) = smallest_detected(detection).to_dict("records")
    assert row["smallest_caught_s"] == 2.0  # 1.0 s is caught 9/10, but 1.5 s only 7/10
    assert row["caught"] == "10/10"
    never = smallest_detected(detection_table(_verdicts({0.5: [False] * 10})))
    assert never["smallest_caught_s"].isna().all()


def test_planted_delay_lands_on_the_second_environments_covalent_runs_only() -> None:
    runs = pd.DataFrame({"mode": ["plain", "covalent", "covalent", "covalent"],
                         "executor": ["", "a:local", "b:local", "b:dask"],
                         "wall_s": [1.0, 2.0, 2.0, 3.0]})
    shifted = planted(Session(runs, None, []), "b", 0.5)
    assert shifted.runs["wall_s"].tolist() == [1.0, 2.0, 2.5, 3.5]
    assert runs["wall_s"].tolist() == [1.0, 2.0, 2.0, 3.0]  # the session read stays as read


def test_confirmation_counts_pairs_that_regress_on_the_same_cell() -> None:
    """A first session and its confirmation: a failure needs the same configuration,
    executor and metric in both; one noisy session alone never fails."""
    frame = _verdicts({0.0: [False] * 4 + [True], 1.0: [True] * 4 + [False]})
    table = confirmed_table(frame).set_index(["executor", "planted_s"])
    aa = table.loc[("any", 0.0)]
    assert (aa["sessions"], aa["detected"]) == (20, 0)  # 5 x 4 ordered pairs, none confirmed
    single_high = false_positive_table(frame)["ci_high"].iloc[0]
    assert aa["bound_if_independent"] == pytest.approx(single_high ** 2)
    hit = table.loc[("local", 1.0)]
    assert (hit["sessions"], hit["detected"]) == (20, 12)  # the 4 x 3 pairs of detecting ones
    other_cell = frame.assign(metric=["total_overhead_pct" if s == "aa-00" else m
                                      for s, m in zip(frame["session"], frame["metric"],
                                                      strict=True)])
    moved = confirmed_table(other_cell).set_index(["executor", "planted_s"])
    assert moved.loc[("local", 1.0), "detected"] == 6  # aa-00 regressed elsewhere: 3 x 2


def test_earlier_sessions_are_kept_and_not_run_again(tmp_path, monkeypatch) -> None:
    """Sessions judged by an earlier calibration, whose records are gone, still count:
    their verdicts stay in verdicts.csv and their numbers are not run again."""
    import bench.calibrate as calibrate

    _verdicts({0.0: [False, True]}).to_csv(tmp_path / "verdicts.csv", index=False)
    ran = []

    def fake_call(command: list[str]) -> int:
        where = Path(command[command.index("--bench-out") + 1])
        ran.append(where.name)
        return 1  # a failed session: kept for reading, not counted

    monkeypatch.setattr(calibrate.subprocess, "call", fake_call)
    kept = calibrate.earlier_verdicts(tmp_path)
    assert set(kept["session"]) == {"aa-00", "aa-01"}
    done = calibrate.run_sessions(tmp_path, 4, "smoke", "covalent==0.240.0", [],
                                  frozenset(kept["session"]))
    assert ran == ["aa-02", "aa-03"] and done == []
