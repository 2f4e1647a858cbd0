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
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mnist_core.config import WorkflowConfig

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
RUN_COLUMNS = (
    "timestamp",
    "session_id",
    "run_id",
    "profile",
    "config_id",
    *WorkflowConfig.fields(),
    "mode",  # plain | covalent
    "executor",  # empty for plain, else local | dask
    "round",  # 0-based over the warm-up and measured rounds of one benchmark
    "concurrency",  # workflows in the batch: dispatched at once / plain one after another
    "slot",  # this run's place in its batch (order of submission)
    "warmup",
    "wall_s",  # this run: from its start (dispatch call) to its result in hand
    "latency_s",  # from the batch's start to this run's result in hand
    "batch_wall_s",  # the whole batch; = wall_s when concurrency is 1
    "accuracy",  # of the best model, for a sweep (models > 1)
    "accuracies",  # JSON list, one per model of a sweep
    "test_loss",
    "weights_sha256",
    "torch_threads",  # as seen inside train_model
    "resolved_device",
    "train_losses",  # JSON list
    "train_counter",  # JSON list
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
# One row per run x phase. Times are seconds from the run's start (the client's first
# instruction); `task` names the task for per-task phases.
PHASE_COLUMNS = (
    "session_id",
    "run_id",
    "profile",
    "config_id",
    "mode",
    "executor",
    "round",
    "warmup",
    "phase",  # submit | until_running | server | node | in_task | completion_detect | retrieve
    "task",
    "start_s",
    "duration_s",
    "cpu_s",  # process CPU (user + system) over the task
    "sys_cpu_s",  # of which in the kernel: page faults, mmap/munmap, I/O
    "page_faults",  # minor + major faults of the task's process over the task
    "task_env",  # KEY=value of bench.probes.ENV_KNOBS as the task saw them
    "bytes",  # serialized size of the node's output (Covalent's manifest)
    "pid",
    "threads",
    "maxrss_mb",
)


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
