"""From run records to the per-configuration summary (plain vs Covalent)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bench.records import PHASES_CSV, RUNS_CSV, SUMMARY_CSV

SUMMARY_COLUMNS = (
    "profile",
    "config_id",
    "executor",
    "plain_median_s",
    "covalent_median_s",
    "overhead_s",
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
    "submit_median_s",
    "server_median_s",
    "retrieve_median_s",
    # Where the time goes (medians over runs; see breakdown()):
    "plain_in_task_s",
    "covalent_in_task_s",
    "compute_inflation_s",  # in-task time under Covalent - in-task time plain
    "orchestration_s",  # Covalent wall - Covalent in-task time
    "until_running_median_s",
    "server_orchestration_s",  # server span - in-task time
    "completion_detect_median_s",
    "session_id",
)
# Segments of a run's wall time, in the order they happen (plots stack them so).
SEGMENTS = (
    "submit_s",
    "until_running_s",
    "in_task_s",
    "server_orchestration_s",
    "completion_detect_s",
    "retrieve_s",
    "rest_s",
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


def breakdown(phases: pd.DataFrame) -> pd.DataFrame:
    """Per run, the segments phases.csv holds (submit and retrieve are in runs.csv).
    In-task time is the union of the tasks' own intervals: parallel tasks count once."""
    rows = []
    for run_id, group in phases.groupby("run_id", sort=False):
        tasks = group[group["phase"] == "in_task"]
        in_task = _union_length(
            list(zip(tasks["start_s"], tasks["start_s"] + tasks["duration_s"], strict=True))
        )
        named = group.groupby("phase")["duration_s"].sum()
        server = named.get("server", 0.0)
        rows.append({
            "run_id": run_id,
            "in_task_s": in_task,
            "until_running_s": named.get("until_running", 0.0),
            "server_orchestration_s": max(server - in_task, 0.0) if server else 0.0,
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
    ok = runs[(runs["status"] == "COMPLETED") & (~runs["warmup"].astype(bool))]
    keys = ["profile", "config_id", "mode", "executor"]
    latest = ok.groupby(keys)["session_id"].transform("max")
    return ok[ok["session_id"] == latest]


def summarize(runs: pd.DataFrame, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration and executor: medians, overhead, accuracy of each mode."""
    rows = []
    done = with_breakdown(measured(runs), phases)
    for (profile, config_id), group in done.groupby(["profile", "config_id"], sort=False):
        plain = group[group["mode"] == "plain"]
        for executor, cov in group[group["mode"] == "covalent"].groupby("executor", sort=False):
            rows.append(_compare(profile, config_id, executor, plain, cov))
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _compare(
    profile: str, config_id: str, executor: str, plain: pd.DataFrame, cov: pd.DataFrame
) -> dict:
    plain_s = plain["wall_s"].median() if len(plain) else float("nan")
    cov_s = cov["wall_s"].median()
    overhead = cov_s - plain_s
    hashes = set(plain["weights_sha256"]) | set(cov["weights_sha256"])
    plain_threads = sorted(set(plain["torch_threads"].astype(int)))
    cov_threads = sorted(set(cov["torch_threads"].astype(int)))
    devices = set(plain["resolved_device"]) | set(cov["resolved_device"])
    return {
        "profile": profile,
        "config_id": config_id,
        "executor": executor,
        "plain_median_s": plain_s,
        "covalent_median_s": cov_s,
        "overhead_s": overhead,
        "overhead_pct": 100 * overhead / plain_s if plain_s else float("nan"),
        "plain_rounds": len(plain),
        "covalent_rounds": len(cov),
        "plain_accuracy": plain["accuracy"].median() if len(plain) else float("nan"),
        "covalent_accuracy": cov["accuracy"].median(),
        "plain_test_loss": plain["test_loss"].median() if len(plain) else float("nan"),
        "covalent_test_loss": cov["test_loss"].median(),
        "same_weights": len(plain) > 0 and len(hashes) == 1,
        "plain_threads": "/".join(map(str, plain_threads)),
        "covalent_threads": "/".join(map(str, cov_threads)),
        # A pair that ran with other thread counts or devices measures those, not Covalent.
        "comparable": plain_threads == cov_threads and len(devices) == 1,
        "submit_median_s": cov["submit_s"].median(),
        "server_median_s": cov["server_s"].median(),
        "retrieve_median_s": cov["retrieve_s"].median(),
        **_where_time_goes(plain, cov),
        "session_id": cov["session_id"].max(),
    }


def _where_time_goes(plain: pd.DataFrame, cov: pd.DataFrame) -> dict[str, float]:
    if "in_task_s" not in cov:
        return {}
    plain_in_task = plain["in_task_s"].median() if len(plain) else float("nan")
    cov_in_task = cov["in_task_s"].median()
    return {
        "plain_in_task_s": plain_in_task,
        "covalent_in_task_s": cov_in_task,
        "compute_inflation_s": cov_in_task - plain_in_task,
        "orchestration_s": (cov["wall_s"] - cov["in_task_s"]).median(),
        "until_running_median_s": cov["until_running_s"].median(),
        "server_orchestration_s": cov["server_orchestration_s"].median(),
        "completion_detect_median_s": cov["completion_detect_s"].median(),
    }


def write_summary(out_dir: str | os.PathLike) -> pd.DataFrame:
    summary = summarize(load_runs(out_dir), load_phases(out_dir))
    summary.to_csv(Path(out_dir) / SUMMARY_CSV, index=False, float_format="%.4f")
    return summary
