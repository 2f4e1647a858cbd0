"""The run record: one schema, one append-only CSV writer, the environment of a run.

Every measured run becomes one row of runs.csv the moment it ends, so an interrupted
session keeps everything measured so far. Analysis and plots read these rows only.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import platform
import re
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
# What each Covalent environment of a session was: requirement, variables, what got installed,
# whether it came up. Keyed by session id, so sessions appending to one directory keep theirs.
COVALENT_ENVIRONMENTS_JSON = "covalent_environments.json"
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
IN_TASK = "in_task"  # one task's own time, measured from inside (bench.run.probes)
COMPLETION_DETECT = "completion_detect"  # terminal on the server -> our poll saw it
QUEUED_FOR_RETRIEVE = "queued_for_retrieve"  # in a batch: others' downloads came first
RETRIEVE = "retrieve"  # downloading the result
PHASES = (SUBMIT, UNTIL_RUNNING, SERVER, NODE, IN_TASK, COMPLETION_DETECT, QUEUED_FOR_RETRIEVE,
          RETRIEVE)

# Run statuses beside Covalent's own (COMPLETED, FAILED, CANCELLED, POSTPROCESSING_FAILED).
TIMEOUT = "TIMEOUT"  # the dispatch outlived the run's timeout and was cancelled
ERROR = "ERROR"  # the harness could not dispatch or follow the run (server gone ...)
INTERRUPTED = "INTERRUPTED"  # Ctrl-C or SIGTERM during the run
# Flags (runs.csv `flags`): a completed run whose measurement saw something else happen.
# Flagged runs are kept out of the statistics unless asked for (--include-flagged).
WORKER_RESTART = "worker_restart"  # a process of the server's tree died during the run
# A profiled round (--bench-stacks): its stacks were sampled; never in any figure (not even
# with --include-flagged), only in the sampling's own cost and the profiles.
PROFILED = "profiled"

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
    "environment",  # the Covalent environment of a Covalent run ([[environments]]); else empty
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
    "flags",  # what else happened during the run (WORKER_RESTART:n); empty for a clean run
    "probes",  # on: tasks timed from inside (every statistic); off: bare, for the probes' cost
    "dispatch_id",
    "status",
    "submit_s",  # the dispatch call: graph build, serialization, upload
    "server_s",  # result.end_time - result.start_time, as Covalent reports it
    "retrieve_s",  # downloading the finished result
    "stock_wall_s",  # what ct.get_result(wait=True)'s 1 s polling would have shown
    "server_cpu_s",  # CPU of the server's process tree during the run (idle tax on plain)
    "server_rss_mb",  # after the batch: RSS of the server's process tree (MB)
    "server_open_files",  # ... its open file descriptors
    "server_db_mb",  # ... its database on disk (owned servers)
    "client_rss_mb",  # this process's RSS after the run
    "server_startup_s",
    "server_workers",  # the server's Dask cluster: workers x threads per worker
    "server_threads_per_worker",
    "error",
    *ENV_COLUMNS,
)
# Columns of runs.csv that phases.csv repeats, to join on and filter by.
RUN_KEYS = ("session_id", "run_id", "profile", "workload", "config_id", "mode", "executor",
            "environment", "round", "warmup", "probes")
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
    "task_env",  # KEY=value of bench.run.probes.ENV_KNOBS as the task saw them
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
    flags: str = ""
    probed: bool = True  # False: a bare run (no probes), to measure what the probes cost
    t0: float = 0.0  # time.time() at the run's start: its phases' origin (for profiles)


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
    environment: str = ""  # the Covalent environment the run used, if not this interpreter's
    versions: Mapping[str, Any] = field(default_factory=dict)  # its covalent version ...


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
        "environment": context.environment,
        "round": context.round,
        "concurrency": context.concurrency,
        "warmup": context.warmup,
        "wall_s": round(record.wall_s, 4),
        "output_digest": out.digest if out else None,
        "outputs": out.metrics if out else None,
        "tasks_probed": record.tasks_probed,
        "flags": record.flags,
        "probes": "on" if record.probed else "off",
        "dispatch_id": record.dispatch_id,
        "status": record.status,
        "error": record.error,
        **{k: round(v, 4) for k, v in record.timings.items()},
        **context.server,
        **environment(),
        **context.versions,
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


# The last field an append gives a row that a crash left torn (the file did not end with a
# line end), so that the readers recognize the row and drop it, however many fields it had.
TORN_MARK = "<torn: cut off mid-write; ended by a later append>"  # no comma, quote, line end


class CsvAppender:
    """Appends rows to one CSV file of a fixed schema, header first. Each row is one write,
    flushed and fsynced, so a crash loses at most the row being written; the next append
    ends such a torn row (TORN_MARK) instead of gluing its own row onto it."""

    def __init__(self, path: str | os.PathLike, columns: tuple[str, ...]) -> None:
        self.path, self.columns = Path(path), columns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            if _torn_header(self.path, columns):
                self.path.write_bytes(b"")  # a crash while writing the header: nothing measured
                return
            with self.path.open(newline="", encoding="utf-8", errors="replace") as f:
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
        lines = [_csv_line([_cell(row.get(k)) for k in self.columns]) for row in rows]
        if not self.path.exists() or self.path.stat().st_size == 0:
            lines.insert(0, _csv_line(self.columns))
        elif ending := _torn_ending(self.path):
            lines.insert(0, ending)
        with self.path.open("a", newline="", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


def _csv_line(values: Any) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


def _torn_header(path: Path, columns: tuple[str, ...]) -> bool:
    """Whether the file is nothing but the start of its header: a crash while writing it."""
    header = _csv_line(columns).encode()
    if path.stat().st_size >= len(header):
        return False
    return header.startswith(path.read_bytes())


def _torn_ending(path: Path) -> str:
    """What ends the file's last line if a crash left it torn ("" if it is whole)."""
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        if last == b"\n":
            return ""
        f.seek(0)
        quotes = sum(chunk.count(b'"') for chunk in iter(lambda: f.read(1 << 20), b""))
    # The csv module doubles a quote inside a field, so quotes pair up in whole rows: an odd
    # count means the cut fell inside a quoted field, which must be closed first.
    inside = quotes % 2 == 1
    if last == b"\r" and not inside:
        return "\n"  # cut between \r and \n: the row itself is whole
    return ('"' if inside else "") + "," + TORN_MARK + "\r\n"


