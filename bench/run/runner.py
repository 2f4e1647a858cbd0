"""One workload configuration in one mode -> one RunRecord: timings, outcome and phases.

The Covalent path times the client's own view of a run: the dispatch call, waiting for a
terminal status (polled every POLL_S, not the stock 1 s sleep, which would quantise wall
times to about a second), and downloading the result. Tasks in both modes are wrapped by
a probe that records their own time (bench.run.probes), so a run's wall time splits
into phases: client submit, wait until the server runs it, each task's node span and
in-task time, completion detection, result retrieval. This is the harness's one
dispatch -> poll -> download loop; every workload goes through it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench import records as R
from bench.adapters import covalent_api as api
from bench.records import RunRecord
from bench.run.probes import read_probes, task_probe
from bench.services.cluster import DaskTarget
from bench.workloads import Workload

POLL_S = 0.05
FAILED = "FAILED"  # Covalent's own status name; plain runs and runs that never started too
DEFAULT_TIMEOUT_S = 3600.0
# A status poll that fails is retried; this many failures in a row with the server still
# healthy end the wait anyway (the rows say why).
MAX_POLL_FAILURES = 20
# What a caller passes to tell whether the server is still there: None, or why it is not.
Health = Callable[[], "str | None"]
# What a caller passes to stop the task processes of timed-out dispatches (Covalent's cancel
# leaves a running local or Dask task running); returns what it did, for the rows.
Stopper = Callable[[], str]


class ServerUnavailableError(RuntimeError):
    """The Covalent server died or stopped answering during a run. `records` holds a row
    for every run of the batch, with the reason; nothing measured before is lost."""

    def __init__(self, reason: str, records: list[RunRecord] | None = None) -> None:
        super().__init__(reason)
        self.records = records or []


def attach_records(exc: BaseException, records: list[RunRecord]) -> None:
    """Hang the batch's records on an interrupt (Ctrl-C, SIGTERM) so the caller can write
    them before it propagates."""
    exc.bench_records = records  # type: ignore[attr-defined]


def _phase(phase: str, start: float, end: float, task: str = "", **extra: Any) -> dict:
    return {"phase": phase, "task": task, "start_s": start, "duration_s": end - start, **extra}


def _in_task_phases(probes: list[dict], t0: float) -> list[dict]:
    return [
        _phase(
            R.IN_TASK, p["start"] - t0, p["end"] - t0, p["task"], cpu_s=p["cpu_s"],
            sys_cpu_s=p["sys_cpu_s"], page_faults=p["page_faults"],
            task_env=";".join(f"{k}={v}" for k, v in p["env"].items() if v),
            pid=p["pid"], threads=p["threads"], maxrss_mb=round(p["maxrss_mb"], 1),
        )
        for p in probes
    ]


class CpuMeter:
    """CPU seconds used by a set of processes (the Covalent server's tree) over a span.

    On a plain run this is the idle server's tax on the machine; on a Covalent run it
    also holds the tasks that ran in the server's pool or Dask workers. Processes that were
    there at the start and are gone at the end died during the span: a Dask worker killed
    mid-task is restarted and its task rerun, so the run completes but measured a crash."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        self._start = {p.pid: self._cpu(p) for p in processes}
        self._procs = {p.pid: p for p in processes}

    def died(self) -> list[int]:
        """Pids of the processes present at the start that are gone (or zombies) now."""
        gone = []
        for pid, proc in self._procs.items():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    gone.append(pid)
            except psutil.NoSuchProcess:
                gone.append(pid)
            except psutil.Error:
                pass
        return gone

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0

    def seconds(self, processes: list[psutil.Process]) -> float:
        """CPU since start, over the processes alive then and those started since."""
        return sum(self._cpu(p) - self._start.get(p.pid, 0.0) for p in processes)


def _client_rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _error_text(exc: BaseException) -> str:
    """'Type: message' on one line (a row's error is one line, whatever the message)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]


def _interrupted(exc: BaseException) -> str:
    """What stopped the run: Ctrl-C, or the signal handled as one (SIGTERM, SIGHUP)."""
    text = str(exc)
    if text.startswith("signal "):  # bench.services.processes.sigterm_raises
        return f"interrupted by {text}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return f"interrupted ({type(exc).__name__})"


class _TaskExited(BaseException):
    """A task of a plain run called os._exit: raised instead, so that the harness lives on.
    A BaseException, so that the task's own `except Exception` does not swallow it."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@contextlib.contextmanager
def _exit_refused() -> Iterator[None]:
    """While a plain run's tasks run in this process, os._exit raises _TaskExited instead
    of ending the harness silently (and without a row). A process the task forked (which
    multiprocessing ends with os._exit) still exits."""
    real, me = os._exit, os.getpid()

    def refuse(code: int) -> None:
        if os.getpid() != me:
            real(code)
        raise _TaskExited(code)

    os._exit = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real


class _PastDeadline(BaseException):
    """A plain run went past its timeout: raised in the task by SIGALRM. A BaseException, so
    that the task's own `except Exception` does not swallow it."""


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[bool]:
    """Raise _PastDeadline in this (main) thread once `seconds` have passed, wherever the
    plain run's Python code is: a loop, a sleep, a blocking call (woken with EINTR). Yields
    whether the deadline is armed: signals reach only the main thread, so elsewhere (a run
    driven from another thread) there is none, and code stuck inside a C call that never
    returns to Python is not stopped either."""
    armed = (seconds is not None and hasattr(signal, "setitimer")
             and threading.current_thread() is threading.main_thread())
    if not armed:
        yield False
        return

    def _raise(signum: int, frame: object) -> None:
        raise _PastDeadline()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))  # type: ignore[arg-type]
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _RunSetupError(Exception):
    """The workload's inputs or lattice could not be made for a run: the user's code raised
    before anything ran. The message is the row's error."""


