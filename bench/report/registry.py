"""The report's plots and sections, each declared once, where it is drawn or built.

A plot is one `@plot(...)` on its drawing function: its name (`Session.plot(name)`), file,
caption, the section that shows it, when the data supports it, which findings topics it
shows (and how well: lower is preferred) and whether it can open the page as the key plot.
A section is one `@section(...)` on the function that builds its blocks from the data and
its drawn figures. A table derived from the records for the sections, and written beside
the page as a CSV, is one `@derived(...)` on the function that computes it. Everything
else derives from these lists: which plots are drawn, which tables written, which stale
files go, the page's order, each finding's plot and the key plot
(bench.report.page.make_report).

A section with `per_workload` is built from the rows of the workloads that name it in their
`report_sections` (bench.workloads.base.Workload; a user's lattice has the defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import pandas as pd

from bench.analysis.envelope import StoredEnvelope
from bench.report.blocks import Block, Figure
from bench.workloads import declared


@dataclass(frozen=True, eq=False)
class ReportData:
    """What a report is made from, read once from the records (make_report)."""

    out_dir: Path
    runs: pd.DataFrame  # measured runs of the detailed configurations
    summary: pd.DataFrame  # their summary rows
    full_summary: pd.DataFrame  # every configuration's summary rows
    fits: pd.DataFrame
    phases: pd.DataFrame | None
    diffs: pd.DataFrame  # environments against the reference (decompose.environment_diffs)
    definitions: list[dict]  # covalent_environments.json of these sessions
    probes: pd.DataFrame  # the probes' own cost (decompose.probe_cost)
    history: pd.DataFrame | None  # the gate's history.csv
    notes: list[str]  # what the records themselves say (damaged lines, runs left out)
    # Profiled rounds (--bench-stacks): hotspots.csv of these sessions, and what sampling
    # cost (decompose.stacks_cost); empty without them.
    hotspots: pd.DataFrame = field(default_factory=pd.DataFrame)
    stacks: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Every run of the records (the ones above are the detailed configurations' measured
    # runs), for the derived tables.
    all_runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    # A stored envelope to set beside this session's graphs (`--envelope`;
    # bench.analysis.envelope.StoredEnvelope), or None.
    envelope: StoredEnvelope | None = None
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def table(self, name: str) -> pd.DataFrame:
        """The derived table `name` (declared with `@derived`), computed once."""
        if name not in self._tables:
            (d,) = [d for d in DERIVED if d.name == name] or [None]
            if d is None:
                raise KeyError(f"no derived table {name!r}: declare it with @derived")
            self._tables[name] = d.compute(self)
        return self._tables[name]

    def of_workloads(self, names: list[str]) -> ReportData:
        """The summary and fits of these workloads only."""
        return replace(self, _tables={}, full_summary=self.full_summary[
            self.full_summary["workload"].astype(str).isin(names)],
            fits=self.fits[self.fits["workload"].astype(str).isin(names)])


Draw = Callable[[ReportData, Path], object]  # writes the plot's file, or nothing it can't draw
Build = Callable[[ReportData, list[Figure]], list[Block]]
F = TypeVar("F", bound=Callable)


def _always(data: ReportData) -> bool:
    return True


@dataclass(frozen=True)
class Plot:
    name: str
    file: str  # beside the page
    caption: str  # one line: what to look at
    section: str  # the Section that shows it
    draw: Draw
    when: Callable[[ReportData], bool] = _always  # whether the data supports it
    topics: Mapping[str, int] = field(default_factory=dict)  # findings topic -> rank
    # Rank as the plot that opens the page (the drawn one of lowest rank); None: never. In
    # use: environments 0, matrix_scaling 1, scaling 2, overhead_parts 3, overhead_ci 4,
    # overhead 5, wall_time 6.
    key: int | None = None
    sweep_key: bool = False  # the key plot only for a session of several configurations

    def figure(self) -> Figure:
        return Figure(self.file, self.caption, self.name)


@dataclass(frozen=True)
class Section:
    name: str
    order: int  # its place on the page (ascending), after the summary
    build: Build  # its blocks, placing the figures of its plots that were drawn
    per_workload: bool = False


@dataclass(frozen=True)
class Derived:
    name: str
    file: str  # the CSV written beside the page when the table is not empty
    compute: Callable[[ReportData], pd.DataFrame]


PLOTS: list[Plot] = []  # in declaration order: the order of a section's figures
SECTIONS: list[Section] = []
DERIVED: list[Derived] = []


def derived(name: str, file: str) -> Callable[[F], F]:
    """Declare the decorated function (data) -> DataFrame as the derived table `name`:
    computed once per report (ReportData.table), written to `file` beside the page."""
    def register(compute: F) -> F:
        if any(d.name == name or d.file == file for d in DERIVED):
            raise ValueError(f"derived table {name!r} ({file}) is declared twice")
        DERIVED.append(Derived(name, file, compute))
        return compute
    return register


def plot(name: str, file: str, caption: str, section: str,
         when: Callable[[ReportData], bool] = _always, topics: Mapping[str, int] | None = None,
         key: int | None = None, sweep_key: bool = False) -> Callable[[F], F]:
    """Declare the decorated function (data, path) as the plot that draws `file`."""
    def register(draw: F) -> F:
        taken = [p for p in PLOTS if name == p.name or file == p.file]
        if taken:
            raise ValueError(f"plot {name!r} ({file}) clashes with {taken[0]}")
        PLOTS.append(Plot(name, file, caption, section, draw, when,
                          MappingProxyType(dict(topics or {})), key, sweep_key))
        return draw
    return register


def section(name: str, order: int, per_workload: bool = False) -> Callable[[F], F]:
    """Declare the decorated function (data, figures) as the builder of section `name`."""
    def register(build: F) -> F:
        if any(s.name == name for s in SECTIONS):
            raise ValueError(f"section {name!r} is declared twice")
        SECTIONS.append(Section(name, order, build, per_workload))
        return build
    return register


def sections() -> list[Section]:
    return sorted(SECTIONS, key=lambda s: s.order)


def plots_of(section_name: str) -> list[Plot]:
    return [p for p in PLOTS if p.section == section_name]


def scoped(sec: Section, data: ReportData) -> ReportData | None:
    """The data a section is built from; None where no workload of the records asks for a
    per-workload section."""
    if not sec.per_workload:
        return data
    names = [str(w) for w in dict.fromkeys(data.full_summary["workload"].dropna())
             if sec.name in declared(w).report_sections]
    return data.of_workloads(names) if names else None


def topic_figure(topic: str, figures: Mapping[str, Figure]) -> Figure | None:
    """The drawn plot that best shows a findings topic."""
    ranked = sorted((p.topics[topic], i) for i, p in enumerate(PLOTS)
                    if topic in p.topics and p.file in figures)
    return figures[PLOTS[ranked[0][1]].file] if ranked else None


def key_figure(sweep: bool, figures: Mapping[str, Figure]) -> Figure | None:
    """The drawn plot that opens the page beside the findings."""
    ranked = sorted((p.key, i) for i, p in enumerate(PLOTS)
                    if p.key is not None and (sweep or not p.sweep_key) and p.file in figures)
    return figures[PLOTS[ranked[0][1]].file] if ranked else None
