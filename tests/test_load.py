"""Covalent under load (bench.analysis.load): errors by kind, throughput and latency per
level of dispatches in flight, the knee; and the report's section from records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import records as R
from bench.analysis.load import error_kind, knee, knee_sentence, load_table


@pytest.mark.parametrize("status,error,kind", [
    ("COMPLETED", "", None),
    (R.TIMEOUT, "the dispatch outlived 600 s", "timeout"),
    ("FAILED", "sqlite3.OperationalError: database is locked", "database locked"),
    ("FAILED", "HTTPError: 500 Server Error: Internal Server Error for url", "HTTP 500"),
    ("FAILED", "requests.exceptions.HTTPError: status code 503", "HTTP 503"),
    ("FAILED", "OSError: [Errno 24] Too many open files", "too many open files"),
    (R.ERROR, "ConnectionError: Max retries exceeded with url: /api/v2/dispatches",
     "connection"),
    ("FAILED", "ValueError: a task raised", "other"),
    (R.INTERRUPTED, "SIGTERM", "interrupted"),
])
def test_error_kinds(status: str, error: str, kind: str | None) -> None:
    assert error_kind(status, error) == kind


def _runs(levels: dict[int, tuple[float, list[str]]], executor: str = "local",
          rounds: int = 2) -> pd.DataFrame:
    """Covalent runs of a sweep: per level N, (batch wall, statuses of its N runs) in each
    round, the i-th result in hand at (i + 1) / N of the batch's wall."""
    rows = []
    for n, (wall, statuses) in levels.items():
        for r in range(rounds):
            for i, status in enumerate(statuses):
                rows.append({
                    "session_id": "s", "config_id": "chain" + (f"-n{n}" if n > 1 else ""),
                    "mode": "covalent", "executor": executor, "environment": "",
                    "round": r + 1, "warmup": False, "concurrency": n,
                    "status": status, "tasks_probed": "10/10",
                    "error": "" if status == "COMPLETED" else "database is locked",
                    "batch_wall_s": wall, "latency_s": wall * (i + 1) / n})
    return pd.DataFrame(rows)


def test_throughput_latency_and_errors_per_level() -> None:
    runs = _runs({1: (2.0, ["COMPLETED"]), 4: (4.0, ["COMPLETED"] * 4),
                  8: (8.0, ["COMPLETED"] * 6 + ["FAILED"] * 2)})
    runs = pd.concat([runs, runs.assign(warmup=True, round=0)])  # warm-up never counts
    table = load_table(runs).set_index("concurrency")
    assert list(table.index) == [1, 4, 8]
    assert table.loc[1, "dispatches_per_s"] == pytest.approx(0.5)  # 2 runs in 2 x 2 s
    assert table.loc[4, "dispatches_per_s"] == pytest.approx(1.0)  # 8 in 8 s
    assert table.loc[4, "tasks_per_s"] == pytest.approx(10.0)
    assert table.loc[8, "dispatches_per_s"] == pytest.approx(12 / 16)  # only completed
    assert (table.loc[8, "dispatches"], table.loc[8, "completed"]) == (16, 12)
    assert table.loc[8, "errors: database locked"] == 4 and table.loc[4, "errors"] == 0
    assert table.loc[4, "latency_p50_s"] == pytest.approx(2.5)  # 1, 2, 3, 4 s, twice
    assert table.loc[4, "latency_max_s"] == pytest.approx(4.0)
    assert table.loc[4, "latency_p95_s"] == pytest.approx(4.0)
    assert table.loc[4, "rounds"] == 2


def test_the_knee_is_saturation_or_errors_and_none_is_said_so() -> None:
    flat = _runs({1: (2.0, ["COMPLETED"]), 2: (2.0, ["COMPLETED"] * 2),
                  4: (4.0, ["COMPLETED"] * 4), 8: (7.9, ["COMPLETED"] * 8)})
    (row,) = knee(load_table(flat)).to_dict("records")
    # 0.5 -> 1.0 dispatches/s from 1 to 2, then 1.0 at 4: saturated at 4.
    assert (row["knee"], row["why"], row["below"]) == (4.0, "saturated", 2)
    assert knee_sentence(pd.Series(row)).startswith(
        "`local`: knee at 4 in flight: 1.00 → 1.00 dispatches/s from 2")
    failing = _runs({1: (2.0, ["COMPLETED"]), 2: (1.0, ["COMPLETED", "FAILED"])}, "dask")
    (row,) = knee(load_table(failing)).to_dict("records")
    assert (row["knee"], row["why"]) == (2.0, "errors")
    assert "errors from 2 in flight" in knee_sentence(pd.Series(row))
    scaling = _runs({1: (2.0, ["COMPLETED"]), 2: (2.0, ["COMPLETED"] * 2),
                     4: (2.0, ["COMPLETED"] * 4)})
    (row,) = knee(load_table(scaling)).to_dict("records")
    assert np.isnan(row["knee"]) and row["top"] == 4
    assert knee_sentence(pd.Series(row)).startswith("`local`: no knee up to 4 in flight")


def test_the_report_shows_the_load_section_from_records(tmp_path: Path) -> None:
    from bench.report.page import main as report_main

    runs = pd.concat([_runs({1: (2.0, ["COMPLETED"]), 2: (2.1, ["COMPLETED"] * 2),
                             4: (4.0, ["COMPLETED"] * 3 + ["FAILED"])}),
                      _runs({1: (2.0, ["COMPLETED"])}).assign(mode="plain", executor="")])
    runs = runs.assign(run_id=[f"r{i}" for i in range(len(runs))], profile="load",
                       workload="chain", params='{"n": 10, "sleep_s": 0.0}', slot=0,
                       wall_s=runs["latency_s"], output_digest="d", outputs="{}",
                       probes="on", flags="", timestamp="2026-12-02T00:00:00+00:00")
    writer = R.runs_writer(tmp_path)
    for row in runs.to_dict("records"):
        writer.append(row)
    assert report_main(["--in", str(tmp_path)]) == 0
    page = (tmp_path / "README.md").read_text()
    assert "## Under load" in page and "load.png" in page
    assert "`local`: errors from 4 in flight" in page
    assert "errors: database locked" in page
    assert (tmp_path / "load.png").stat().st_size > 10_000
    assert list(pd.read_csv(tmp_path / "load.csv")["concurrency"]) == [1, 2, 4]
