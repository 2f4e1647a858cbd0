"""From run records to the per-configuration summary (plain vs Covalent)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bench.records import RUNS_CSV, SUMMARY_CSV

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


def measured(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed, non-warm-up rows of the latest session that measured each (config, mode)."""
    ok = runs[(runs["status"] == "COMPLETED") & (~runs["warmup"].astype(bool))]
    keys = ["profile", "config_id", "mode", "executor"]
    latest = ok.groupby(keys)["session_id"].transform("max")
    return ok[ok["session_id"] == latest]


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and executor: medians, overhead, accuracy of each mode."""
    rows = []
    done = measured(runs)
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
        "session_id": cov["session_id"].max(),
    }


def write_summary(out_dir: str | os.PathLike) -> pd.DataFrame:
    summary = summarize(load_runs(out_dir))
    summary.to_csv(Path(out_dir) / SUMMARY_CSV, index=False, float_format="%.4f")
    return summary
