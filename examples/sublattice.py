"""A sublattice and a function argument: the outer lattice runs the inner lattice `n` times
as sublattices (`ct.electron(inner)(...)`), passes a module-level function to an electron
that applies it, and combines the results in an ordinary electron.

    pytest bench --benchmark-only --bench-workload examples.sublattice:sublattice_workflow \
        --bench-arg n=3

Deterministic: the same arguments give the same return value, run as plain Python or
dispatched. Every task is small (well under a second).
"""

from __future__ import annotations

from collections.abc import Callable

import covalent as ct
import numpy as np

# --- helpers passed to an electron as arguments (module-level, so they pickle) ---------------


def square(x: float) -> float:
    return x * x


def halve(x: float) -> float:
    return x / 2.0


def negate(x: float) -> float:
    return -x


TRANSFORMS: dict[str, Callable[[float], float]] = {
    "square": square, "halve": halve, "negate": negate,
}


# --- the inner lattice (run as a sublattice) --------------------------------------------------


@ct.electron
def make_values(seed: int, size: int) -> list[float]:
    """A seeded random vector, as plain floats."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size).tolist()


@ct.electron
def center(values: list[float]) -> list[float]:
    """Subtract the mean."""
    mean = sum(values) / len(values)
    return [v - mean for v in values]


@ct.electron
def summarize(values: list[float]) -> dict[str, float]:
    """Sum of squares and range."""
    return {"sumsq": float(sum(v * v for v in values)),
            "range": float(max(values) - min(values))}


@ct.lattice
def inner(seed: int = 0, size: int = 1_000) -> dict[str, float]:
    """Three chained tasks: make a seeded vector, center it, summarize it."""
    return summarize(center(make_values(seed=seed, size=size)))


# --- the outer lattice ------------------------------------------------------------------------


@ct.electron
def apply(fn: Callable[[float], float], summaries: list[dict[str, float]]) -> list[float]:
    """Apply a function (a task argument) to each sublattice's sum of squares."""
    return [float(fn(s["sumsq"])) for s in summaries]


@ct.electron
def combine(transformed: list[float], summaries: list[dict[str, float]]) -> dict[str, float]:
    """One deterministic summary of the whole run."""
    return {
        "sublattices": float(len(summaries)),
        "total": float(sum(transformed)),
        "max_range": max(s["range"] for s in summaries),
    }


@ct.lattice
def sublattice_workflow(n: int = 3, size: int = 1_000, seed: int = 0,
                        transform: str = "square") -> dict[str, float]:
    """Sublattices + a function argument: n inner lattices, then a task applying a function."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    summaries = [ct.electron(inner)(seed=seed + i, size=size) for i in range(n)]
    transformed = apply(TRANSFORMS[transform], summaries)
    return combine(transformed, summaries)
