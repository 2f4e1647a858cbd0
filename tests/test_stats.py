"""Statistics: the bootstrap CI of the median covers the truth; rounds pair up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.analysis.decompose import as_batches, paired_rounds
from bench.analysis.stats import fit_line, median_ci


def test_bootstrap_ci_covers_a_known_overhead() -> None:
    rng = np.random.default_rng(42)
    true_overhead, trials, covered = 2.5, 200, 0
    for _ in range(trials):
        plain = rng.normal(20.0, 1.5, size=9)
        cov = plain + true_overhead + rng.normal(0, 0.3, size=9)  # paired, like ABAB rounds
        _, low, high = median_ci(cov - plain)
        covered += low <= true_overhead <= high
    assert covered / trials >= 0.85


def test_ci_brackets_the_median_and_degenerate_samples() -> None:
    mid, low, high = median_ci([1.0, 2.0, 3.0, 4.0, 10.0])
    assert low <= mid <= high and mid == 3.0
    assert median_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert np.isnan(median_ci([])[0])


def test_rounds_are_paired_by_index() -> None:
    plain = pd.DataFrame({"round": [1, 2, 3], "wall_s": [10.0, 11.0, 12.0],
                          "in_task_s": [9.5, 10.5, 11.5], "rest_s": [0.5, 0.5, 0.5]})
    cov = pd.DataFrame({"round": [3, 1], "wall_s": [15.0, 13.0],
                        "in_task_s": [12.0, 10.0], "rest_s": [0.1, 0.2]})
    pairs = paired_rounds(plain, cov)
    assert list(pairs.index) == [1, 3]
    assert pairs.loc[1, "total_overhead_s"] == 3.0 and pairs.loc[3, "total_overhead_s"] == 3.0
    assert pairs.loc[1, "orchestration_s"] == 3.0 and pairs.loc[1, "compute_inflation_s"] == 0.5
    assert pairs.loc[1, "total_overhead_pct"] == pytest.approx(30.0)


def test_fit_recovers_a_known_constant_and_slope() -> None:
    rng = np.random.default_rng(1)
    samples = np.repeat([5.0, 15.0, 30.0, 60.0], 3)  # thousands of training samples
    overhead = 2.0 + 0.05 * samples + rng.normal(0, 0.05, size=len(samples))
    fit = fit_line(samples, overhead)
    assert fit["intercept_s"] == pytest.approx(2.0, abs=3 * fit["intercept_stderr_s"] + 0.02)
    assert fit["slope_s_per_unit"] == pytest.approx(0.05, abs=3 * fit["slope_stderr"] + 1e-3)
    assert fit["r2"] > 0.95


def test_a_batch_is_one_row_judged_by_its_makespan() -> None:
    base = {"session_id": "s", "config_id": "c-n3", "mode": "covalent", "executor": "local",
            "round": 0, "concurrency": 3, "batch_wall_s": 9.0, "output_digest": "w"}
    runs = pd.DataFrame([
        {**base, "run_id": "a", "slot": 0, "wall_s": 4.0, "latency_s": 5.0,
         "status": "COMPLETED"},
        {**base, "run_id": "b", "slot": 1, "wall_s": 6.0, "latency_s": 7.0,
         "status": "COMPLETED"},
        {**base, "run_id": "c", "slot": 2, "wall_s": 8.0, "latency_s": 9.0, "status": "FAILED"},
        {**base, "run_id": "d", "config_id": "c", "concurrency": 1, "slot": 0, "wall_s": 3.0,
         "latency_s": 3.0, "batch_wall_s": 3.0, "status": "COMPLETED"},
    ])
    batches = as_batches(runs).set_index("config_id")
    batch = batches.loc["c-n3"]
    assert batch["wall_s"] == 9.0 and batch["latency_max_s"] == 9.0
    assert (batch["dispatches"], batch["dispatches_ok"]) == (3, 2)
    assert batch["status"] == "FAILED", "a batch with a failed dispatch is not a completed one"
    assert batches.loc["c", "wall_s"] == 3.0 and batches.loc["c", "dispatches"] == 1
