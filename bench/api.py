"""The harness from Python: a notebook cell, a script. One call measures a lattice as it is
(plain, then dispatched to a real Covalent server), through the same engine, probes,
records and report as `pytest bench --benchmark-only`:

    from bench import measure
    s = measure(workflow, model=NeuralNetwork(), executors=["local", "dask"], rounds=6)
    s            # in Jupyter: the findings, then the key plot
    s.summary    # DataFrames: .runs, .phases, .summary
    s.plot("overhead_parts")

    s = Session.load("reports")   # a CLI session's records, the same way

The lattice's arguments are measure()'s own keyword (or positional) arguments: numbers,
strings, booleans and lists of them are parameters (recorded in runs.csv, part of the
configuration's id); anything else (a model, an array, a function) is copied afresh for
every run, so that each run starts from equal inputs. `inputs=` is a factory called for
every run instead (as --bench-inputs), `matrix=` sweeps parameters (as [[matrix]]).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import inspect
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config.profiles import (
    LATTICE_PROFILE,
    Profile,
    ProfileError,
    profile_doc,
    profile_from_doc,
)
from bench.engine import (
    Engine,
    SessionEndedError,
    Settings,
    SetupError,
    plan,
    planned_runs,
    run_all,
)
from bench.progress import Progress, duration
from bench.records import RUNS_CSV, NoRecordsError, load_phases, load_runs, utc_now
from bench.workloads import Workload, WorkloadError, workload_for

__all__ = ["BenchError", "Interrupted", "Session", "measure"]

DEFAULT_OUT = "covalent-bench"  # under the working directory: one folder per session
# Values that are parameters (recorded, part of the id), not objects copied per run.
_SCALARS = (bool, int, float, str, type(None))


class BenchError(ValueError):
    """A measurement that cannot be done as asked; the message says what to change."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"{type(self).__name__}: {self}"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or a kernel interrupt stopped measure(); the message says where the rows are."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def _is_parameter(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    return isinstance(value, list | tuple) and all(isinstance(v, _SCALARS) for v in value)


def _fresh_inputs(objects: Mapping[str, Any], factory: Callable[..., Any] | None
                  ) -> Callable[..., dict[str, Any]]:
    """The inputs factory of a measure() call: the objects given, deep-copied for every run
    (a plain run trains a model in place; the next must start from the same weights), then
    what the user's factory makes."""

    def inputs(**params: Any) -> dict[str, Any]:
        made = copy.deepcopy(dict(objects))
        if factory is not None:
            extra = factory(**params)
            if not isinstance(extra, Mapping):
                raise TypeError(f"inputs= must return a dict of keyword arguments, got "
                                f"{type(extra).__name__}")
            made.update(extra)
        return made

    inputs.__qualname__ = inputs.__name__ = "measure_inputs"
    return inputs


def _workload(workflow: Any, args: Sequence[Any], kwargs: Mapping[str, Any],
              inputs: Callable[..., Any] | str | None, digest: Callable[[Any], Any] | str | None
              ) -> tuple[Workload, dict[str, Any]]:
    """The workload and its parameters for measure()'s workflow and arguments."""
    if isinstance(workflow, str) and ":" not in workflow:  # a built-in workload by name
        if args or inputs or digest:
            raise BenchError(f"built-in workload {workflow!r} takes parameters as keywords "
                             f"only (no positional arguments, inputs= or digest=)")
        return workload_for(workflow), dict(kwargs)
    probe = workload_for(workflow)  # the lattice alone: its signature binds the arguments
    fn_params = probe.signature.parameters  # type: ignore[attr-defined]
    try:
        bound = inspect.Signature(list(fn_params.values())).bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise BenchError(f"the workflow's arguments do not fit its signature "
                         f"{probe.signature}: {exc}") from None  # type: ignore[attr-defined]
    given = dict(bound.arguments)
    for name, p in fn_params.items():  # **kwargs of the lattice arrive as one dict
        if p.kind is p.VAR_KEYWORD and name in given:
            given.update(given.pop(name))
        elif p.kind is p.VAR_POSITIONAL and name in given:
            raise BenchError("a workflow with *args takes its arguments by keyword here")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in given.items()
              if _is_parameter(v)}
    objects = {k: v for k, v in given.items() if k not in params}
    if not objects and inputs is None:
        return (workload_for(workflow, digest=digest) if digest is not None else probe), params
    if isinstance(inputs, str):
        from bench.workloads.lattice import resolve

        inputs = resolve(inputs, "inputs=")[1]
    return workload_for(workflow, _fresh_inputs(objects, inputs), digest), params


