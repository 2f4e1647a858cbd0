"""Workloads: what the harness measures (bench.workloads.base.Workload).

Built in: `mnist` (the Covalent tutorial's classifier, every shape), `chain` and `fanout`
(per-task cost). Any other importable lattice is named `MODULE:ATTR`.
"""

from __future__ import annotations

from typing import Any

from bench.workloads.base import Outcome, Workload, WorkloadError

__all__ = ["BUILT_IN", "Outcome", "Workload", "WorkloadError", "workload_for"]

BUILT_IN = ("mnist", "chain", "fanout")


def workload_for(name: Any, inputs: Any = None, digest: Any = None) -> Workload:
    """A built-in workload by name, a user's lattice by MODULE:ATTR, or a lattice object
    (`inputs` and `digest` then functions or MODULE:FUNC names)."""
    if not isinstance(name, str) or ":" in name:
        from bench.workloads.lattice import LatticeWorkload

        return LatticeWorkload(name, inputs=inputs, digest_fn=digest)
    if inputs or digest:
        raise WorkloadError("--bench-inputs and --bench-digest apply to a lattice named "
                            "MODULE:ATTR, not to a built-in workload")
    if name == "mnist":
        from bench.workloads.mnist import MnistWorkload

        return MnistWorkload()
    if name in ("chain", "fanout"):
        from bench.workloads import pertask

        return pertask.CHAIN if name == "chain" else pertask.FANOUT
    raise WorkloadError(
        f"unknown workload {name!r}; built in: {', '.join(BUILT_IN)}, or a lattice as "
        f"MODULE:ATTR (path/to/file.py:ATTR)"
    )
