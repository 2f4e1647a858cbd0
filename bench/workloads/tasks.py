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


class GraphWorkload(Workload):
    """The envelope's graph (bench.workloads.pertask.layered): any task count, width against
    depth, fan-in, bytes per edge and sublattice nesting, one lattice for all of them."""

    name = "graph"
    # The reference graph: the sweep's 10-task fan-out (envelope.toml's "fan-out" part).
    # A session run with `reference = true` (--bench-reference) measures it beside its own
    # workload, so that a prediction can be scaled by how fast Covalent runs on this host
    # now against the envelope's session (bench.analysis.envelope.reference_scales).
    reference = {"tasks": 10}
    # The graph's census: what the envelope's model is fitted on, the same figures
    # `python -m bench predict` reads from a user's graph.
    takes_census = True
    description = ("ceil(tasks / width) layers of `width` tasks (0: all in one), each fed "
                   "by `fan_in` of the layer before, payload_bytes on every edge, one gather "
                   "task, inside `nesting` sublattices; returns a checksum.")

    def defaults(self) -> dict[str, Any]:
        return {"tasks": 10, "width": 0, "fan_in": 1, "payload_bytes": 0, "nesting": 0}

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        full = super().check(params)
        for key, low in (("tasks", 1), ("width", 0), ("fan_in", 1), ("payload_bytes", 0),
                         ("nesting", 0)):
            value = full[key]
            if isinstance(value, float) and value.is_integer():
                value = full[key] = int(value)  # 1e6 in a TOML file
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise WorkloadError(f"{key} must be an integer >= {low}, got {value!r}")
        full["width"] = full["width"] or full["tasks"]  # 0: one layer, a fan-out
        if full["width"] > full["tasks"]:
            raise WorkloadError(f"width ({full['width']}) cannot exceed tasks "
                                f"({full['tasks']})")
        if full["fan_in"] > full["width"]:
            raise WorkloadError(f"fan_in ({full['fan_in']}) cannot exceed width "
                                f"({full['width']}): a task is fed by tasks of the layer "
                                f"before")
        return full

    def lattice(self, params: Mapping[str, Any]) -> Any:
        from bench.workloads import pertask

        return pertask.layered

    def inputs(self, params: Mapping[str, Any]) -> tuple[tuple, dict]:
        return (), dict(params)

    def outcome(self, value: Any, params: Mapping[str, Any]) -> Outcome:
        from bench.workloads.pertask import layered_value

        expected = layered_value(params["tasks"], params["width"], params["fan_in"])
        return Outcome(digest(value), {"correct": value == expected})


register(GraphWorkload())
