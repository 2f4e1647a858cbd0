"""Built-in workloads register themselves; what only one workload has (MNIST's run facts and
matrix section) comes from its declaration, looked up by the records' `workload` name."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from bench.__main__ import main as bench_main
from bench.analysis.decompose import numeric_outputs, run_facts
from bench.workloads import BUILT_IN, Workload, declared, register, workload_for
from bench.workloads.mnist import MnistWorkload


def test_built_ins_are_registered_by_their_modules_and_listed(capsys) -> None:
    assert list(BUILT_IN) == ["mnist", "chain", "fanout", "graph"]
    assert workload_for("chain") is BUILT_IN["chain"]
    assert bench_main(["list"]) == 0
    listed = capsys.readouterr().out
    for name, workload in BUILT_IN.items():
        assert f"  {name:<10} {workload.description}" in listed
    with pytest.raises(ValueError, match="'mnist' is registered twice"):
        register(MnistWorkload())


def test_registering_the_built_ins_does_not_import_covalent() -> None:
    """The report and the analysis look workloads up; only a run needs Covalent."""
    code = "import sys, bench.workloads; print('covalent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_run_facts_and_report_sections_come_from_the_workload() -> None:
    assert declared("mnist").run_facts == ("torch_threads", "resolved_device")
    assert declared("mnist").report_sections == ("matrix",)
    assert declared("chain").run_facts == () and declared("chain").report_sections == (
        "scaling",)
    assert declared("my_lattice") is Workload  # a user's lattice: the defaults

    outputs = json.dumps({"accuracy": 90.0, "torch_threads": 2, "resolved_device": "cpu"})
    frame = pd.DataFrame({"workload": ["mnist"], "outputs": [outputs], "accuracy": [90.0],
                          "torch_threads": [2]})
    assert run_facts(frame) == ["torch_threads", "resolved_device"]
    assert numeric_outputs(frame) == ["accuracy"]
    # Another workload's output of the same name is a result, not a fact about the run.
    assert numeric_outputs(frame.assign(workload="my_lattice")) == ["accuracy", "torch_threads"]
