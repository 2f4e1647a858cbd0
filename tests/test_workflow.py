"""The workflow, both ways: same graph as the tutorial, same work plain and on Covalent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import torch
from helpers import assert_same_work

from bench import records as R
from bench.adapters import covalent_api
from bench.records import RunRecord
from bench.run.runner import measure_covalent_batch, measure_plain
from bench.workloads import WorkloadError
from bench.workloads.mnist import MnistWorkload
from mnist_core.config import SHAPES, WorkflowConfig
from mnist_core.model import new_model
from mnist_core.tasks import LoaderSpec, data_loader, make_loader, training_log
from mnist_core.workflow import WorkflowOutput, build_lattice, run_plain, task_set, workflow

TUTORIAL_TASKS = ["data_loader", "data_loader", "train_model", "test"]


def _graph(config: WorkflowConfig, executor: Any = None) -> nx.MultiDiGraph:
    """The graph the harness's lattice builds for `config`, on the client."""
    return covalent_api.transport_graph(build_lattice(executor), new_model(config.seed), config)


def _nodes(graph: nx.MultiDiGraph, name: str) -> list[int]:
    return [n for n, data in graph.nodes(data=True) if data["name"] == name]


def _param(graph: nx.MultiDiGraph, node: int, edge_name: str) -> Any:
    """The value of the parameter node feeding `node`'s argument `edge_name`."""
    for src, _dst, data in graph.in_edges(node, data=True):
        if data.get("edge_name") == edge_name:
            assert graph.nodes[src]["name"].startswith(":parameter:"), edge_name
            return graph.nodes[src]["value"].get_deserialized()
    raise KeyError(edge_name)


def test_lattice_graph_is_the_tutorials(small_config: WorkflowConfig) -> None:
    graph = _graph(small_config)
    loaders = _nodes(graph, "data_loader")
    (train_model,) = _nodes(graph, "train_model")
    (test,) = _nodes(graph, "test")
    assert len(loaders) == 2
    specs = {n: _param(graph, n, "spec") for n in loaders}
    assert all(isinstance(s, LoaderSpec) for s in specs.values())
    by_split = {spec.train: n for n, spec in specs.items()}
    train_loader, test_loader = by_split[True], by_split[False]
    assert specs[train_loader].batch_size == small_config.batch_size_train
    assert specs[test_loader].batch_size == small_config.batch_size_test

    # The two loaders are independent: Covalent may run them in parallel.
    assert not nx.has_path(graph, train_loader, test_loader)
    assert not nx.has_path(graph, test_loader, train_loader)
    # train data -> train_model -> (its model output) -> test <- test data
    assert graph.has_edge(train_loader, train_model)
    assert nx.has_path(graph, train_model, test)
    assert graph.has_edge(test_loader, test)
    assert not nx.has_path(graph, test_loader, train_model)
    edge_names = {d["edge_name"] for _, _, d in graph.in_edges(test, data=True)}
    assert {"dataloader", "model", "config"} <= edge_names
    # The knobs travel as one value, the run's own configuration.
    assert _param(graph, train_model, "config") == small_config
    assert _param(graph, test, "config") == small_config


def _task_nodes(graph: nx.MultiDiGraph) -> dict[str, list[int]]:
    """Nodes of the workflow's own tasks (not Covalent's generated helpers), by name."""
    names = ("data_loader", "train_model", "test", "lean_train", "lean_test", "whole_workflow")
    return {name: _nodes(graph, name) for name in names if _nodes(graph, name)}


def test_lean_graph_moves_no_data(small_config: WorkflowConfig) -> None:
    graph = _graph(dataclasses.replace(small_config, shape="lean"))
    nodes = _task_nodes(graph)
    assert set(nodes) == {"lean_train", "lean_test"}
    (train,), (test,) = nodes["lean_train"], nodes["lean_test"]
    assert nx.has_path(graph, train, test)
    # Each task gets a spec (paths), not a loader: no task output carries the data set.
    assert _param(graph, train, "spec").train is True
    assert _param(graph, test, "spec").train is False


def test_per_epoch_graph_chains_one_task_per_epoch(small_config: WorkflowConfig) -> None:
    config = dataclasses.replace(small_config, shape="per-epoch", epochs=3)
    graph = _graph(config)
    epochs = sorted(_nodes(graph, "train_model"), key=lambda n: _param(graph, n, "first_epoch"))
    assert [_param(graph, n, "first_epoch") for n in epochs] == [1, 2, 3]
    assert all(_param(graph, n, "epochs") == 1 for n in epochs)
    assert all(nx.has_path(graph, a, b) for a, b in zip(epochs, epochs[1:], strict=False))
    # From the second epoch on, the previous task's optimizer (its momentum) is passed along.
    assert _param(graph, epochs[0], "optimizer") is None
    for node in epochs[1:]:
        edge_names = {d["edge_name"] for _, _, d in graph.in_edges(node, data=True)}
        assert "optimizer" in edge_names and "first_epoch" in edge_names
    assert len(_nodes(graph, "data_loader")) == 2


