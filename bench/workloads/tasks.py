"""The `chain` and `fanout` workloads: n step tasks, each on the previous one's output or
all independent (the tasks and lattices: bench.workloads.pertask). Swept over n, the slope
of the orchestration against n is the cost of one more task.

Covalent comes with the lattices, imported when a run needs them: registering these (every
import of bench.workloads, the report's included) stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.workloads.base import Outcome, Workload, WorkloadError, register
from bench.workloads.digest import digest


class TasksWorkload(Workload):
    """chain or fanout of n step tasks: the lattice of that name in bench.workloads.pertask."""

    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description

    def defaults(self) -> dict[str, Any]:
        return {"n": 10, "sleep_s": 0.0}

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        full = super().check(params)
        n, sleep_s = full["n"], full["sleep_s"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise WorkloadError(f"n must be an integer >= 1, got {n!r}")
        if not isinstance(sleep_s, int | float) or isinstance(sleep_s, bool) or sleep_s < 0:
            raise WorkloadError(f"sleep_s must be a number >= 0, got {sleep_s!r}")
        return {"n": n, "sleep_s": float(sleep_s)}

    def lattice(self, params: Mapping[str, Any]) -> Any:
        from bench.workloads import pertask

        return getattr(pertask, self.name)

    def inputs(self, params: Mapping[str, Any]) -> tuple[tuple, dict]:
        return (), {"n": params["n"], "sleep_s": params["sleep_s"]}

    def outcome(self, value: Any, params: Mapping[str, Any]) -> Outcome:
        n = params["n"]
        expected = n if self.name == "chain" else list(range(1, n + 1))
        return Outcome(digest(value), {"correct": value == expected, "tasks": n})


register(TasksWorkload("chain", "n tasks, each on the previous one's output; returns n."))
register(TasksWorkload("fanout", "n independent tasks, gathered into one list; returns "
                                 "[1, ..., n]."))
