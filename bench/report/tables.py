"""The CSV tables of a report: summary.csv (one row per configuration and executor) and
fits.csv (the overhead's lines against each swept parameter)."""

from __future__ import annotations

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
    summary = summarize(runs, phases)
    fits = overhead_fits(runs, phases)
    summary.to_csv(Path(out_dir) / SUMMARY_CSV, index=False, float_format="%.4f")
    fits.to_csv(Path(out_dir) / FITS_CSV, index=False, float_format="%.6g")
    return summary, fits