def test_monolithic_graph_is_one_task(small_config: WorkflowConfig) -> None:
    graph = _graph(dataclasses.replace(small_config, shape="monolithic"))
    assert {k: len(v) for k, v in _task_nodes(graph).items()} == {"whole_workflow": 1}


@pytest.mark.parametrize("shape", ["tutorial", "lean", "per-epoch", "monolithic"])
def test_sweep_has_k_independent_branches(small_config: WorkflowConfig, shape: str) -> None:
    k = 4
    config = dataclasses.replace(small_config, shape=shape, models=k)
    graph = _graph(config)
    nodes = _task_nodes(graph)
    trains = nodes.get("train_model") or nodes.get("lean_train") or nodes["whole_workflow"]
    if shape == "per-epoch":  # one chain per branch: its first task stands for it
        trains = [n for n in trains if _param(graph, n, "first_epoch") == 1]
    assert len(trains) == k
    # Each branch gets the run's configuration with its own learning rate and models=1.
    branch_configs = [_param(graph, n, "config") for n in trains]
    assert sorted(c.learning_rate for c in branch_configs) == config.sweep_rates()
    assert {dataclasses.replace(c, learning_rate=config.learning_rate, models=k)
            for c in branch_configs} == {config}
    for a in trains:
        for b in trains:
            assert a == b or not nx.has_path(graph, a, b), "sweep branches must be independent"


def test_preloaded_path_yields_the_tutorials_tensors(small_config: WorkflowConfig) -> None:
    for train in (True, False):
        args = {"batch_size": 32, "train": train, "data_dir": small_config.data_dir,
                "subset": 200, "seed": 3}
        # The task (one spec) and the loader it builds (make_loader, the old data_loader).
        tutorial = data_loader(LoaderSpec(**args))
        preloaded = data_loader(LoaderSpec(**args, preloaded=True))
        direct = make_loader(**args, preloaded=True)
        pairs = list(zip(tutorial, preloaded, direct, strict=True))
        assert len(pairs) == 7  # ceil(200 / 32): same batches, same order
        for (x, y), (px, py), (dx, dy) in pairs:
            assert x.dtype == px.dtype and x.shape == px.shape
            assert torch.equal(x, px) and torch.equal(y, py)
            assert torch.equal(px, dx) and torch.equal(py, dy)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_does_the_same_work(small_config: WorkflowConfig, shape: str) -> None:
    """All shapes run the same task functions with per-epoch seeding: identical weights."""
    reference = run_plain(small_config)
    assert run_plain(dataclasses.replace(small_config, shape=shape)) == reference
    preloaded = run_plain(dataclasses.replace(small_config, shape=shape, data_path="preloaded"))
    assert preloaded == reference


def test_each_lattice_runs_on_its_own_executor(small_config: WorkflowConfig) -> None:
    """A lattice on an external cluster must not leave its executor on later lattices."""
    external = covalent_api.executor_for("tcp://127.0.0.1:1")
    first = _graph(small_config, external)

    def executors(graph: nx.MultiDiGraph) -> set[tuple[str, str | None]]:
        return {
            (graph.nodes[n]["metadata"]["executor"],
             graph.nodes[n]["metadata"].get("executor_data", {}).get("attributes", {})
             .get("scheduler_address"))
            for n in _nodes(graph, "data_loader")
        }

    assert executors(first) == {("dask", "tcp://127.0.0.1:1")}
    assert executors(_graph(small_config, "local")) == {("local", None)}
    # Nor on a lattice that names no executor (it gets Covalent's default, not the cluster).
    assert ("dask", "tcp://127.0.0.1:1") not in executors(_graph(small_config))
    # Building a graph leaves a lattice as it was: the same lattice can go elsewhere next.
    lattice = build_lattice("local")
    covalent_api.transport_graph(lattice, new_model(0), small_config)
    again = covalent_api.transport_graph(lattice, new_model(0), small_config)
    assert executors(again) == {("local", None)}


def test_plain_runs_are_reproducible(small_config: WorkflowConfig, capsys) -> None:
    first, second = run_plain(small_config), run_plain(small_config)
    assert first == second
    out = capsys.readouterr().out
    assert "loss:" in out and f"[    0/{512:>5d}]" in out
    assert "Accuracy:" in out and "Avg loss:" in out
    # Two epochs of 16 batches, logged every 4 batches.
    assert len(first.train_losses) == len(first.train_counter) == 8
    assert first.threads == 1 and first.device == "cpu"
    # The synthetic classes are learnable: well above chance (10 %).
    assert first.accuracy > 50


