"""Fan-out and gather: `n` independent electrons, each a little seeded numpy work, and one
electron that combines their results.

    pytest bench --benchmark-only --bench-workload examples.fanout:fanout_workflow \
        --bench-arg n=8

Deterministic: the same arguments give the same return value, run as plain Python or
dispatched (each task's generator is seeded from `seed` and its own index).
"""

from __future__ import annotations

import covalent as ct
import numpy as np


@ct.electron
def vector_stats(index: int, size: int, seed: int) -> dict[str, float]:
    """Sort a seeded random vector of `size` and summarize it."""
    rng = np.random.default_rng([seed, index])
    values = np.sort(rng.standard_normal(size))
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(values[size // 2]),
        "p99": float(values[int(0.99 * (size - 1))]),
        "max": float(values[-1]),
    }


@ct.electron
def gather(stats: list[dict[str, float]]) -> dict[str, float]:
    """Combine the per-task summaries into one."""
    return {
        "tasks": float(len(stats)),
        "mean_of_means": float(np.mean([s["mean"] for s in stats])),
        "mean_std": float(np.mean([s["std"] for s in stats])),
        "max_median": max(s["median"] for s in stats),
        "max_p99": max(s["p99"] for s in stats),
        "max": max(s["max"] for s in stats),
    }


@ct.lattice
def fanout_workflow(n: int = 8, size: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Fan-out + gather: n seeded numpy sort-and-summarize tasks, one gather task."""
    stats = [vector_stats(index=i, size=size, seed=seed) for i in range(n)]
    return gather(stats)
