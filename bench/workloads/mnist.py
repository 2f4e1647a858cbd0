"""The Covalent tutorial's MNIST classifier as a workload: every shape, data path and sweep
of mnist_core, its knobs passed to the lattice as one value."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bench.workloads.base import Outcome, Workload, WorkloadError, register
from mnist_core.config import WorkflowConfig
from mnist_core.data import (
    MNIST_SIZES,
    MnistDataError,
    MnistUnavailableError,
    check_mnist,
    ensure_mnist,
)


class MnistWorkload(Workload):
    name = "mnist"
    description = ("The Covalent MNIST tutorial: CNN training and test, cut into tasks as "
                   "`shape` says (tutorial, lean, per-epoch, monolithic)")
    # A run with other torch threads or another device measures those, not Covalent.
    run_facts = ("torch_threads", "resolved_device")
    # Its configuration matrix (shapes, sizes, K-model sweeps, concurrency) has a section of
    # its own in place of the generic overhead-growth one.
    report_sections = ("matrix",)

    def defaults(self) -> dict[str, Any]:
        return WorkflowConfig(threads=WorkflowConfig().threads).as_dict()

    def config(self, params: Mapping[str, Any]) -> WorkflowConfig:
        try:
            return WorkflowConfig(**params)
        except (TypeError, ValueError) as exc:
            raise WorkloadError(str(exc)) from exc

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.config(super().check(params)).as_dict()

    def dimensions(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters, with the subsets as the images they use (empty = the whole split)
        and without the data directory (a path, not a property of the work)."""
        dims = {k: v for k, v in params.items() if k not in ("data_dir", "train_subset",
                                                              "test_subset")}
        dims["train_samples"] = params.get("train_subset") or MNIST_SIZES["train"]
        dims["test_samples"] = params.get("test_subset") or MNIST_SIZES["test"]
        return dims

    def config_id(self, params: Mapping[str, Any]) -> str:
        return self.config(params).id

    def prepare(self, params: Mapping[str, Any]) -> None:
        config = self.config(params)
        try:
            ensure_mnist(config.data_dir)
            sizes = check_mnist(config.data_dir)
        except (MnistDataError, MnistUnavailableError) as exc:
            raise WorkloadError(str(exc)) from exc
        for name, split in (("train_subset", "train"), ("test_subset", "test")):
            if (getattr(config, name) or 0) > sizes[split]:
                raise WorkloadError(
                    f"{name}={getattr(config, name)} exceeds the {sizes[split]} {split} images "
                    f"in {config.data_dir}; use at most {sizes[split]} (or leave it out for all)"
                )

    # torch and covalent come with the workflow, imported when a run needs them: the checks
    # above run before that, in seconds.
    def lattice(self, params: Mapping[str, Any]) -> Any:
        from mnist_core.workflow import build_lattice

        return build_lattice()

    def inputs(self, params: Mapping[str, Any]) -> tuple[tuple, dict]:
        from mnist_core.model import new_model

        config = self.config(params)
        return (new_model(config.seed), config), {}

    def outcome(self, value: Any, params: Mapping[str, Any]) -> Outcome:
        from mnist_core.workflow import WorkflowOutput

        out = WorkflowOutput.from_raw(value)
        metrics = dataclasses.asdict(out)
        metrics["torch_threads"] = metrics.pop("threads")
        metrics["resolved_device"] = metrics.pop("device")
        return Outcome(out.weights_sha256, metrics)


register(MnistWorkload())
