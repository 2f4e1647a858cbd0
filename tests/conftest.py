"""Shared test fixtures. The Covalent server fixture (`covalent_server`) comes from the
bench plugin (loaded by pyproject's addopts) so tests and benchmarks share one definition."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnist_core.config import WorkflowConfig
from mnist_core.data import write_synthetic_mnist

N_TRAIN, N_TEST = 512, 256

# Under pytest-xdist (the README's test command) a worker learns who it is from these
# variables; a benchmark session that a test starts (`python -m pytest bench ...`) would
# inherit them, and pytest-benchmark would take itself for an xdist worker and refuse
# --benchmark-only. xdist itself reads its worker's identity from config.workerinput.
for _var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MNIST-format data set, read through the same torchvision loader."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("mnist"), N_TRAIN, N_TEST, seed=0)


@pytest.fixture
def small_config(synthetic_root: Path) -> WorkflowConfig:
    return WorkflowConfig(
        epochs=2,
        batch_size_train=32,
        batch_size_test=128,
        learning_rate=0.1,  # the tutorial's 0.01 needs more than 32 steps to learn
        log_interval=4,
        threads=1,
        seed=7,
        data_dir=str(synthetic_root),
    )
