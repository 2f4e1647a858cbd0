"""Run records: one schema, appended row by row."""

from __future__ import annotations

import csv
import logging

import pandas as pd
import pytest

from bench.records import (
    RUN_COLUMNS,
    TORN_MARK,
    RecordsSchemaError,
    SchemaMismatchError,
    dropped_note,
    environment,
    load_phases,
    load_runs,
    phases_writer,
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


# --- Damaged records: a crash mid-write, an editor, an older version -----------------------


def _run(run_id: str, **extra) -> dict:
    return {"session_id": "s", "run_id": run_id, "config_id": "c", "mode": "plain",
            "round": 0, "warmup": False, "wall_s": 1.5, "status": "COMPLETED",
            "params": {"n": 3}, "cpu_model": "Some CPU", **extra}


def _lines(path) -> list[bytes]:
    return path.read_bytes().split(b"\r\n")


@pytest.mark.parametrize("cut", [
    pytest.param(lambda data: data.rindex(b'""n""') + 3, id="inside-a-quoted-field"),
    pytest.param(lambda data: len(data) - 5, id="inside-the-last-field"),
    pytest.param(lambda data: data.rindex(b",COMPLETED,") + 4, id="inside-a-plain-field"),
])
def test_a_torn_last_line_is_ended_not_glued_and_dropped(tmp_path, caplog, cut) -> None:
    writer = runs_writer(tmp_path)
    for i in range(3):
        writer.append(_run(f"r{i}"))
    path = tmp_path / "runs.csv"
    data = path.read_bytes()
    path.write_bytes(data[:cut(data)])  # a crash in the middle of writing r2
    # Read as it is: the cut-off row is dropped, and said so.
    runs = load_runs(tmp_path)
    assert runs["run_id"].tolist() == ["r0", "r1"]
    assert runs.attrs["dropped"] == [(4, "cut off at the end of the file, no line end: a crash "
                                         "mid-write?")]
    # The next session appends: its row starts on a line of its own, after the torn one.
    runs_writer(tmp_path).append(_run("r9", round=9))
    lines = _lines(path)
    assert lines[3].endswith(TORN_MARK.encode()) and lines[4].startswith(b",s,r9,")
    caplog.clear()
    # Whatever another test or library did to logging levels in this process.
    caplog.set_level(logging.WARNING, logger="bench.records")
    runs = load_runs(tmp_path)
    assert runs["run_id"].tolist() == ["r0", "r1", "r9"]
    assert runs["n"].tolist() == [3, 3, 3] and runs["round"].tolist() == [0, 0, 9]
    assert runs.attrs["dropped"] == [(4, "cut off mid-write by a crash, ended by a later append")]
    note = dropped_note(runs)
    assert note == (f"{path}: dropped 1 damaged line, kept 3 rows; line 4: cut off mid-write "
                    f"by a crash, ended by a later append")
    assert [r.getMessage() for r in caplog.records] == [note]


def test_a_row_cut_between_its_cr_and_lf_is_whole(tmp_path) -> None:
    writer = runs_writer(tmp_path)
    writer.append(_run("r0"), _run("r1"))
    path = tmp_path / "runs.csv"
    path.write_bytes(path.read_bytes()[:-1])
    writer.append(_run("r2"))
    runs = load_runs(tmp_path)
    assert runs["run_id"].tolist() == ["r0", "r1", "r2"] and runs.attrs["dropped"] == []
    assert dropped_note(runs) == ""


def test_damaged_rows_are_dropped_and_counted_good_rows_around_kept(tmp_path) -> None:
    writer = runs_writer(tmp_path)
    writer.append(_run("r0"))
    path = tmp_path / "runs.csv"
    good = _lines(path)[1]
    bad = [
        good.replace(b",s,r0,", b",s,bad1,").rsplit(b",", 3)[0],  # fields missing
        good.replace(b",s,r0,", b",s,bad2,").replace(b",1.5,", b",1.5x,"),  # wall_s
        good.replace(b",s,r0,", b",s,bad3,").replace(b'""n"": 3}', b'""n"": 3'),  # JSON
        good.replace(b",s,r0,", b",s,bad4,").replace(b",False,", b",Fals,"),  # warmup
    ]
    with path.open("ab") as f:
        f.write(b"\r\n".join(bad) + b"\r\n")
    writer.append(_run("r5"))
    runs = load_runs(tmp_path)
    assert runs["run_id"].tolist() == ["r0", "r5"]
    assert runs["wall_s"].dtype == float and runs["warmup"].dtype == bool
    n_columns = len(RUN_COLUMNS)
    assert runs.attrs["dropped"] == [
        (3, f"{n_columns - 3} fields where the header has {n_columns}"),
        (4, "wall_s is not a number: '1.5x'"),
        (5, "params is broken JSON: '{\"n\": 3'"),
        (6, "warmup is not True or False: 'Fals'"),
    ]
    assert "dropped 4 damaged lines, kept 2 rows; line 3: " in dropped_note(runs)
    assert dropped_note(runs).endswith("; and 1 more")


def test_a_torn_phase_row_is_dropped(tmp_path) -> None:
    writer = phases_writer(tmp_path)
    rows = [{"run_id": f"r{i}", "phase": "in_task", "start_s": 0.0, "duration_s": 1.0 + i,
             "maxrss_mb": 1234.5} for i in range(3)]
    writer.append(*rows)
    path = tmp_path / "phases.csv"
    path.write_bytes(path.read_bytes()[:-5])  # r2's maxrss_mb cut to "12"
    writer.append({"run_id": "r3", "phase": "in_task", "start_s": 0.0, "duration_s": 4.0})
    phases = load_phases(tmp_path)
    assert phases["run_id"].tolist() == ["r0", "r1", "r3"]
    assert [line for line, _ in phases.attrs["dropped"]] == [4]


def test_a_header_cut_off_before_any_row_is_written_again(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(",".join(RUN_COLUMNS)[:30])
    runs_writer(tmp_path).append(_run("r0"))
    assert load_runs(tmp_path)["run_id"].tolist() == ["r0"]


def test_a_file_lacking_needed_columns_names_them(tmp_path) -> None:
    runs_writer(tmp_path).append(_run("r0"), _run("r1"))
    path = tmp_path / "runs.csv"
    runs = pd.read_csv(path)
    runs.drop(columns=["wall_s", "status"]).to_csv(path, index=False)
    with pytest.raises(RecordsSchemaError) as raised:
        load_runs(tmp_path)
    assert str(raised.value) == (f"{path} lacks columns: wall_s, status (written by an older "
                                 f"version, or cut off?); move it away or choose another "
                                 f"--bench-out")
    assert isinstance(raised.value, ValueError) and raised.value.missing == ("wall_s", "status")
    # A column the analysis can do without (added later, such as `flags`) may be absent.
    runs.drop(columns=["flags"]).to_csv(path, index=False)
    assert load_runs(tmp_path)["run_id"].tolist() == ["r0", "r1"]
    phases_writer(tmp_path).append({"run_id": "r0", "phase": "in_task", "duration_s": 1.0})
    phases = tmp_path / "phases.csv"
    pd.read_csv(phases).drop(columns=["start_s"]).to_csv(phases, index=False)
    with pytest.raises(RecordsSchemaError, match="phases.csv lacks columns: start_s "):
        load_phases(tmp_path)


def test_the_torn_mark_stays_one_field() -> None:
    assert not set(TORN_MARK) & set(',"\r\n')


def test_environment_definitions_are_kept_per_session(tmp_path) -> None:
    from bench.records import COVALENT_ENVIRONMENTS_JSON, load_environments, record_environment

    record_environment(tmp_path, "s1", {"name": "ref", "requirement": "covalent==0.240.0"})
    record_environment(tmp_path, "s1", {"name": "old", "status": "failed", "failure": "x"})
    record_environment(tmp_path, "s2", {"name": "ref"})
    assert [(e["session_id"], e["name"]) for e in load_environments(tmp_path)] == [
        ("s1", "ref"), ("s1", "old"), ("s2", "ref")]
    (tmp_path / COVALENT_ENVIRONMENTS_JSON).write_text('{"s1": [')  # torn by a crash
    assert load_environments(tmp_path) == []
    record_environment(tmp_path, "s3", {"name": "ref"})  # the new session's entry is kept
    assert [e["session_id"] for e in load_environments(tmp_path)] == ["s3"]
