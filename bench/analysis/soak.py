"""A soak: many dispatches back to back on one server (the `soak` profile), and whether
anything grows with them: the per-dispatch orchestration, the server's RSS, its open files,
its database on disk (runs.csv's server_* columns, read after each run).

`soak_runs` picks the sequences and numbers their dispatches; `soak_growth` fits each
against the dispatch's number with the Theil-Sen slope (robust to the odd slow run a shared
machine gives) and its 95 % CI, per configuration, executor and environment. Pure functions: no I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.decompose import measured, orchestration, with_breakdown

SOAK_MIN_RUNS = 40  # a sequence shorter than this is a session, not a soak
SOAK_METRICS = {
    "orchestration_s": "orchestration per dispatch (s)",
    "server_rss_mb": "server RSS (MB)",
    "server_open_files": "server open files",
    "server_db_mb": "server database (MB)",
}
PER = 100  # slopes are given per this many dispatches


def soak_runs(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """The measured Covalent runs of long sequences (one at a time, at least
    SOAK_MIN_RUNS in a configuration x executor x environment), in order, with `dispatch`
    (0, 1, ...: the runs of their sequence, warm-up included, in the order they ran) and
    their orchestration_s."""
    cov = runs[(runs["mode"] == "covalent") & (runs["concurrency"] <= 1)].copy()
    if cov.empty:
        return cov
    keys = ["session_id", "config_id", "executor", "environment"]
    cov["environment"] = cov["environment"].fillna("").astype(str)
    cov = cov.sort_values([*keys, "round"], kind="stable")
    cov["dispatch"] = cov.groupby(keys, sort=False).cumcount()
    cov = measured(cov)
    cov = cov[cov["status"] == "COMPLETED"]
    cov = cov[cov.groupby(keys, sort=False)["wall_s"].transform("size") >= SOAK_MIN_RUNS]
    if cov.empty:
        return cov
    cov = with_breakdown(cov, phases)
    in_task = cov["in_task_s"] if "in_task_s" in cov else 0.0
    cov["orchestration_s"] = orchestration(cov["wall_s"], pd.Series(in_task,
                                                                      index=cov.index).fillna(0))
    return cov


def soak_growth(cov: pd.DataFrame) -> pd.DataFrame:
    """Of `soak_runs`: per sequence and metric, dispatches, first and last (medians of the
    first and last tenth), slope per PER dispatches with its 95 % CI (Theil-Sen), and
    grows / shrinks (the CI above / below 0). Empty without a soak-long sequence."""
    rows = []
    if cov.empty:
        return pd.DataFrame()
    for (config_id, executor, environment), seq in cov.groupby(
            ["config_id", "executor", "environment"], sort=False):
        tenth = max(1, len(seq) // 10)
        for metric in SOAK_METRICS:
            y = pd.to_numeric(seq.get(metric), errors="coerce")
            ok = y.notna().to_numpy() if y is not None else np.array([], bool)
            if ok.sum() < SOAK_MIN_RUNS // 2:
                continue
            x = seq["dispatch"].to_numpy(float)[ok]
            v = y.to_numpy(float)[ok]
            slope, intercept, low, high = stats.theilslopes(v, x, alpha=0.95)
            rows.append({"config_id": config_id, "executor": executor,
                         "environment": environment, "metric": metric,
                         "dispatches": int(ok.sum()),
                         "first": float(np.median(v[:tenth])),
                         "last": float(np.median(v[-tenth:])),
                         "intercept": float(intercept),
                         "slope_per_100": PER * float(slope),
                         "ci_low_per_100": PER * float(low),
                         "ci_high_per_100": PER * float(high),
                         "grows": bool(low > 0), "shrinks": bool(high < 0)})
    return pd.DataFrame(rows)


def _number(x: float, sign: str = "") -> str:
    """3 significant digits, but whole numbers from 1,000 on (4,370 open files, not 4.37e+03)."""
    return f"{x:{sign},.0f}" if abs(x) >= 1000 else f"{x:{sign}.3g}"


def soak_sentence(row: pd.Series) -> str:
    """"server RSS (MB): 212 → 230 over 60 dispatches, +30.1 per 100 [+25.2, +35.0]:
    grows"."""
    verdict = ("grows" if row["grows"] else "shrinks" if row["shrinks"] else
               "no growth shown")
    return (f"{SOAK_METRICS[row['metric']]}: {_number(row['first'])} → "
            f"{_number(row['last'])} over {row['dispatches']} dispatches, "
            f"{_number(row['slope_per_100'], '+')} per {PER} "
            f"[{_number(row['ci_low_per_100'], '+')}, {_number(row['ci_high_per_100'], '+')}]: "
            f"{verdict}")