def _run_inputs(workload: Workload, params: Mapping[str, Any]) -> tuple[tuple, dict, Any]:
    """(args, kwargs, lattice) for one run, or _RunSetupError saying which step raised."""
    try:
        args, kwargs = workload.inputs(params)
    except Exception as exc:
        raise _RunSetupError(f"inputs: the workload's inputs (--bench-inputs / inputs=) "
                             f"raised {_error_text(exc)}; fix that function") from exc
    try:
        lattice = workload.lattice(params)
    except Exception as exc:
        raise _RunSetupError(f"lattice: building the workload's lattice raised "
                             f"{_error_text(exc)}") from exc
    return args, kwargs, lattice


_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'")


def _explained(error: str) -> str:
    """A task error, with what to do where it is a module the server lacks but this client
    has: one the workflow's code reaches without naming it (importlib, a string), so the
    harness could not ship it by value."""
    found = _MISSING_MODULE.search(error)
    if not found:
        return error
    name = found.group(1).partition(".")[0]
    try:
        here = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        here = False
    if not here:
        return error
    return (f"{error} (module {name!r} is importable only on this client and was not shipped "
            f"to the server: import it at the top of the workflow's module, so that the "
            f"harness ships it, or install it where the server runs, e.g. pip install -e)")


def _outcome_into(record: RunRecord, workload: Workload, value: Any,
                  params: Mapping[str, Any]) -> None:
    try:
        record.outcome = workload.outcome(value, params)
    except Exception as exc:  # the run happened; what it returned is not what was expected
        record.status, record.error = R.ERROR, f"outcome: {_error_text(exc)}"


