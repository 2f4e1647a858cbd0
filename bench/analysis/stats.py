"""Statistics the analysis uses: a median with its bootstrap CI, a least-squares line."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def median_ci(values: np.ndarray | pd.Series) -> tuple[float, float, float]:
    """Median and its bootstrap confidence interval (scipy, percentile method)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return (float("nan"),) * 3
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,), np.median, confidence_level=CONFIDENCE, method="percentile",
        n_resamples=9999, random_state=np.random.default_rng(0),
    )
    return float(np.median(x)), float(res.confidence_interval.low), float(
        res.confidence_interval.high)


def fit_line(x: np.ndarray | pd.Series, y: np.ndarray | pd.Series) -> dict[str, float]:
    """Least-squares line y = intercept + slope * x (scipy), with standard errors."""
    fit = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return {"intercept_s": fit.intercept, "intercept_stderr_s": fit.intercept_stderr,
            "slope_s_per_unit": fit.slope, "slope_stderr": fit.stderr, "r2": fit.rvalue**2}