def test_loss_history_rides_on_the_model(small_config: WorkflowConfig) -> None:
    """workflow() returns [(accuracy, loss, model)]; the model carries train_model's log."""
    model = new_model(small_config.seed)
    ((accuracy, loss, trained),) = workflow(task_set(), model, small_config)
    log = training_log(trained)
    assert len(log["train_losses"]) == len(log["train_counter"]) == 8
    assert (log["threads"], log["device"]) == (1, "cpu")
    assert training_log(model)["train_losses"] == [], "the input model must stay untouched"
    out = WorkflowOutput.from_raw([(accuracy, loss, trained)])
    assert out == run_plain(small_config)


def test_seed_changes_the_work(small_config: WorkflowConfig) -> None:
    other = dataclasses.replace(small_config, seed=small_config.seed + 1)
    assert run_plain(small_config).weights_sha256 != run_plain(other).weights_sha256


def test_workload_measures_what_run_plain_returns(
    small_config: WorkflowConfig, tmp_path: Path
) -> None:
    """The harness's plain path (lattice function, electrons as plain calls) = run_plain."""
    workload = MnistWorkload()
    params = workload.check(dataclasses.asdict(small_config))
    record = measure_plain(workload, params, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert_same_work(record, run_plain(small_config))




def _covalent_run(config: WorkflowConfig, executor: str, address: str, probe_dir: Path
                  ) -> RunRecord:
    workload = MnistWorkload()
    (record,) = measure_covalent_batch(
        workload, workload.check(dataclasses.asdict(config)), executor=executor,
        address=address, probe_dir=probe_dir,
    )
    return record


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_covalent_does_the_same_work_as_plain(
    small_config: WorkflowConfig, covalent_server, executor: str, tmp_path: Path
) -> None:
    plain = run_plain(small_config)
    record = _covalent_run(small_config, executor, covalent_server.address, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert (record.mode, record.executor) == ("covalent", executor)
    assert record.dispatch_id
    # 4 task nodes ran (2 data_loader, train_model, test) and each was probed.
    assert record.tasks_probed.endswith("/4"), record.tasks_probed
    probed = [p["task"] for p in record.phases if p["phase"] == R.IN_TASK]
    assert sorted(t for t in probed if not t.startswith(":")) == sorted(TUTORIAL_TASKS)
    assert_same_work(record, plain)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "data_path", "models", "executor"),
    [
        ("lean", "tutorial", 1, "local"),
        ("per-epoch", "tutorial", 1, "local"),
        ("monolithic", "preloaded", 1, "local"),
        ("tutorial", "preloaded", 3, "local"),
        ("lean", "preloaded", 2, "dask"),
        ("per-epoch", "tutorial", 1, "dask"),
    ],
)
def test_shapes_do_the_same_work_on_covalent(
    small_config: WorkflowConfig, covalent_server, shape: str, data_path: str, models: int,
    executor: str, tmp_path: Path,
) -> None:
    config = dataclasses.replace(small_config, shape=shape, data_path=data_path, models=models)
    plain = run_plain(config)
    record = _covalent_run(config, executor, covalent_server.address, tmp_path)
    assert record.status == "COMPLETED", record.error
    assert_same_work(record, plain)
    assert len(record.outcome.metrics["accuracies"]) == models


@pytest.mark.slow
def test_failed_task_is_named(
    small_config: WorkflowConfig, covalent_server, tmp_path: Path
) -> None:
    missing = dataclasses.replace(small_config, data_dir=str(tmp_path / "no-mnist-here"))
    record = _covalent_run(missing, "local", covalent_server.address, tmp_path)
    # A failed run is a record with its error, not an exception.
    assert record.status == "FAILED"
    assert record.dispatch_id and record.outcome is None
    assert "data_loader: RuntimeError: Dataset not found" in record.error, record.error


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto"):
        WorkflowConfig(device="tpu")
    with pytest.raises(ValueError, match="data_dir must be absolute"):
        WorkflowConfig(data_dir="relative/path")
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        WorkflowConfig(epochs=0)
    with pytest.raises(ValueError, match="executor must be one of local, dask"):
        covalent_api.executor_for("slurm")
    # The workload reports the same refusals as its own error, and unknown parameters too.
    workload = MnistWorkload()
    with pytest.raises(WorkloadError, match="device must be one of cpu, cuda, auto"):
        workload.check({"device": "tpu"})
    with pytest.raises(WorkloadError, match="unknown parameter.*learning_rat\\b"):
        workload.check({"learning_rat": 0.1})