def measure_plain(workload: Workload, params: Mapping[str, Any], probe_dir: str | Path,
                  probe: bool = True, timeout_s: float | None = None) -> RunRecord:
    """One plain run: the lattice's function called directly, tasks probed (unless `probe`
    is False: the bare run that tells what the probes cost). A failure is a FAILED record
    with its error, not an exception; past `timeout_s` the run is stopped where it is and
    is a TIMEOUT record."""
    run_id = uuid.uuid4().hex[:12]
    record = RunRecord("plain", "", 0.0, run_id=run_id, status="COMPLETED", probed=probe)
    try:
        args, kwargs, lattice = _run_inputs(workload, params)
    except _RunSetupError as exc:  # nothing ran: a row saying why, no timings
        record.status, record.error = FAILED, str(exc)
        return record
    except BaseException as exc:  # Ctrl-C while the inputs are made
        record.status, record.error = R.INTERRUPTED, _interrupted(exc)
        attach_records(exc, [record])
        raise
    # The graph's census is read from the configuration's first probed plain run.
    census = (api.GraphCensus() if probe and workload.takes_census
              and not workload.has_census(params) else None)
    t0 = record.t0 = time.time()
    start = time.perf_counter()
    try:
        with _exit_refused(), _deadline(timeout_s):
            value = api.run_plain(lattice, args, kwargs,
                                  wrap=task_probe(probe_dir, run_id) if probe else None,
                                  census=census)
    except _PastDeadline:
        value = None
        record.status, record.error = R.TIMEOUT, (
            f"still running after the run timeout of {timeout_s:g} s; stopped there (raise it "
            f"with --bench-set timeout_s=SECONDS, or timeout_s=)")
    except Exception as exc:
        value = None
        record.status, record.error = FAILED, _error_text(exc)
    except _TaskExited as exc:  # it would have ended the harness, rowless
        value = None
        record.status, record.error = FAILED, (
            f"a task called os._exit({exc.code}), which would end this process: stopped "
            f"there (on Covalent it ends the task's process)")
    except SystemExit as exc:  # a task's sys.exit: its failure, not a stop of the session
        value = None
        record.status, record.error = FAILED, f"a task called sys.exit({exc.code!r})"
    except BaseException as exc:  # Ctrl-C, SIGTERM: the run gets its row, then it goes on
        record.wall_s = time.perf_counter() - start
        record.status, record.error = R.INTERRUPTED, _interrupted(exc)
        attach_records(exc, [record])
        raise
    record.wall_s = time.perf_counter() - start
    if record.status == "COMPLETED":
        _outcome_into(record, workload, value, params)
    probes = read_probes(probe_dir, run_id)
    record.timings["client_rss_mb"] = _client_rss_mb()
    record.phases = _in_task_phases(probes, t0)
    record.tasks_probed = f"{len(probes)}/{len(probes)}" if probe else ""
    if probe and record.outcome is not None and workload.takes_census:
        _census_into(record, workload, params, census)
    return record


def _census_into(record: RunRecord, workload: Workload, params: Mapping[str, Any],
                 recorded: api.GraphCensus | None) -> None:
    """The graph's census into the plain run's outputs (after its clock). A graph that cannot
    be read is a note in those outputs, not a failed run: the run itself was measured."""
    try:
        found: dict[str, Any] = dict(workload.census(params, recorded))
    except Exception as exc:
        found = {"census_error": _error_text(exc)}
    record.outcome = replace(record.outcome, metrics={**record.outcome.metrics, **found})


@dataclass
class _Dispatched:
    """A dispatch in flight: its ids, clocks and the stock-waiter thread beside it."""

    run_id: str
    dispatch_id: str
    t0: float  # wall clock at the run's start, to place server timestamps on our axis
    start: float  # perf_counter at the run's start
    submitted: float
    stock_seen: list[float] = field(default_factory=list)
    stock: threading.Thread | None = None
    status: str = ""
    done: float = 0.0
    error: str = ""
    probed: bool = True


def _stock_wait(dispatch_id: str, address: str, seen: list[float], under: str) -> None:
    try:
        api.stock_wait(dispatch_id, address, under)
        seen.append(time.perf_counter())
    except Exception:  # the measured path reports failures; this column just stays empty
        pass


def _submit(workload: Workload, params: Mapping[str, Any], executor: Any, address: str,
            probe_dir: str | Path, probe: bool = True) -> _Dispatched:
    run_id = uuid.uuid4().hex[:12]
    try:
        args, kwargs, lattice = _run_inputs(workload, params)
    except _RunSetupError as exc:  # nothing was dispatched: a row saying why
        now = time.perf_counter()
        run = _Dispatched(run_id, "", time.time(), now, now, status=FAILED, error=str(exc),
                          probed=probe)
        run.done = now
        return run
    t0 = time.time()
    start = time.perf_counter()
    try:
        dispatch_id = api.dispatch(lattice, executor, address, args, kwargs,
                                   wrap=task_probe(probe_dir, run_id) if probe else None)
    except Exception as exc:
        run = _Dispatched(run_id, "", t0, start, time.perf_counter(), status=R.ERROR,
                          error=f"dispatch: {_error_text(exc)}", probed=probe)
        run.done = run.submitted
        return run
    run = _Dispatched(run_id, dispatch_id, t0, start, time.perf_counter(), probed=probe)
    run.stock = threading.Thread(target=_stock_wait, daemon=True,
                                 args=(dispatch_id, address, run.stock_seen, str(probe_dir)))
    run.stock.start()
    return run


