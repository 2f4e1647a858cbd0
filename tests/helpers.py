"""What several test modules share (imported from tests/, which pytest puts on sys.path)."""

from __future__ import annotations

from typing import Any

import covalent as ct


def make_workflow(executor: str) -> ct.Lattice:
    """A two-electron lattice: (x + y) * y.

    Defined inside a function so cloudpickle ships the code by value: the server cannot
    import this test module (its working directory and sys.path are its own).
    """

    @ct.electron
    def add(x: int, y: int) -> int:
        return x + y

    @ct.electron
    def multiply(x: int, y: int) -> int:
        return x * y

    @ct.lattice(executor=executor)
    def workflow(x: int, y: int) -> int:
        return multiply(add(x, y), y)

    return workflow


def assert_same_work(record: Any, plain: Any) -> None:
    """A Covalent RunRecord of the MNIST workload did what the plain WorkflowOutput did."""
    metrics = record.outcome.metrics
    assert record.outcome.digest == plain.weights_sha256
    assert metrics["weights_sha256"] == plain.weights_sha256
    assert metrics["accuracy"] == plain.accuracy
    assert metrics["test_loss"] == plain.test_loss
    assert metrics["train_losses"] == plain.train_losses
    assert metrics["train_counter"] == plain.train_counter
    assert metrics["accuracies"] == plain.accuracies
    assert metrics["torch_threads"] == plain.threads == 1
    assert metrics["resolved_device"] == plain.device == "cpu"
