"""What one task costs: electrons that do nothing or sleep a fixed time, as a chain (each
takes the previous one's output) or a fan-out (n independent tasks gathered by the
lattice's return): the lattices of the `chain` and `fanout` workloads
(bench.workloads.tasks). Swept over n, the slope of the orchestration against n is the cost
of one more task (bench.analysis fits it; the report draws it).

Module level, so Covalent pickles the task by reference: server and workers import this.
"""

from __future__ import annotations

import time

import covalent as ct


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
