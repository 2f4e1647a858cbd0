"""The CSV tables of a report: summary.csv (one row per configuration and executor) and
fits.csv (the overhead's lines against each swept parameter)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from bench.analysis.decompose import flagged, overhead_fits, summarize
from bench.records import FITS_CSV, SUMMARY_CSV, load_phases, load_runs


def write_summary(out_dir: str | os.PathLike, in_dir: str | os.PathLike | None = None,
                  include_flagged: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """summary.csv and fits.csv from the records in `in_dir` (default: out_dir). Flagged
    runs (a worker restarted during them) are left out unless `include_flagged`."""
    runs, phases = load_runs(in_dir or out_dir), load_phases(in_dir or out_dir)
    if not include_flagged:
        runs = runs[~flagged(runs)]
    summary = with_precision(summarize(runs, phases), Path(in_dir or out_dir))
    fits = overhead_fits(runs, phases)
    summary.to_csv(Path(out_dir) / SUMMARY_CSV, index=False, float_format="%.4f")
    fits.to_csv(Path(out_dir) / FITS_CSV, index=False, float_format="%.6g")
    return summary, fits


def with_precision(summary: pd.DataFrame, in_dir: Path) -> pd.DataFrame:
    """The precision target of the session (precision.json, from --bench-precision), per
    row: the CI half-width of the metric it applies to, whether it is met, after how many
    rounds, and why the rounds stopped."""
    path = in_dir / "precision.json"
    if not path.is_file() or summary.empty:
        return summary
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        return summary
    if doc.get("session_id") not in set(summary["session_id"]):
        return summary  # a target from another session does not judge these rows
    metric = doc.get("metric", "orchestration_s")
    width = (summary[f"{metric}_ci_high"] - summary[f"{metric}_ci_low"]) / 2
    return summary.assign(
        precision_metric=metric, precision_target_s=doc["target_s"],
        precision_halfwidth_s=width, precision_met=width <= doc["target_s"],
        precision_rounds=summary["covalent_rounds"],
        precision_stop=summary["config_id"].map(
            lambda c: doc.get("stopped", {}).get(c, "round limit or session end")),
    )
