"""What the harness can measure: a workload it runs plain, builds as a lattice, and whose
outputs it compares, so that both runs are known to have done the same work.

A workload names its parameters (a profile's matrix varies them), builds the lattice and
its inputs for one set of parameters, and turns the lattice's return value into an
Outcome: a digest (equal digests = the same work) and the figures worth recording.
Plain runs call the lattice's own function with its electrons as plain calls, so every
workload runs the same code both ways (bench.adapters.covalent_api.run_plain).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bench.adapters.covalent_api import GraphCensus


class WorkloadError(ValueError):
    """A workload or its parameters are invalid; the message says what to change."""


@dataclass(frozen=True)
class Outcome:
    """What a run produced, reduced to what the harness compares and records."""

    digest: str  # equal digests: the two runs did the same work
    metrics: dict[str, Any] = field(default_factory=dict)  # runs.csv `outputs` (JSON)


class Workload(ABC):
    """Something the harness runs plain and as a Covalent lattice."""

    name: str = ""
    description: str = ""
    # Outcome.metrics keys that say how the run ran, not what it computed: plain and
    # Covalent runs are comparable only where these agree, and they are never summarized as
    # results (bench.analysis.decompose).
    run_facts: tuple[str, ...] = ()
    # The report sections (bench.report.registry, by name) drawn from this workload's rows.
    report_sections: tuple[str, ...] = ("scaling",)
    # Whether its plain runs record the graph's census (CENSUS_KEYS, in runs.csv `outputs`):
    # what the envelope is fitted on and what a prediction for the graph reads. It is read
    # from the configuration's first plain run, its work done after that run's clock.
    takes_census: bool = False

    @abstractmethod
    def defaults(self) -> dict[str, Any]:
        """Every parameter and its default; None for one the user must give."""

    @property
    def ref(self) -> tuple[str, str | None, str | None]:
        """(workload, inputs, digest) as bench.workloads.workload_for takes them: how another
        interpreter (a client of another Covalent release) loads the same workload."""
        return self.name, None, None

    def open_ended(self) -> bool:
        """Whether it takes parameters beyond defaults() (a lattice with **kwargs)."""
        return False

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The full parameters of one configuration (defaults filled in), or WorkloadError."""
        unknown = set(params) - set(self.defaults())
        if unknown and not self.open_ended():
            raise WorkloadError(
                f"unknown parameter(s) {', '.join(sorted(unknown))} for workload {self.name!r}; "
                f"its parameters: {', '.join(self.defaults()) or '(none)'}"
            )
        return {**self.defaults(), **params}

    def config_id(self, params: Mapping[str, Any]) -> str:
        """The configuration's one name in CSV rows, benchmark ids and plots: the workload and
        the parameters that differ from their defaults."""
        defaults = self.defaults()
        parts = [f"{k}={_short(v)}" for k, v in params.items() if defaults.get(k) != v]
        return "-".join([self.name, *parts])

    def dimensions(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters as runs.csv records them (JSON-friendly)."""
        return dict(params)

    def prepare(self, params: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Make what the runs need before any is measured (data files, say); raise
        WorkloadError with what to do if that is impossible."""

    @abstractmethod
    def lattice(self, params: Mapping[str, Any]) -> Any:
        """The Covalent lattice to dispatch (and to call plain)."""

    @abstractmethod
    def inputs(self, params: Mapping[str, Any]) -> tuple[tuple, dict]:
        """Fresh positional and keyword arguments for one run of the lattice."""

    @abstractmethod
    def outcome(self, value: Any, params: Mapping[str, Any]) -> Outcome:
        """The Outcome of the lattice's return value."""

    def census(self, params: Mapping[str, Any], recorded: GraphCensus | None = None
               ) -> dict[str, int]:
        """The graph Covalent will run for these parameters (CENSUS_KEYS): the census
        `recorded` in a plain run (the runner's first of the configuration), else read by
        one plain run of its own and the client's graph builds
        (bench.adapters.covalent_api.graph_census); once per configuration and process."""
        key = self._census_key(params)
        if key not in _CENSUSES:
            if recorded is not None:
                _CENSUSES[key] = recorded.census()
            else:
                from bench.adapters import covalent_api

                args, kwargs = self.inputs(params)
                _CENSUSES[key] = covalent_api.graph_census(self.lattice(params), args, kwargs)
        return _CENSUSES[key]

    def has_census(self, params: Mapping[str, Any]) -> bool:
        """Whether this process has read the census for these parameters already."""
        return self._census_key(params) in _CENSUSES

    def _census_key(self, params: Mapping[str, Any]) -> tuple[str, str]:
        return self.name, json.dumps(self.dimensions(params), sort_keys=True, default=repr)


# A graph's census (Workload.census): its nodes and edges (every sublattice's graph too), the
# tasks called, the sublattices, the serialized bytes of the tasks' outputs, of the
# parameters' values and of the outputs of the nodes Covalent adds (collections, unpacked
# items, results), and the depth. A description of the graph, never summarized as a result.
CENSUS_KEYS = ("nodes", "edges", "tasks", "sublattices", "output_bytes", "input_bytes",
               "generated_bytes", "depth")
_CENSUSES: dict[tuple[str, str], dict[str, int]] = {}


W = TypeVar("W", bound=Workload)
# The built-in workloads by name, in the order their modules registered them.
BUILT_IN: dict[str, Workload] = {}


def register(workload: W) -> W:
    """Make `workload` a built-in, named by its `name`: each built-in module registers its
    own when bench.workloads imports it."""
    if workload.name in BUILT_IN:
        raise ValueError(f"workload {workload.name!r} is registered twice")
    BUILT_IN[workload.name] = workload
    return workload


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)
