"""The MNIST workflow, defined once, and the two ways to run it.

`workflow()` composes the tasks. A plain run passes it the task functions themselves;
the lattice passes it electrons wrapping those same functions. Both modes live side by
side in one process: nothing is reassigned at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import covalent as ct
import torch.nn.functional as F

from mnist_core import tasks
from mnist_core.config import WorkflowConfig
from mnist_core.model import NeuralNetwork, new_model, state_dict_sha256
from mnist_core.tasks import TaskWrapper

EXECUTORS = ("local", "dask")
# The tutorial's tasks, by node name in the lattice's graph.
TASK_NAMES = ("data_loader", "train_model", "test")


@dataclass(frozen=True)
class Tasks:
    data_loader: Callable[..., Any]
    train_model: Callable[..., Any]
    test: Callable[..., Any]


def task_set(wrap: TaskWrapper | None = None, electrons: bool = False) -> Tasks:
    """The tutorial's task functions, optionally wrapped, optionally as electrons."""
    fns = [tasks.data_loader, tasks.train_model, tasks.test]
    if wrap is not None:
        fns = [wrap(fn) for fn in fns]
    if electrons:
        fns = [ct.electron(fn) for fn in fns]
    return Tasks(*fns)


PLAIN_TASKS = task_set()
ELECTRON_TASKS = task_set(electrons=True)


def workflow(t: Tasks, model: NeuralNetwork, config: WorkflowConfig) -> dict[str, Any]:
    """MNIST classifier training workflow: the tutorial's graph."""
    if not config.data_dir:
        raise ValueError("config.data_dir is empty: pass an absolute MNIST data directory")
    common = {"data_dir": config.data_dir, "seed": config.seed, "threads": config.threads}
    train_loader = t.data_loader(
        batch_size=config.batch_size_train, train=True, subset=config.train_subset, **common
    )
    test_loader = t.data_loader(
        batch_size=config.batch_size_test, train=False, subset=config.test_subset, **common
    )
    model, _optimizer, history = t.train_model(
        train_dataloader=train_loader,
        model=model,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        epochs=config.epochs,
        log_interval=config.log_interval,
        loss_fn=F.nll_loss,
        seed=config.seed,
        threads=config.threads,
        device=config.device,
    )
    metrics = t.test(
        dataloader=test_loader,
        model=model,
        loss_fn=F.nll_loss,
        threads=config.threads,
        device=config.device,
    )
    return {"metrics": metrics, "model": model, "history": history}


def mnist_workflow(model: NeuralNetwork, config: WorkflowConfig) -> dict[str, Any]:
    """The lattice's body: the same workflow, over electrons."""
    return workflow(ELECTRON_TASKS, model, config)


def build_lattice(executor: str, wrap: TaskWrapper | None = None) -> ct.Lattice:
    """The workflow as a Covalent lattice whose tasks run on `executor` ('local' or 'dask')."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    body = mnist_workflow
    if wrap is not None:
        wrapped = task_set(wrap, electrons=True)

        def body(model: NeuralNetwork, config: WorkflowConfig) -> dict[str, Any]:
            return workflow(wrapped, model, config)

        body.__name__ = mnist_workflow.__name__
    return ct.lattice(body, executor=executor)


@dataclass(frozen=True)
class WorkflowOutput:
    """What one run of the workflow produced, whichever way it ran."""

    accuracy: float
    test_loss: float
    train_losses: list[float]
    train_counter: list[int]
    weights_sha256: str
    threads: int  # torch's thread count as seen inside train_model
    device: str

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> WorkflowOutput:
        accuracy, test_loss = raw["metrics"]
        history = raw["history"]
        return cls(
            accuracy=float(accuracy),
            test_loss=float(test_loss),
            train_losses=[float(x) for x in history["train_losses"]],
            train_counter=[int(x) for x in history["train_counter"]],
            weights_sha256=state_dict_sha256(raw["model"]),
            threads=int(history["threads"]),
            device=str(history["device"]),
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
    executor: str,
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
    config: WorkflowConfig, executor: str, dispatcher_addr: str, results_dir: str | None = None
) -> tuple[WorkflowOutput, str]:
    """Dispatch and wait the stock way (`ct.get_result(wait=True)`): output and dispatch id."""
    dispatch_id = dispatch(config, executor, dispatcher_addr)
    result = ct.get_result(
        dispatch_id, wait=True, dispatcher_addr=dispatcher_addr, results_dir=results_dir
    )
    return output_of(result, dispatcher_addr, results_dir), dispatch_id
