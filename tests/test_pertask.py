"""The per-task workloads (chain, fanout) run through the one runner, and the tree has one
poll loop."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.adapters import covalent_api
from bench.run.runner import measure_covalent_batch, measure_plain
from bench.workloads import WorkloadError, workload_for

REPO = Path(__file__).resolve().parents[1]


def test_chain_graph_has_n_dependent_tasks() -> None:
    graph = covalent_api.transport_graph(workload_for("chain").lattice({}), n=4, sleep_s=0.0)
    steps = [n for n, d in graph.nodes(data=True) if d["name"] == "step"]
    assert len(steps) == 4
    order = [n for n in steps if not any(p in steps for p in graph.predecessors(n))]
    assert len(order) == 1, "a chain has one first task"


def test_fanout_graph_has_n_independent_tasks() -> None:
    graph = covalent_api.transport_graph(workload_for("fanout").lattice({}), n=5, sleep_s=0.0)
    steps = [n for n, d in graph.nodes(data=True) if d["name"] == "step"]
    assert len(steps) == 5
    assert not any(graph.has_edge(a, b) for a in steps for b in steps)


@pytest.mark.parametrize("name", ["chain", "fanout"])
def test_plain_run_returns_what_the_lattice_must(name: str, tmp_path: Path) -> None:
    workload = workload_for(name)
    params = workload.check({"n": 3})
    record = measure_plain(workload, params, tmp_path)
    assert record.status == "COMPLETED" and record.outcome.metrics["correct"]
    assert record.tasks_probed == "3/3"


def test_bad_parameters_are_explained() -> None:
    with pytest.raises(WorkloadError, match="n must be an integer >= 1"):
        workload_for("chain").check({"n": 0})
    with pytest.raises(WorkloadError, match="unknown parameter.*size.*its parameters: n, sleep_s"):
        workload_for("fanout").check({"size": 3})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["chain", "fanout"])
def test_covalent_run_does_the_same_work_with_every_task_probed(
    name: str, covalent_server, tmp_path: Path
) -> None:
    workload = workload_for(name)
    params = workload.check({"n": 4, "sleep_s": 0.05})
    plain = measure_plain(workload, params, tmp_path)
    (cov,) = measure_covalent_batch(workload, params, executor="local",
                                    address=covalent_server.address, probe_dir=tmp_path)
    assert cov.status == "COMPLETED", cov.error
    assert cov.outcome.digest == plain.outcome.digest and cov.outcome.metrics["correct"]
    assert cov.tasks_probed == "4/4"
    in_task = [p for p in cov.phases if p["phase"] == "in_task"]
    assert len(in_task) == 4 and all(p["duration_s"] >= 0.05 for p in in_task)


@pytest.mark.slow
def test_a_dispatch_past_its_timeout_is_cancelled_and_recorded(covalent_server,
                                                               tmp_path: Path) -> None:
    workload = workload_for("chain")
    params = workload.check({"n": 3, "sleep_s": 2.0})
    (record,) = measure_covalent_batch(workload, params, executor="local",
                                       address=covalent_server.address, probe_dir=tmp_path,
                                       timeout_s=1.0)
    assert record.status == "TIMEOUT"
    assert "dispatch timeout of 1 s; cancelled" in record.error and record.dispatch_id
    assert covalent_api.status(record.dispatch_id, covalent_server.address) in {
        "CANCELLED", "RUNNING", "COMPLETED"}


def test_the_tree_has_one_poll_loop() -> None:
    """Only the runner follows a dispatch to its end; every workload goes through it."""
    pollers = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        text = path.read_text()
        if re.search(r"\bapi\.status\(|status_only=True", text):
            pollers.append(path.relative_to(REPO).as_posix())
    assert pollers == ["bench/adapters/covalent_api.py", "bench/run/runner.py"], pollers