def _lost(pending: list[_Dispatched], reason: str) -> ServerUnavailableError:
    for late in pending:
        late.status, late.done = R.ERROR, time.perf_counter()
        late.error = f"server unavailable: {reason}"
    return ServerUnavailableError(reason)


def _await_all(runs: list[_Dispatched], address: str, timeout_s: float,
               health: Health | None = None, stop: Stopper | None = None,
               gone: Health | None = None) -> None:
    """Poll every POLL_S until each dispatch is terminal; note when each was seen so. A
    dispatch past `timeout_s` is cancelled on the server, its task processes stopped by
    `stop`, and marked TIMEOUT. `gone` (no request: an owned server's main process) is
    asked before every poll; a poll that fails asks `health`; a server that is gone raises
    ServerUnavailableError at once."""
    pending = [r for r in runs if not r.status]
    since = time.perf_counter()
    failures = 0
    while pending:
        time.sleep(POLL_S)
        if gone is not None and (reason := gone()):
            raise _lost(pending, reason)
        for run in list(pending):
            try:
                run.status = api.status(run.dispatch_id, address)
                failures = 0
            except Exception as exc:
                failures += 1
                reason = health() if health is not None else None
                if reason is None and failures < MAX_POLL_FAILURES:
                    continue
                reason = reason or (f"{failures} status polls in a row failed, the last with "
                                    f"{_error_text(exc)}")
                raise _lost(pending, reason) from exc
            if run.status in api.TERMINAL:
                run.done = time.perf_counter()
                pending.remove(run)
        if pending and time.perf_counter() - since > timeout_s:
            for run in pending:
                try:
                    api.cancel(run.dispatch_id, address)
                except Exception:  # the row says TIMEOUT either way
                    pass
                run.status, run.done = run.status or "not started", time.perf_counter()
            stopped = ""
            if stop is not None:
                try:
                    stopped = stop()
                except Exception as exc:  # the row says so; the next run finds out the rest
                    stopped = f"could not stop its task processes: {_error_text(exc)}"
            for run in pending:
                run.error = (f"still {run.status} after the dispatch timeout of "
                             f"{timeout_s:.0f} s; cancelled{'; ' + stopped if stopped else ''} "
                             f"(raise it with --bench-set timeout_s=SECONDS)")
                run.status = R.TIMEOUT
            return


def _cancel_quietly(runs: list[_Dispatched], address: str) -> None:
    for run in runs:
        if run.dispatch_id and run.status not in api.TERMINAL:
            try:
                api.cancel(run.dispatch_id, address)
            except Exception:  # best effort on the way out
                pass


def _exit_text(code: int | None) -> str:
    if code is None:
        return "an unknown status"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {-code} ({signal.Signals(-code).name})"
        return f"signal {-code}"
    return f"exit code {code}"


def _pool_broken(error: str, events: list[dict[str, Any]]) -> str:
    """A failed run's error, where the server's hook saw the local executor's process pool
    break under its tasks: which pool process died, and how."""
    dead = sorted({(pid, code) for event in events for pid, code in event.get("dead", [])})
    what = ", ".join(f"{pid} ended with {_exit_text(code)}" for pid, code in dead)
    note = (f"the local executor's process pool broke under it ({what or 'a pool process died'}"
            f": os._exit, a crash or a kill in a task); the next task gets a fresh pool")
    return error.replace("no error text", note) if "no error text" in error else (
        f"{error}; {note}")


