"""Statistics: the bootstrap CI of the median covers the truth; rounds pair up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.analysis import median_ci, paired_rounds


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
