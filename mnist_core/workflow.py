"""The MNIST workflow, defined once, and the two ways to run it.

`workflow()` composes the tasks. A plain run passes it the task functions themselves;
the lattice passes it electrons wrapping those same functions. Both modes live side by
side in one process: nothing is reassigned at module level.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import covalent as ct
import torch.nn.functional as F

from mnist_core import tasks
from mnist_core.config import WorkflowConfig
from mnist_core.model import NeuralNetwork, new_model, state_dict_sha256
from mnist_core.tasks import LoaderSpec, TaskWrapper

# The server's own executors; an external Dask cluster is named by its scheduler address.
EXECUTORS = ("local", "dask")
DASK_SCHEME = "tcp://"


@dataclass(frozen=True)
class Tasks:
    """The task functions a workflow is composed of: plain, wrapped, or electrons."""

    data_loader: Callable[..., Any]
    train_model: Callable[..., Any]
    test: Callable[..., Any]
    lean_train: Callable[..., Any]
    lean_test: Callable[..., Any]
    whole_workflow: Callable[..., Any]


def task_set(wrap: TaskWrapper | None = None, electrons: bool = False) -> Tasks:
    """The workflow's task functions, optionally wrapped, optionally as electrons."""
    fns = [tasks.data_loader, tasks.train_model, tasks.test, tasks.lean_train, tasks.lean_test,
           whole_workflow]
    if wrap is not None:
        fns = [wrap(fn) for fn in fns]
    if electrons:
        fns = [ct.electron(fn) for fn in fns]
    return Tasks(*fns)


def loader_specs(config: WorkflowConfig) -> tuple[LoaderSpec, LoaderSpec]:
    """The train and test loaders of a configuration, as specs (built where they are used)."""
    if not config.data_dir:
        raise ValueError("config.data_dir is empty: pass an absolute MNIST data directory")
    common = {"data_dir": config.data_dir, "seed": config.seed, "threads": config.threads,
              "preloaded": config.data_path == "preloaded"}
    return (
        LoaderSpec(config.batch_size_train, True, subset=config.train_subset, **common),
        # Unshuffled (the tutorial shuffles it too): the order changes only the float
        # rounding of the summed loss, and a shared loader's generator would drift between
        # the branches of a plain sweep, unlike Covalent's fresh copy per task.
        LoaderSpec(config.batch_size_test, False, subset=config.test_subset, shuffle=False,
                   **common),
    )


def workflow(t: Tasks, model: NeuralNetwork, config: WorkflowConfig) -> dict[str, Any]:
    """MNIST classifier training: one train+test branch per learning rate of the sweep, cut
    into tasks as `config.shape` says. Returns {"branches": [branch, ...]}; each branch is
    {"metrics": (accuracy, loss), "model": ..., "history": [history of each train task]}."""
    train_spec, test_spec = loader_specs(config)
    configs = [dataclasses.replace(config, learning_rate=lr, models=1)
               for lr in config.sweep_rates()]
    if config.shape == "monolithic":
        return {"branches": [t.whole_workflow(model=model, config=c) for c in configs]}
    if config.shape == "lean":
        return {"branches": [_lean_branch(t, model, c, train_spec, test_spec) for c in configs]}
    # tutorial and per-epoch: the loaders are built once and passed to every branch.
    train_loader = t.data_loader(**dataclasses.asdict(train_spec))
    test_loader = t.data_loader(**dataclasses.asdict(test_spec))
    return {"branches": [_branch(t, model, c, train_loader, test_loader) for c in configs]}


def _train_args(config: WorkflowConfig) -> dict[str, Any]:
    return {"learning_rate": config.learning_rate, "momentum": config.momentum,
            "log_interval": config.log_interval, "loss_fn": F.nll_loss, "seed": config.seed,
            "threads": config.threads, "device": config.device}


def _test_args(config: WorkflowConfig) -> dict[str, Any]:
    return {"loss_fn": F.nll_loss, "threads": config.threads, "device": config.device}


