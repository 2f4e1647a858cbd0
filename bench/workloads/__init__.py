"""Workloads: what the harness measures (bench.workloads.base.Workload).

Built in (BUILT_IN, each registered by its own module): `mnist` (the Covalent tutorial's
classifier, every shape), `chain` and `fanout` (per-task cost). Any other importable
lattice is named `MODULE:ATTR`.
"""

from __future__ import annotations

from typing import Any

# Imported for their registration: a new built-in workload's module is added here.
from bench.workloads import mnist, tasks  # noqa: F401
from bench.workloads.base import BUILT_IN, Outcome, Workload, WorkloadError, register

__all__ = ["BUILT_IN", "Outcome", "Workload", "WorkloadError", "declared", "register",
           "workload_for"]


def workload_for(name: Any, inputs: Any = None, digest: Any = None) -> Workload:
    """A built-in workload by name, a user's lattice by MODULE:ATTR, or a lattice object
    (`inputs` and `digest` then functions or MODULE:FUNC names)."""
    if not isinstance(name, str) or ":" in name:
        from bench.workloads.lattice import LatticeWorkload

        return LatticeWorkload(name, inputs=inputs, digest_fn=digest)
    if inputs or digest:
        raise WorkloadError("--bench-inputs and --bench-digest apply to a lattice named "
                            "MODULE:ATTR, not to a built-in workload")
    if name not in BUILT_IN:
        raise WorkloadError(
            f"unknown workload {name!r}; built in: {', '.join(BUILT_IN)}, or a lattice as "
            f"MODULE:ATTR (path/to/file.py:ATTR)"
        )
    return BUILT_IN[name]


def declared(name: object) -> Workload | type[Workload]:
    """What the workload named in the records' `workload` column declares for analysis and
    report (run_facts, report_sections): the built-in's, else (a user's lattice) the
    defaults of Workload."""
    return BUILT_IN.get(str(name), Workload)