def _environments(environments: Any) -> list[dict[str, Any]] | None:
    """{"name": "covalent==0.238.0"} / ["name=requirement"] / [{"name", "requirement",
    "env"}] -> the [[environments]] tables."""
    if environments is None:
        return None
    if isinstance(environments, Mapping):
        return [{"name": str(k), "requirement": str(v)} for k, v in environments.items()]
    tables = []
    for item in environments:
        if isinstance(item, str):
            name, sep, requirement = item.partition("=")
            if not sep:
                raise BenchError(f"an environment is NAME=REQUIREMENT (e.g. "
                                 f"old=covalent==0.238.0), got {item!r}")
            tables.append({"name": name.strip(), "requirement": requirement.strip()})
        else:
            tables.append(dict(item))
    return tables


def measure(
    workflow: Any,
    /,
    *args: Any,
    inputs: Callable[..., Mapping[str, Any]] | str | None = None,
    digest: Callable[[Any], Any] | str | None = None,
    profile: str | None = None,
    executors: Sequence[str] | str | None = None,
    rounds: int | None = None,
    warmup_rounds: int | None = None,
    concurrency: int | None = None,
    timeout_s: float | None = None,
    probes: str | None = None,
    matrix: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
    environments: Mapping[str, str] | Sequence[Any] | None = None,
    precision: float | None = None,
    max_rounds: int = 30,
    time_budget_s: float | None = None,
    stacks: int = 0,
    stacks_rate: int = 50,
    reference: bool = False,
    out: str | Path | None = None,
    address: str | None = None,
    dask_scheduler: str | None = None,
    external_workers: int = 2,
    covalent_workers: int | None = None,
    threads_per_worker: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Session:
    """Measure `workflow` (a ct.lattice object, "MODULE:ATTR", or a built-in workload's name)
    plain and on Covalent, and return the Session of its records.

    The run settings are a profile's (`profile`: a name in bench/config/ or a .toml path;
    default "lattice": 1 warm-up + 6 measured rounds on local and dask), changed by
    `executors`, `rounds`, `warmup_rounds`, `concurrency`, `timeout_s`, `probes`; `matrix`
    sweeps parameters ({"n": [1, 2, 4]}, or a list of such tables); `environments` measures
    other Covalent releases side by side ({"old": "covalent==0.238.0"}; the first is the
    reference; needs a workflow importable by name); `precision` adds rounds until every
    orchestration CI is that narrow (seconds; with `max_rounds`, `time_budget_s`); `stacks`
    adds that many profiled rounds per mode (py-spy samples every process of the run;
    `Session.hotspots` and `Session.plot("flame")` show where the time went, by function;
    `stacks_rate`: samples per second per thread); `reference` also runs the envelope's
    reference graph, so that a prediction from an envelope is scaled by this host's speed.

    Its own server is started (isolated, loopback) and stopped on return, error or
    interrupt; `address` attaches to a running one instead. Records go to `out` (default
    ./covalent-bench/<time>), a row the moment each run ends. Ctrl-C (a kernel interrupt)
    records the run in flight as INTERRUPTED, cancels its dispatch, stops the servers and
    raises Interrupted (a KeyboardInterrupt); `Session.load(out)` opens what was measured."""
    try:
        _check_options(precision=precision, max_rounds=max_rounds, stacks=stacks or None,
                       stacks_rate=stacks_rate,
                       time_budget_s=time_budget_s, external_workers=external_workers,
                       covalent_workers=covalent_workers, threads_per_worker=threads_per_worker)
        workload, params = _workload(workflow, args, kwargs, inputs, digest)
        name = profile or LATTICE_PROFILE
        where, base = profile_doc(name)
        doc: dict[str, Any] = {k: v for k, v in base.items() if k not in
                               ("workload", "inputs", "digest", "params", "matrix")}
        if isinstance(workflow, str) and ":" not in workflow and profile is not None:
            doc.update({k: base[k] for k in ("params", "matrix") if k in base})
        doc["workload"] = workload
        settings = {"executors": executors, "rounds": rounds, "warmup_rounds": warmup_rounds,
                    "concurrency": concurrency, "timeout_s": timeout_s, "probes": probes}
        doc.update({k: (list(v) if k == "executors" and not isinstance(v, str) else v)
                    for k, v in settings.items() if v is not None})
        if params:
            doc["params"] = {**doc.get("params", {}), **params}
        if matrix is not None:
            doc["matrix"] = [dict(m) for m in ([matrix] if isinstance(matrix, Mapping)
                                               else matrix)]
        tables = _environments(environments)
        if tables is not None:
            doc["environments"] = tables
        if reference:
            doc["reference"] = True
        from mnist_core.data import resolve_data_dir

        the_profile = profile_from_doc(Path(where).stem, doc,
                                       data_dir=str(resolve_data_dir(data_dir)), where=where)
        out_dir = Path(out) if out is not None else (
            Path.cwd() / DEFAULT_OUT / utc_now().replace(":", "").replace("+0000", ""))
        run_settings = Settings(
            out_dir=out_dir.resolve(), covalent_address=address, covalent_workers=covalent_workers,
            covalent_threads_per_worker=threads_per_worker, dask_scheduler=dask_scheduler,
            external_workers=external_workers, precision=precision, max_rounds=max_rounds,
            time_budget_s=time_budget_s, stacks=stacks, stacks_rate=stacks_rate)
        _importable_where_needed(the_profile)
        cases = plan(the_profile, run_settings)
    except (ProfileError, WorkloadError, SetupError) as exc:
        raise BenchError(str(exc)) from None
    return _run(the_profile, run_settings, cases, progress)


def _importable_where_needed(profile: Profile) -> None:
    """A Covalent environment's client imports the workflow by name: refuse a lattice from a
    notebook cell there before any server starts, not run by run."""
    for scenario in profile.scenarios:
        if scenario.environments and scenario.workload.ref[0] is None:
            raise BenchError(
                f"workflow {scenario.workload.name!r} is defined in this process (a notebook "
                f"cell, or given objects as arguments), and a Covalent environment's client "
                f"cannot import it: measure it without environments=, or put the lattice in "
                f"a module (with inputs= a module's function) and pass it as 'module:attr'")


def _check_options(**values: Any) -> None:
    """The CLI's validators for the same settings (bench.config.options): one line each."""
    from bench.config import options

    checks = {"precision": options.precision_seconds, "max_rounds": options.max_rounds,
              "stacks": options.stack_rounds, "stacks_rate": options.stacks_rate,
              "time_budget_s": options.precision_seconds,  # seconds > 0, finite
              "external_workers": options.worker_count,
              "covalent_workers": options.worker_count,
              "threads_per_worker": options.threads_per_worker}
    for name, value in values.items():
        if value is None:
            continue
        try:
            checks[name](str(value))
        except argparse.ArgumentTypeError as exc:
            raise BenchError(f"{name}={value!r}: {exc}") from None


def _run(profile: Profile, settings: Settings, cases: list, progress: bool) -> Session:
    """The engine over every case, a progress bar beside it; the Session afterwards."""
    bar = BarProgress(planned_runs(cases), enabled=progress)
    bar.announce(len(cases), len(profile.scenarios),
                 ", ".join(w.name for w in profile.workloads),
                 at_most=settings.precision is not None)
    failed: list[str] = []
    engine = Engine(profile, settings, bar)
    try:
        with bar, _quiet_service_logs():
            try:
                engine.__enter__()
            except SetupError as exc:
                raise BenchError(str(exc)) from None
            except Exception as exc:  # a server that will not start, a dead address: one line
                raise BenchError(_first_line(exc)) from None
            try:
                for _case, rows in run_all(engine, cases):
                    failed += [f"{r['config_id']} {r['executor'] or 'plain'} round "
                               f"{r['round']}: {r['status']}: {r['error']}"
                               for r in rows if r["status"] != "COMPLETED"]
            except SessionEndedError as exc:
                raise BenchError(str(exc)) from None
            finally:
                engine.__exit__(None, None, None)
    except KeyboardInterrupt:
        _finish(engine)
        raise Interrupted(f"{engine.rows} run(s) recorded in {engine.out_dir} (the one in "
                          f"flight as INTERRUPTED, its dispatch cancelled, the servers "
                          f"stopped); Session.load({str(engine.out_dir)!r}) opens them"
                          ) from None
    _finish(engine)
    if failed:
        warnings.warn(f"{len(failed)} run(s) did not complete; the first: {failed[0][:300]}",
                      RuntimeWarning, stacklevel=3)
    if engine.rows == 0:
        raise BenchError("nothing was measured (every round skipped?)")
    return Session(engine.out_dir)


def _finish(engine: Engine) -> None:
    """The summary, whatever ended the session; a second interrupt does not lose it."""
    with contextlib.suppress(Exception):
        engine.finish()


@contextlib.contextmanager
def _quiet_service_logs() -> Iterator[None]:
    """The services log their start and stop at INFO; in a notebook that is noise under
    the progress bar (the records keep the start-up times)."""
    import logging

    logger = logging.getLogger("bench")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:600]


