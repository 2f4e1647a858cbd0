"""Run records: one schema, appended row by row."""

from __future__ import annotations

import csv

import pytest

from bench.records import (
    RUN_COLUMNS,
    SchemaMismatchError,
    environment,
    load_runs,
    runs_writer,
)


def test_rows_are_appended_with_one_header(tmp_path) -> None:
    writer = runs_writer(tmp_path)
    writer.append({"mode": "plain", "wall_s": 1.5, "params": {"n": 3},
                   "outputs": {"train_losses": [2.3, 1.1]}})
    runs_writer(tmp_path).append({"mode": "covalent", "executor": "dask", "wall_s": 2.5})
    with (tmp_path / "runs.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["plain", "covalent"]
    assert rows[0]["outputs"] == '{"train_losses": [2.3, 1.1]}'
    assert rows[1]["executor"] == "dask"
    assert tuple(rows[0]) == RUN_COLUMNS
    # Read back, every parameter and output is a column of its own.
    runs = load_runs(tmp_path)
    assert runs.loc[0, "n"] == 3 and runs.loc[0, "train_losses"] == [2.3, 1.1]


def test_unknown_columns_and_foreign_files_are_refused(tmp_path) -> None:
    with pytest.raises(KeyError, match="not in the runs.csv schema"):
        runs_writer(tmp_path).append({"walltime": 1})
    (tmp_path / "runs.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SchemaMismatchError, match="--bench-out"):
        runs_writer(tmp_path)


def test_environment_is_complete() -> None:
    env = environment()
    assert env["covalent"] == "0.240.0"
    assert env["torch"] and env["torchvision"] and env["python"] and env["cpu_count"]