def _branch(
    t: Tasks, model: Any, config: WorkflowConfig, train_loader: Any, test_loader: Any
) -> dict[str, Any]:
    """The tutorial's train_model -> test; per-epoch: one train_model task per epoch."""
    histories = []
    if config.shape == "per-epoch":
        optimizer = None
        for epoch in range(1, config.epochs + 1):
            model, optimizer, history = t.train_model(
                train_dataloader=train_loader, model=model, epochs=1, first_epoch=epoch,
                optimizer=optimizer, **_train_args(config),
            )
            histories.append(history)
    else:
        model, _optimizer, history = t.train_model(
            train_dataloader=train_loader, model=model, epochs=config.epochs,
            **_train_args(config),
        )
        histories.append(history)
    metrics = t.test(dataloader=test_loader, model=model, **_test_args(config))
    return {"metrics": metrics, "model": model, "history": histories}


def _lean_branch(
    t: Tasks, model: Any, config: WorkflowConfig, train_spec: LoaderSpec, test_spec: LoaderSpec
) -> dict[str, Any]:
    model, _optimizer, history = t.lean_train(
        spec=train_spec, model=model, epochs=config.epochs, **_train_args(config)
    )
    metrics = t.lean_test(spec=test_spec, model=model, **_test_args(config))
    return {"metrics": metrics, "model": model, "history": [history]}


def whole_workflow(model: NeuralNetwork, config: WorkflowConfig) -> dict[str, Any]:
    """The monolithic shape's one task: the tutorial-shaped workflow, as plain calls."""
    tutorial = dataclasses.replace(config, shape="tutorial", models=1)
    return workflow(PLAIN_TASKS, model, tutorial)["branches"][0]


PLAIN_TASKS = task_set()


def executor_for(executor: Any) -> Any:
    """'local' or 'dask' (the server's own), 'tcp://host:port' (that Dask scheduler), or a
    ready Covalent executor object, passed through."""
    if not isinstance(executor, str):
        return executor
    if executor in EXECUTORS:
        return executor
    if executor.startswith(DASK_SCHEME) and executor.removeprefix(DASK_SCHEME):
        return ct.executor.DaskExecutor(scheduler_address=executor)
    raise ValueError(
        f"executor must be one of {', '.join(EXECUTORS)} or a Dask scheduler address "
        f"{DASK_SCHEME}host:port, got {executor!r}"
    )


def build_lattice(executor: Any, wrap: TaskWrapper | None = None) -> ct.Lattice:
    """The workflow as a Covalent lattice whose tasks run on `executor` (see executor_for)."""
    target = executor_for(executor)
    # Fresh electrons for every lattice: building a graph writes the lattice's executor
    # into its electrons' metadata, so electrons shared between lattices would carry one
    # lattice's executor (say, an external cluster since stopped) into the next.
    electrons = task_set(wrap, electrons=True)

    def mnist_workflow(model: NeuralNetwork, config: WorkflowConfig) -> dict[str, Any]:
        """The lattice's body: the same workflow, over electrons."""
        return workflow(electrons, model, config)

    return ct.lattice(mnist_workflow, executor=target)


@dataclass(frozen=True)
class WorkflowOutput:
    """What one run of the workflow produced, whichever way it ran.

    For a sweep (models > 1): accuracy and loss of the best branch, the loss history of the
    first, and one hash over every branch's weights."""

    accuracy: float
    test_loss: float
    train_losses: list[float]
    train_counter: list[int]
    weights_sha256: str
    threads: int  # torch's thread count as seen inside train_model
    device: str
    accuracies: list[float]  # one per branch of the sweep

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> WorkflowOutput:
        branches = raw["branches"]
        metrics = [(float(a), float(loss)) for a, loss in (b["metrics"] for b in branches)]
        best = max(range(len(metrics)), key=lambda i: metrics[i][0])
        histories = branches[0]["history"]
        hashes = [state_dict_sha256(b["model"]) for b in branches]
        return cls(
            accuracy=metrics[best][0],
            test_loss=metrics[best][1],
            train_losses=[float(x) for h in histories for x in h["train_losses"]],
            train_counter=[int(x) for h in histories for x in h["train_counter"]],
            weights_sha256=hashes[0] if len(hashes) == 1
            else hashlib.sha256("".join(hashes).encode()).hexdigest(),
            threads=int(histories[0]["threads"]),
            device=str(histories[0]["device"]),
            accuracies=[a for a, _ in metrics],
        )


