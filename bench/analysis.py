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
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.records import FITS_CSV, PHASES_CSV, RUNS_CSV, SUMMARY_CSV

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

# What the tasks themselves did, summed over a run's in-task rows (bench.probes): CPU time,
# its kernel share and page faults tell contention (wall up, CPU flat) from the same code
# doing more work (CPU up; with kernel time and faults up: the memory allocator).
TASK_WORK = {"cpu_s": "in_task_cpu_s", "sys_cpu_s": "in_task_sys_cpu_s",
             "page_faults": "in_task_page_faults"}

# MNIST's training split; train_subset empty means all of it.
MNIST_TRAIN = 60_000
# What a scenario is, beside its id: the dimensions plots and fits group by.
DIMENSIONS = ("shape", "data_path", "epochs", "batch_size_train", "models", "threads",
              "concurrency")

SUMMARY_COLUMNS = (
    "profile",
    "config_id",
    "executor",
    *DIMENSIONS,
    "train_samples",
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
    *(f"{mode}_{col}" for col in TASK_WORK.values() for mode in ("plain", "covalent")),
    "covalent_task_env",  # bench.probes.ENV_KNOBS as the Covalent tasks saw them
    *(f"{p.removesuffix('_s')}_median_s" for p in ORCHESTRATION_PARTS),
    "server_median_s",
    "stock_wall_median_s",
    "unexplained_s",
    "explained_pct",
    "plain_server_cpu_s",  # the idle server's CPU during a plain run: its tax
    "covalent_server_cpu_s",
    "cold_plain_s",  # first (warm-up) round after the server started
    "cold_covalent_s",
    "bytes_moved_median",  # serialized node outputs of one Covalent run (manifest sizes)
    # Batches (concurrency > 1) are judged by their makespan; these describe their runs.
    "dispatches",
    "dispatches_ok",
    "plain_per_min",  # throughput: runs finished per minute of batch wall time
    "covalent_per_min",
    "plain_latency_p50_s",
    "covalent_latency_p50_s",
    "covalent_latency_p95_s",
    "covalent_latency_max_s",
    "session_id",
)
# Least-squares lines of the overhead against the workload (fits.csv).
# A fit against train_samples covers one family: configurations whose ids differ only in
# the training size. FIT_GROUP are the family's dimensions, shown beside it (all empty for
# the bytes fit, which spans every shape).
FIT_GROUP = ("shape", "data_path", "epochs", "batch_size_train", "models", "threads")
FIT_COLUMNS = ("executor", "x", "family", *FIT_GROUP, "points", "intercept_s", "intercept_stderr_s",
               "slope_s_per_unit", "slope_stderr", "unit", "r2")


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
    for column, default in (("concurrency", 1), ("shape", "tutorial"), ("data_path", "tutorial"),
                            ("models", 1)):
        if column not in runs or runs[column].isna().all():  # files from older versions
            runs[column] = default
        else:
            runs[column] = runs[column].fillna(default)
    return runs


