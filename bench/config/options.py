"""argparse `type=` validators for the suite's command-line options (pytest's addoption takes
them too): a bad value is a usage error saying what was wrong and what is valid, before
anything starts, instead of a nan precision that never stops or a cluster of zero workers.
argparse puts the option's name in front: "argument --bench-max-rounds: expected ...".
"""

from __future__ import annotations

import argparse
import math

from bench.config.profiles import MAX_ROUNDS


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:  # float() takes "nan" and "inf": refused too
        raise argparse.ArgumentTypeError(f"expected a finite number of {what} > 0, got {text!r}")
    return value


def _count(text: str, what: str, most: int | None = None) -> int:
    valid = f"between 1 and {most}" if most is not None else ">= 1"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or (most is not None and value > most):
        raise argparse.ArgumentTypeError(f"expected a whole number of {what} {valid}, got "
                                         f"{text!r}")
    return value


def precision_seconds(text: str) -> float:
    """--bench-precision SECONDS: the CI half-width to reach, a finite number > 0."""
    return _positive(text, "seconds (the CI half-width to reach)")


def max_rounds(text: str) -> int:
    """--bench-max-rounds N: 1 to MAX_ROUNDS measured rounds (profiles' own bound)."""
    return _count(text, "measured rounds", MAX_ROUNDS)


def stack_rounds(text: str) -> int:
    """--bench-stacks N: profiled rounds per mode, 1 to MAX_ROUNDS."""
    return _count(text, "profiled rounds", MAX_ROUNDS)


MAX_STACKS_RATE = 1000  # py-spy reads every thread of every process at each sample


def stacks_rate(text: str) -> int:
    """--bench-stacks-rate HZ: samples per second per thread, 1 to MAX_STACKS_RATE."""
    return _count(text, "samples per second", MAX_STACKS_RATE)


def time_budget_minutes(text: str) -> float:
    """--bench-time-budget MINUTES: a finite number > 0."""
    return _positive(text, "minutes")


def worker_count(text: str) -> int:
    """--covalent-workers, --external-workers: Dask workers, a whole number >= 1."""
    return _count(text, "Dask workers")


def threads_per_worker(text: str) -> int:
    """--covalent-threads-per-worker: a whole number >= 1."""
    return _count(text, "threads per Dask worker")
