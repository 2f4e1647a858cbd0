"""What one task costs: electrons that do nothing or sleep a fixed time, as a chain (each
takes the previous one's output) or a fan-out (n independent tasks gathered by the
lattice's return). Swept over n, the slope of the orchestration against n is the cost of
one more task (bench.analysis fits it; the report draws it).

Module level, so Covalent pickles the task by reference: server and workers import this.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import covalent as ct

from bench.workloads.base import Outcome, Workload, WorkloadError
from bench.workloads.digest import digest


def step(x: int, sleep_s: float) -> int:
    """One task: optionally sleep, then pass x + 1 on."""
    if sleep_s > 0:
        time.sleep(sleep_s)
    return x + 1


step_electron = ct.electron(step)


@ct.lattice
def chain(n: int = 10, sleep_s: float = 0.0) -> int:
    """n tasks, each on the previous one's output; returns n."""
    x = 0
    for _ in range(n):
        x = step_electron(x, sleep_s)
    return x


@ct.lattice
def fanout(n: int = 10, sleep_s: float = 0.0) -> list[int]:
    """n independent tasks, gathered into one list; returns [1, ..., n]."""
    return [step_electron(i, sleep_s) for i in range(n)]


class TasksWorkload(Workload):
    """chain or fanout of n step tasks."""

    def __init__(self, name: str, lattice: Any) -> None:
        self.name, self._lattice = name, lattice
        self.description = (lattice.__doc__ or "").strip().splitlines()[0]

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
        return self._lattice

    def inputs(self, params: Mapping[str, Any]) -> tuple[tuple, dict]:
        return (), {"n": params["n"], "sleep_s": params["sleep_s"]}

    def outcome(self, value: Any, params: Mapping[str, Any]) -> Outcome:
        n = params["n"]
        expected = n if self.name == "chain" else list(range(1, n + 1))
        return Outcome(digest(value), {"correct": value == expected, "tasks": n})


CHAIN = TasksWorkload("chain", chain)
FANOUT = TasksWorkload("fanout", fanout)
