"""The workflow, both ways: same graph as the tutorial, same work plain and on Covalent."""

from __future__ import annotations

import dataclasses
import tempfile

import networkx as nx
import pytest

from mnist_core.config import WorkflowConfig
from mnist_core.model import new_model
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