class BarProgress(Progress):
    """The CLI's progress (its lines, its ETA) as a bar that renders in Jupyter and in a
    terminal: tqdm's widget where ipywidgets is installed, its text bar elsewhere."""

    def __init__(self, planned: dict[str, int], enabled: bool = True) -> None:
        super().__init__(None, planned)
        self.enabled = enabled
        self.bar: Any = None
        self.text_bar_in_a_kernel = False

    def __enter__(self) -> BarProgress:
        if self.enabled:
            tqdm = _tqdm()
            self.text_bar_in_a_kernel = ("ipykernel" in sys.modules
                                         and tqdm.__module__.startswith("tqdm.std"))
            self.bar = tqdm(total=self.total, unit="run", dynamic_ncols=True,
                               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs "
                                          "[{elapsed}{postfix}]")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def run_done(self, config_id: str, label: str, round_: int, rounds: int, warmup: bool,
                 wall_s: float, status: str, elapsed_s: float) -> None:
        super().run_done(config_id, label, round_, rounds, warmup, wall_s, status, elapsed_s)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.set_description_str(f"{label} round {round_ + 1}/{rounds}", refresh=False)
            self.bar.set_postfix_str(f"ETA {duration(self.eta())}", refresh=False)
            self.bar.update(1)

    def skipped(self, label: str, runs: int = 1) -> None:
        super().skipped(label, runs)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def _line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            print(text, file=sys.stderr)
        elif not self.text_bar_in_a_kernel:
            self.bar.write(text, file=sys.stderr)
        # A text bar in a notebook cannot move up a line: each line written beside it would
        # re-print the bar under it, three lines a run. The bar alone carries the ETA there;
        # the runs are in runs.csv and the findings.