def run_plain(
    config: WorkflowConfig, model: NeuralNetwork | None = None, wrap: TaskWrapper | None = None
) -> WorkflowOutput:
    """Run the workflow as plain Python functions in this process."""
    model = model if model is not None else new_model(config.seed)
    t = PLAIN_TASKS if wrap is None else task_set(wrap)
    return WorkflowOutput.from_raw(workflow(t, model, config))


class WorkflowFailedError(RuntimeError):
    """A dispatch ended in a state other than COMPLETED."""


def dispatch(
    config: WorkflowConfig,
    executor: Any,
    dispatcher_addr: str,
    model: NeuralNetwork | None = None,
    wrap: TaskWrapper | None = None,
) -> str:
    """Build, upload and start the lattice on the server at `dispatcher_addr`; its dispatch id."""
    model = model if model is not None else new_model(config.seed)
    lattice = build_lattice(executor, wrap)
    return ct.dispatch(lattice, dispatcher_addr=dispatcher_addr)(model, config)


def status_name(status: Any) -> str:
    """'COMPLETED', 'FAILED', ...: Covalent reports a Status or a StatusEnum depending on path."""
    return str(status).removeprefix("StatusEnum.")


def _task_errors(result: Any, dispatcher_addr: str | None, results_dir: str | None) -> list[str]:
    """'name: error' for each failed task; errors are assets, fetched only when needed."""
    failed = [n for n in result.get_all_node_results() if status_name(n["status"]) == "FAILED"]
    manager = None
    if dispatcher_addr and failed:
        manager = ct.get_result_manager(
            result.dispatch_id, results_dir, dispatcher_addr=dispatcher_addr
        )
    lines = []
    for node in failed:
        # The local and dask executors leave the traceback in stderr, not in error.
        error = node.get("error") or node.get("stderr")
        if not error and manager is not None:
            graph = manager.result_object.lattice.transport_graph
            for key in ("error", "stderr"):
                manager.download_node_asset(node["node_id"], key)
                manager.load_node_asset(node["node_id"], key)
                error = error or graph.get_node_value(node["node_id"], key)
        last = (str(error or "").strip().splitlines() or ["no error text"])[-1]
        lines.append(f"{node['node_name']}: {last}")
    return lines


def output_of(
    result: Any, dispatcher_addr: str | None = None, results_dir: str | None = None
) -> WorkflowOutput:
    """The WorkflowOutput of a finished dispatch's Result, or a clear error naming failed tasks."""
    status = status_name(result.status)
    if status != "COMPLETED":
        detail = "; ".join(_task_errors(result, dispatcher_addr, results_dir))
        raise WorkflowFailedError(
            f"dispatch {result.dispatch_id} ended {status}: "
            f"{detail or result.error or 'no task error recorded'}"
        )
    return WorkflowOutput.from_raw(result.result)


def run_covalent(
    config: WorkflowConfig, executor: Any, dispatcher_addr: str, results_dir: str | None = None
) -> tuple[WorkflowOutput, str]:
    """Dispatch and wait the stock way (`ct.get_result(wait=True)`): output and dispatch id."""
    dispatch_id = dispatch(config, executor, dispatcher_addr)
    result = ct.get_result(
        dispatch_id, wait=True, dispatcher_addr=dispatcher_addr, results_dir=results_dir
    )
    return output_of(result, dispatcher_addr, results_dir), dispatch_id
