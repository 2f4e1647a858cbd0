"""The MNIST workflow, defined once, and the two ways to run it.

`workflow()` composes the tasks. A plain run passes it the task functions themselves;
the lattice passes it electrons wrapping those same functions. Both modes live side by
side in one process: nothing is reassigned at module level.

The tutorial shape builds the tutorial's graph: two data_loader tasks, train_model, test,
with the run's knobs passed as one value (the WorkflowConfig) and the loss history riding
on the trained model, so the graph has no more generated nodes than the tutorial's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import covalent as ct

from mnist_core import tasks
from mnist_core.config import WorkflowConfig
from mnist_core.model import NeuralNetwork, new_model, state_dict_sha256
from mnist_core.tasks import LoaderSpec, training_log

# One branch's result: (accuracy in %, test loss, trained model).
Branch = tuple[float, float, NeuralNetwork]


@dataclass(frozen=True)
class Tasks:
    """The task functions a workflow is composed of: plain, or electrons."""

    data_loader: Callable[..., Any]
    train_model: Callable[..., Any]
    test: Callable[..., Any]
    lean_train: Callable[..., Any]
    lean_test: Callable[..., Any]
    whole_workflow: Callable[..., Any]


def task_set(electrons: bool = False) -> Tasks:
    """The workflow's task functions, optionally as (fresh) electrons."""
    fns = [tasks.data_loader, tasks.train_model, tasks.test, tasks.lean_train, tasks.lean_test,
           whole_workflow]
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


def workflow(t: Tasks, model: NeuralNetwork, config: WorkflowConfig) -> list[Branch]:
    """MNIST classifier training: one train+test branch per learning rate of the sweep, cut
    into tasks as `config.shape` says. Returns [(accuracy, loss, model)] per branch."""
    train_spec, test_spec = loader_specs(config)
    configs = [dataclasses.replace(config, learning_rate=lr, models=1)
               for lr in config.sweep_rates()]
    if config.shape == "monolithic":
        return [t.whole_workflow(model=model, config=c) for c in configs]
    if config.shape == "lean":
        branches = []
        for c in configs:
            trained, _optimizer = t.lean_train(spec=train_spec, model=model, config=c)
            accuracy, loss = t.lean_test(spec=test_spec, model=trained, config=c)
            branches.append((accuracy, loss, trained))
        return branches
    # tutorial and per-epoch: the loaders are built once and passed to every branch.
    train_loader = t.data_loader(spec=train_spec)
    test_loader = t.data_loader(spec=test_spec)
    return [_branch(t, model, c, train_loader, test_loader) for c in configs]


def _branch(
    t: Tasks, model: Any, config: WorkflowConfig, train_loader: Any, test_loader: Any
) -> Branch:
    """The tutorial's train_model -> test; per-epoch: one train_model task per epoch."""
    if config.shape == "per-epoch":
        optimizer = None
        for epoch in range(1, config.epochs + 1):
            model, optimizer = t.train_model(
                train_dataloader=train_loader, model=model, config=config, first_epoch=epoch,
                epochs=1, optimizer=optimizer,
            )
    else:
        model, _optimizer = t.train_model(train_dataloader=train_loader, model=model,
                                          config=config)
    accuracy, loss = t.test(dataloader=test_loader, model=model, config=config)
    return accuracy, loss, model


def whole_workflow(model: NeuralNetwork, config: WorkflowConfig) -> Branch:
    """The monolithic shape's one task: the tutorial-shaped workflow, as plain calls."""
    tutorial = dataclasses.replace(config, shape="tutorial", models=1)
    return workflow(PLAIN_TASKS, model, tutorial)[0]


PLAIN_TASKS = task_set()


def build_lattice(executor: Any = None) -> ct.Lattice:
    """The workflow as a Covalent lattice, called as lattice(model, config).

    Fresh electrons for every lattice: building a graph writes the lattice's executor into
    its electrons' metadata, so electrons shared between lattices would carry one
    lattice's executor into the next."""
    electrons = task_set(electrons=True)

    def mnist_workflow(model: NeuralNetwork, config: WorkflowConfig) -> list[Branch]:
        """The lattice's body: the same workflow, over electrons."""
        return workflow(electrons, model, config)

    return ct.lattice(mnist_workflow, executor=executor) if executor else ct.lattice(
        mnist_workflow)


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
    threads: int | None  # torch's thread count as seen inside train_model
    device: str | None
    accuracies: list[float]  # one per branch of the sweep

    @classmethod
    def from_raw(cls, raw: list[Branch]) -> WorkflowOutput:
        metrics = [(float(a), float(loss)) for a, loss, _model in raw]
        best = max(range(len(metrics)), key=lambda i: metrics[i][0])
        log = training_log(raw[0][2])
        hashes = [state_dict_sha256(model) for _a, _l, model in raw]
        return cls(
            accuracy=metrics[best][0],
            test_loss=metrics[best][1],
            train_losses=[float(x) for x in log["train_losses"]],
            train_counter=[int(x) for x in log["train_counter"]],
            weights_sha256=hashes[0] if len(hashes) == 1
            else hashlib.sha256("".join(hashes).encode()).hexdigest(),
            threads=log["threads"],
            device=log["device"],
            accuracies=[a for a, _ in metrics],
        )


def run_plain(config: WorkflowConfig, model: NeuralNetwork | None = None) -> WorkflowOutput:
    """Run the workflow as plain Python functions in this process."""
    model = model if model is not None else new_model(config.seed)
    return WorkflowOutput.from_raw(workflow(PLAIN_TASKS, model, config))