# Profiles (--bench-stacks): per profiled run, its raw py-spy files, trace.json and speedscope
# files in stacks/<run_id>/, and its functions' seconds per part in hotspots.csv.
STACKS_DIR = "stacks"
HOTSPOTS_CSV = "hotspots.csv"
HOTSPOT_COLUMNS = (
    *RUN_KEYS,
    "part",  # the phase (or gap) the samples fell in: submit, node, in_task, ...
    "role",  # client | server | worker
    "module", "function", "line", "file",
    "self_s",  # sampled seconds with the function as the leaf (thread-seconds)
    "total_s",  # ... with it anywhere on the stack
    "category",  # covalent, user task, serialization, HTTP, database, asyncio, dask ...
    "waiting",  # a leaf where threads block (a lock, select, a socket read)
    "part_s",  # the part's sampled thread-seconds in this run and role
    "rate_hz",  # samples per second per thread
)


def hotspots_writer(out_dir: str | os.PathLike) -> CsvAppender:
    return CsvAppender(Path(out_dir) / HOTSPOTS_CSV, HOTSPOT_COLUMNS)


def load_hotspots(in_dir: str | os.PathLike, sessions: set[str] | None = None
                  ) -> pd.DataFrame:
    """hotspots.csv (of these sessions), or an empty frame without profiled rounds."""
    import pandas as pd

    path = Path(in_dir) / HOTSPOTS_CSV
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(HOTSPOT_COLUMNS))
    hot = pd.read_csv(path, dtype={"executor": str, "environment": str, "session_id": str,
                                   "run_id": str, "module": str, "function": str})
    hot["executor"] = hot["executor"].fillna("")
    hot["environment"] = hot["environment"].fillna("")
    hot["waiting"] = hot["waiting"].astype(str).str.lower() == "true"
    return hot if sessions is None else hot[hot["session_id"].isin(sessions)]


