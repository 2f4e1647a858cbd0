"""The Python API without a server: arguments become parameters or fresh objects, bad input
is one BenchError line before anything starts, and a Session reads, shows and saves records
as the CLI's report and gate expect."""

from __future__ import annotations

from pathlib import Path

import covalent as ct
import pandas as pd
import pytest
from test_report_page import write_records

from bench import BenchError, Session, measure
from bench.api import _workload
from bench.records import NoRecordsError
from bench.report import main as report_main


class Model:
    def __init__(self) -> None:
        self.weights = [1.0, 2.0]


@ct.electron
def scale(model: Model, factor: float) -> float:
    return sum(model.weights) * factor


@ct.lattice
def flow(model: Model, factor: float = 2.0, tags: list | None = None) -> float:
    return scale(model, factor)


def test_scalars_are_parameters_and_objects_are_copied_per_run() -> None:
    model = Model()
    workload, params = _workload(flow, (model,), {"factor": 3.0, "tags": ["a", "b"]}, None,
                                 None)
    assert params == {"factor": 3.0, "tags": ["a", "b"]}  # recorded, part of the id
    full = workload.check(params)
    (_, first), (_, second) = workload.inputs(full), workload.inputs(full)
    assert first["model"] is not model and first["model"] is not second["model"]
    assert first["model"].weights == model.weights == second["model"].weights
    assert workload.config_id(full) == 'flow-factor=3.0-tags=["a","b"]'


def test_an_inputs_factory_is_called_for_every_run() -> None:
    calls = []

    def fresh(**params: object) -> dict:
        calls.append(params["factor"])
        return {"model": Model()}

    workload, params = _workload(flow, (), {"factor": 1.5}, fresh, None)
    full = workload.check(params)
    workload.inputs(full)
    workload.inputs(full)
    assert calls == [1.5, 1.5]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: measure(lambda x: x), "not a Covalent lattice"),
    (lambda: measure(flow, Model(), colour="red"), "do not fit its signature"),
    (lambda: measure(flow, Model(), precision=0), "precision=0"),
    (lambda: measure(flow, Model(), rounds=0), "rounds must be an integer >= 1"),
    (lambda: measure(flow, Model(), executors=["cloud"]), "invalid executors"),
    (lambda: measure(flow, Model(), environments={"old": "covalent==0.238.0"}),
     "a Covalent environment's client cannot import it"),
    (lambda: measure("mnist", 1), "keywords only"),
])
def test_bad_input_is_one_line_before_anything_starts(call, message: str) -> None:
    with pytest.raises(BenchError) as info:
        call()
    text = str(info.value)
    assert message in text and "\n" not in text, text
    assert info.value.__cause__ is None  # no chained traceback around the one line
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_a_session_of_cli_records_reads_shows_and_saves(tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_records(records)
    session = Session.load(records)
    assert len(session.runs) == 18 and session.phases is not None
    assert set(session.summary["executor"]) == {"local", "dask"}
    assert session.same_output
    assert "[" in session.findings and "Covalent" in session.findings
    html = session._repr_html_()
    assert "Findings" in html and "data:image/png;base64," in html
    assert "<body" not in html and "covalent-bench" in html  # a fragment, its styles scoped
    plot = session.plot("overhead_parts")
    assert plot.path.is_file() and plot._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(KeyError, match="it has: .*wall_time"):
        session.plot("nope")

    saved = session.save(tmp_path / "saved")
    assert {p.name for p in records.glob("*.csv")} <= {p.name for p in saved.glob("*.csv")}
    assert pd.read_csv(saved / "runs.csv").equals(pd.read_csv(records / "runs.csv"))
    assert report_main(["--in", str(saved)]) == 0 and (saved / "index.html").is_file()
    with pytest.raises(BenchError, match="holds records already"):
        session.save(saved)


def test_loading_a_directory_without_records_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NoRecordsError, match="measure something first"):
        Session.load(tmp_path)