def as_batches(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of concurrency > 1 collapsed to one row per batch, judged by its makespan.

    A batch row keeps wall_s = batch_wall_s, status COMPLETED only if every run completed,
    and counts its dispatches; it has no run_id, so no per-run breakdown attaches to it."""
    single = runs[runs["concurrency"] <= 1].assign(dispatches=1)
    single["dispatches_ok"] = (single["status"] == "COMPLETED").astype(int)
    multi = runs[runs["concurrency"] > 1]
    if multi.empty:
        return single
    keys = ["session_id", "config_id", "mode", "executor", "round"]
    batches = []
    for _, batch in multi.groupby(keys, sort=False):
        row = batch.iloc[0].copy()
        ok = int((batch["status"] == "COMPLETED").sum())
        row["run_id"] = ""
        row["wall_s"] = batch["batch_wall_s"].iloc[0]
        row["status"] = "COMPLETED" if ok == len(batch) else "FAILED"
        row["dispatches"], row["dispatches_ok"] = len(batch), ok
        row["latency_p50_s"] = batch["latency_s"].median()
        row["latency_p95_s"] = batch["latency_s"].quantile(0.95)
        row["latency_max_s"] = batch["latency_s"].max()
        row["weights_sha256"] = "/".join(sorted(set(batch["weights_sha256"].astype(str))))
        batches.append(row)
    return pd.concat([single, pd.DataFrame(batches)], ignore_index=True)


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
            "bytes_moved": group.loc[group["phase"] == "node", "bytes"].sum()
            if "bytes" in group else float("nan"),
            **_task_work(group[group["phase"] == "in_task"]),
        })
    return pd.DataFrame(rows)


def _task_work(tasks: pd.DataFrame) -> dict[str, object]:
    out: dict[str, object] = {
        name: tasks[col].sum(min_count=1) if col in tasks else float("nan")
        for col, name in TASK_WORK.items()
    }
    envs = tasks["task_env"].dropna().unique() if "task_env" in tasks else []
    out["task_env"] = " | ".join(sorted(map(str, envs)))
    return out


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
    done = with_breakdown(measured(as_batches(runs)), phases)
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
    runs = as_batches(runs)
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


# Where each swept dimension sits in a configuration id (see WorkflowConfig.id, Scenario.id).
_ID_PARTS = {"train_samples": r"\btrain[^-]+", "models": r"-k\d+(?=-|$)",
             "concurrency": r"-n\d+$"}


def family(config_id: str, dimension: str) -> str:
    """The id with one swept dimension blanked: configurations alike in all else share it."""
    return re.sub(_ID_PARTS[dimension], "train*" if dimension == "train_samples" else "",
                  config_id)


def train_samples(train_subset: object) -> int:
    """Training images a configuration uses (an empty subset is MNIST's whole split)."""
    try:
        value = float(train_subset)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return MNIST_TRAIN
    return MNIST_TRAIN if np.isnan(value) else int(value)


def fit_line(x: np.ndarray | pd.Series, y: np.ndarray | pd.Series) -> dict[str, float]:
    """Least-squares line y = intercept + slope * x (scipy), with standard errors."""
    fit = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return {"intercept_s": fit.intercept, "intercept_stderr_s": fit.intercept_stderr,
            "slope_s_per_unit": fit.slope, "slope_stderr": fit.stderr, "r2": fit.rvalue**2}


def overhead_fits(runs: pd.DataFrame, phases: pd.DataFrame | None) -> pd.DataFrame:
    """The overhead's constant part and its growth, per executor, from every measured round
    of single dispatches: against training samples per family (configurations that differ
    only in train_subset), and orchestration against bytes moved over every single-model
    configuration."""
    rounds = round_estimates(runs, phases)
    if rounds.empty:
        return pd.DataFrame(columns=list(FIT_COLUMNS))
    dims = runs.drop_duplicates("config_id").set_index("config_id")
    rounds = rounds.join(dims[[*DIMENSIONS, "train_subset"]], on="config_id")
    rounds["train_samples"] = rounds["train_subset"].map(train_samples)
    moved = with_breakdown(measured(runs[runs["concurrency"] <= 1]), phases)
    if "bytes_moved" in moved:
        per_round = moved[moved["mode"] == "covalent"].set_index(
            ["config_id", "executor", "round"])["bytes_moved"]
        rounds = rounds.join(per_round, on=["config_id", "executor", "round"])
    rounds = rounds[rounds["concurrency"] <= 1]
    rows = []
    rounds["family"] = rounds["config_id"].map(lambda c: family(c, "train_samples"))
    for (executor, fam), group in rounds.groupby(["executor", "family"], sort=False):
        if group["train_samples"].nunique() >= 2:
            rows.append({"executor": executor, "x": "train_samples", "family": fam,
                         **{k: group[k].iloc[0] for k in FIT_GROUP},
                         "points": len(group), "unit": "s per 1000 samples",
                         **fit_line(group["train_samples"] / 1000, group["total_overhead_s"])})
    if "bytes_moved" in rounds:
        # One model per run: a sweep's orchestration grows with its branches, not its bytes.
        single = rounds[rounds["models"] <= 1].dropna(subset=["bytes_moved"])
        for executor, group in single.groupby("executor"):
            if group["bytes_moved"].nunique() >= 2:
                rows.append({"executor": executor, "x": "bytes_moved",
                             "points": len(group), "unit": "s per MiB",
                             **fit_line(group["bytes_moved"] / 2**20, group["orchestration_s"])})
    return pd.DataFrame(rows, columns=list(FIT_COLUMNS))


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
    first = cov.iloc[0]
    row = {
        "profile": profile,
        "config_id": config_id,
        "executor": executor,
        **{d: first.get(d) for d in DIMENSIONS},
        "train_samples": train_samples(first.get("train_subset")),
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
        **{f"{mode}_{col}": _median(rows, col) for col in TASK_WORK.values()
           for mode, rows in (("plain", plain), ("covalent", cov))},
        "covalent_task_env": " | ".join(sorted(set(cov.get("task_env", pd.Series()).dropna())
                                               - {""})),
        "server_median_s": _median(cov, "server_s"),
        "stock_wall_median_s": _median(cov, "stock_wall_s"),
        "plain_server_cpu_s": _median(plain, "server_cpu_s"),
        "covalent_server_cpu_s": _median(cov, "server_cpu_s"),
        "session_id": cov["session_id"].max(),
        "bytes_moved_median": _median(cov, "bytes_moved"),
        "dispatches": int(cov["dispatches"].sum()) if "dispatches" in cov else len(cov),
        "dispatches_ok": int(cov["dispatches_ok"].sum()) if "dispatches_ok" in cov else len(cov),
        "plain_latency_p50_s": _median(plain, "latency_p50_s"),
        "covalent_latency_p50_s": _median(cov, "latency_p50_s"),
        "covalent_latency_p95_s": _median(cov, "latency_p95_s"),
        "covalent_latency_max_s": _median(cov, "latency_max_s"),
    }
    n = int(first.get("concurrency") or 1)
    row["plain_per_min"] = 60 * n / plain_s if plain_s else float("nan")
    row["covalent_per_min"] = 60 * n / cov_s if cov_s else float("nan")
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
    """summary.csv (one row per configuration and executor) and fits.csv (overhead lines)."""
    runs, phases = load_runs(out_dir), load_phases(out_dir)
    summary = summarize(runs, phases)
    summary.to_csv(Path(out_dir) / SUMMARY_CSV, index=False, float_format="%.4f")
    overhead_fits(runs, phases).to_csv(Path(out_dir) / FITS_CSV, index=False,
                                       float_format="%.6g")
    return summary