def runs_writer(out_dir: str | os.PathLike) -> CsvAppender:
    return CsvAppender(Path(out_dir) / RUNS_CSV, RUN_COLUMNS)


def phases_writer(out_dir: str | os.PathLike) -> CsvAppender:
    return CsvAppender(Path(out_dir) / PHASES_CSV, PHASE_COLUMNS)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=_json_default)
    return value


def _json_default(value: Any) -> Any:
    """A parameter JSON cannot hold (a function such as a default loss_fn): its name."""
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    module = getattr(value, "__module__", None)
    if name:
        return f"{module}.{name}" if module else name
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


class NoRecordsError(FileNotFoundError):
    pass


class RecordsSchemaError(ValueError):
    """A records file that lacks columns this version needs to read it."""

    def __init__(self, path: str | os.PathLike, missing: list[str],
                 advice: str = "move it away or choose another --bench-out") -> None:
        self.path, self.missing = Path(path), tuple(missing)
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8
                                          else "")
        super().__init__(f"{self.path} lacks columns: {shown} (written by an older version, "
                         f"or cut off?); {advice}")


log = logging.getLogger(__name__)

# Columns holding JSON objects whose keys become columns of the frame the analysis reads.
JSON_COLUMNS = ("params", "outputs")
# What the readers cannot do without: a file lacking one of these is refused
# (RecordsSchemaError). Other columns an older version did not write yet are simply absent.
RUNS_NEEDED = ("timestamp", "session_id", "run_id", "profile", "workload", "config_id",
               "params", "mode", "executor", "round", "warmup", "wall_s", "output_digest",
               "status")
PHASES_NEEDED = ("run_id", "phase", "start_s", "duration_s")
# The rest of each schema is optional: a file without one of these columns (an older version,
# an edited file) is read with the column added empty, so every analysis and plot finds it,
# and `missing_note` says which were missing (the report shows it) instead of a KeyError.
RUNS_OPTIONAL = tuple(c for c in RUN_COLUMNS if c not in RUNS_NEEDED)
PHASES_OPTIONAL = tuple(c for c in PHASE_COLUMNS if c not in PHASES_NEEDED)
# Columns that hold numbers (or nothing): another value there means a damaged row.
RUN_NUMBERS = ("round", "concurrency", "slot", "wall_s", "latency_s", "batch_wall_s",
               "submit_s", "server_s", "retrieve_s", "stock_wall_s", "server_cpu_s",
               "server_rss_mb", "server_open_files", "server_db_mb",
               "client_rss_mb", "server_startup_s", "server_workers",
               "server_threads_per_worker", "cpu_count")
PHASE_NUMBERS = ("round", "start_s", "duration_s", "cpu_s", "sys_cpu_s", "page_faults", "bytes",
                 "pid", "threads", "maxrss_mb")


def load_runs(in_dir: str | os.PathLike) -> pd.DataFrame:
    """runs.csv as a frame, each parameter and output a column of its own.

    Damaged rows (torn by a crash mid-write, cut off, unparsable) are dropped and logged;
    `frame.attrs["dropped"]` lists them as (line number, reason), `dropped_note` words them."""
    import pandas as pd

    path = Path(in_dir) / RUNS_CSV
    if not path.is_file() or path.stat().st_size == 0:
        raise NoRecordsError(
            f"no run records at {path}. Run the benchmarks first, e.g.\n"
            f"  pytest bench --benchmark-only --bench-profile smoke --bench-out {in_dir}"
        )
    runs = read_checked(
        path, RUNS_NEEDED, numbers=RUN_NUMBERS, booleans=("warmup", "git_dirty"),
        json_objects=JSON_COLUMNS,
        dtype={"executor": str, "dispatch_id": str, "error": str, "params": str, "outputs": str,
               "output_digest": str, "tasks_probed": str,
               # names and versions stay text: an environment "2" or a release "1.0" is no float
               "environment": str, "covalent": str},
    )
    _add_missing(runs, RUNS_OPTIONAL, RUN_NUMBERS)
    attrs = dict(runs.attrs)
    runs["executor"] = runs["executor"].fillna("")
    _with_environment(runs)
    runs["concurrency"] = runs["concurrency"].fillna(1) if "concurrency" in runs else 1
    for column in JSON_COLUMNS:
        if column not in runs:
            continue
        decoded = runs[column].map(lambda t: json.loads(t) if isinstance(t, str) and t else {})
        expanded = pd.DataFrame(decoded.tolist(), index=runs.index)
        new = [c for c in expanded.columns if c not in runs.columns]
        runs = pd.concat([runs, expanded[new]], axis=1)
    runs.attrs.update(attrs)
    return runs