def _collect(run: _Dispatched, workload: Workload, params: Mapping[str, Any], label: str,
             address: str, probe_dir: str | Path, server: Any = None) -> RunRecord:
    """Download the result and turn the run's clocks into timings and phases."""
    record = RunRecord("covalent", label, run.done - run.start, run_id=run.run_id,
                       dispatch_id=run.dispatch_id, status=run.status, error=run.error,
                       probed=run.probed, t0=run.t0)
    record.timings["submit_s"] = run.submitted - run.start
    if run.status in (R.ERROR, R.TIMEOUT) or not run.dispatch_id:
        record.phases = [_phase(R.SUBMIT, 0.0, record.timings["submit_s"])]
        return record
    # Inside the probe directory: whatever removes that (the watchdog too) removes this.
    with tempfile.TemporaryDirectory(prefix="covalent-bench-result-", dir=probe_dir) as results_dir:
        retrieve_start = time.perf_counter()
        try:
            result = api.fetch_result(run.dispatch_id, address, results_dir)
        except Exception as exc:
            record.status, record.error = R.ERROR, f"download: {_error_text(exc)}"
            return record
        end = time.perf_counter()
        if run.status == "COMPLETED":
            _outcome_into(record, workload, api.result_value(result), params)
        else:
            detail = "; ".join(api.task_errors(result, address, results_dir))
            record.error = _explained(detail or api.result_error(result)
                                      or "no task error recorded")
            events = (server.pool_events({run.dispatch_id, *(
                n["sub_dispatch_id"] for n in api.node_runs(result) if n["sub_dispatch_id"])})
                if hasattr(server, "pool_events") else [])
            if events:
                record.error = _pool_broken(record.error, events)
        sizes = api.output_sizes(run.dispatch_id, address, results_dir)  # after the clock
    if run.stock is not None:
        run.stock.join(timeout=5)

    start, t0 = run.start, run.t0
    rel = {"submitted": run.submitted - start, "done": run.done - start,
           "retrieve": retrieve_start - start, "end": end - start}
    record.wall_s = rel["end"]
    record.timings.update(retrieve_s=rel["end"] - rel["retrieve"], client_rss_mb=_client_rss_mb())
    if run.stock_seen:  # stock detection, then the same download as ours
        record.timings["stock_wall_s"] = (run.stock_seen[0] - start
                                          + record.timings["retrieve_s"])
    phases = [_phase(R.SUBMIT, 0.0, rel["submitted"])]
    server_start, server_end = api.result_times(result)
    if server_start is not None and server_end is not None:
        s0, s1 = server_start - t0, server_end - t0
        record.timings["server_s"] = s1 - s0
        phases += [
            _phase(R.UNTIL_RUNNING, rel["submitted"], s0),
            _phase(R.SERVER, s0, s1),
            _phase(R.COMPLETION_DETECT, s1, rel["done"]),
        ]
    tasks = subs = 0
    for node in api.node_runs(result):
        if node["kind"] == "parameter" or node["start"] is None:
            continue
        tasks += node["kind"] == "task"
        subs += node["kind"] == "sublattice"
        phases.append(_phase(R.NODE, node["start"] - t0, (node["end"] or node["start"]) - t0,
                             node["name"], bytes=sizes.get(node["id"])))
    probes = read_probes(probe_dir, run.run_id)
    phases += _in_task_phases(probes, t0)
    # A sublattice's tasks run in a sub-dispatch: probed, but not nodes of this graph.
    record.tasks_probed = (f"{len(probes)}/{tasks}" + (f"+{subs} sublattice" if subs else "")
                           if run.probed else "")
    if rel["retrieve"] > rel["done"]:  # in a batch, others' downloads came first
        phases.append(_phase(R.QUEUED_FOR_RETRIEVE, rel["done"], rel["retrieve"]))
    phases.append(_phase(R.RETRIEVE, rel["retrieve"], rel["end"]))
    record.phases = phases
    return record


