"""The workflow, both ways: same graph as the tutorial, same work plain and on Covalent."""

from __future__ import annotations

import dataclasses
import tempfile

import networkx as nx
import pytest
import torch

from mnist_core.config import SHAPES, WorkflowConfig
from mnist_core.model import new_model
from mnist_core.tasks import data_loader
from mnist_core.workflow import (
    WorkflowFailedError,
    build_lattice,
    dispatch,
    output_of,
    run_covalent,
    run_plain,
)


def _graph(config: WorkflowConfig) -> nx.MultiDiGraph:
    lattice = build_lattice("local")
    lattice.build_graph(new_model(config.seed), config)
    return lattice.transport_graph.get_internal_graph_copy()


def _nodes(graph: nx.MultiDiGraph, name: str) -> list[int]:
    return [n for n, data in graph.nodes(data=True) if data["name"] == name]


def _param_value(graph: nx.MultiDiGraph, node: int, edge_name: str) -> str:
    for src, _dst, data in graph.in_edges(node, data=True):
        if data.get("edge_name") == edge_name:
            return graph.nodes[src]["name"].removeprefix(":parameter:")
    raise KeyError(edge_name)


def test_lattice_graph_is_the_tutorials(small_config: WorkflowConfig) -> None:
    graph = _graph(small_config)
    loaders = _nodes(graph, "data_loader")
    (train_model,) = _nodes(graph, "train_model")
    (test,) = _nodes(graph, "test")
    assert len(loaders) == 2
    by_split = {_param_value(graph, n, "train"): n for n in loaders}
    train_loader, test_loader = by_split["True"], by_split["False"]

    # The two loaders are independent: Covalent may run them in parallel.
    assert not nx.has_path(graph, train_loader, test_loader)
    assert not nx.has_path(graph, test_loader, train_loader)
    # train data -> train_model -> (its model output) -> test <- test data
    assert graph.has_edge(train_loader, train_model)
    assert nx.has_path(graph, train_model, test)
    assert graph.has_edge(test_loader, test)
    assert not nx.has_path(graph, test_loader, train_model)
    edge_names = {d["edge_name"] for _, _, d in graph.in_edges(test, data=True)}
    assert {"dataloader", "model"} <= edge_names


def _task_nodes(graph: nx.MultiDiGraph) -> dict[str, list[int]]:
    """Nodes of the workflow's own tasks (not Covalent's generated helpers), by name."""
    names = ("data_loader", "train_model", "test", "lean_train", "lean_test", "whole_workflow")
    return {name: _nodes(graph, name) for name in names if _nodes(graph, name)}


def test_lean_graph_moves_no_data(small_config: WorkflowConfig) -> None:
    graph = _graph(dataclasses.replace(small_config, shape="lean"))
    nodes = _task_nodes(graph)
    assert set(nodes) == {"lean_train", "lean_test"}
    assert nx.has_path(graph, nodes["lean_train"][0], nodes["lean_test"][0])


def test_per_epoch_graph_chains_one_task_per_epoch(small_config: WorkflowConfig) -> None:
    config = dataclasses.replace(small_config, shape="per-epoch", epochs=3)
    graph = _graph(config)
    epochs = sorted(
        _nodes(graph, "train_model"), key=lambda n: _param_value(graph, n, "first_epoch")
    )
    assert [_param_value(graph, n, "first_epoch") for n in epochs] == ["1", "2", "3"]
    assert all(nx.has_path(graph, a, b) for a, b in zip(epochs, epochs[1:], strict=False))
    assert len(_nodes(graph, "data_loader")) == 2


def test_monolithic_graph_is_one_task(small_config: WorkflowConfig) -> None:
    graph = _graph(dataclasses.replace(small_config, shape="monolithic"))
    assert {k: len(v) for k, v in _task_nodes(graph).items()} == {"whole_workflow": 1}


