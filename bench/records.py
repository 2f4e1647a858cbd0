"""The run record: one schema, one append-only CSV writer, the environment of a run.

Every measured run becomes one row of runs.csv the moment it ends, so an interrupted
session keeps everything measured so far. Analysis and plots read these rows only.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


RUNS_CSV = "runs.csv"
PHASES_CSV = "phases.csv"
SUMMARY_CSV = "summary.csv"
FITS_CSV = "fits.csv"

ENV_COLUMNS = (
    "git_commit",
    "git_dirty",
    "python",
    "covalent",
    "torch",
    "torchvision",
    "dask",
    "cpu_count",
    "cpu_model",
)
# Phases of a run (phases.csv `phase`), in the order they happen. Times are seconds from the
# run's start (the client's first instruction).
SUBMIT = "submit"  # the dispatch call: graph build, serialization, upload
UNTIL_RUNNING = "until_running"  # dispatch returned -> the server marks it RUNNING
SERVER = "server"  # RUNNING -> terminal, as the server reports it
NODE = "node"  # one graph node's server-side span (staging, task, hand-off)
IN_TASK = "in_task"  # one task's own time, measured from inside (bench.measure.probes)
COMPLETION_DETECT = "completion_detect"  # terminal on the server -> our poll saw it
QUEUED_FOR_RETRIEVE = "queued_for_retrieve"  # in a batch: others' downloads came first
RETRIEVE = "retrieve"  # downloading the result
PHASES = (SUBMIT, UNTIL_RUNNING, SERVER, NODE, IN_TASK, COMPLETION_DETECT, QUEUED_FOR_RETRIEVE,
          RETRIEVE)

# Run statuses beside Covalent's own (COMPLETED, FAILED, CANCELLED, POSTPROCESSING_FAILED).
TIMEOUT = "TIMEOUT"  # the dispatch outlived the run's timeout and was cancelled
ERROR = "ERROR"  # the harness could not dispatch or follow the run

RUN_COLUMNS = (
    "timestamp",
    "session_id",
    "run_id",
    "profile",
    "workload",  # the workload's name (bench.workloads)
    "config_id",
    "params",  # JSON: the workload's parameters for this configuration
    "mode",  # plain | covalent
    "executor",  # empty for plain, else local | dask | external
    "round",  # 0-based over the warm-up and measured rounds of one benchmark
    "concurrency",  # workflows in the batch: dispatched at once / plain one after another
    "slot",  # this run's place in its batch (order of submission)
    "warmup",
    "wall_s",  # this run: from its start (dispatch call) to its result in hand
    "latency_s",  # from the batch's start to this run's result in hand
    "batch_wall_s",  # the whole batch; = wall_s when concurrency is 1
    "output_digest",  # the same-work check: equal digests, equal work (bench.workloads)
    "outputs",  # JSON: what the workload reports of its output (MNIST: accuracy, loss ...)
    "tasks_probed",  # tasks timed from inside / tasks that ran (server nodes; plain: probes)
    "dispatch_id",
    "status",
    "submit_s",  # the dispatch call: graph build, serialization, upload
    "server_s",  # result.end_time - result.start_time, as Covalent reports it
    "retrieve_s",  # downloading the finished result
    "stock_wall_s",  # what ct.get_result(wait=True)'s 1 s polling would have shown
    "server_cpu_s",  # CPU of the server's process tree during the run (idle tax on plain)
    "client_rss_mb",  # this process's RSS after the run
    "server_startup_s",
    "server_workers",  # the server's Dask cluster: workers x threads per worker
    "server_threads_per_worker",
    "error",
    *ENV_COLUMNS,
)
# Columns of runs.csv that phases.csv repeats, to join on and filter by.
RUN_KEYS = ("session_id", "run_id", "profile", "workload", "config_id", "mode", "executor",
            "round", "warmup")
# One row per run x phase.
PHASE_COLUMNS = (
    *RUN_KEYS,
    "phase",  # one of PHASES
    "task",
    "start_s",
    "duration_s",
    "cpu_s",  # process CPU (user + system) over the task
    "sys_cpu_s",  # of which in the kernel: page faults, mmap/munmap, I/O
    "page_faults",  # minor + major faults of the task's process over the task
    "task_env",  # KEY=value of bench.measure.probes.ENV_KNOBS as the task saw them
    "bytes",  # serialized size of the node's output (Covalent's manifest)
    "pid",
    "threads",
    "maxrss_mb",
)


@dataclass
class RunRecord:
    """A measured run, as the runner returns it; `row` makes it a runs.csv row."""

    mode: str  # plain | covalent
    executor: str  # "" for plain
    wall_s: float
    outcome: Any = None  # bench.workloads.Outcome, or None if the run failed
    run_id: str = ""
    dispatch_id: str = ""
    status: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    tasks_probed: str = ""


@dataclass(frozen=True)
class RunContext:
    """What a run's row says beside the run itself: session, configuration, round, server."""

    session_id: str
    profile: str
    workload: str
    config_id: str
    params: Mapping[str, Any]
    concurrency: int
    round: int
    warmup: bool
    server: Mapping[str, Any] = field(default_factory=dict)  # server_startup_s, workers ...