ENVIRONMENT_SEP = ":"


def _with_environment(frame: pd.DataFrame) -> None:
    """With side-by-side Covalent environments, a Covalent run's `executor` in the frame is
    `<environment>:<executor>`, so that every analysis and plot keyed by executor tells the
    environments apart; `base_executor` keeps the executor alone."""
    frame["base_executor"] = frame["executor"]
    if "environment" not in frame:
        frame["environment"] = ""
        return
    env = frame["environment"].fillna("").astype(str)
    named = (env != "") & (frame["executor"] != "")
    frame.loc[named, "executor"] = env[named] + ENVIRONMENT_SEP + frame.loc[named, "executor"]
    frame["environment"] = env


def load_phases(in_dir: str | os.PathLike) -> pd.DataFrame | None:
    """phases.csv as a frame (None if there is none); damaged rows dropped as in load_runs."""
    path = Path(in_dir) / PHASES_CSV
    if not path.is_file() or path.stat().st_size == 0:
        return None
    phases = read_checked(path, PHASES_NEEDED, numbers=PHASE_NUMBERS, booleans=("warmup",),
                          dtype={"executor": str, "task": str, "environment": str})
    _add_missing(phases, PHASES_OPTIONAL, PHASE_NUMBERS)
    if "executor" in phases:
        phases["executor"] = phases["executor"].fillna("")
        _with_environment(phases)
    return phases


def _add_missing(frame: pd.DataFrame, optional: tuple[str, ...], numbers: tuple[str, ...]
                 ) -> None:
    """Add the optional columns the file lacks, empty (NaN for numbers, None for text);
    attrs["missing"] lists them."""
    missing = [c for c in optional if c not in frame]
    for column in missing:
        frame[column] = float("nan") if column in numbers else None
    frame.attrs["missing"] = missing


def missing_note(frame: pd.DataFrame) -> str:
    """One line naming the optional columns its file lacked ("" if none)."""
    missing = frame.attrs.get("missing", [])
    if not missing:
        return ""
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8
                                      else "")
    return (f"{frame.attrs.get('source', 'records')} lacks optional column"
            f"{'s' * (len(missing) > 1)} {shown} (written by an older version, or edited?): "
            f"what needs {'them' if len(missing) > 1 else 'it'} is left empty")