@pytest.mark.parametrize("shape", ["tutorial", "lean", "monolithic"])
def test_sweep_has_k_independent_branches(small_config: WorkflowConfig, shape: str) -> None:
    k = 4
    graph = _graph(dataclasses.replace(small_config, shape=shape, models=k))
    nodes = _task_nodes(graph)
    trains = nodes.get("train_model") or nodes.get("lean_train") or nodes["whole_workflow"]
    assert len(trains) == k
    if shape != "monolithic":  # there the rate sits inside the config argument
        rates = sorted(float(_param_value(graph, n, "learning_rate")) for n in trains)
        assert rates == dataclasses.replace(small_config, models=k).sweep_rates()
    for a in trains:
        for b in trains:
            assert a == b or not nx.has_path(graph, a, b), "sweep branches must be independent"


def test_preloaded_path_yields_the_tutorials_tensors(small_config: WorkflowConfig) -> None:
    for train in (True, False):
        args = {"batch_size": 32, "train": train, "data_dir": small_config.data_dir,
                "subset": 200, "seed": 3}
        tutorial, preloaded = data_loader(**args), data_loader(**args, preloaded=True)
        pairs = list(zip(tutorial, preloaded, strict=True))
        assert len(pairs) == 7  # ceil(200 / 32): same batches, same order
        for (x, y), (px, py) in pairs:
            assert x.dtype == px.dtype and x.shape == px.shape
            assert torch.equal(x, px) and torch.equal(y, py)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_does_the_same_work(small_config: WorkflowConfig, shape: str) -> None:
    """All shapes run the same task functions with per-epoch seeding: identical weights."""
    reference = run_plain(small_config)
    assert run_plain(dataclasses.replace(small_config, shape=shape)) == reference
    preloaded = run_plain(dataclasses.replace(small_config, shape=shape, data_path="preloaded"))
    assert preloaded == reference


def test_each_lattice_runs_on_its_own_executor(small_config: WorkflowConfig) -> None:
    """A lattice on an external cluster must not leave its executor on later lattices."""
    build_lattice("tcp://127.0.0.1:1").build_graph(new_model(0), small_config)
    graph = _graph(small_config)  # built for "local"
    executors = {graph.nodes[n]["metadata"]["executor"] for n in _nodes(graph, "data_loader")}
    assert executors == {"local"}


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


def test_seed_changes_the_work(small_config: WorkflowConfig) -> None:
    other = dataclasses.replace(small_config, seed=small_config.seed + 1)
    assert run_plain(small_config).weights_sha256 != run_plain(other).weights_sha256


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_covalent_does_the_same_work_as_plain(
    small_config: WorkflowConfig, covalent_server, executor: str
) -> None:
    plain = run_plain(small_config)
    with tempfile.TemporaryDirectory() as results_dir:
        covalent, dispatch_id = run_covalent(
            small_config, executor, covalent_server.address, results_dir
        )
    assert dispatch_id
    assert covalent.accuracy == plain.accuracy
    assert covalent.test_loss == plain.test_loss
    assert covalent.weights_sha256 == plain.weights_sha256
    assert covalent.train_losses == plain.train_losses
    assert covalent.threads == plain.threads == 1


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
    executor: str,
) -> None:
    config = dataclasses.replace(small_config, shape=shape, data_path=data_path, models=models)
    plain = run_plain(config)
    with tempfile.TemporaryDirectory() as results_dir:
        covalent, _ = run_covalent(config, executor, covalent_server.address, results_dir)
    assert covalent == plain
    assert len(covalent.accuracies) == models


@pytest.mark.slow
def test_failed_task_is_named(small_config: WorkflowConfig, covalent_server, tmp_path) -> None:
    missing = dataclasses.replace(small_config, data_dir=str(tmp_path / "no-mnist-here"))
    import covalent as ct

    dispatch_id = dispatch(missing, "local", covalent_server.address)
    result = ct.get_result(
        dispatch_id, wait=True, dispatcher_addr=covalent_server.address,
        results_dir=str(tmp_path / "results"),
    )
    expected = r"ended FAILED: data_loader: RuntimeError: Dataset not found"
    with pytest.raises(WorkflowFailedError, match=expected):
        output_of(result, covalent_server.address, str(tmp_path / "results"))


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto"):
        WorkflowConfig(device="tpu")
    with pytest.raises(ValueError, match="data_dir must be absolute"):
        WorkflowConfig(data_dir="relative/path")
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        WorkflowConfig(epochs=0)
    with pytest.raises(ValueError, match="executor must be one of local, dask"):
        build_lattice("slurm")
