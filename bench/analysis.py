"""From run records to the per-configuration summary: plain vs Covalent, where the time
goes, and how sure we are (bootstrap confidence intervals over paired rounds).

Per Covalent run (seconds):
    wall     = submit + until_running + server + completion_detect + retrieve + rest
    server   = in_task + executor_cost + scheduling_gaps
where in_task is the union of the tasks' own intervals (parallel tasks count once),
executor_cost the rest of the nodes' spans (staging, (de)serialization, hand-off) and
scheduling_gaps the server time when no node ran. A plain run is in_task + rest.
Overhead = Covalent wall - plain wall of the same round splits into two families:
    orchestration     = Covalent wall - Covalent in_task (its named parts + Covalent rest)
    compute inflation = Covalent in_task - plain in_task (the same tasks, slower or faster)
and what no part names (rest of both runs) is reported as `unexplained_s`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.records import PHASES_CSV, RUNS_CSV, SUMMARY_CSV

CONFIDENCE = 0.95
ORCHESTRATION_PARTS = (
    "submit_s",
    "until_running_s",
    "scheduling_gaps_s",
    "executor_cost_s",
    "completion_detect_s",
    "retrieve_s",
)
# Segments of a run's wall time, in the order they happen (plots stack them so).
SEGMENTS = (
    "submit_s",
    "until_running_s",
    "in_task_s",
    "executor_cost_s",
    "scheduling_gaps_s",
    "completion_detect_s",
    "retrieve_s",
    "rest_s",
)
# Per-round estimators that get a median and a bootstrap CI.
ESTIMATORS = ("total_overhead_s", "total_overhead_pct", "orchestration_s",
              "orchestration_pct", "compute_inflation_s")

SUMMARY_COLUMNS = (
    "profile",
    "config_id",
    "executor",
    "plain_median_s",
    "covalent_median_s",
    "overhead_s",  # median Covalent wall - median plain wall
    "overhead_pct",
    "plain_rounds",
    "covalent_rounds",
    "plain_accuracy",
    "covalent_accuracy",
    "plain_test_loss",
    "covalent_test_loss",
    "same_weights",
    "plain_threads",
    "covalent_threads",
    "comparable",
    *(f"{e}{suffix}" for e in ESTIMATORS for suffix in ("", "_ci_low", "_ci_high")),
    "plain_in_task_s",
    "covalent_in_task_s",
    *(f"{p.removesuffix('_s')}_median_s" for p in ORCHESTRATION_PARTS),
    "server_median_s",
    "stock_wall_median_s",
    "unexplained_s",
    "explained_pct",
    "plain_server_cpu_s",  # the idle server's CPU during a plain run: its tax
    "covalent_server_cpu_s",
    "cold_plain_s",  # first (warm-up) round after the server started
    "cold_covalent_s",
    "session_id",
)


class NoRecordsError(FileNotFoundError):
    pass


def load_runs(in_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(in_dir) / RUNS_CSV
    if not path.is_file() or path.stat().st_size == 0:
        raise NoRecordsError(
            f"no run records at {path}. Run the benchmarks first, e.g.\n"
            f"  pytest bench --benchmark-only --bench-profile smoke --bench-out {in_dir}"
        )
    runs = pd.read_csv(path, dtype={"executor": str, "dispatch_id": str, "error": str})
    runs["executor"] = runs["executor"].fillna("")
    return runs


def load_phases(in_dir: str | os.PathLike) -> pd.DataFrame | None:
    path = Path(in_dir) / PHASES_CSV
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path, dtype={"executor": str, "task": str})


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Time covered by at least one interval: parallel tasks count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _intervals(rows: pd.DataFrame) -> list[tuple[float, float]]:
    return list(zip(rows["start_s"], rows["start_s"] + rows["duration_s"], strict=True))


def breakdown(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run, the segments phases.csv holds (submit and retrieve are in runs.csv)."""
    rows = []
    for run_id, group in phases.groupby("run_id", sort=False):
        in_task = _union_length(_intervals(group[group["phase"] == "in_task"]))
        nodes = _union_length(_intervals(group[group["phase"] == "node"]))
        named = group.groupby("phase")["duration_s"].sum()
        server = named.get("server", 0.0)
        rows.append({
            "run_id": run_id,
            "in_task_s": in_task,
            "until_running_s": named.get("until_running", 0.0),
            "executor_cost_s": max(nodes - in_task, 0.0) if server else 0.0,
            "scheduling_gaps_s": max(server - max(nodes, in_task), 0.0) if server else 0.0,
            "completion_detect_s": named.get("completion_detect", 0.0),
        })
    return pd.DataFrame(rows)


