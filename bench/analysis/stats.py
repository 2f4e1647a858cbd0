"""Statistics the analysis uses: a median with its bootstrap CI, a least-squares line."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


# From this many values on, a median's 95 % CI is the exact, distribution-free one: two order
# statistics chosen with the binomial distribution (scipy.stats.quantile_test), whose
# coverage is at least 95 % whatever the distribution. Below it no two order statistics
# reach 95 % (at n = 5, min..max covers 93.75 %), so smaller samples get the percentile
# bootstrap, which there is about min..max and is reported as it is (see EXACT_CI_MIN_N in
# the README); the precision rule (--bench-precision) never stops before this many rounds.
EXACT_CI_MIN_N = 6


def median_ci(values: np.ndarray | pd.Series) -> tuple[float, float, float]:
    """Median and its 95 % confidence interval: exact order statistics from EXACT_CI_MIN_N
    values on, the percentile bootstrap below."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return (float("nan"),) * 3
    if len(x) == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    if len(x) >= EXACT_CI_MIN_N:
        ci = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(
            CONFIDENCE)
        return float(np.median(x)), float(ci.low), float(ci.high)
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