def _tqdm() -> Any:
    try:
        import ipywidgets  # noqa: F401  (tqdm's notebook bar needs it)
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm.std import tqdm
    return tqdm


# --- the records of a session ---------------------------------------------------------------


@dataclass(frozen=True)
class Plot:
    """A plot of the report: shown inline in Jupyter (PNG), its path elsewhere."""

    name: str
    path: Path
    caption: str = ""

    def _repr_png_(self) -> bytes:
        return self.path.read_bytes()

    def __repr__(self) -> str:
        return f"Plot({self.name!r}, {str(self.path)!r})"


class Session:
    """The records of one benchmark directory (measure()'s, or the CLI's --bench-out): run
    and phase rows, the summary, the findings and the report's plots."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()
        if not (self.path / RUNS_CSV).is_file():
            raise NoRecordsError(f"{self.path}: no {RUNS_CSV}; measure something first "
                                 f"(bench.run(...) or pytest bench --benchmark-only)")
        self._report: Any = None

    @classmethod
    def load(cls, path: str | Path) -> Session:
        """Open a directory of records, the CLI's or measure()'s."""
        return cls(path)

    @property
    def runs(self) -> pd.DataFrame:
        return load_runs(self.path)

    @property
    def phases(self) -> pd.DataFrame | None:
        return load_phases(self.path)

    @property
    def hotspots(self) -> pd.DataFrame:
        """Per profiled run (stacks=N), part and role: seconds per function (hotspots.csv);
        empty without profiled rounds. The report's table: `bench.report.profiles`."""
        from bench.records import load_hotspots

        return load_hotspots(self.path)

    @property
    def growth(self) -> pd.DataFrame:
        """With environments and profiled rounds: per part, role and function, each
        environment's seconds per run minus the reference's, with CI, p and the corrected q
        (bench.analysis.hotspots.environment_differentials; the report's hotspot_diffs.csv).
        `bench.analysis.hotspots.growers(session.growth)`: each part's top grower."""
        from bench.analysis.decompose import environments_of
        from bench.analysis.hotspots import environment_differentials

        return environment_differentials(self.hotspots, environments_of(self.runs))

    @functools.cached_property
    def summary(self) -> pd.DataFrame:
        """Per configuration and executor: medians, overheads and their CIs (summary.csv,
        written once when first asked for)."""
        from bench.report.tables import write_summary

        return write_summary(self.path)[0]

    def report(self) -> Any:
        """The report (README.md, index.html, plots) written into the directory, once."""
        if self._report is None:
            self._report = _make_report(self.path)
        return self._report

    @property
    def findings(self) -> str:
        """The report's findings, one per line, each with its 95 % CI."""
        block = self._findings_block()
        return "\n".join(f"- {text}" for text, _ in block.items) if block else ""

    @property
    def same_output(self) -> bool:
        """Whether every configuration did the same work plain and on Covalent."""
        return bool(self.summary["same_output"].fillna(False).astype(bool).all())

    def plot(self, name: str) -> Plot:
        """A plot of the report by name ('overhead_parts', 'wall_time', ...)."""
        figures = {f.name or f.file: f for f in self._figures()}
        hit = figures.get(name) or next((f for f in figures.values()
                                         if f.file in (name, f"{name}.png")), None)
        if hit is None:
            raise KeyError(f"no plot {name!r} in this report; it has: "
                           f"{', '.join(sorted(figures)) or '(none)'}")
        return Plot(hit.name or name, self.path / hit.file, hit.caption)

    @property
    def plots(self) -> list[str]:
        return sorted(f.name or f.file for f in self._figures())

    def save(self, path: str | Path) -> Path:
        """Write the records and the report into `path` as the CLI writes them (runs.csv,
        phases.csv, summary.csv, ... and the page), for `python -m bench report` and the
        gate. `path` must not hold records already."""
        dest = Path(path).resolve()
        if (dest / RUNS_CSV).exists() and dest != self.path:
            raise BenchError(f"{dest} holds records already; save into an empty directory")
        if dest != self.path:
            dest.mkdir(parents=True, exist_ok=True)
            for item in self.path.iterdir():
                if item.is_file() and item.suffix in (".csv", ".json"):
                    shutil.copy2(item, dest / item.name)
        _make_report(dest)
        return dest

    def _findings_block(self) -> Any:
        from bench.report.blocks import Findings

        return next((b for b in self.report().blocks if isinstance(b, Findings)), None)

    def _figures(self) -> list[Any]:
        from bench.report.blocks import Figure, Findings

        out = []
        for block in self.report().blocks:
            if isinstance(block, Figure):
                out.append(block)
            elif isinstance(block, Findings) and block.key is not None:
                out.append(block.key)
        return out

    def _repr_html_(self) -> str:
        """The report's first screen: the findings, then the key plot."""
        from bench.report.html import fragment

        report = self.report()
        block = self._findings_block()
        head = f"<h3>{report.title}</h3><p><code>{self.path}</code></p>"
        return head + (fragment([block], self.path) if block else "")

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r})\n{self.findings}"


def _make_report(path: Path) -> Any:
    """bench.report's make_report, without leaving matplotlib's Agg backend behind in a
    notebook (the report selects it on import; the user's own plots need theirs)."""
    import matplotlib

    backend = matplotlib.get_backend()
    from bench.report.page import make_report

    if matplotlib.get_backend() != backend:
        import matplotlib.pyplot as plt

        with contextlib.suppress(Exception):
            plt.switch_backend(backend)
    return make_report(path)