def measure_covalent_batch(
    workload: Workload,
    params: Mapping[str, Any],
    *,
    executor: str,
    address: str,
    probe_dir: str | Path,
    server: Any = None,
    concurrency: int = 1,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    dispatch_to: DaskTarget | None = None,
    health: Health | None = None,
    probe: bool = True,
    stop: Stopper | None = None,
) -> list[RunRecord]:
    """`concurrency` dispatches submitted back to back, awaited together, then downloaded.

    This is the one signature of a Covalent batch, wherever its client side runs
    (bench.run.client.RemoteClient.measure_covalent_batch takes the same keywords).
    `executor` is the records' executor ('local', 'dask', 'external'); `dispatch_to` the
    external Dask cluster the lattice runs on instead of a server executor. `server`, if
    given, is metered (server_cpu_s, worker restarts). Each record's wall_s runs from its
    own dispatch call to its result in hand; latency_s from the batch's start;
    batch_wall_s is the whole batch (the same on every record). `health` tells whether the
    server is still there (see _await_all); `stop` stops the task processes of dispatches
    past `timeout_s`. Every dispatch gets a record, whatever happens:
    a dead server raises ServerUnavailableError carrying them; an interrupt carries them on
    the exception (attach_records)."""
    label = executor
    meter = CpuMeter(server.processes()) if server is not None else None
    batch_start = time.perf_counter()
    target = label if dispatch_to is None else api.executor_for(dispatch_to.address,
                                                                dispatch_to.cache_dir)
    runs: list[_Dispatched] = []
    try:
        for _ in range(concurrency):
            run = _submit(workload, params, target, address, probe_dir, probe)
            runs.append(run)
            reason = health() if run.status == R.ERROR and health is not None else None
            if reason:
                run.error = f"server unavailable: {reason}"
                raise ServerUnavailableError(reason)
        _await_all(runs, address, timeout_s, health, stop,
                   gone=getattr(server, "gone", None))
    except ServerUnavailableError as exc:
        exc.records = [_unfinished(run, label, run.error or f"server unavailable: {exc}")
                       for run in runs]
        raise
    except BaseException as exc:  # Ctrl-C, SIGTERM: cancel what runs, keep the rows
        _cancel_quietly(runs, address)
        attach_records(exc, [_unfinished(run, label, _interrupted(exc),
                                         R.INTERRUPTED) for run in runs])
        raise
    records = []
    for run in sorted(runs, key=lambda r: r.done):  # first finished, first fetched
        record = _collect(run, workload, params, label, address, probe_dir, server)
        record.timings["latency_s"] = time.perf_counter() - batch_start
        record.timings["slot"] = runs.index(run)  # order of submission
        records.append(record)
    _finish_batch(records, batch_start, meter, server)
    return sorted(records, key=lambda r: r.timings["slot"])


def _unfinished(run: _Dispatched, label: str, error: str, status: str = R.ERROR) -> RunRecord:
    """The record of a dispatch that ended without a result in hand."""
    now = time.perf_counter()
    record = RunRecord("covalent", label, (run.done or now) - run.start, run_id=run.run_id,
                       dispatch_id=run.dispatch_id, status=status, error=error,
                       probed=run.probed, t0=run.t0)
    record.timings["submit_s"] = run.submitted - run.start
    record.phases = [_phase(R.SUBMIT, 0.0, record.timings["submit_s"])]
    return record


def measure_plain_batch(
    workload: Workload, params: Mapping[str, Any], probe_dir: str | Path, server: Any = None,
    concurrency: int = 1, probe: bool = True, timeout_s: float | None = None,
) -> list[RunRecord]:
    """`concurrency` plain runs, one after another (what a user without Covalent does),
    each stopped at `timeout_s`."""
    meter = CpuMeter(server.processes()) if server is not None else None
    batch_start = time.perf_counter()
    records = []
    for slot in range(concurrency):
        record = measure_plain(workload, params, probe_dir, probe, timeout_s)
        record.timings["latency_s"] = time.perf_counter() - batch_start
        record.timings["slot"] = slot
        records.append(record)
    _finish_batch(records, batch_start, meter, server)
    return records


def _finish_batch(
    records: list[RunRecord], batch_start: float, meter: CpuMeter | None, server: Any
) -> None:
    batch_wall = time.perf_counter() - batch_start
    for record in records:
        record.timings["batch_wall_s"] = batch_wall
    if meter is not None:
        meter_batch(records, meter, server)


def meter_batch(records: list[RunRecord], meter: CpuMeter, server: Any) -> None:
    """What the server's meter says of a finished batch, on each of its records: the
    server's CPU (of the whole batch: the server can't tell runs apart), what it holds
    after it (RSS, open files, database size: CovalentServer.footprint) and, for Covalent
    runs, a worker-restart flag if a process of its tree died meanwhile."""
    server_cpu = meter.seconds(server.processes())
    died = meter.died()
    held = server.footprint() if hasattr(server, "footprint") else {}
    for record in records:
        record.timings["server_cpu_s"] = server_cpu
        record.timings.update(held)
        if died and record.mode == "covalent":
            record.flags = f"{R.WORKER_RESTART}:{len(died)}"
