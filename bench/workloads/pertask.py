"""What one task costs: electrons that do nothing or sleep a fixed time, as a chain (each
takes the previous one's output) or a fan-out (n independent tasks gathered by the
lattice's return): the lattices of the `chain` and `fanout` workloads
(bench.workloads.tasks). Swept over n, the slope of the orchestration against n is the cost
of one more task (bench.analysis fits it; the report draws it).

Module level, so Covalent pickles the task by reference: server and workers import this.
"""

from __future__ import annotations

import importlib
import time

import covalent as ct
import numpy as np


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


# --- the envelope's graphs (workload `graph`): any task count, shape, fan-in, bytes, nesting

def _payload(payload_bytes: int) -> np.ndarray:
    # An array, as ML workflows pass (arrays, tensors, datasets): Covalent stores an output
    # pickled plus its repr, and a `bytes` payload's repr is 4 characters a byte (5.4
    # serialized bytes per byte, 2026-12-02), an array's one short line.
    return np.zeros(payload_bytes, dtype=np.uint8)


def seed(index: int, payload_bytes: int) -> tuple[int, np.ndarray]:
    """A first-layer task: its index and payload_bytes of zeros (the bytes on each edge)."""
    return index, _payload(payload_bytes)


def combine(inputs: list[tuple[int, np.ndarray]], payload_bytes: int
            ) -> tuple[int, np.ndarray]:
    """A later-layer task fed by fan_in tasks of the layer before: their sum + 1."""
    return sum(value for value, _ in inputs) + 1, _payload(payload_bytes)


def gather(inputs: list[tuple[int, np.ndarray]]) -> int:
    """The reduce that ends every graph: one task fed by the whole last layer."""
    return sum(value for value, _ in inputs)


seed_electron, combine_electron, gather_electron = (ct.electron(f) for f in
                                                    (seed, combine, gather))


def layered_value(tasks: int, width: int, fan_in: int) -> int:
    """What `layered` returns, computed without Covalent (the workload's check)."""
    depth = -(-tasks // width)
    layer = list(range(width))
    for _ in range(depth - 1):
        layer = [sum(layer[(i + j) % width] for j in range(fan_in)) + 1 for i in range(width)]
    return sum(layer)


@ct.lattice
def layered(tasks: int = 10, width: int = 10, fan_in: int = 1, payload_bytes: int = 0,
            nesting: int = 0) -> int:
    """ceil(tasks / width) layers of `width` tasks, each fed by `fan_in` tasks of the layer
    before, every edge carrying payload_bytes, reduced by one gather task; inside `nesting`
    levels of sublattice."""
    if nesting > 0:  # by import: Covalent runs this function's source, not its module
        inner = importlib.import_module("bench.workloads.pertask").layered
        return ct.electron(inner)(tasks, width, fan_in, payload_bytes, nesting - 1)
    layer = [seed_electron(i, payload_bytes) for i in range(width)]
    for _ in range(-(-tasks // width) - 1):
        layer = [combine_electron([layer[(i + j) % width] for j in range(fan_in)],
                                  payload_bytes) for i in range(width)]
    return gather_electron(layer)
