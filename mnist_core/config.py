"""The workflow's knobs: the tutorial's defaults plus seed, subsets, threads and device."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

DEVICES = ("cpu", "cuda", "auto")
# How the workflow is cut into tasks (see mnist_core.workflow):
#   tutorial   - as in the tutorial: DataLoaders (carrying the data set) passed between tasks;
#   lean       - each task builds its own loader from the data path; only weights travel;
#   per-epoch  - one task per epoch, model and optimizer state passed along;
#   monolithic - one task runs the whole workflow.
SHAPES = ("tutorial", "lean", "per-epoch", "monolithic")
# tutorial: PIL image + ToTensor per sample; preloaded: the same images as one tensor.
DATA_PATHS = ("tutorial", "preloaded")


def _default_threads() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkflowConfig:
    """One configuration of the MNIST workflow. The defaults are the tutorial's."""

    epochs: int = 2
    batch_size_train: int = 64
    batch_size_test: int = 1000
    learning_rate: float = 0.01
    momentum: float = 0.5
    log_interval: int = 200
    seed: int = 0
    # None = the whole split, as in the tutorial.
    train_subset: int | None = None
    test_subset: int | None = None
    # Set inside every task: Dask workers inherit OMP_NUM_THREADS=1, so leaving it to
    # torch would compare thread counts, not orchestration.
    threads: int = field(default_factory=_default_threads)
    device: str = "cpu"
    # Absolute, because Covalent runs the tasks in the server's working directory.
    data_dir: str = ""
    shape: str = "tutorial"
    data_path: str = "tutorial"
    # A hyper-parameter sweep of this many models (learning rates, see sweep_rates), each an
    # independent train+test branch; 1 = the tutorial's single model.
    models: int = 1

    def __post_init__(self) -> None:
        positive = (
            "epochs", "batch_size_train", "batch_size_test", "log_interval", "threads", "models",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("train_subset", "test_subset"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None (all), got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if not (isinstance(self.momentum, int | float) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name, valid in (("shape", SHAPES), ("data_path", DATA_PATHS)):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}"
                )
        if self.data_dir and not os.path.isabs(self.data_dir):
            raise ValueError(
                f"data_dir must be absolute (tasks run in the server's working directory), "
                f"got {self.data_dir!r}"
            )

    @property
    def id(self) -> str:
        """Stable, readable id: the one name of this configuration in CSVs, benchmarks, plots."""
        train = self.train_subset or "all"
        test = self.test_subset or "all"
        parts = [
            f"ep{self.epochs}",
            f"train{train}",
            f"test{test}",
            f"bs{self.batch_size_train}",
            f"th{self.threads}",
            self.device,
        ]
        if self.shape != "tutorial":
            parts.append(self.shape)
        if self.data_path != "tutorial":
            parts.append(self.data_path)
        if self.models != 1:
            parts.append(f"k{self.models}")
        defaults = WorkflowConfig(threads=1)
        for name in ("batch_size_test", "learning_rate", "momentum", "log_interval", "seed"):
            if getattr(self, name) != getattr(defaults, name):
                parts.append(f"{name}{getattr(self, name)}")
        return "-".join(parts)

    def sweep_rates(self) -> list[float]:
        """The learning rate of each model in the sweep: learning_rate, x1.5, x2.25, ..."""
        return [round(self.learning_rate * 1.5**i, 10) for i in range(self.models)]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))