def run_row(context: RunContext, record: RunRecord) -> dict[str, Any]:
    """The one place a runs.csv row is built."""
    out = record.outcome
    return {
        "timestamp": utc_now(),
        "session_id": context.session_id,
        "run_id": record.run_id,
        "profile": context.profile,
        "workload": context.workload,
        "config_id": context.config_id,
        "params": dict(context.params),
        "mode": record.mode,
        "executor": record.executor,
        "round": context.round,
        "concurrency": context.concurrency,
        "warmup": context.warmup,
        "wall_s": round(record.wall_s, 4),
        "output_digest": out.digest if out else None,
        "outputs": out.metrics if out else None,
        "tasks_probed": record.tasks_probed,
        "dispatch_id": record.dispatch_id,
        "status": record.status,
        "error": record.error,
        **{k: round(v, 4) for k, v in record.timings.items()},
        **context.server,
        **environment(),
    }


def phase_rows(row: Mapping[str, Any], record: RunRecord) -> list[dict[str, Any]]:
    """The run's phases.csv rows, keyed like its runs.csv row."""
    keys = {k: row[k] for k in RUN_KEYS}
    return [{**keys, **phase} for phase in record.phases]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def environment() -> dict[str, Any]:
    """Where and with what a run happened; constant over a session."""
    commit = _git("rev-parse", "HEAD")
    return {
        "git_commit": commit[:12],
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else "",
        "python": platform.python_version(),
        "covalent": _version("covalent"),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "dask": _version("dask"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
    }


class SchemaMismatchError(RuntimeError):
    pass


class CsvAppender:
    """Appends rows to one CSV file of a fixed schema, header first, flushed per row."""

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...]) -> None:
        self.path, self.columns = Path(path), columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = tuple(next(csv.reader(f), ()))
            if header != columns:
                raise SchemaMismatchError(
                    f"{self.path} has other columns than this version writes; move it away "
                    f"or choose another output directory (--bench-out)"
                )

    def append(self, *rows: Mapping[str, Any]) -> None:
        for row in rows:
            unknown = set(row) - set(self.columns)
            if unknown:
                raise KeyError(f"not in the {self.path.name} schema: {sorted(unknown)}")
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in self.columns})
            f.flush()
            os.fsync(f.fileno())


def runs_writer(out_dir: str | os.PathLike) -> CsvAppender:
    return CsvAppender(Path(out_dir) / RUNS_CSV, RUN_COLUMNS)


def phases_writer(out_dir: str | os.PathLike) -> CsvAppender:
    return CsvAppender(Path(out_dir) / PHASES_CSV, PHASE_COLUMNS)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value


class NoRecordsError(FileNotFoundError):
    pass


# Columns holding JSON objects whose keys become columns of the frame the analysis reads.
JSON_COLUMNS = ("params", "outputs")


def load_runs(in_dir: str | os.PathLike) -> pd.DataFrame:
    """runs.csv as a frame, each parameter and output a column of its own."""
    import pandas as pd

    path = Path(in_dir) / RUNS_CSV
    if not path.is_file() or path.stat().st_size == 0:
        raise NoRecordsError(
            f"no run records at {path}. Run the benchmarks first, e.g.\n"
            f"  pytest bench --benchmark-only --bench-profile smoke --bench-out {in_dir}"
        )
    runs = pd.read_csv(path, dtype={"executor": str, "dispatch_id": str, "error": str,
                                    "params": str, "outputs": str, "output_digest": str,
                                    "tasks_probed": str})
    runs["executor"] = runs["executor"].fillna("")
    runs["concurrency"] = runs["concurrency"].fillna(1)
    for column in JSON_COLUMNS:
        decoded = runs[column].map(lambda t: json.loads(t) if isinstance(t, str) and t else {})
        expanded = pd.DataFrame(decoded.tolist(), index=runs.index)
        new = [c for c in expanded.columns if c not in runs.columns]
        runs = pd.concat([runs, expanded[new]], axis=1)
    return runs


def load_phases(in_dir: str | os.PathLike) -> pd.DataFrame | None:
    import pandas as pd

    path = Path(in_dir) / PHASES_CSV
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path, dtype={"executor": str, "task": str})