def read_checked(
    path: str | os.PathLike, needed: tuple[str, ...], *, numbers: tuple[str, ...] = (),
    booleans: tuple[str, ...] = (), json_objects: tuple[str, ...] = (),
    dtype: Mapping[str, Any] | None = None,
    advice: str = "move it away or choose another --bench-out", warn: bool = True,
) -> pd.DataFrame:
    """A CSV file as a frame, without the rows a crash or an editor damaged.

    Raises RecordsSchemaError if the header lacks a `needed` column. A row is dropped if it
    has another number of fields than the header, ends in TORN_MARK, is the last one and
    lacks its line end (cut off), or holds something else than a number in `numbers`, than
    True/False in `booleans` or than a JSON object in `json_objects` (empty cells are fine).
    The frame's attrs: "source" (the path) and "dropped" ([(line number, reason)]); unless
    `warn` is false, the dropped lines are also logged as a warning."""
    import pandas as pd

    path = Path(path)
    raw = path.read_bytes()
    # A cut can split a multi-byte character: decode leniently; that row is dropped anyway.
    reader = csv.reader(io.StringIO(raw.decode("utf-8", errors="replace"), newline=""))
    header = next(reader, [])
    missing = [c for c in needed if c not in header]
    if missing:
        raise RecordsSchemaError(path, missing, advice)
    kinds = {**dict.fromkeys(numbers, "number"), **dict.fromkeys(booleans, "bool"),
             **dict.fromkeys(json_objects, "json")}
    checks = [(i, name, kinds[name]) for i, name in enumerate(header) if name in kinds]
    good: list[list[str]] = []
    dropped: list[tuple[int, str]] = []
    last, kept = 0, False  # the last record's first line, and whether it was kept
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            dropped.append((start, f"not readable as CSV ({exc})"))
            last, kept = start, False
            continue
        if not fields:
            continue  # an empty line holds no record
        last, problem = start, _row_problem(fields, len(header), checks)
        kept = problem is None
        if kept:
            good.append(fields)
            continue
        if reader.line_num > start:
            problem += f", over lines {start}-{reader.line_num}"
        dropped.append((start, problem))
    if last and not raw.endswith((b"\n", b"\r")):  # the last row lacks its line end
        if kept:
            good.pop()
        else:
            dropped.pop()
        dropped.append((last, "cut off at the end of the file, no line end: a crash "
                              "mid-write?"))
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(good)
    text.seek(0)
    frame = pd.read_csv(text, dtype=dtype)
    frame.attrs.update(source=str(path), dropped=dropped)
    if dropped and warn:
        log.warning(dropped_note(frame))
    return frame


def dropped_note(frame: pd.DataFrame) -> str:
    """One line saying which damaged lines a reader dropped from its file ("" if none)."""
    dropped = frame.attrs.get("dropped", [])
    if not dropped:
        return ""
    n = len(dropped)
    return (f"{frame.attrs.get('source', 'records')}: dropped {n} damaged line"
            f"{'s' if n > 1 else ''}, kept {len(frame)} rows; {damage(dropped)}")


def damage(dropped: list[tuple[int, str]], shown: int = 3) -> str:
    """(line, reason) pairs in a few words: "line 4: ...; line 9: ...; and 2 more"."""
    text = "; ".join(f"line {line}: {why}" for line, why in dropped[:shown])
    return text + (f"; and {len(dropped) - shown} more" if len(dropped) > shown else "")


def _row_problem(fields: list[str], width: int, checks: list[tuple[int, str, str]]) -> str | None:
    """Why a CSV record is no whole row of its file, or None."""
    if fields[-1] == TORN_MARK:
        return "cut off mid-write by a crash, ended by a later append"
    if len(fields) != width:
        return f"{len(fields)} fields where the header has {width}"
    for i, name, kind in checks:
        value = fields[i]
        if not value:
            continue
        if kind == "number" and not _is_number(value):
            return f"{name} is not a number: {value[:40]!r}"
        if kind == "bool" and value.lower() not in ("true", "false"):
            return f"{name} is not True or False: {value[:40]!r}"
        if kind == "json":
            try:
                obj = json.loads(value)
            except ValueError:
                return f"{name} is broken JSON: {value[:40]!r}"
            if not isinstance(obj, dict):
                return f"{name} is not a JSON object: {value[:40]!r}"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return "_" not in text  # float() takes 1_000, a CSV reader does not


def record_environment(out_dir: str | os.PathLike, session_id: str, entry: dict) -> None:
    """Add one environment's entry to the session's list, at once (a crash later keeps it)."""
    path = Path(out_dir) / COVALENT_ENVIRONMENTS_JSON
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        doc = {}  # a damaged file loses the old sessions' entries, not this one's
    doc.setdefault(session_id, []).append(entry)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def load_environments(in_dir: str | os.PathLike) -> list[dict]:
    """Every recorded environment entry of the directory's sessions, with its session id."""
    path = Path(in_dir) / COVALENT_ENVIRONMENTS_JSON
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return []
    return [{"session_id": sid, **e} for sid, entries in doc.items() for e in entries]
