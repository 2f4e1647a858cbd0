"""The gate's judgment, pure: is a metric's new sample significantly and materially worse
than the baseline's? (The command around it, with files and history: bench.gate.)"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from scipy import stats

from bench.analysis.stats import median_ci

METRICS = ("orchestration_s", "total_overhead_pct")


@dataclass(frozen=True)
class Verdict:
    config_id: str
    executor: str
    metric: str
    new: tuple[float, float, float]  # median, CI low, CI high
    baseline: tuple[float, float, float]
    change_pct: float
    threshold_pct: float
    p_value: float
    verdict: str  # ok | regression | improved
    plain_s: float = float("nan")  # median walls of the new session, for the table
    covalent_s: float = float("nan")
    speed_scale: float = 1.0  # what the new values were multiplied by (see speed_scale())

    def message(self) -> str:
        return (
            f"{self.config_id} [{self.executor}] {self.metric}: new median "
            + (f"(x{self.speed_scale:.2f} for machine speed) " if self.speed_scale != 1 else "")
            + f"{self.new[0]:.3f} (95% CI {self.new[1]:.3f}..{self.new[2]:.3f}) vs baseline "
            f"{self.baseline[0]:.3f} (CI {self.baseline[1]:.3f}..{self.baseline[2]:.3f}): "
            f"{self.change_pct:+.1f}% (threshold {self.threshold_pct:.0f}%), "
            f"Mann-Whitney U p={self.p_value:.4f} -> {self.verdict.upper()}"
        )


def judge(
    new: pd.Series, base: pd.Series, metric: str, threshold_pct: float, alpha: float,
    config_id: str = "", executor: str = "",
) -> Verdict:
    """Regression = significantly worse AND worse by more than the threshold."""
    new_ci, base_ci = median_ci(new), median_ci(base)
    p = float(stats.mannwhitneyu(new, base, alternative="greater").pvalue)
    significant = p < alpha or new_ci[1] > base_ci[2]
    change = 100 * (new_ci[0] - base_ci[0]) / abs(base_ci[0]) if base_ci[0] else float("inf")
    if significant and change > threshold_pct:
        verdict = "regression"
    elif new_ci[2] < base_ci[1] and change < -threshold_pct:
        verdict = "improved"
    else:
        verdict = "ok"
    return Verdict(config_id, executor, metric, new_ci, base_ci, change, threshold_pct, p,
                   verdict)


def speed_scale(new_plain: pd.Series, base_plain: pd.Series) -> float:
    """Baseline plain median / new plain median: < 1 when this session's machine ran slower."""
    new, base = new_plain.median(), base_plain.median()
    return float(base / new) if new > 0 and base > 0 else 1.0