def with_breakdown(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """Runs joined with their segments; `rest_s` is wall time no segment explains."""
    if phases is None or phases.empty:
        return runs
    joined = runs.merge(breakdown(phases), on="run_id", how="left")
    seg = [c for c in SEGMENTS if c != "rest_s"]
    joined["rest_s"] = joined["wall_s"] - joined.reindex(columns=seg).fillna(0).sum(axis=1)
    return joined


def measured(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed, non-warm-up rows of the latest session that measured each (config, mode)."""
    return _latest(runs[(runs["status"] == "COMPLETED") & (~runs["warmup"].astype(bool))])


def cold(runs: pd.DataFrame) -> pd.DataFrame:
    """The warm-up rounds (the first runs after the server started), latest session."""
    return _latest(runs[(runs["status"] == "COMPLETED") & runs["warmup"].astype(bool)])


def _latest(rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["profile", "config_id", "mode", "executor"]
    latest = rows.groupby(keys)["session_id"].transform("max")
    return rows[rows["session_id"] == latest]


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


def paired_rounds(plain: pd.DataFrame, cov: pd.DataFrame) -> pd.DataFrame:
    """Per round, the estimators on the plain and Covalent run of that round."""
    p = plain.set_index("round")
    c = cov.set_index("round")
    both = p.index.intersection(c.index)
    p, c = p.loc[both], c.loc[both]
    out = pd.DataFrame(index=both)
    out["plain_wall_s"], out["covalent_wall_s"] = p["wall_s"], c["wall_s"]
    out["total_overhead_s"] = c["wall_s"] - p["wall_s"]
    out["total_overhead_pct"] = 100 * (c["wall_s"] / p["wall_s"] - 1)
    if "in_task_s" in c:
        out["orchestration_s"] = c["wall_s"] - c["in_task_s"]
        out["orchestration_pct"] = 100 * out["orchestration_s"] / p["wall_s"]
        out["compute_inflation_s"] = c["in_task_s"] - p["in_task_s"]
        out["unexplained_s"] = c["rest_s"] - p["rest_s"]
    return out


def round_estimates(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """One row per configuration, executor and measured round: the paired estimators."""
    done = with_breakdown(measured(runs), phases)
    frames = []
    for config_id, group in done.groupby("config_id", sort=False):
        plain = group[group["mode"] == "plain"]
        for executor, cov in group[group["mode"] == "covalent"].groupby("executor", sort=False):
            pairs = paired_rounds(plain, cov).rename_axis("round").reset_index()
            frames.append(pairs.assign(config_id=config_id, executor=executor))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(runs: pd.DataFrame, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration and executor."""
    rows = []
    done = with_breakdown(measured(runs), phases)
    first = cold(runs)
    for (profile, config_id), group in done.groupby(["profile", "config_id"], sort=False):
        plain = group[group["mode"] == "plain"]
        for executor, cov in group[group["mode"] == "covalent"].groupby("executor", sort=False):
            row = _compare(profile, config_id, executor, plain, cov)
            cold_rows = first[first["config_id"] == config_id]
            row["cold_plain_s"] = _first(cold_rows[cold_rows["mode"] == "plain"]["wall_s"])
            row["cold_covalent_s"] = _first(cold_rows[cold_rows["executor"] == executor]["wall_s"])
            rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _first(values: pd.Series) -> float:
    return float(values.iloc[0]) if len(values) else float("nan")


def _median(frame: pd.DataFrame, column: str) -> float:
    return frame[column].median() if column in frame and len(frame) else float("nan")


def _compare(
    profile: str, config_id: str, executor: str, plain: pd.DataFrame, cov: pd.DataFrame
) -> dict:
    plain_s, cov_s = _median(plain, "wall_s"), _median(cov, "wall_s")
    overhead = cov_s - plain_s
    hashes = set(plain["weights_sha256"]) | set(cov["weights_sha256"])
    plain_threads = sorted(set(plain["torch_threads"].astype(int)))
    cov_threads = sorted(set(cov["torch_threads"].astype(int)))
    devices = set(plain["resolved_device"]) | set(cov["resolved_device"])
    row = {
        "profile": profile,
        "config_id": config_id,
        "executor": executor,
        "plain_median_s": plain_s,
        "covalent_median_s": cov_s,
        "overhead_s": overhead,
        "overhead_pct": 100 * overhead / plain_s if plain_s else float("nan"),
        "plain_rounds": len(plain),
        "covalent_rounds": len(cov),
        "plain_accuracy": _median(plain, "accuracy"),
        "covalent_accuracy": _median(cov, "accuracy"),
        "plain_test_loss": _median(plain, "test_loss"),
        "covalent_test_loss": _median(cov, "test_loss"),
        "same_weights": len(plain) > 0 and len(hashes) == 1,
        "plain_threads": "/".join(map(str, plain_threads)),
        "covalent_threads": "/".join(map(str, cov_threads)),
        # A pair that ran with other thread counts or devices measures those, not Covalent.
        "comparable": plain_threads == cov_threads and len(devices) == 1,
        "plain_in_task_s": _median(plain, "in_task_s"),
        "covalent_in_task_s": _median(cov, "in_task_s"),
        "server_median_s": _median(cov, "server_s"),
        "stock_wall_median_s": _median(cov, "stock_wall_s"),
        "plain_server_cpu_s": _median(plain, "server_cpu_s"),
        "covalent_server_cpu_s": _median(cov, "server_cpu_s"),
        "session_id": cov["session_id"].max(),
    }
    for part in ORCHESTRATION_PARTS:
        row[f"{part.removesuffix('_s')}_median_s"] = _median(cov, part)
    pairs = paired_rounds(plain, cov)
    for estimator in ESTIMATORS:
        if estimator in pairs:
            row[estimator], row[f"{estimator}_ci_low"], row[f"{estimator}_ci_high"] = median_ci(
                pairs[estimator])
    if "unexplained_s" in pairs:
        row["unexplained_s"] = pairs["unexplained_s"].median()
        total = pairs["total_overhead_s"].median()
        if total:
            row["explained_pct"] = 100 * (1 - abs(row["unexplained_s"]) / abs(total))
    return row


def write_summary(out_dir: str | os.PathLike) -> pd.DataFrame:
    summary = summarize(load_runs(out_dir), load_phases(out_dir))
    summary.to_csv(Path(out_dir) / SUMMARY_CSV, index=False, float_format="%.4f")
    return summary
